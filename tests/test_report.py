"""The report a fab engineer reads: human numbers, triage and why, per-type table, worst errors, provenance, size."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from seminspect.data.manifest import DatasetInfo, DatasetWriter
from seminspect.data.sample import Role, Sample, View
from seminspect.decision import TriagePolicy, min_samples_for_zero_errors
from seminspect.evaluation.adc_evaluate import evaluate_artefact
from seminspect.evaluation.adc_report import write_report
from seminspect.evaluation.error_gallery import MIN_PX
from seminspect.evaluation.humanize import count, na, number, pct, pct_ci, pct_interval
from seminspect.evaluation.triage_section import route_rows, why_automated
from seminspect.inference import Inspector
from seminspect.workflow import train_and_evaluate
from test_adc import TAX, make_sample
from test_inference import tiny_config

SHIFT = (2, -1)


def masked_sample(i: int, rng: np.random.Generator, split: str) -> Sample:
    """A ``make_sample`` site with a zoom, masks on its defect's targets, and displaced references."""
    s = make_sample(i, rng, size=64, n_zooms=1, split=split)
    base = s.view(Role.REFERENCE, 0).image
    views = []
    for v in s.views:
        if v.role == Role.TARGET:
            mask = v.image != base
            views.append(View(v.role, v.index, v.image, mask=mask if mask.any() else None))
        elif v.role == Role.REFERENCE:
            views.append(View(v.role, v.index, np.roll(v.image, (-SHIFT[0], -SHIFT[1]), axis=(0, 1))))
        else:
            views.append(v)
    return Sample(s.sample_id, views, s.is_abnormal, s.defect_type, metadata=s.metadata)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    splits = ["train", "train", "calib", "test"]
    with DatasetWriter(root / "ds", DatasetInfo(taxonomy="deeppcb")) as w:
        for i in range(120):
            w.add(masked_sample(i, rng, splits[(i // 2) % 4]))
    train_and_evaluate(tiny_config(root / "ds", root / "art"), log=None, report=False)
    inspector = Inspector.load(root / "art")
    result = evaluate_artefact(inspector, root / "ds", split="test")
    gallery = write_report(root / "report.html", result, inspector)
    return SimpleNamespace(root=root, inspector=inspector, result=result, gallery=gallery,
                           path=root / "report.html", text=(root / "report.html").read_text(encoding="utf-8"))


class _Page(HTMLParser):
    """Visible text (outside <details>, without attributes), tables as rows of cell texts, images by alt."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.images: dict[str, list[str]] = {}
        self.cards = 0
        self._details = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "details":
            self._details += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.setdefault(a.get("alt", ""), []).append(a["src"])
        elif tag == "div" and a.get("class") == "card":
            self.cards += 1

    def handle_endtag(self, tag):
        if tag == "details":
            self._details -= 1
        elif tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(" ".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._details:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data.strip())


def _page(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _png(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def _keys(obj, out: set[str]) -> set[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if "_" in str(k):
                out.add(str(k))
            _keys(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _keys(v, out)
    return out


def test_numbers_are_written_for_people():
    assert pct(0.8553) == "85.5 %" and pct(1.0) == "100 %" and pct(0) == "0 %"
    assert pct_interval(0.756, 0.925) == "75.6-92.5 %"
    assert pct_ci(0.855, (0.756, 0.925)) == "85.5 % (95 % CI 75.6-92.5 %)"
    assert count(12345) == "12,345" and number(0.98734) == "0.987"
    assert pct(float("nan"), missing="one class only") == "n/a (one class only)" == na("one class only")
    assert count(None) == "n/a" and number(float("inf")) == "n/a"


def test_report_reads_like_a_report(run):
    page = _page(run.text)
    visible = " ".join(page.text)
    # triage: the route table and why nothing was automated, quoting the policy's own figures
    pol = run.inspector.artefact.policy
    routes = next(t for t in page.tables if t and t[0][:2] == ["route", "sites"])
    assert [r[0] for r in routes[1:]] == ["auto-abnormal", "auto-normal", "review", "all"]
    assert routes[-1][1] == count(len(run.result.dataset))
    need = min_samples_for_zero_errors(1 - pol.abnormal_precision, pol.confidence)
    assert (f"Auto-abnormal is off: the calibration split holds {pol.abnormal_thresholder_.n_positive_} defects; "
            f"certifying 99 % precision at 95 % confidence needs >= {need} error-free automatic calls") in visible
    assert "Auto-normal is off" in visible and "calibration split of 30 sites" in visible
    # per-type precision / recall / F1 with counts
    per_type = next(t for t in page.tables if t and "defects (support)" in t[0])
    support = {r[0]: r[per_type[0].index("defects (support)")] for r in per_type[1:]}
    assert support == {r["type"]: count(r["n"]) for r in run.result.metrics["per_type"]}
    assert {"precision", "recall", "F1"} <= set(per_type[0]) and "macro-F1" in visible
    # both galleries, every view of each site, difference and attention
    assert "Missed defects" in visible and "False alarms" in visible
    assert page.cards == run.gallery["missed"] + run.gallery["false_alarms"] == 12
    for alt in ("target 0", "target 1", "reference 0", "reference 1", "zoom 0", "difference 0", "attention 0"):
        assert len(page.images.get(alt, [])) == 12, alt
    green = [img for img in map(_png, page.images["target 0"][:6])
             if (np.asarray(img.convert("RGB")) == (0, 230, 0)).all(-1).any()]
    assert green, "the missed defects' masks are outlined on their targets"
    tinted = [np.asarray(_png(s).convert("RGB")) for s in page.images["attention 0"]]
    assert any((t[..., 0].astype(int) - t[..., 2] > 60).any() for t in tinted), "saliency tint drawn"
    # provenance
    prov = {r[0]: r[1] for r in next(t for t in page.tables if t and t[0] == ["item", "value"])[1:]}
    assert re.fullmatch(r"[0-9a-f]{12}( \(with uncommitted changes\))?|unknown.*", prov["git commit at training"])
    assert prov["model version"] == run.inspector.artefact.model_version
    assert prov["split sizes at training"] == "train 50, val 10, calib 30"
    assert "<details><summary>training config (config.yaml)</summary>" in run.text
    # nothing raw: no metric keys, no NaN / inf, no long decimals
    names = set(run.inspector.artefact.taxonomy.leaves)  # type names are words here, not keys
    leaked = [k for k in _keys(run.result.metrics, set()) - names if k in visible]
    assert not leaked, leaked
    assert not re.search(r"\b(nan|inf|infinity)\b", visible, re.IGNORECASE)
    assert not re.search(r"\d\.\d{5,}", visible)
    assert run.path.stat().st_size < 1_500_000


def test_report_of_the_main_job_layout_stays_under_3_mb(run, tmp_path, monkeypatch):
    """12 worst sites with the main job's views (5 targets, 5 references, 2 zooms, 460 px) of pure noise,
    the least compressible content there is: the gallery shrinks its thumbnails to fit."""
    # the small test model never saw this layout: judged as an artefact without a record of its inputs
    monkeypatch.delitem(run.inspector.artefact.manifest, "inputs", raising=False)
    rng = np.random.default_rng(1)
    with DatasetWriter(tmp_path / "noise", DatasetInfo(taxonomy="deeppcb")) as w:
        for i in range(12):
            ab = i % 2 == 1
            views = [View(role, k, rng.integers(0, 256, (460, 460), dtype=np.uint8))
                     for role, n in ((Role.TARGET, 5), (Role.REFERENCE, 5), (Role.ZOOM, 2)) for k in range(n)]
            w.add(Sample(f"n{i:02d}", views, is_abnormal=ab, defect_type=TAX.leaves[0] if ab else None,
                         metadata={"split": "test"}))
    result = evaluate_artefact(run.inspector, tmp_path / "noise", split="test")
    gallery = write_report(tmp_path / "report.html", result, run.inspector)
    size = (tmp_path / "report.html").stat().st_size
    assert gallery["missed"] == gallery["false_alarms"] == 6 and gallery["px"] >= MIN_PX
    assert size < 3_000_000, size
    page = _page((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert len(page.images["zoom 1"]) == 12 and len(page.images["attention 4"]) == 12


def test_why_sentences_when_automation_is_certified():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(1500, int), np.zeros(1500, int)]
    s = np.r_[rng.uniform(0.6, 1.0, 1500), rng.uniform(0.0, 0.4, 1500)]
    pol = TriagePolicy(abnormal_precision=0.99, normal_miss_rate=0.005).fit(s, y)
    art = SimpleNamespace(policy=pol, taxonomy=SimpleNamespace(leaves=["a", "b"]), notes=[])
    head, ab, no, types = why_automated(art, calib_sites=3000)
    assert head.startswith("The triage thresholds were calibrated on a held-out calibration split of 3,000 sites "
                           "(1,500 defects)")
    assert ab.startswith(f"Auto-abnormal is on: a site with p(abnormal) >= {pol.abnormal_threshold_:.4f}")
    assert "meets the 99 % target" in ab and no.startswith("Auto-normal is on") and "0.5 % target" in no
    assert "never decided automatically" in types
    rows = route_rows(pol.predict(s).route, y)
    assert rows[0]["route"] == "auto-abnormal" and rows[0]["realised on this split"].startswith(
        "precision 100 % (95 % CI 99.")
    assert rows[1]["realised on this split"].startswith("missed defects 0 % (95 % CI 0-0.")
    assert rows[2]["sites"] == "0" and rows[2]["realised on this split"] == "n/a (no site took this route)"
    nothing = why_automated(SimpleNamespace(policy=None, notes=["thresholds.json: no calibrated triage policy"]))
    assert nothing == ["Nothing is automated: every site goes to review (thresholds.json: no calibrated triage "
                       "policy)."]
    said = why_automated(SimpleNamespace(policy=None, notes=["x.json: no policy; every site goes to review"]))
    assert said == ["Nothing is automated: x.json: no policy; every site goes to review."]


def test_fixed_coverage_route_is_said_to_be_uncertified_in_report_and_reasons():
    """triage.normal_coverage reaches the policy; the report and each site's reason say it is not certified."""
    from seminspect.decision import AUTO_NORMAL
    from seminspect.inference.reasons import route_reasons
    from seminspect.training.calibration import make_policy
    from seminspect.training.config import ADCConfig

    cfg = ADCConfig.model_validate({"data": {"path": "x"}, "triage": {"normal_coverage": 0.55}})
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(600, int), np.zeros(600, int)]
    s = np.r_[rng.uniform(0.3, 1.0, 600), rng.uniform(0.0, 0.5, 600)]
    pol = make_policy(cfg).fit(s, y)
    assert pol.normal_coverage == 0.55 and pol.normal_threshold_ == pytest.approx(np.quantile(s[y == 0], 0.55))
    art = SimpleNamespace(policy=pol, taxonomy=SimpleNamespace(leaves=["a", "b"]), notes=[])
    no = why_automated(art, calib_sites=1200)[2]
    assert no.startswith("Auto-normal is on at a fixed coverage, not certified") and "55 % quantile" in no
    res = pol.predict(s)
    reasons = route_reasons(art, res, None)
    normal = [r for r, route in zip(reasons, res.route, strict=True) if route == AUTO_NORMAL]
    assert normal and all("55% quantile of calibration normals (fixed coverage, not certified)" in r for r in normal)


def test_evaluate_writes_the_report(run, tmp_path):
    evaluate_artefact(run.inspector, run.root / "ds", split="test", report=tmp_path / "eval.html")
    assert Path(tmp_path / "eval.html").read_text(encoding="utf-8").count('<div class="card">') == 12
