"""From samples to model-ready views: registration onto the target, crop / resize, denoise, batches.

:class:`ViewPreparer` turns each target view of a :class:`~seminspect.data.sample.Sample` (with
the reference view of the same index, registered onto it) into an :class:`Item` of float32
``(H, W)`` arrays the anomaly models take; :func:`batches` groups same-size items into tensors.
No model code: the estimator (:mod:`.detector`) drives these.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from seminspect.data.imageio import to_float
from seminspect.data.prepare import Alignment
from seminspect.data.sample import Role, Sample
from seminspect.models.anomaly.config import AnomalyConfig
from seminspect.models.anomaly.features import AnomalyConfigError


class AnomalyWarning(UserWarning):
    """Something the detector did that the user may not expect (e.g. a crop that discards most of an image)."""


@dataclass
class Item:
    """One target view ready for a model (and its registered reference and mask, preprocessed alike)."""

    sample_index: int
    target: np.ndarray  # (H, W) float32
    reference: np.ndarray | None
    mask: np.ndarray | None
    box: tuple[int, int, int, int] | None = None  # (y0, x0, h, w) of the image inside a letterboxed square
    native: tuple[int, int] | None = None  # the (H, W) maps return at (resize: keep_aspect)


def to_tensor(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """``(N, 1, H, W)`` float32 tensor of N ``(H, W)`` arrays."""
    return torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32, copy=False))


class ViewPreparer:
    """Registration, crop / resize and denoising of a sample's views, as ``config`` says."""

    def __init__(self, config: AnomalyConfig, needs_reference: bool):
        self.config = config
        self.needs_reference = needs_reference
        self._crop_warned: set[tuple[int, int]] = set()

    def crop(self, image: np.ndarray, is_mask: bool = False) -> np.ndarray:
        """The centre ``crop`` (falling back to the short side, with a warning) or the image itself."""
        cfg = self.config
        if cfg.crop is None:
            return image
        h, w = image.shape
        c = min(cfg.crop, h, w)
        if not is_mask and c < cfg.crop and c * c < 0.75 * h * w:
            self._warn_crop(h, w, c)
        y0, x0 = (h - c) // 2, (w - c) // 2
        return image[y0:y0 + c, x0:x0 + c]

    def preprocess(self, image: np.ndarray, is_mask: bool = False) -> np.ndarray:
        """Crop, then resize to the model's input as ``resize`` says (a letterboxed square for keep_aspect)."""
        cfg = self.config
        image = self.crop(image, is_mask)
        if cfg.image_size is not None and cfg.resize == "keep_aspect":
            return letterbox(image, cfg.image_size, cfg.pad, is_mask)[0]
        if cfg.image_size is not None and image.shape != (cfg.image_size, cfg.image_size):
            image = _resize(image, (cfg.image_size,) * 2, is_mask, smooth_up=False)
        return np.ascontiguousarray(image)

    def _warn_crop(self, h: int, w: int, c: int) -> None:
        """Say once per image size that ``crop`` fell back to the short side and discards much of the image."""
        if (h, w) in self._crop_warned:
            return
        self._crop_warned.add((h, w))
        warnings.warn(f"crop {self.config.crop}: a {h}x{w} (HxW) image is cut to its centre {c}x{c} (its short side), "
                      f"keeping {c * c / (h * w):.0%} of its area; set crop: null with resize: keep_aspect "
                      "(and image_size) to keep it whole (configs/anomaly_single_view.yaml)",
                      AnomalyWarning, stacklevel=4)

    def denoise(self, image: np.ndarray) -> np.ndarray:
        """Gaussian pre-smoothing (``denoise_sigma`` px; reflect borders) of an ``(H, W)`` float image."""
        if self.config.denoise_sigma <= 0:
            return image
        from scipy import ndimage

        return ndimage.gaussian_filter(image, self.config.denoise_sigma, mode="reflect").astype(np.float32)

    def items(self, index: int, sample: Sample, alignment: dict[int, Alignment] | None = None) -> Iterator[Item]:
        """One item per target view. ``alignment`` (from ``PrepareSample.align``, computed once per site
        by the inspector) replaces this model's own registration for the indices it holds."""
        from seminspect.data.registration import register_pair, shifted_reference

        cfg = self.config
        for tgt, ref in sample.pairs():
            t = to_float(tgt.image)
            r = None
            if ref is not None and ref.image.shape == tgt.image.shape:
                given = None if alignment is None or cfg.registration == "off" else alignment.get(tgt.index)
                if given is not None or cfg.registration != "off":
                    reg = (shifted_reference(ref.image, given.shift) if given is not None else
                           register_pair(t, ref.image, method=cfg.registration, max_shift=cfg.max_shift))
                    r = reg.warped
                    if cfg.fill_border:
                        # The uncovered strip holds reflected content the reference never showed there: on the
                        # virtual fab it put the highest normal score at the image border in 54 of 80 normal
                        # test sites (benchmarks/results/anomaly_fab.md). Target pixels there compare as equal.
                        r = np.where(reg.valid_mask(), r, t).astype(np.float32)
                else:
                    r = to_float(ref.image)
                if cfg.match_intensity:  # detector gain / brightness drift between the dies is not a defect
                    r = ((r - r.mean()) / (r.std() + 1e-6) * t.std() + t.mean()).astype(np.float32)
            if r is None and self.needs_reference:
                raise AnomalyConfigError(
                    f"sample {sample.sample_id!r}: target view {tgt.index} has no reference view of the same "
                    f"index and size, which this reference-conditioned model needs")
            box = native = None
            if cfg.resize == "keep_aspect" and cfg.image_size is not None:  # maps and masks at native size
                native = self.crop(t).shape
                box = letterbox_box(native, cfg.image_size)
                mask = None if tgt.mask is None else self.crop(tgt.mask.astype(bool), is_mask=True).copy()
            else:
                mask = None if tgt.mask is None else self.preprocess(tgt.mask.astype(np.float32), is_mask=True) > 0.5
            t = self.denoise(self.preprocess(t))
            yield Item(index, t, None if r is None else self.denoise(self.preprocess(r)), mask, box, native)


