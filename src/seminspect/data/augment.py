"""Augmentation that keeps the views of a sample in step, plus resize / crop helpers.

:class:`Augment` draws ONE geometric transform per sample (horizontal / vertical flip, a
multiple of 90 degrees, a small integer shift with reflect padding) and applies it identically to
every view image, every view mask and the depth map, so targets stay registered with their
references and masks stay on their defects. Photometric changes (brightness, contrast, Gaussian
and Poisson-like shot noise) are drawn independently per view, because each SEM acquisition has its
own gain and noise; they touch images only (never masks or depth) and keep the dtype and range.

All randomness comes from a :class:`numpy.random.Generator`: ``Augment(seed=0)`` gives the same
sequence on every run, and ``aug(sample, rng=...)`` uses a caller's generator instead. Use it as
``SampleDataset(root, transform=Augment(...))``. With several DataLoader workers, give each worker
its own seed (e.g. from ``torch.utils.data.get_worker_info()``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from seminspect.data.sample import Role, Sample, View

__all__ = ["Augment", "GeometricOp", "center_crop_sample", "resize_sample"]


@dataclass(frozen=True)
class GeometricOp:
    """One geometric transform: flips, then ``k`` counter-clockwise 90-degree turns, then a shift.

    ``shift`` is ``(dy, dx)`` in pixels of the (rotated) image; content moves down/right for
    positive values, and the uncovered border is filled by reflection.
    """

    flip_h: bool = False
    flip_v: bool = False
    k: int = 0
    shift: tuple[int, int] = (0, 0)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Transform a 2-D array (image, mask or depth); dtype is kept."""
        out = array
        if self.flip_h:
            out = out[:, ::-1]
        if self.flip_v:
            out = out[::-1, :]
        if self.k % 4:
            out = np.rot90(out, self.k)
        dy, dx = self.shift
        if dy or dx:
            out = _shift_reflect(out, dy, dx)
        return np.ascontiguousarray(out)


def _shift_reflect(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    h, w = array.shape
    # Clamp so np.pad's reflect mode (which needs pad < size) always works on tiny images.
    dy = int(np.clip(dy, -(h - 1), h - 1))
    dx = int(np.clip(dx, -(w - 1), w - 1))
    padded = np.pad(array, ((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))), mode="reflect")
    y0 = max(-dy, 0)
    x0 = max(-dx, 0)
    return padded[y0 : y0 + h, x0 : x0 + w]


