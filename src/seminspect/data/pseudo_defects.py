"""Pseudo-defects: seeded synthetic anomalies painted into normal images, with their pixel masks.

Used to train reconstruction detectors (DRAEM) and to choose anomaly-detector settings from normal
images alone. Input: a normal float32 ``(H, W)`` image in [0, 1], any aspect ratio. Output: the
image with one anomaly and a ``(H, W)`` bool mask that is **exactly** the set of changed pixels
(a pixel whose change would be under ``min_change`` grey levels is left as it was).

Sources:

* ``perlin`` (DRAEM): a thresholded Perlin-noise region filled with a texture (another image, or
  this image shifted and flipped), intensity-jittered and blended with a random opacity.
* ``cutpaste`` (CutPaste): a rectangle of this image (or of ``texture``) pasted elsewhere,
  optionally rotated and rescaled, brightness-jittered; ``cutpaste_scar`` pastes a thin one.
* ``fab``: a foreign-material or surface defect of the virtual fab (particle, cluster, residue,
  stain, blister, scratch, crack, pit) injected into a flat die by the injectors of
  :mod:`seminspect.data.synth.defects` and rendered through the SEM model
  (:mod:`seminspect.data.synth.sem_model`, in-lens detector); its grey-level change is added to
  the image. Pattern defects (bridge, open, missing contact...) need the site's layout, which a
  real image does not have, so they are not among the sources.

Areas ``min_area`` / ``max_area`` are fractions of the image area (perlin and cutpaste regions;
fab defects take the size their injector draws and are redrawn when larger than ``max_area``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from seminspect.data.synth.defects import INJECTORS, DefectContext, defect_mask
from seminspect.data.synth.die import DieState, render
from seminspect.data.synth.layout import Layout, feature_scale
from seminspect.data.synth.sem_model import DETECTORS, detector_signal, shading_basis

SOURCES = ("perlin", "cutpaste", "cutpaste_scar", "fab")
FAB_TYPES = ("small_particle", "large_particle", "particle_cluster", "residue", "stain", "blister", "scratch",
             "crack", "pit_void")
_PIXEL_NM, _LINE_NM, _GREY_GAIN = 2.0, 60.0, 0.8  # the virtual fab's defaults (FabConfig, Acquisition)


class PseudoDefectError(ValueError):
    """Bad settings or a bad image given to the pseudo-defect generator."""


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise ``(H, W)`` float32, about in [-0.7, 0.7], ``res`` periods per axis."""
    h, w = shape
    ry, rx = res
    ys = np.arange(h, dtype=np.float32) * np.float32(ry / h)
    xs = np.arange(w, dtype=np.float32) * np.float32(rx / w)
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = ys - y0, xs - x0
    ang = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    gy, gx = np.sin(ang).astype(np.float32), np.cos(ang).astype(np.float32)

    def corner(a: int, b: int) -> np.ndarray:
        iy, ix = (y0 + a)[:, None], (x0 + b)[None, :]
        return gy[iy, ix] * (fy - a)[:, None] + gx[iy, ix] * (fx - b)[None, :]

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    ty, tx = fade(fy)[:, None], fade(fx)[None, :]
    top = corner(0, 0) + tx * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + tx * (corner(1, 1) - corner(1, 0))
    return (top + ty * (bottom - top)).astype(np.float32)


