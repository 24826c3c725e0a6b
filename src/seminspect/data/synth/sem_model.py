"""The SEM image model: height + material -> what each secondary-electron detector records.

Physics kept (each a few array operations, so a 460x460 view costs a few ms):

* **Tilt contrast** (secant law): SE yield rises with the local surface tilt ``theta``; we use
  ``1 + edge_gain * (1 - cos theta)``, so sidewalls and particle flanks are bright, flat tops and
  floors dark.
* **Material contrast**: a base yield per material (substrate darker than pattern) plus the
  injected yield changes (residue, stain, particle charging).
* **Trench shadowing**: SEs from a floor between tall walls are partly re-absorbed: yield falls
  with how far a pixel lies below its neighbourhood's mean height.
* **Detectors = views**: detector 0 is the in-lens (top) detector, symmetric; detectors 1-4 sit
  at azimuths 0, 90, 180, 270 deg with low take-off angles, so walls facing them are brighter and
  walls facing away darker (shadowing), as in a multi-detector review SEM.
* **Acquisition**: Gaussian beam blur, horizontal scan-line jitter, a low-frequency charging
  field and per-line brightness flicker, shot noise at a dose (electrons/px; normal
  approximation of Poisson with variance = mean), then gain/offset to grey levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from seminspect.data.synth.die import DieRender


@dataclass(frozen=True)
class Detector:
    """One SE detector. Gains are dimensionless; angles in degrees (image x right, y down)."""

    name: str
    azimuth_deg: float
    takeoff_deg: float
    edge_gain: float  # tilt (secant-law) contrast
    dir_gain: float  # asymmetric contrast of walls facing / facing away from the detector
    shadow: float  # trench shadowing strength


DETECTORS: tuple[Detector, ...] = (
    Detector("in-lens", 0.0, 90.0, 1.6, 0.0, 0.35),
    Detector("side-E", 0.0, 35.0, 1.2, 0.9, 0.55),
    Detector("side-S", 90.0, 40.0, 1.2, 0.8, 0.5),
    Detector("side-W", 180.0, 35.0, 1.2, 0.9, 0.55),
    Detector("side-N", 270.0, 40.0, 1.2, 0.8, 0.5),
)


@dataclass
class ShadingBasis:
    """Per-pixel terms shared by all detectors of one die render, ``(H, W)`` float32 each.

    ``base`` yield, ``edge`` = 1 - cos(tilt), ``nx``/``ny`` = outward wall normal components
    (x, y) times sin(tilt), ``trench`` = depth below the local mean height / line height.
    """

    base: np.ndarray
    edge: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    trench: np.ndarray

    def crop(self, y: int, x: int, h: int, w: int) -> ShadingBasis:
        sl = (slice(y, y + h), slice(x, x + w))
        return ShadingBasis(self.base[sl], self.edge[sl], self.nx[sl], self.ny[sl], self.trench[sl])


def shading_basis(die: DieRender, pixel_nm: float, line_height_nm: float, neighbourhood_px: int) -> ShadingBasis:
    """Tilt, wall orientation and trench depth of a rendered die (``pixel_nm`` converts px to nm)."""
    gy, gx = np.gradient(die.height, np.float32(pixel_nm))
    cos_t = 1.0 / np.sqrt(1.0 + gx * gx + gy * gy)
    size = max(3, int(neighbourhood_px) | 1)
    local = ndimage.uniform_filter(die.height, size=size)
    trench = np.clip((local - die.height) / np.float32(line_height_nm), 0.0, 1.0)
    # The outward normal of a wall points down-slope: -grad(h).
    return ShadingBasis(die.base_yield, (1.0 - cos_t).astype(np.float32), (-gx * cos_t).astype(np.float32),
                        (-gy * cos_t).astype(np.float32), trench.astype(np.float32))


def detector_signal(basis: ShadingBasis, det: Detector) -> np.ndarray:
    """Noise-free SE signal (yield, ~0.2-1.5) that detector ``det`` records, ``(H, W)`` float32."""
    az = np.deg2rad(det.azimuth_deg)
    gain = 1.0 + det.edge_gain * basis.edge
    if det.dir_gain:
        facing = basis.nx * np.float32(np.cos(az)) + basis.ny * np.float32(np.sin(az))
        gain += np.float32(det.dir_gain) * facing
    sig = basis.base * (1.0 - np.float32(det.shadow) * basis.trench) * gain
    return np.maximum(sig, 0.02, out=sig)


def subpixel_shift(image: np.ndarray, fy: float, fx: float) -> np.ndarray:
    """Bilinear sample of ``image`` at ``(y + fy, x + fx)``, 0 <= f < 1; output is 1 px smaller per axis."""
    a = image[:-1, :-1] * np.float32((1 - fy) * (1 - fx)) + image[:-1, 1:] * np.float32((1 - fy) * fx)
    a += image[1:, :-1] * np.float32(fy * (1 - fx)) + image[1:, 1:] * np.float32(fy * fx)
    return a


@dataclass
class Acquisition:
    """Per-view acquisition settings: dose (e-/px), blur (px), jitter (px sd), charging, grey mapping."""

    dose: float
    beam_sigma_px: float
    scan_jitter_px: float
    charging: float
    gain: float = 0.8
    offset: float = 0.05
    flicker: float = 0.01


def acquire(signal: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Record a noise-free ``(H, W)`` signal as an SEM image: float32 in [0, 1]."""
    h, w = signal.shape
    img = ndimage.gaussian_filter(signal, acq.beam_sigma_px, truncate=2.5) if acq.beam_sigma_px > 0 else signal.copy()
    if acq.scan_jitter_px > 0:
        # Each scan line lands slightly left or right: first-order shift along x.
        jit = ndimage.gaussian_filter1d(rng.normal(0, acq.scan_jitter_px, h), 1.0).astype(np.float32)
        dx = np.empty_like(img)
        np.subtract(img[:, 2:], img[:, :-2], out=dx[:, 1:-1])
        dx[:, 0] = dx[:, 1]
        dx[:, -1] = dx[:, -2]
        dx *= (0.5 * jit)[:, None]
        img += dx
    # Charging: a slow ramp plus a broad bump (the field builds up as the frame is scanned), and
    # per-line brightness flicker. Separable: two vectors, one outer product.
    yy = np.linspace(-1, 1, h)
    xx = np.linspace(-1, 1, w)
    a, b, c = rng.normal(0, acq.charging, 3)
    cy, cx = rng.uniform(-0.7, 0.7, 2)
    rows = 1.0 + a * yy + abs(c) * np.exp(-((yy - cy) ** 2) / 0.5) + rng.normal(0, acq.flicker, h)
    cols = 1.0 + 0.5 * b * xx + abs(c) * np.exp(-((xx - cx) ** 2) / 0.5)
    rows *= acq.dose / (1 + abs(c))
    # Shot noise: counts ~ Poisson(dose * yield), normal approximation (variance = mean).
    lam = img
    lam *= rows[:, None].astype(np.float32)
    lam *= cols[None, :].astype(np.float32)
    np.maximum(lam, 0, out=lam)
    noise = rng.standard_normal(lam.shape, dtype=np.float32)
    noise *= np.sqrt(lam)
    lam += noise
    lam *= np.float32(acq.gain / acq.dose)
    lam += np.float32(acq.offset)
    return np.clip(lam, 0.0, 1.0, out=lam)


def quantise(image: np.ndarray, bits: int) -> np.ndarray:
    """Float ``[0, 1]`` image to uint8 / uint16 (rounded)."""
    scale = np.float32(255.0 if bits == 8 else 65535.0)
    return (image * scale + np.float32(0.5)).astype(np.uint8 if bits == 8 else np.uint16)