def _max_value(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0  # float images are in [0, 1]


class Augment:
    """View-synchronised geometric + per-view photometric augmentation: ``Augment(...)(sample) -> Sample``.

    Args:
        hflip, vflip: probability of a horizontal / vertical flip (0.5 each by default).
        rot90: draw a random multiple of 90 degrees. Non-square views swap height and width.
        max_shift: shifts are drawn uniformly in ``[-max_shift, max_shift]`` pixels per axis.
        brightness: additive offset drawn in ``[-brightness, brightness]`` x full range, per view.
        contrast: gain drawn in ``[1 - contrast, 1 + contrast]`` about the view's mean, per view.
        noise_std: Gaussian noise with a std drawn in ``[0, noise_std]`` x full range, per view.
        poisson_peak: if set, shot noise as if the brightest pixel collected about this many
            electrons (smaller = noisier), drawn per view; ``None`` disables it.
        p_photometric: probability that a view gets the photometric changes at all.
        shift_zooms: also shift zoom views by the same number of pixels. Off by default: a zoom
            view has a different pixel scale, so the same pixel shift would not be the same
            physical shift (zooms still get the same flips and rotations).
        seed: seed of the internal generator (deterministic sequence of draws).
    """

    def __init__(self, hflip: float = 0.5, vflip: float = 0.5, rot90: bool = True, max_shift: int = 4,
                 brightness: float = 0.05, contrast: float = 0.1, noise_std: float = 0.01,
                 poisson_peak: float | None = None, p_photometric: float = 0.8, shift_zooms: bool = False,
                 seed: int = 0) -> None:
        for name, p in (("hflip", hflip), ("vflip", vflip), ("p_photometric", p_photometric)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {p}")
        if max_shift < 0 or brightness < 0 or contrast < 0 or noise_std < 0:
            raise ValueError("max_shift, brightness, contrast and noise_std must be >= 0")
        if poisson_peak is not None and poisson_peak <= 0:
            raise ValueError("poisson_peak must be > 0 (or None)")
        self.hflip, self.vflip, self.rot90, self.max_shift = hflip, vflip, rot90, int(max_shift)
        self.brightness, self.contrast, self.noise_std = brightness, contrast, noise_std
        self.poisson_peak, self.p_photometric, self.shift_zooms = poisson_peak, p_photometric, shift_zooms
        self.rng = np.random.default_rng(seed)

    def draw_geometry(self, rng: np.random.Generator) -> GeometricOp:
        flip_h = bool(rng.random() < self.hflip)
        flip_v = bool(rng.random() < self.vflip)
        k = int(rng.integers(0, 4)) if self.rot90 else 0
        s = self.max_shift
        shift = (int(rng.integers(-s, s + 1)), int(rng.integers(-s, s + 1))) if s else (0, 0)
        return GeometricOp(flip_h, flip_v, k, shift)

    def photometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Per-view brightness / contrast / noise; returns the same dtype, clipped to its range."""
        if rng.random() >= self.p_photometric:
            return image
        top = _max_value(image.dtype)
        x = image.astype(np.float64) / top
        gain = rng.uniform(1.0 - self.contrast, 1.0 + self.contrast)
        offset = rng.uniform(-self.brightness, self.brightness)
        x = (x - x.mean()) * gain + x.mean() + offset
        if self.poisson_peak is not None:
            peak = self.poisson_peak * rng.uniform(0.5, 1.5)
            x = rng.poisson(np.clip(x, 0.0, 1.0) * peak) / peak
        if self.noise_std:
            x = x + rng.normal(0.0, rng.uniform(0.0, self.noise_std), size=x.shape)
        x = np.clip(x, 0.0, 1.0)
        if image.dtype in (np.uint8, np.uint16):
            return np.rint(x * top).astype(image.dtype)
        return x.astype(image.dtype)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = self.rng if rng is None else rng
        op = self.draw_geometry(rng)
        zoom_op = op if self.shift_zooms else replace(op, shift=(0, 0))
        views = []
        for v in sample.views:
            geo = zoom_op if v.role == Role.ZOOM else op
            views.append(View(role=v.role, index=v.index, image=self.photometric(geo.apply(v.image), rng),
                              mask=None if v.mask is None else geo.apply(v.mask), source=v.source))
        depth = None if sample.depth is None else op.apply(sample.depth)
        return replace(sample, views=views, depth=depth, metadata=dict(sample.metadata))

    def __repr__(self) -> str:
        return (f"Augment(hflip={self.hflip}, vflip={self.vflip}, rot90={self.rot90}, max_shift={self.max_shift}, "
                f"brightness={self.brightness}, contrast={self.contrast}, noise_std={self.noise_std}, "
                f"poisson_peak={self.poisson_peak}, p_photometric={self.p_photometric})")


def apply_to_sample(sample: Sample, fn, image_fn=None, mask_fn=None, depth_fn=None) -> Sample:
    """A new Sample with ``image_fn`` on each image, ``mask_fn`` on each mask, ``depth_fn`` on depth.

    Each defaults to ``fn``. The input sample is not modified.
    """
    image_fn = image_fn or fn
    mask_fn = mask_fn or fn
    depth_fn = depth_fn or fn
    views = [
        View(role=v.role, index=v.index, image=image_fn(v.image),
             mask=None if v.mask is None else mask_fn(v.mask), source=v.source)
        for v in sample.views
    ]
    depth = None if sample.depth is None else depth_fn(sample.depth)
    return replace(sample, views=views, depth=depth, metadata=dict(sample.metadata))


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(h), int(w)


def resize_sample(sample: Sample, size: int | tuple[int, int]) -> Sample:
    """Resize every view, mask and the depth map to ``size`` (``(H, W)`` or a side).

    Images: bilinear with anti-aliasing when shrinking, dtype kept; masks: nearest neighbour
    (stay bool); depth: bilinear, values (e.g. nm) unchanged.
    """
    from skimage.transform import resize

    out = _size(size)

    def image(im: np.ndarray) -> np.ndarray:
        if im.shape == out:
            return im.copy()
        r = resize(im.astype(np.float64), out, order=1, anti_aliasing=out[0] < im.shape[0] or out[1] < im.shape[1],
                   preserve_range=True)
        if im.dtype in (np.uint8, np.uint16):
            return np.clip(np.rint(r), 0, _max_value(im.dtype)).astype(im.dtype)
        return r.astype(im.dtype)

    def mask(m: np.ndarray) -> np.ndarray:
        if m.shape == out:
            return m.copy()
        return resize(m.astype(np.uint8), out, order=0, anti_aliasing=False, preserve_range=True) > 0

    return apply_to_sample(sample, image, mask_fn=mask, depth_fn=image)


def center_crop_sample(sample: Sample, size: int | tuple[int, int]) -> Sample:
    """Crop every view, mask and the depth map to their central ``size`` window.

    Arrays smaller than ``size`` along an axis are reflect-padded (symmetrically) first, so the
    result always has shape ``size``.
    """
    out = _size(size)

    def crop(a: np.ndarray) -> np.ndarray:
        h, w = a.shape
        ph, pw = max(out[0] - h, 0), max(out[1] - w, 0)
        if ph or pw:
            mode = "reflect" if min(h, w) > 1 and ph < h and pw < w else "edge"
            a = np.pad(a, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode=mode)
            h, w = a.shape
        y0, x0 = (h - out[0]) // 2, (w - out[1]) // 2
        return np.ascontiguousarray(a[y0 : y0 + out[0], x0 : x0 + out[1]])

    return apply_to_sample(sample, crop)
