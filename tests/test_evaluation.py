"""Evaluation metrics (against brute force and sklearn), AUPRO (against a slow reference), report."""

from __future__ import annotations

import base64
import io
import time
from html.parser import HTMLParser

import numpy as np
import pytest
from sklearn import metrics as skm

from seminspect.data.taxonomy import Taxonomy
from seminspect.decision import TriageResult, clopper_pearson_interval, clopper_pearson_lower
from seminspect.evaluation.metrics import (
    MetricError,
    auroc,
    automation_metrics,
    average_precision,
    classification_metrics,
    recall_at_precision,
    tree_level_accuracy,
)
from seminspect.evaluation.pixel_metrics import aupro, pixel_auroc, pro_curve


# ----- recall at precision ---------------------------------------------------------------------
def _brute_recall_at_precision(y, s, target):
    best = (0.0, np.inf)
    for t in np.unique(s):
        sel = s >= t
        prec = y[sel].mean()
        rec = y[sel].sum() / y.sum()
        if prec >= target and (rec > best[0] or (rec == best[0] and t > best[1])):
            best = (rec, t)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_precision_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(600) < 0.5
    s = np.round(np.where(y, rng.normal(3, 1, 600), rng.normal(0, 1, 600)), 1)  # with ties
    r = recall_at_precision(y, s, precision=0.98, confidence=0.95)
    rec, thr = _brute_recall_at_precision(y, s, 0.98)
    assert r.recall == pytest.approx(rec) and r.threshold == thr
    sel = s >= r.threshold
    assert r.precision == pytest.approx(y[sel].mean()) and r.n_selected == sel.sum()
    k, n = int(y[sel].sum()), int(sel.sum())
    assert r.precision_lower_bound == pytest.approx(clopper_pearson_lower(k, n, 0.95))
    assert r.precision_ci == pytest.approx(clopper_pearson_interval(k, n, 0.95))
    assert r.recall_ci == pytest.approx(clopper_pearson_interval(k, int(y.sum()), 0.95))
    assert r.recall_ci[0] < r.recall < r.recall_ci[1]
    point95 = recall_at_precision(y, s, precision=0.95)
    bound = recall_at_precision(y, s, precision=0.95, criterion="bound")
    assert bound.recall > 0 and bound.precision_lower_bound >= 0.95 and bound.recall <= point95.recall
    assert set(r.as_dict()) >= {"recall", "threshold", "recall_ci", "precision_ci"}


def test_recall_at_precision_unreachable_and_errors():
    y = np.array([0, 1, 0, 1])
    r = recall_at_precision(y, [4.0, 3.0, 2.0, 1.0], precision=0.99)
    assert r.recall == 0.0 and r.threshold == np.inf
    with pytest.raises(MetricError, match="both classes"):
        recall_at_precision([1, 1], [0.1, 0.2])
    with pytest.raises(MetricError, match="0/1"):
        recall_at_precision([1, -1], [0.1, 0.2])


def test_auroc_and_ap_wrap_sklearn():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = rng.normal(size=300) + y
    assert auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s))


# ----- classification and the tree --------------------------------------------------------------
def test_classification_metrics():
    y = np.array([0, 0, 1, 1, 2, 2, -1])
    probs = np.array([
        [0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1],
        [0.5, 0.4, 0.1], [0.1, 0.2, 0.7], [0.4, 0.35, 0.25], [1.0, 0.0, 0.0],
    ])
    m = classification_metrics(y, probs=probs, labels=["a", "b", "c"], top_k=(1, 2))
    pred = probs[:6].argmax(1)
    assert m.accuracy == pytest.approx(3 / 6)
    assert m.macro_f1 == pytest.approx(skm.f1_score(y[:6], pred, average="macro"))
    assert m.per_class_f1["c"] == pytest.approx(skm.f1_score(y[:6], pred, average=None)[2])
    assert m.top_k_accuracy == {1: pytest.approx(0.5), 2: pytest.approx(4 / 6)}
    np.testing.assert_array_equal(m.confusion_matrix, [[1, 1, 0], [1, 1, 0], [1, 0, 1]])
    assert m.support == {"a": 2, "b": 2, "c": 2}
    assert list(m.per_class_frame()["class"]) == ["a", "b", "c"]
    assert m.as_dict()["confusion_matrix"][2] == [1, 0, 1]
    with pytest.raises(MetricError):
        classification_metrics(y, y_pred=np.array([0, 0, 1, 1, 5, 2, 0]), labels=["a", "b", "c"])


def test_tree_level_accuracy():
    tax = Taxonomy.builtin("sem_default")
    li = tax.leaf_index
    truth = [li("bridge"), li("bridge"), li("scratch"), li("residue"), -1]
    pred = [li("bridge"), li("open"), li("small_particle"), li("scratch"), li("crack")]
    acc = tree_level_accuracy(tax, truth, pred)
    assert list(acc) == ["group", "family", "type"]
    # bridge->open: same family; scratch->particle: same group only; residue->scratch: same group only
    assert acc == {"group": 1.0, "family": 0.5, "type": 0.25}


