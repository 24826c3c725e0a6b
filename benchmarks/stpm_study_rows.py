"""The rows of the STPM study (``stpm_study.py``): each row's settings, the study's finding it tests, and the verdict.

``ROWS`` maps a row key to (label, config changes, dimension, the study's finding); keys starting with
``_`` in the changes are the benchmark's own (``_epochs``, ``_shift``, ``_mismatch``), the rest are
:class:`~seminspect.models.anomaly.AnomalyConfig` fields over ``BASE``. :func:`verdict` compares a measured
row with the study's finding on test image AUROC.
"""

from __future__ import annotations

# a misaligned row has "collapsed" when it kept less than this share of the 0 px row's margin over chance (0.5):
# relative, so that it means the same on data sets where the 0 px row itself is far from 1
COLLAPSE_SHARE = 0.5

BASE = dict(model="stpm", backbone="mobilenetv2", out_indices=[1, 2, 3], registration="phase", max_shift=4,
            match_radius=1, fill_border=False, batch_size=16, lr=1e-3, layer_weights=[1.0, 1.0, 1.0],
            stpm_mode="template", loss="l2", stpm_padding="reflect", sigma=0.0, map_dilation=0, seed=0)

# row key -> (label, config changes, dimension, the study's finding)
ROWS = {
    "base": ("template -> teacher, l2, reflect, layers 1/2/3 equal", {}, "reference row",
             "template -> teacher beat the reverse (AP 0.93 vs 0.79)"),
    "reverse": ("image -> teacher, template -> student", {"stpm_mode": "template_student"}, "conditioning",
                "template -> teacher beat the reverse (AP 0.93 vs 0.79)"),
    "huber": ("loss huber", {"loss": "huber"}, "loss",
              "Huber resisted up to 8 % mismatched training pairs (equal on clean pairs)"),
    "cosine": ("loss cosine (global)", {"loss": "cosine"}, "loss", "cosine named among the losses tried"),
    "zeros": ("zero padding", {"stpm_padding": "zeros"}, "padding",
              "reflect padding helped and suppressed false responses in dark regions"),
    "layer2": ("layer 2 main (weights 0.5 / 1 / 0.5)", {"layer_weights": [0.5, 1.0, 0.5]}, "layer mix",
               "layer 2 main with layer 1 as help and layer 3 added (layer 4 dropped) was best"),
    "seed1": ("reference row, seed 1", {"seed": 1}, "seed noise",
              "(none: a second seed of the reference row, to size the differences above)"),
    "zeros_long": ("zero padding, up to 32 epochs", {"stpm_padding": "zeros", "_epochs": "8,16,24,32"},
                   "combination", "(none: the padding the rows above chose on validation, trained longer)"),
    "cosine_zeros": ("loss cosine + zero padding, up to 24 epochs",
                     {"loss": "cosine", "stpm_padding": "zeros", "_epochs": "8,12,16,20,24"}, "combination",
                     "(none: the loss and padding the rows above chose on validation, together)"),
    "reverse_cosine_zeros": ("reverse (image -> teacher), loss cosine + zero padding, up to 24 epochs",
                             {"stpm_mode": "template_student", "loss": "cosine", "stpm_padding": "zeros",
                              "_epochs": "8,12,16,20,24"}, "conditioning",
                             "template -> teacher beat the reverse (AP 0.93 vs 0.79)"),
    "cosine_zeros_s1": ("loss cosine + zero padding, up to 24 epochs, seed 1",
                        {"loss": "cosine", "stpm_padding": "zeros", "_epochs": "8,12,16,20,24", "seed": 1},
                        "combination", "(none: the row above with a second seed)"),
    "reverse_cosine_zeros_s1": ("reverse, loss cosine + zero padding, up to 24 epochs, seed 1",
                                {"stpm_mode": "template_student", "loss": "cosine", "stpm_padding": "zeros",
                                 "_epochs": "8,12,16,20,24", "seed": 1}, "conditioning",
                                "template -> teacher beat the reverse (AP 0.93 vs 0.79)"),
    "reg_off": ("registration off (pairs as given, 0 px)", {"registration": "off", "_shift": 0}, "misalignment",
                "more than 4 px of misalignment collapsed the result"),
    "shift2": ("registration off, template shifted 2 px (x and y)", {"registration": "off", "_shift": 2},
               "misalignment", "more than 4 px of misalignment collapsed the result"),
    "shift4": ("registration off, template shifted 4 px (x and y)", {"registration": "off", "_shift": 4},
               "misalignment", "more than 4 px of misalignment collapsed the result"),
    "shift8": ("registration off, template shifted 8 px (x and y)", {"registration": "off", "_shift": 8},
               "misalignment", "more than 4 px of misalignment collapsed the result"),
    "mixed_lite0": ("student EfficientNet-Lite0 (teacher MobileNetV2)", {"student_backbone": "efficientnet_lite0"},
                    "architectures", "teacher and student of the same architecture beat mixed pairs"),
    "mixed_simple": ("student simple_cnn (teacher MobileNetV2)", {"student_backbone": "simple_cnn"},
                     "architectures", "teacher and student of the same architecture beat mixed pairs"),
    "mismatch4": ("4 % mismatched fit pairs, l2", {"_mismatch": 0.04}, "mismatched pairs",
                  "up to 4 % mismatched training pairs did no harm"),
    "mismatch8": ("8 % mismatched fit pairs, l2", {"_mismatch": 0.08}, "mismatched pairs",
                  "Huber resisted up to 8 % mismatched training pairs (l2 did not)"),
    "mismatch8_huber": ("8 % mismatched fit pairs, Huber", {"_mismatch": 0.08, "loss": "huber"},
                        "mismatched pairs", "Huber resisted up to 8 % mismatched training pairs (l2 did not)"),
    "teacher_ft": ("teacher fine-tuned on the fit crops (pseudo-defect heads, 2 epochs, lr 1e-4, layer 1 frozen)",
                   {"teacher_finetune_epochs": 2}, "teacher fine-tuning",
                   "fine-tuning the teacher on the product's images helped the deep layers (layer 1 frozen)"),
    "teacher_ft_rcz": ("reverse, cosine + zero padding, up to 24 epochs, teacher fine-tuned as above",
                       {"stpm_mode": "template_student", "loss": "cosine", "stpm_padding": "zeros",
                        "_epochs": "8,12,16,20,24", "teacher_finetune_epochs": 2}, "teacher fine-tuning",
                       "fine-tuning the teacher on the product's images helped the deep layers (layer 1 frozen)"),
    "lr3e-4": ("lr 3e-4", {"lr": 3e-4}, "learning rate", "(none: the issue asks for lr chosen on validation)"),
    "lr3e-3": ("lr 3e-3", {"lr": 3e-3}, "learning rate", "(none: the issue asks for lr chosen on validation)"),
}
ORDER = ("base", "seed1", "reverse", "huber", "cosine", "zeros", "layer2", "reg_off", "shift2", "shift4", "shift8",
         "mixed_lite0", "mixed_simple", "mismatch4", "mismatch8", "mismatch8_huber", "teacher_ft", "teacher_ft_rcz",
         "lr3e-4", "lr3e-3", "zeros_long",
         "cosine_zeros", "reverse_cosine_zeros", "cosine_zeros_s1", "reverse_cosine_zeros_s1")


