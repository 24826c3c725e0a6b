"""Small palette PNGs for the report: grey views, signed differences and saliency tints, with outlines.

    t = Thumb.grey(view_float01, size=128)            # longest side <= 128 px, 64 grey levels
    t.draw(t.fit_mask(mask), MASK)                    # outline of a defect mask (drawn on the border)
    t.box(top, left, h, w, src_shape, WINDOW)         # a rectangle given in the source image's pixels
    b64 = t.png_base64()

Every image is one byte per pixel (an indexed PNG with a short palette: 64 levels of the image's
own scale, or 4 x 32 tinted levels, then the outline colours), a third of an RGB thumbnail before
compression and less after, which keeps a report with a few hundred views within its size budget.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

LEVELS = 64  # grey / difference levels: 6 bits look the same at thumbnail size and compress a third better
MASK, WINDOW, SALIENT = 0, 1, 2  # outline colours, stored after each palette's own levels
_OUTLINES = [(0, 230, 0), (255, 215, 0), (0, 200, 255)]
TINT = (255, 110, 0)  # saliency tint (orange)
TINT_ALPHA = (0.0, 0.3, 0.55, 0.8)  # per saliency level (none, some, more, most)
TINT_CUTS = (0.9, 0.97, 0.995)  # saliency quantiles where the tint levels start (top 10 %, 3 %, 0.5 %)
TINT_LEVELS = 32  # grey levels within each tint level


def _palette(colours: np.ndarray) -> list[int]:
    """Flat RGB palette: ``colours`` (n, 3) then the outline colours (indices n + MASK, n + WINDOW, ...)."""
    rgb = np.clip(np.round(colours), 0, 255).astype(np.uint8)
    return [int(c) for c in rgb.reshape(-1)] + [c for col in _OUTLINES for c in col]


def grey_palette() -> list[int]:
    g = np.linspace(0, 255, LEVELS)
    return _palette(np.stack([g, g, g], 1))


def diverging_palette(cmap: str = "RdBu_r") -> list[int]:
    import matplotlib

    return _palette(matplotlib.colormaps[cmap](np.linspace(0, 1, LEVELS))[:, :3] * 255)


def tint_palette() -> list[int]:
    """4 blocks of :data:`TINT_LEVELS` grey levels, each blended further towards :data:`TINT`."""
    g = np.linspace(0, 255, TINT_LEVELS)
    blocks = [np.stack([(1 - a) * g + a * c for c in TINT], 1) for a in TINT_ALPHA]
    return _palette(np.concatenate(blocks))


def resize_float(image: np.ndarray, size: int) -> np.ndarray:
    """Area-average ``image`` so its longest side is at most ``size`` px (never enlarged)."""
    from PIL import Image

    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    scale = min(1.0, size / max(h, w))
    if scale >= 1.0:
        return img
    shape = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(shape, Image.Resampling.BOX), dtype=np.float32)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """A 1 px ring just outside a boolean mask (the masked pixels themselves stay visible; a mask
    touching the image border is closed by the border pixels it covers)."""
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    ring = ndimage.binary_dilation(m, structure=np.ones((3, 3), bool)) & ~m
    edge = np.zeros_like(m)
    edge[[0, -1], :], edge[:, [0, -1]] = m[[0, -1], :], m[:, [0, -1]]
    return ring | edge


@dataclass
class Thumb:
    """An indexed image (palette indices ``(h, w)`` uint8) with its palette."""

    index: np.ndarray
    palette: list[int]

    @classmethod
    def grey(cls, image01: np.ndarray, size: int) -> Thumb:
        """A grey view in [0, 1] (its absolute scale kept, so brightness differences stay visible)."""
        small = np.clip(resize_float(image01, size), 0, 1)
        return cls(np.round(small * (LEVELS - 1)).astype(np.uint8), grey_palette())

    @classmethod
    def signed(cls, diff: np.ndarray, size: int, scale: float) -> Thumb:
        """A signed difference on ``[-scale, scale]`` (blue negative, white zero, red positive)."""
        small = resize_float(diff, size) / max(float(scale), 1e-6)
        idx = np.round((np.clip(small, -1, 1) + 1) / 2 * (LEVELS - 1))
        return cls(idx.astype(np.uint8), diverging_palette())

    @classmethod
    def tinted(cls, image01: np.ndarray, saliency01: np.ndarray, size: int) -> Thumb:
        """A grey view tinted where ``saliency01`` (same shape, 0..1 quantiles) is high (see :data:`TINT_CUTS`)."""
        small = np.clip(resize_float(image01, size), 0, 1)
        sal = resize_float(saliency01, size)
        level = np.digitize(sal, TINT_CUTS)
        idx = level * TINT_LEVELS + np.round(small * (TINT_LEVELS - 1)).astype(np.int64)
        return cls(idx.astype(np.uint8), tint_palette())

    @property
    def shape(self) -> tuple[int, int]:
        return self.index.shape  # type: ignore[return-value]

    def fit_mask(self, mask: np.ndarray) -> np.ndarray:
        """A source-resolution mask at this thumbnail's size (a pixel is on if any source pixel is)."""
        m = np.asarray(mask, dtype=np.float32)
        if m.shape == self.shape:
            return m > 0
        from PIL import Image

        small = Image.fromarray(m).resize(self.shape[::-1], Image.Resampling.BOX)
        return np.asarray(small) > 0

    @property
    def _base(self) -> int:
        return len(self.palette) // 3 - len(_OUTLINES)

    def draw(self, mask: np.ndarray, colour: int, outline: bool = True) -> Thumb:
        """Paint ``mask`` (this thumbnail's size) or its outline in an outline colour (:data:`MASK`, ...)."""
        m = mask_outline(mask) if outline else np.asarray(mask, dtype=bool)
        self.index[m] = self._base + colour
        return self

    def box(self, top: int, left: int, height: int, width: int, src_shape: tuple[int, int], colour: int) -> Thumb:
        """Outline a rectangle given in source pixels (``src_shape`` = the source image's shape)."""
        h, w = self.shape
        sy, sx = h / src_shape[0], w / src_shape[1]
        colour = self._base + colour
        y0, x0 = int(np.clip(round(top * sy), 0, h - 1)), int(np.clip(round(left * sx), 0, w - 1))
        y1 = int(np.clip(round((top + height) * sy) - 1, y0, h - 1))
        x1 = int(np.clip(round((left + width) * sx) - 1, x0, w - 1))
        self.index[y0, x0:x1 + 1] = colour
        self.index[y1, x0:x1 + 1] = colour
        self.index[y0:y1 + 1, x0] = colour
        self.index[y0:y1 + 1, x1] = colour
        return self

    def png_bytes(self) -> bytes:
        from PIL import Image

        img = Image.fromarray(np.ascontiguousarray(self.index))
        img.putpalette(self.palette)  # an "L" image with a palette becomes "P"
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def png_base64(self) -> str:
        return base64.b64encode(self.png_bytes()).decode("ascii")