# ----- automation -------------------------------------------------------------------------------
def test_automation_metrics():
    route = np.array(["auto_abnormal"] * 4 + ["auto_normal"] * 3 + ["review"] * 3)
    is_abn = np.array([1, 1, 1, 0, 0, 0, 1, 1, 0, 1])
    labels = np.array([0, 1, 2, -1, -1, -1, 1, 2, -1, 0])
    decided = np.array([0, 2, -1, 1, -1, -1, -1, -1, -1, -1])
    res = TriageResult(route, decided, np.zeros((10, 3), np.int64), np.zeros((10, 3)), np.zeros(10))
    m = automation_metrics(res, is_abn, labels)
    assert m["binary_automation_rate"] == pytest.approx(0.7)
    assert m["auto_abnormal_error"] == pytest.approx(1 / 4) and m["auto_normal_error"] == pytest.approx(1 / 3)
    assert m["binary_error_rate"] == pytest.approx(2 / 7)
    # types: sample 0 right, sample 1 wrong (2 vs 1), sample 3 is a false alarm (not a type error)
    assert m["n_type_auto"] == 3 and m["type_error_rate"] == pytest.approx(1 / 2)
    assert m["type_automation_rate"] == pytest.approx(3 / 4)
    # fully automated: 3 auto-normal + 3 auto-abnormal with a type; wrong: 1 miss, sample 1, sample 3
    assert m["automation_rate"] == pytest.approx(0.6) and m["error_rate"] == pytest.approx(3 / 6)
    assert m["error_rate_upper"] > m["error_rate"]
    assert res.summary()["automation_rate"] == pytest.approx(m["automation_rate"])


# ----- anomaly maps -----------------------------------------------------------------------------
def _slow_aupro(masks, maps, limit):
    """Reference: loop over every threshold and every region (independent of the vectorised code)."""
    from skimage.measure import label

    regions = []
    for i in range(masks.shape[0]):
        lab = label(masks[i], connectivity=2)
        regions += [(i, lab == r) for r in range(1, lab.max() + 1)]
    neg = ~masks
    pts = [(0.0, 0.0)]
    for t in np.sort(np.unique(maps))[::-1]:
        above = maps >= t
        fpr = (above & neg).sum() / neg.sum()
        pro = np.mean([above[i][reg].mean() for i, reg in regions])
        pts.append((fpr, pro))
    x, y = np.array(pts).T
    area = 0.0
    for j in range(1, len(x)):
        if x[j] <= limit:
            area += (x[j] - x[j - 1]) * (y[j] + y[j - 1]) / 2
        else:
            y_lim = y[j - 1] + (y[j] - y[j - 1]) * (limit - x[j - 1]) / (x[j] - x[j - 1])
            area += (limit - x[j - 1]) * (y_lim + y[j - 1]) / 2
            break
    return area / limit


def _random_case(seed, n=4, size=24):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(n - 1):  # the last image is defect-free
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, size - 6, 2)
            masks[i, y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = True
    maps = np.round(masks * rng.uniform(0.2, 1.0, masks.shape) + rng.uniform(0, 0.8, masks.shape), 2)  # ties
    return masks, maps


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_matches_slow_reference(seed, limit):
    masks, maps = _random_case(seed)
    assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(_slow_aupro(masks, maps, limit), abs=1e-9)


def test_aupro_perfect_and_inverted_and_region_weighting():
    masks, _ = _random_case(3)
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0, abs=1e-9)
    assert aupro(masks, -masks.astype(float)) == pytest.approx(0.0, abs=1e-9)
    # two regions, one tiny and found, one large and missed: PRO weights regions, not pixels
    m = np.zeros((1, 20, 20), bool)
    m[0, 0:2, 0:2] = True  # 4 px, found
    m[0, 10:20, 10:20] = True  # 100 px, missed
    a = np.where(m, 0.0, 0.5)
    a[0, 0:2, 0:2] = 1.0
    fpr, pro, thr = pro_curve(m, a)
    assert pro[1] == pytest.approx(0.5) and fpr[1] == 0.0  # half the regions found at zero FPR
    assert aupro(m, a) == pytest.approx(0.5)