def verdict(key: str, rows: dict) -> str:
    """One sentence: does our figure agree with the study's finding? (Compared on test image AUROC.)

    A difference no larger than the seed-to-seed difference of the reference row (row ``seed1``) is
    called neither agreement nor disagreement.
    """
    def auc(k: str) -> float | None:
        r = rows.get(k)
        return r["test_image_auroc"] if r and "test_image_auroc" in r else None

    if auc(key) is None:
        return "not measured"
    noise = abs(auc("base") - auc("seed1")) if auc("base") is not None and auc("seed1") is not None else 0.0

    def judged(d: float, agree: bool, what: str) -> str:
        if abs(d) <= noise:
            return f"neither: {what} {d:+.3f} image AUROC, within the seed-to-seed difference ({noise:.3f})"
        return f"{'agree' if agree else 'disagree'}: {what} {d:+.3f} image AUROC"

    twins = {"base": ("base", "reverse"), "reverse_cosine_zeros": ("cosine_zeros", "reverse_cosine_zeros"),
             "reverse_cosine_zeros_s1": ("cosine_zeros_s1", "reverse_cosine_zeros_s1")}
    if key in twins:
        f_key, r_key = twins[key]
        if auc(f_key) is None or auc(r_key) is None:
            return "not measured (its twin row is missing)"
        d = auc(f_key) - auc(r_key)
        return judged(d, d > 0, "template -> teacher over the reverse:")
    if key in ("shift2", "shift4", "shift8"):
        if auc("reg_off") is None:
            return "not measured (the 0 px row is missing)"
        d, px = auc(key) - auc("reg_off"), key[5:]
        collapsed = auc(key) - 0.5 < COLLAPSE_SHARE * (auc("reg_off") - 0.5)
        harmed = d < -noise
        what = f"{d:+.3f} image AUROC at {px} px against 0 px (to {auc(key):.3f})"
        if key == "shift8":
            if collapsed:
                return f"agree: {what}, a collapse (less than half the 0 px margin over chance kept)"
            return (f"disagree: {what}, a decline but no collapse (more than half the 0 px margin over chance kept)"
                    if harmed else f"disagree: {what}, no harm beyond the seed-to-seed difference ({noise:.3f})")
        if collapsed:
            return f"disagree: {what}, a collapse already at {px} px"
        return f"partly: no collapse, but {what}" if harmed else f"agree (no harm): {what}"
    if key in ("mixed_lite0", "mixed_simple"):
        if auc("base") is None:
            return "not measured (reference row missing)"
        return judged(auc(key) - auc("base"), auc(key) < auc("base"), "the mixed pair against the same architecture:")
    if key in ("mismatch4", "mismatch8_huber"):
        clean = "base" if key == "mismatch4" else "huber"
        if auc(clean) is None:
            return f"not measured (the clean row {clean} is missing)"
        d = auc(key) - auc(clean)
        what = f"against the same loss on clean pairs ({clean}):"
        return (f"agree (no harm): {what} {d:+.3f} image AUROC" if d >= -noise
                else f"disagree: {what} {d:+.3f} image AUROC")
    if key in ("teacher_ft", "teacher_ft_rcz"):
        plain = "base" if key == "teacher_ft" else "reverse_cosine_zeros"
        if auc(plain) is None:
            return f"not measured (the pretrained-teacher row {plain} is missing)"
        return judged(auc(key) - auc(plain), auc(key) > auc(plain),
                      f"the fine-tuned teacher against the pretrained one ({plain}):")
    if key == "mismatch8":
        if auc("base") is None:
            return "not measured (reference row missing)"
        d = auc(key) - auc("base")
        return (f"agree (l2 harmed): {d:+.3f} image AUROC against clean pairs" if d < -noise
                else f"disagree (l2 not harmed here): {d:+.3f} image AUROC against clean pairs")
    if auc("base") is None:
        return "not measured (reference row missing)"
    d = auc(key) - auc("base")
    if key == "cosine_zeros_s1" and auc("cosine_zeros") is not None:
        return f"{auc(key) - auc('cosine_zeros'):+.3f} image AUROC against the same settings with seed 0"
    if key == "seed1":
        return f"{d:+.3f} image AUROC from the seed alone: differences of this size say nothing"
    if key == "reverse":
        return judged(d, d < 0, "the reverse against the reference row:")
    if key == "zeros":
        return judged(d, d < 0, "zero padding against reflect:")
    if key == "layer2":
        return judged(d, d > 0, "layer 2 as the main layer against equal weights:")
    if key == "huber":
        return (f"not tested: the study's claim is about mismatched training pairs, which this split does not "
                f"contain; on clean pairs Huber gives {d:+.3f} image AUROC against l2")
    return f"{d:+.3f} image AUROC against the reference row (no study claim to compare)"
