"""Batch decisions into the review database: the output of ``seminspect predict`` fills the same queue.

``seminspect predict ART DATA --out day3.parquet`` then ``seminspect review import ART day3.parquet DATA --db URL``
stores each judged site (views as the manifest names them, by path, with their SHA-256), its decision
row and, when a person must look, its review task, exactly as the service does. Each site is one
transaction; a site already imported from the same run (same sample id, model version, source
``predict``) is skipped, so an interrupted import can simply be run again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from seminspect.data.door import read_input
from seminspect.data.stream import manifest_of
from seminspect.serve.store import ensure_model_version, save_site
from seminspect.serve.tables import Decision, Site
from seminspect.serve.uploads import META_KEYS, StoredView
from seminspect.utils.digest import sha256_file


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def import_predictions(sessions: sessionmaker[Session], decisions: str | Path, data: str | Path, model_version: str,
                       taxonomy: dict, artefact: str, rare_types: list[str] | None = None,
                       log: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Store the decisions of a predict run; returns ``(imported, skipped)``."""
    table = _read_table(Path(decisions))
    root, mpath = manifest_of(data)
    manifest = (pd.read_parquet(mpath) if mpath.suffix == ".parquet"
                else pd.read_csv(mpath, dtype=str, keep_default_na=False)).astype(str)
    groups = {sid: rows for sid, rows in manifest.groupby("sample_id", sort=False)}
    with sessions.begin() as s:
        ensure_model_version(s, model_version, taxonomy, artefact)
    imported = skipped = 0
    for row in table.to_dict("records"):
        sid = str(row["sample_id"])
        if row.get("model_version") != model_version:
            raise ValueError(f"{decisions}: site {sid!r} was judged by model {row.get('model_version')}, "
                             f"not {model_version}")
        with sessions.begin() as s:
            done = s.scalar(select(Site.id).join(Decision, Decision.site_id == Site.id)
                            .where(Site.sample_id == sid, Site.source == "predict",
                                   Decision.model_version == model_version).limit(1))
            if done is not None:
                skipped += 1
                continue
            rows = groups.get(sid)
            if rows is None:
                raise ValueError(f"{decisions}: site {sid!r} is not in {mpath}")
            views = []
            for _, r in rows.iterrows():
                img = read_input(root, r["path"])  # the reader at the door: inside the dataset folder
                path = (root / r["path"]).resolve()
                views.append(StoredView(r["role"].strip().lower(), int(r["index"]), str(path), sha256_file(path),
                                        int(img.shape[0]), int(img.shape[1]), 8 if img.dtype.itemsize == 1 else 16))
            first = rows.iloc[0]
            meta = {k: first[k] for k in META_KEYS if k in rows.columns and first[k]}
            save_site(s, sid, "predict", meta, views, row, rare_types or [])
            imported += 1
        if log and imported % 500 == 0 and imported:
            log(f"{imported} sites imported")
    return imported, skipped
