"""Reviewed sites as a seminspect dataset (manifest + images + labels) that ``validate`` passes and ``train`` reads.

Each judged task becomes a labelled sample: ``normal``, or abnormal with the reviewer's leaf type. Views
are read from where the service recorded them (the upload store or the data root) and re-written in the
dataset; the site's metadata comes along, with the reviewer, the model's suggestion and the site id.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from sqlalchemy.orm import Session

from seminspect.data.imageio import read_image
from seminspect.data.manifest import DatasetInfo, DatasetWriter
from seminspect.data.sample import Sample, View
from seminspect.data.taxonomy import Taxonomy, TaxonomyError
from seminspect.serve.queue import NORMAL, queue
from seminspect.serve.tables import ModelVersion, Reviewer


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._") or "site"


def _taxonomy_spec(taxonomy: dict, out: Path) -> str:
    """The built-in name when the tree is the built-in one, else a ``taxonomy.yaml`` written beside the manifest."""
    name = str(taxonomy.get("name", ""))
    try:
        if Taxonomy.builtin(name).to_dict() == Taxonomy.from_dict(taxonomy).to_dict():
            return name
    except TaxonomyError:
        pass
    (out / "taxonomy.yaml").write_text(yaml.safe_dump(taxonomy, sort_keys=False), encoding="utf-8")
    return "taxonomy.yaml"


def export_reviewed(session: Session, out: str | Path) -> int:
    """Write every reviewed site under ``out``; returns the number of sites."""
    out = Path(out)
    items = queue(session, status="done")
    if not items:
        raise ValueError("no reviewed sites to export yet")
    out.mkdir(parents=True, exist_ok=True)
    versions = {i.decision.model_version for i in items}
    taxonomies = {str(session.get(ModelVersion, v).taxonomy) for v in versions}  # type: ignore[union-attr]
    if len(taxonomies) > 1:
        raise ValueError("reviewed sites were judged with models of different taxonomies; export them apart")
    spec = "sem_default"
    if versions:
        spec = _taxonomy_spec(session.get(ModelVersion, next(iter(versions))).taxonomy, out)  # type: ignore[union-attr]
    names = {r.id: r.name for r in session.query(Reviewer).all()}
    seen: set[str] = set()
    with DatasetWriter(out, DatasetInfo(taxonomy=spec, description="sites judged in seminspect review")) as w:
        for item in items:
            sid = _safe_id(item.site.sample_id)
            if sid in seen:
                sid = f"{sid}-{item.site.id}"
            seen.add(sid)
            views = [View(v.role, v.view_index, read_image(v.path), source=v.path) for v in item.site.views]
            label = item.task.label
            meta = {str(k): str(v) for k, v in item.site.meta.items()}
            meta.update({"reviewer": names.get(item.task.reviewed_by or -1, ""), "site_id": str(item.site.id),
                         "model_type": item.decision.top1_type or "", "model_route": item.decision.route})
            w.add(Sample(sid, views, is_abnormal=label != NORMAL, defect_type=None if label == NORMAL else label,
                         metadata=meta))
    return len(items)
