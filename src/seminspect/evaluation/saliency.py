"""Where the classifier looked: gradient saliency of p(abnormal) on the target views of one site.

    maps = target_saliency(inspector.artefact, sample, alignment)   # {index: (crop, crop) float32 in [0, 1]}

The site is prepared exactly as the inspector prepares it (the same alignment, the same crop and
resize); the ADC's abnormal logit is differentiated with respect to the input pixels, and the
absolute gradient of each target view is smoothed (a Gaussian of 1/32 of the window) and replaced by
its rank among all target pixels of the site (0..1), so the angles can be compared and a tint at
fixed quantiles marks the few per cent of the site the score depends on most. One forward and one
backward pass per site, without test-time augmentation: meant for the dozen sites a report shows,
not for a whole split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from seminspect.data.batch import collate
from seminspect.data.prepare import Alignment
from seminspect.data.sample import Role, Sample
from seminspect.models.adc_features import resize_batch


def target_saliency(art: Any, sample: Sample, alignment: dict[int, Alignment]) -> dict[int, np.ndarray]:
    """``{target index: (h, w) float32 in [0, 1]}`` on the prepared (cropped) target views of ``sample``
    (a pixel's value: the share of the site's target pixels with a smaller saliency)."""
    from scipy import ndimage

    prepared = art.prepare.apply(sample, alignment)
    batch = collate([prepared], None)
    native = batch.images.shape[-2:]
    model = art.model
    model.eval()
    with torch.enable_grad():
        images = resize_batch(batch.images, art.image.resize).detach().requires_grad_(True)
        out = model(images, batch.roles, batch.indices, batch.view_mask)
        (grad,) = torch.autograd.grad(out["abnormal_logit"].sum(), images)
    sal = grad.abs()[0, :, 0]  # (V, h, w)
    if sal.shape[-2:] != native:
        sal = F.interpolate(sal[:, None], size=tuple(native), mode="bilinear", align_corners=False)[:, 0]
    sal_np = sal.numpy().astype(np.float32)
    maps: dict[int, np.ndarray] = {}
    for slot, view in enumerate(prepared.views):
        if view.role != Role.TARGET:
            continue
        h, w = view.image.shape
        sigma = max(1.0, max(h, w) / 32)
        maps[view.index] = ndimage.gaussian_filter(sal_np[slot, :h, :w], sigma)
    return _rank_scale(maps)


def _rank_scale(maps: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Each pixel's saliency as its quantile among all target pixels of the site (0..1), so the tint marks
    the same share of the site whatever the gradient's magnitude; a flat map (no gradient) stays 0."""
    if not maps:
        return maps
    flat = np.concatenate([m.ravel() for m in maps.values()])
    if not np.isfinite(flat).all() or float(flat.max()) <= 0:
        return {k: np.zeros_like(m) for k, m in maps.items()}
    order = np.sort(flat)
    return {k: (np.searchsorted(order, m, side="right") / order.size).astype(np.float32) for k, m in maps.items()}