def test_pixel_metrics_fast_and_correct():
    rng = np.random.default_rng(0)
    masks = np.zeros((100, 128, 128), bool)
    for i in range(60):
        y, x = rng.integers(0, 110, 2)
        masks[i, y : y + rng.integers(2, 18), x : x + rng.integers(2, 18)] = True
    maps = (masks + rng.normal(0, 0.6, masks.shape)).astype(np.float32)
    t0 = time.perf_counter()
    value = aupro(masks, maps)
    elapsed = time.perf_counter() - t0
    assert 0.3 < value < 1.0
    assert elapsed < 8.0  # ~0.5 s on an idle core; generous for a loaded CI machine
    assert pixel_auroc(masks, maps) == pytest.approx(skm.roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    with pytest.raises(MetricError, match="no defect region"):
        aupro(np.zeros((2, 8, 8), bool), np.zeros((2, 8, 8)))
    with pytest.raises(MetricError, match="must both be"):
        pixel_auroc(masks, maps[:, :64])


# ----- HTML report ------------------------------------------------------------------------------
class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_html_report_is_valid_and_self_contained(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from PIL import Image

    from seminspect.evaluation.report import HtmlReport, ReportError

    rep = HtmlReport("Test <report>")
    rep.add_heading("Headline").add_text("line one\nline two & more\n\nsecond paragraph")
    rep.add_metrics({"recall": 0.93, "ci": [0.9, 0.95], "triage": {"automation_rate": 0.8}})
    rep.add_table(pd.DataFrame({"type": ["a", "b"], "f1": [0.9, 0.8]}), title="per type")
    rep.add_table([{"x": 1, "y": "u"}, {"x": 2, "y": "v"}])
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    rep.add_figure(fig, caption="a line")
    ramp = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    views = [np.full((32, 48), 200, np.uint8), ramp, np.zeros((16, 16), np.uint16)]
    rep.add_image_strip(views, ["target 0", "reference 0", "zoom 0"], title="worst error 1")
    rep.add_image_strip([np.random.default_rng(0).random((20, 20))], ["map"], vmin=0, vmax=2, cmap="inferno")
    path = rep.save(tmp_path / "out" / "report.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "Test &lt;report&gt;" in text
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert not checker.errors and not checker.stack
    assert len(checker.images) == 5
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    assert "http" not in text.replace("http-equiv", "")  # nothing external
    assert "automation_rate" in text and "line two &amp; more" in text
    strip = Image.open(io.BytesIO(base64.b64decode(checker.images[1].split(",", 1)[1])))
    assert strip.size == (48, 32) and np.asarray(strip).max() == 200  # uint8 kept on its absolute scale
    assert not list((tmp_path / "out").glob(".*"))
    with pytest.raises(ReportError):
        rep.add_image_strip([np.zeros((2, 2, 2))], ["bad"])


# ----- displays ---------------------------------------------------------------------------------
def test_displays_compute_once_plot_anywhere(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from seminspect.evaluation import (
        ConfusionMatrixDisplay,
        HtmlReport,
        LevelAccuracyDisplay,
        PRCurveDisplay,
        ROCCurveDisplay,
        TriageRouteDisplay,
    )

    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.5
    s = np.where(y, rng.normal(3, 1, 400), rng.normal(0, 1, 400))
    op = recall_at_precision(y, s, 0.95)
    pr = PRCurveDisplay.from_predictions(y, s, operating_point=op)
    assert pr.point["recall"] == pytest.approx(op.recall) and pr.point["precision"] == pytest.approx(op.precision)
    assert pr.target_precision == 0.95 and pr.average_precision == pytest.approx(average_precision(y, s))
    roc = ROCCurveDisplay.from_predictions(y, s, operating_point=op.threshold)
    assert roc.point["recall"] == pytest.approx(op.recall)
    fig, axes = plt.subplots(1, 5, figsize=(20, 4))
    pr.plot(axes[0])
    roc.plot(axes[1])
    assert pr.figure_ is fig and roc.ax_ is axes[1]
    cm = ConfusionMatrixDisplay.from_predictions([0, 1, 2, 2, -1], [0, 2, 2, 2, 0], ["a", "b", "c"])
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0], [0, 0, 1], [0, 0, 2]])
    cm.plot(axes[2])
    tax = Taxonomy.builtin("sem_default")
    LevelAccuracyDisplay.from_predictions(tax, [0, 1, 15], [0, 2, 15]).plot(axes[3])
    route = np.array(["auto_abnormal", "review", "auto_normal", "auto_normal"])
    res = TriageResult(route, np.full(4, -1), np.zeros((4, 0), np.int64), np.zeros((4, 0)), np.zeros(4))
    routes = TriageRouteDisplay.from_result(res, [1, 0, 0, 1])
    assert routes.counts["auto_normal"] == {"normal": 1, "abnormal": 1}
    routes.plot(axes[4])
    rep = HtmlReport("displays").add_figure(fig)
    assert "data:image/png;base64," in rep.to_html()
    single = PRCurveDisplay.from_predictions(y, s).plot()  # its own figure when no axis is given
    assert single.figure_ is not fig and single.point is None
    plt.close("all")