def _check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 2 or min(a.shape) < 8:
        raise PseudoDefectError(f"{what} must be a 2-D (H, W) array of at least 8 x 8 px, got shape {a.shape}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise PseudoDefectError(f"{what} must be finite float values in [0, 1] (got {a.min():.3g}..{a.max():.3g})")
    return a


def _jitter(tex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random contrast, a brightness shift of 0.08-0.3 either way, and sometimes inversion (so it differs)."""
    m = float(tex.mean())
    out = (tex - m) * np.float32(rng.uniform(0.5, 1.5)) + np.float32(m)
    out += np.float32(rng.choice([-1, 1]) * rng.uniform(0.08, 0.3))
    if rng.random() < 0.25:
        out = 1.0 - out
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _fit_texture(tex: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random ``shape`` window of ``tex`` (tiled by reflection when smaller), randomly flipped."""
    h, w = shape
    th, tw = tex.shape
    if th < h or tw < w:
        tex = np.pad(tex, ((0, max(h - th, 0)), (0, max(w - tw, 0))), mode="symmetric")
    y = int(rng.integers(0, tex.shape[0] - h + 1))
    x = int(rng.integers(0, tex.shape[1] - w + 1))
    out = tex[y:y + h, x:x + w]
    if rng.random() < 0.5:
        out = out[::-1]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class PseudoDefectGenerator:
    """Draws one synthetic anomaly per call; deterministic given ``seed`` (or the ``rng`` passed in).

    Args:
        sources: any of :data:`SOURCES`; one is drawn per anomaly (``weights`` or uniform).
        seed: seed of the generator's own stream, used when ``apply`` / ``batch`` get no ``rng``.
        min_area, max_area: region size as a fraction of the image area, 0 < min <= max <= 0.5.
        min_change: smallest grey change (of [0, 1]) that counts as changed; smaller ones are undone.
        fab_types: the virtual-fab injectors the ``fab`` source draws from (subset of :data:`FAB_TYPES`).
        weights: relative probability of each source (same order as ``sources``).
    """

    def __init__(self, sources: Sequence[str] = ("perlin", "cutpaste"), seed: int = 0, min_area: float = 0.005,
                 max_area: float = 0.08, min_change: float = 1.0 / 255, fab_types: Sequence[str] = FAB_TYPES,
                 weights: Sequence[float] | None = None) -> None:
        bad = [s for s in sources if s not in SOURCES]
        if not sources or bad:
            raise PseudoDefectError(f"unknown pseudo-defect source(s) {bad}; expected some of {SOURCES}")
        if not 0 < min_area <= max_area <= 0.5:
            raise PseudoDefectError(f"need 0 < min_area <= max_area <= 0.5, got {min_area}, {max_area}")
        bad_types = [t for t in fab_types if t not in FAB_TYPES]
        if bad_types or not fab_types:
            raise PseudoDefectError(f"unknown fab type(s) {bad_types}; expected some of {FAB_TYPES}")
        if weights is not None and (len(weights) != len(sources) or min(weights) < 0 or sum(weights) <= 0):
            raise PseudoDefectError("weights must be one non-negative number per source, not all zero")
        self.sources = tuple(sources)
        self.seed = int(seed)
        self.min_area, self.max_area = float(min_area), float(max_area)
        self.min_change = float(min_change)
        self.fab_types = tuple(fab_types)
        w = np.ones(len(sources)) if weights is None else np.asarray(weights, float)
        self.weights = w / w.sum()
        self.rng = np.random.default_rng(seed)

    # ----- public API ---------------------------------------------------------------------------
    def apply(self, image: np.ndarray, rng: np.random.Generator | None = None, texture: np.ndarray | None = None,
              source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One anomaly in a copy of ``image`` ``(H, W)`` [0, 1]: returns (image float32, mask bool ``(H, W)``).

        ``texture`` (any 2-D image in [0, 1]) feeds perlin and cutpaste; without it they take their
        texture from ``image`` itself. ``source`` forces a source instead of drawing one.
        """
        img = _check_image(image)
        if texture is not None:
            texture = _check_image(texture, "texture")
        rng = self.rng if rng is None else rng
        if source is not None and source not in SOURCES:
            raise PseudoDefectError(f"unknown pseudo-defect source {source!r}; expected one of {SOURCES}")
        src = source or str(self.sources[int(rng.choice(len(self.sources), p=self.weights))])
        min_px = max(4, int(0.25 * self.min_area * img.size)) if src != "fab" else 4
        for _ in range(20):
            out, region = getattr(self, f"_{src.replace('cutpaste_scar', 'scar')}")(img, rng, texture)
            out, mask = self._finish(img, out, region)
            if mask.sum() >= min_px:
                return out, mask
        # Nothing visible after 20 draws (e.g. a flat white image with a bright texture): force a dark shift.
        region = self._perlin_region(img.shape, rng)
        out = np.where(region, np.clip(img - 0.5, 0, 1) if img.mean() > 0.5 else np.clip(img + 0.5, 0, 1), img)
        return self._finish(img, out.astype(np.float32), region)

    def batch(self, images: Sequence[np.ndarray] | np.ndarray, rng: np.random.Generator | None = None,
              textures: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``apply`` to each of N same-shape images: returns ``(N, H, W)`` float32 and ``(N, H, W)`` bool.

        Without ``textures`` each image borrows the texture of another image of the batch (DRAEM's
        "texture from another image"), or its own when the batch holds one image.
        """
        imgs = [_check_image(im, f"image {i}") for i, im in enumerate(images)]
        if not imgs or len({im.shape for im in imgs}) != 1:
            raise PseudoDefectError("batch needs at least one image, all of one shape")
        rng = self.rng if rng is None else rng
        out = np.empty((len(imgs), *imgs[0].shape), np.float32)
        masks = np.empty(out.shape, bool)
        for i, im in enumerate(imgs):
            if textures is not None:
                tex = textures[i % len(textures)]
            else:
                tex = imgs[(i + 1 + int(rng.integers(len(imgs) - 1))) % len(imgs)] if len(imgs) > 1 else None
            out[i], masks[i] = self.apply(im, rng, tex)
        return out, masks

    # ----- sources ------------------------------------------------------------------------------
    def _finish(self, img: np.ndarray, out: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
        mask = region & (np.abs(out - img) >= self.min_change)
        return np.where(mask, out, img).astype(np.float32), mask

    def _area(self, rng: np.random.Generator) -> float:
        return float(np.exp(rng.uniform(np.log(self.min_area), np.log(self.max_area))))

    def _perlin_region(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """A Perlin blob set covering the drawn area fraction (threshold at that quantile of the noise)."""
        res = (2 ** int(rng.integers(0, 4)), 2 ** int(rng.integers(0, 4)))
        noise = perlin_noise(shape, (max(res[0], 1) * 2, max(res[1], 1) * 2), rng)
        if rng.random() < 0.5:  # DRAEM rotates its noise; a transpose-like mirror is enough for the shape mix
            noise = noise[::-1, ::-1]
        return noise >= np.quantile(noise, 1.0 - self._area(rng))

    def _texture(self, img: np.ndarray, rng: np.random.Generator, texture: np.ndarray | None) -> np.ndarray:
        if texture is not None:
            return _jitter(_fit_texture(texture, img.shape, rng), rng)
        h, w = img.shape
        shifted = np.roll(img, (int(rng.integers(h // 4, h - h // 4 + 1)), int(rng.integers(w // 4, w - w // 4 + 1))),
                          axis=(0, 1))
        return _jitter(_fit_texture(shifted, img.shape, rng), rng)

    def _perlin(self, img: np.ndarray, rng: np.random.Generator,
                texture: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        region = self._perlin_region(img.shape, rng)
        tex = self._texture(img, rng, texture)
        beta = np.float32(rng.uniform(0.0, 0.8))  # DRAEM's opacity range: the original shows through by beta
        out = np.where(region, beta * img + (1 - beta) * tex, img)
        return out, region

    def _paste(self, img: np.ndarray, rng: np.random.Generator, texture: np.ndarray | None, ph: int, pw: int,
               angle: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape
        src = img if texture is None else texture
        ph, pw = min(ph, src.shape[0]), min(pw, src.shape[1])
        y = int(rng.integers(0, src.shape[0] - ph + 1))
        x = int(rng.integers(0, src.shape[1] - pw + 1))
        patch = src[y:y + ph, x:x + pw]
        keep = np.ones(patch.shape, np.float32)
        if scale != 1.0:
            patch = ndimage.zoom(patch, scale, order=1, mode="nearest")
            keep = ndimage.zoom(keep, scale, order=0)
        if angle:
            patch = ndimage.rotate(patch, angle, reshape=True, order=1, mode="nearest")
            keep = ndimage.rotate(keep, angle, reshape=True, order=0, cval=0.0)
        patch, keep = patch[:h, :w], keep[:h, :w] > 0.5
        shift = np.float32(rng.choice([-1, 1]) * rng.uniform(0.05, 0.2))  # CutPaste's colour jitter
        patch = np.clip(patch + shift, 0, 1)
        ty = int(rng.integers(0, h - patch.shape[0] + 1))
        tx = int(rng.integers(0, w - patch.shape[1] + 1))
        out = img.copy()
        region = np.zeros(img.shape, bool)
        sl = (slice(ty, ty + patch.shape[0]), slice(tx, tx + patch.shape[1]))
        out[sl] = np.where(keep, patch, out[sl])
        region[sl] = keep
        return out, region

    def _cutpaste(self, img: np.ndarray, rng: np.random.Generator,
                  texture: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape
        area = self._area(rng) * h * w
        aspect = float(np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3))))
        ph = int(np.clip(round(np.sqrt(area * aspect)), 2, h - 1))
        pw = int(np.clip(round(area / ph), 2, w - 1))
        angle = float(rng.uniform(-45, 45)) if rng.random() < 0.5 else 0.0
        scale = float(rng.uniform(0.8, 1.25)) if rng.random() < 0.5 else 1.0
        return self._paste(img, rng, texture, ph, pw, angle, scale)

    def _scar(self, img: np.ndarray, rng: np.random.Generator,
              texture: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape
        s = min(h, w) / 256.0
        pw = int(np.clip(round(rng.uniform(2, 16) * s), 2, w - 1))
        ph = int(np.clip(round(rng.uniform(10, 25) * s * 2), 3, h - 1))
        return self._paste(img, rng, texture, ph, pw, float(rng.uniform(-45, 45)), 1.0)

    def _fab(self, img: np.ndarray, rng: np.random.Generator,
             texture: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape
        kind = self.fab_types[int(rng.integers(len(self.fab_types)))]
        side = max(h, w)  # the injectors assume a square die: inject on one, keep the image's part
        for _ in range(8):
            flat = DieState.from_binary(np.zeros((side, side), bool), np.zeros((side, side), np.float32))
            state = flat.copy()
            size = min(h, w)
            ctx = DefectContext(Layout("flat", flat.binary), float(rng.uniform(0.15, 0.85) * h),
                                float(rng.uniform(0.15, 0.85) * w), float(rng.uniform(0.3, 1.0)), rng,
                                feature_scale(size), size, _LINE_NM, _PIXEL_NM)
            INJECTORS[kind](state, ctx)
            before, after = (render(s, _LINE_NM, rounding_px=1.6, wall_px=2.2) for s in (flat, state))
            region = defect_mask(before, after, dilate=2)[:h, :w]
            if region.any() and region.mean() <= self.max_area:
                break
        signals = [detector_signal(shading_basis(r, _PIXEL_NM, _LINE_NM, 9), DETECTORS[0]) for r in (before, after)]
        delta = ndimage.gaussian_filter(np.float32(_GREY_GAIN) * (signals[1] - signals[0]), 0.9)[:h, :w] * region
        return img + delta.astype(np.float32), region
