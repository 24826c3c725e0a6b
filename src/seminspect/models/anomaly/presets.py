"""Named starting configurations, and the automatic choice of one from the data a detector is fitted on.

``preset: auto`` (or ``seminspect anomaly fit --set preset=auto``) looks at the normal samples
before fitting: whether their target views have a reference view of the same size, and their
sizes and aspect ratios. It fills in every setting the user did not give explicitly (pydantic's
``model_fields_set``: a key in the YAML file or a ``--set`` item always wins):

- a reference for every target view -> the die-to-die configuration (``configs/anomaly.yaml``'s
  reference conditioning, registration, fill_border; the image kept at native size up to 256 px);
- no reference -> the single-view configuration (``configs/anomaly_single_view.yaml``): no
  conditioning, no crop, the images kept at their **native resolution** (``image_size`` = the largest
  long side among the ``PROBE`` samples looked at, at most ``MAX_NATIVE`` px; the aspect kept, the
  short side padded by reflection), and layers 1, 2 of ``out_indices`` [1, 2, 3] -- reductions 8 and
  16 on MobileNetV2, anomalib's choice, which beat reductions 4 and 8 by 0.08 image AUROC on a real
  single-view set (issue [single-view]).
  Shrinking DeepPCB's 640 px boards to 256 px cost 24 image-AUROC points (0.671 vs 0.915): a defect of
  a few pixels is gone before the backbone sees it. Native size is measured for PatchCore only: the
  trained detectors (STPM, DRAEM, diffusion) keep at most ``TRAINED_MAX`` = 256 px (the preset's size
  before native size; their training time grows with the pixels: a 640 px board costs 6x a 256 px one).

Pure functions over samples and configs: no model code, nothing fitted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from seminspect.data.sample import Sample
from seminspect.models.anomaly.config import AnomalyConfig, validate_config

MAX_NATIVE = 1024  # single view: larger images are scaled down to this long side (px)
TRAINED_MAX = 256  # single view, a detector that trains a network: at most this long side (px)
SINGLE_VIEW: dict[str, Any] = {  # plus image_size: the native long side (see _choose)
    "conditioning": "none", "crop": None, "resize": "keep_aspect", "pad": "reflect",
    "out_indices": [1, 2, 3], "layers": [1, 2], "pool": 3, "sigma": 4.0, "registration": "off",
}
REFERENCE: dict[str, Any] = {
    "conditioning": "reference", "registration": "phase", "fill_border": True, "match_radius": 0,
    "out_indices": [1, 2, 3], "layers": [0, 1], "pool": 3,
}
PRESETS: dict[str, dict[str, Any]] = {"single_view": SINGLE_VIEW, "reference": REFERENCE}
PROBE = 32  # samples looked at to decide


def describe(samples: Sequence[Sample]) -> dict[str, Any]:
    """What :func:`choose` looks at: reference present, sizes and aspect of the first ``PROBE`` samples."""
    probe = list(samples[:PROBE])
    pairs = [(t, r) for s in probe for t, r in s.pairs()]
    with_ref = bool(pairs) and all(r is not None and r.image.shape == t.image.shape for t, r in pairs)
    shapes = sorted({t.image.shape for t, _ in pairs})
    aspects = [max(h, w) / max(1, min(h, w)) for h, w in shapes]
    return {"reference": with_ref, "shapes": shapes, "max_aspect": max(aspects, default=1.0),
            "long_side": max((max(s) for s in shapes), default=0)}


def choose(samples: Sequence[Sample], model: str = "patchcore") -> tuple[str, dict[str, Any]]:
    """The preset name and its settings for these samples and detector kind (see module docstring)."""
    return _choose(describe(samples), model)


def _choose(seen: dict[str, Any], model: str = "patchcore") -> tuple[str, dict[str, Any]]:
    if seen["reference"]:
        settings = dict(REFERENCE)
        if seen["long_side"] > 256 or len(seen["shapes"]) > 1 or seen["max_aspect"] > 1.0:
            settings.update({"crop": None, "image_size": 256, "resize": "keep_aspect", "pad": "reflect"})
        return "reference", settings
    return "single_view", {**SINGLE_VIEW, "image_size": native_size(seen["long_side"], model)}


def native_size(long_side: int, model: str = "patchcore") -> int:
    """The single-view ``image_size``: the images' own long side, at most ``MAX_NATIVE`` for PatchCore and
    ``TRAINED_MAX`` for a detector that trains a network (at least 32 px)."""
    return int(min(max(long_side, 32), MAX_NATIVE if model == "patchcore" else TRAINED_MAX))


def resolve(config: AnomalyConfig, samples: Sequence[Sample]) -> tuple[AnomalyConfig, dict[str, Any]]:
    """``config`` with the chosen preset filling every field the user did not set; and what was chosen."""
    seen = describe(samples)
    name, settings = _choose(seen, config.model)
    given = set(config.model_fields_set)
    applied = {k: v for k, v in settings.items() if k not in given}
    merged = {**config.model_dump(), **applied, "preset": "none"}
    out = validate_config(merged, f"preset {name!r} with your settings")
    return out, {"preset": name, "applied": applied, "kept_yours": sorted(given & set(settings)),
                 "seen": {k: v for k, v in seen.items() if k != "shapes"}}
