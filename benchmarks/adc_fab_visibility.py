"""How visible are the defects of a virtual-fab dataset to a die-to-die comparison? (model-free diagnosis)

    nice -n 10 python benchmarks/adc_fab_visibility.py DATA [MAX_SITES] [--crop 128]

For up to MAX_SITES abnormal sites: the reference of every angle is aligned to its target with
the trainer's integer phase correlation (``integer_shift``), both are cut to the model's centre
crop, and the difference image ``d = target - reference`` (grey levels / 255) is compared inside
and outside the defect mask. Per site: defect area inside the crop (px), and the contrast-to-noise
ratio ``CNR = mean |d| over the mask / (1.4826 * MAD of d outside the mask)``, the best angle
counted. Prints medians and the share of sites whose defect is invisible in the crop (no mask
pixel) or drowned (CNR < 1). Written to find out why the old 192 px benchmark failed.
"""

from __future__ import annotations

import argparse

import numpy as np

from seminspect.data.dataset import SampleDataset
from seminspect.data.sample import Role
from seminspect.data.synth.layout import feature_scale
from seminspect.training.feature_cache import _centre_crop, _crop_at, integer_shift


def site_stats(sample, crop: int, max_shift: int = 8) -> tuple[float, float]:
    area, best = 0.0, 0.0
    for t in sample.targets:
        r = sample.view(Role.REFERENCE, t.index)
        if r is None or t.mask is None:
            continue
        big = crop + 2 * max_shift
        dy, dx = integer_shift(_centre_crop(t.image, big), _centre_crop(r.image, big), max_shift)
        tc = _centre_crop(t.image, crop).astype(np.float32) / 255.0
        rc = _crop_at(r.image, crop, dy, dx).astype(np.float32) / 255.0
        m = _centre_crop(t.mask, crop).astype(bool)
        area = max(area, float(m.sum()))
        if not m.any() or m.all():
            continue
        d = tc - rc
        out = d[~m]
        noise = 1.4826 * float(np.median(np.abs(out - np.median(out)))) + 1e-6
        best = max(best, float(np.abs(d[m]).mean()) / noise)
    return area, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("max_sites", nargs="?", type=int, default=150)
    ap.add_argument("--crop", type=int, default=128)
    a = ap.parse_args()
    ds = SampleDataset(a.data, roles=["target", "reference"])
    idx = [i for i, y in enumerate(ds.is_abnormal) if y == 1][: a.max_sites]
    areas, cnrs = [], []
    for i in idx:
        ar, c = site_stats(ds[i], a.crop)
        areas.append(ar)
        cnrs.append(c)
    areas_a, cnr_a = np.array(areas), np.array(cnrs)
    size = int(ds.info.extra.get("image_size", 0)) if getattr(ds, "info", None) else 0
    dose = ds.metadata_column("dose")[0]
    print(f"{a.data}: {len(idx)} abnormal sites, image {size or '?'} px (feature scale "
          f"{feature_scale(size) if size else float('nan'):.2f}), dose {dose} e-/px | defect area in the {a.crop} px "
          f"crop: median {np.median(areas_a):.0f} px, none in crop {np.mean(areas_a == 0):.1%} | best-angle CNR: "
          f"median {np.median(cnr_a):.2f}, < 1: {np.mean(cnr_a < 1):.1%}, < 2: {np.mean(cnr_a < 2):.1%}")


if __name__ == "__main__":
    main()