def _resize(image: np.ndarray, size: tuple[int, int], is_mask: bool = False, smooth_up: bool = True) -> np.ndarray:
    """``image`` resized to ``size`` (H, W): area averaging to shrink, bilinear to enlarge (``smooth_up``; else
    area, what ``resize: square`` always did, kept so saved models score as before), nearest for masks."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if is_mask:
        return F.interpolate(t, size=size, mode="nearest")[0, 0].numpy()
    if not smooth_up or (size[0] <= image.shape[0] and size[1] <= image.shape[1]):
        return F.interpolate(t, size=size, mode="area")[0, 0].numpy()
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def letterbox_box(shape: tuple[int, ...], size: int) -> tuple[int, int, int, int]:
    """Where an image of ``shape`` (H, W) lands in its ``size x size`` letterbox: ``(y0, x0, h, w)``."""
    h, w = shape
    s = size / max(h, w)
    nh, nw = max(1, min(size, round(h * s))), max(1, min(size, round(w * s)))
    return (size - nh) // 2, (size - nw) // 2, nh, nw


def letterbox(image: np.ndarray, size: int, pad: str = "reflect", is_mask: bool = False
              ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``image`` scaled so its long side is ``size``, padded to ``size x size``; and its box ``(y0, x0, h, w)``.

    ``pad``: ``reflect`` (mirror the image into the margin: no false edge for the features to see) or
    ``constant`` (the image's mean grey). Masks pad with False.
    """
    y0, x0, nh, nw = letterbox_box(image.shape, size)
    small = _resize(image, (nh, nw), is_mask) if (nh, nw) != image.shape else np.asarray(image, np.float32)
    widths = ((y0, size - nh - y0), (x0, size - nw - x0))
    if is_mask:
        out = np.pad(small, widths, mode="constant")
    elif pad == "reflect" and min(nh, nw) > 1:
        out = np.pad(small, widths, mode="symmetric")  # symmetric also works when the margin exceeds the image
    else:
        out = np.pad(small, widths, mode="constant", constant_values=float(small.mean()))
    return np.ascontiguousarray(out, dtype=np.float32), (y0, x0, nh, nw)


def unletterbox(image: np.ndarray, box: tuple[int, int, int, int], native: tuple[int, int]) -> np.ndarray:
    """The part of a letterboxed ``(size, size)`` map inside ``box``, resized back to ``native`` (H, W)."""
    y0, x0, h, w = box
    inner = image[y0:y0 + h, x0:x0 + w]
    if inner.shape == tuple(native):
        return np.ascontiguousarray(inner)
    t = torch.from_numpy(np.ascontiguousarray(inner, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(native), mode="bilinear", align_corners=False)[0, 0].numpy()


def batches(items: Iterator[Item], batch_size: int) -> Iterator[tuple[list[Item], torch.Tensor, torch.Tensor | None]]:
    """Group consecutive same-size items into model batches of at most ``batch_size``."""
    buf: list[Item] = []

    def flush() -> tuple[list[Item], torch.Tensor, torch.Tensor | None]:
        t = to_tensor([it.target for it in buf])
        r = None
        if all(it.reference is not None for it in buf):
            r = to_tensor([it.reference for it in buf])  # type: ignore[misc]
        return list(buf), t, r

    for it in items:
        if buf and (len(buf) >= batch_size or it.target.shape != buf[0].target.shape):
            yield flush()
            buf.clear()
        buf.append(it)
    if buf:
        yield flush()


def samples_of(data: Any) -> Iterator[tuple[int, Sample]]:
    """``(index, Sample)`` of a SampleDataset, a list of Samples, one Sample or a Batch."""
    from seminspect.data.batch import Batch

    if isinstance(data, Batch):
        yield from enumerate(batch_to_samples(data))
    elif isinstance(data, Sample):
        yield 0, data
    else:
        for i in range(len(data)):
            yield i, data[i]


def batch_to_samples(batch: Any) -> list[Sample]:
    """Target/reference views of a :class:`~seminspect.data.batch.Batch` back as Samples (float images)."""
    from seminspect.data.sample import View

    out = []
    for b in range(len(batch)):
        views = []
        for v in range(batch.roles.shape[1]):
            code = int(batch.roles[b, v])
            if code < 0 or code == Role.ZOOM.code:
                continue
            role = Role.TARGET if code == Role.TARGET.code else Role.REFERENCE
            mask = None
            if batch.masks is not None and role == Role.TARGET:
                mask = batch.masks[b, v, 0].numpy() > 0.5
            views.append(View(role, int(batch.indices[b, v]), batch.images[b, v, 0].numpy(), mask=mask))
        lab = int(batch.is_abnormal[b])
        out.append(Sample(batch.sample_ids[b], views, is_abnormal=None if lab < 0 else bool(lab),
                          metadata=batch.metadata[b] if batch.metadata else {}))
    return out
