"""Mask layouts of the virtual fab: Manhattan rectangles rasterised onto a square canvas.

Four families (the ``product`` of a sample): ``line_space`` (parallel lines, some with line
ends), ``contact_array`` (a grid of contact holes in a film), ``turns`` (nested L-shaped
wires) and ``logic`` (random Manhattan routing with jogs, contacts and pads). A layout is a
boolean ``(C, C)`` map of where pattern material stands plus the list of its rectangles, which
the defect injectors use to find a line, a gap or a contact near the site centre.
Coordinates are canvas pixels, half-open ``[y0, y1) x [x0, x1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seminspect.data.synth.config import PATTERN_FAMILIES


@dataclass
class Feature:
    """One drawn rectangle. ``kind``: ``line``, ``contact`` (raised square), ``hole`` (opening), ``pad``."""

    y0: int
    x0: int
    y1: int
    x1: int
    kind: str = "line"

    @property
    def horizontal(self) -> bool:
        return (self.x1 - self.x0) >= (self.y1 - self.y0)

    @property
    def width(self) -> int:
        """Short side, px."""
        return min(self.y1 - self.y0, self.x1 - self.x0)

    @property
    def length(self) -> int:
        return max(self.y1 - self.y0, self.x1 - self.x0)

    def distance(self, cy: float, cx: float) -> float:
        """Distance (px) from a point to the rectangle (0 inside)."""
        dy = max(self.y0 - cy, 0.0, cy - (self.y1 - 1))
        dx = max(self.x0 - cx, 0.0, cx - (self.x1 - 1))
        return float(np.hypot(dy, dx))

    def transposed(self) -> Feature:
        return Feature(self.x0, self.y0, self.x1, self.y1, self.kind)

    def flipped(self, size: int, axis: int) -> Feature:
        if axis == 0:
            return Feature(size - self.y1, self.x0, size - self.y0, self.x1, self.kind)
        return Feature(self.y0, size - self.x1, self.y1, size - self.x0, self.kind)


@dataclass
class Layout:
    """A rasterised layout.

    Attributes:
        family: pattern family name.
        binary: ``(C, C)`` bool, True where pattern material stands (film for contact arrays).
        features: drawn rectangles (holes for contact arrays).
        pitch: feature pitch, px.
        line_width: nominal line / contact width, px.
        positive: False when the features are openings in a film (contact holes).
    """

    family: str
    binary: np.ndarray
    features: list[Feature] = field(default_factory=list)
    pitch: float = 0.0
    line_width: float = 0.0
    positive: bool = True

    @property
    def size(self) -> int:
        return int(self.binary.shape[0])

    def nearest(self, cy: float, cx: float, kinds: tuple[str, ...] = ("line",), min_length: int = 0,
                rng: np.random.Generator | None = None) -> Feature | None:
        """The feature of one of ``kinds`` nearest to ``(cy, cx)`` (ties broken at random)."""
        cands = [f for f in self.features if f.kind in kinds and f.length >= min_length]
        if not cands:
            return None
        d = np.array([f.distance(cy, cx) for f in cands])
        if rng is not None:
            d = d + rng.uniform(0, 0.5, len(d))
        return cands[int(np.argmin(d))]


def feature_scale(image_size: int) -> float:
    """Feature sizes follow the image size (so small test images still hold a few lines)."""
    return float(np.clip(image_size / 460.0, 0.4, 2.0))


def make_layout(family: str, canvas: int, scale: float, rng: np.random.Generator) -> Layout:
    """Draw a random layout of ``family`` on a ``canvas`` x ``canvas`` grid."""
    if family not in PATTERN_FAMILIES:
        raise ValueError(f"unknown pattern family {family!r}; expected one of {PATTERN_FAMILIES}")
    layout = _BUILDERS[family](canvas, scale, rng)
    layout.binary = _rasterise(layout, canvas)
    return layout


def _rasterise(layout: Layout, canvas: int) -> np.ndarray:
    binary = np.zeros((canvas, canvas), dtype=bool)
    for f in layout.features:
        binary[max(f.y0, 0):max(f.y1, 0), max(f.x0, 0):max(f.x1, 0)] = True
    return binary if layout.positive else ~binary


def _dihedral(features: list[Feature], canvas: int, rng: np.random.Generator, flips: bool) -> list[Feature]:
    """Random transpose (and flips) so layouts come in every orientation."""
    if rng.random() < 0.5:
        features = [f.transposed() for f in features]
    if flips:
        for axis in (0, 1):
            if rng.random() < 0.5:
                features = [f.flipped(canvas, axis) for f in features]
    return features


def _pitch_width(scale: float, rng: np.random.Generator, lo: float, hi: float,
                 duty: tuple[float, float]) -> tuple[int, int]:
    pitch = max(6, int(round(rng.uniform(lo, hi) * scale)))
    width = int(np.clip(round(pitch * rng.uniform(*duty)), 3, pitch - 3))
    return pitch, width


def _line_space(canvas: int, scale: float, rng: np.random.Generator) -> Layout:
    pitch, lw = _pitch_width(scale, rng, 22, 46, (0.38, 0.6))
    feats: list[Feature] = []
    for y in range(int(rng.integers(0, pitch)) - pitch, canvas + pitch, pitch):
        r = rng.random()
        if r < 0.2:  # a tip-to-tip line-end gap, as in real comb / line-end structures
            gap = int(round(rng.uniform(0.8, 2.0) * pitch))
            x = int(rng.integers(0, canvas))
            feats += [Feature(y, -pitch, y + lw, x, "line"), Feature(y, x + gap, y + lw, canvas + pitch, "line")]
        elif r < 0.3:  # the line ends inside the field
            x = int(rng.integers(canvas // 4, canvas))
            feats.append(Feature(y, -pitch, y + lw, x, "line"))
        else:
            feats.append(Feature(y, -pitch, y + lw, canvas + pitch, "line"))
    feats = _dihedral(feats, canvas, rng, flips=True)
    return Layout("line_space", np.zeros(0), feats, pitch, lw)


def _contact_array(canvas: int, scale: float, rng: np.random.Generator) -> Layout:
    pitch, a = _pitch_width(scale, rng, 24, 42, (0.4, 0.55))
    stagger = rng.random() < 0.3
    feats = []
    oy, ox = rng.integers(0, pitch, 2)
    for i, y in enumerate(range(int(oy) - pitch, canvas + pitch, pitch)):
        shift = pitch // 2 if (stagger and i % 2) else 0
        for x in range(int(ox) - pitch + shift, canvas + pitch, pitch):
            feats.append(Feature(y, x, y + a, x + a, "hole"))
    return Layout("contact_array", np.zeros(0), feats, pitch, a, positive=False)


def _turns(canvas: int, scale: float, rng: np.random.Generator) -> Layout:
    pitch, lw = _pitch_width(scale, rng, 24, 46, (0.35, 0.55))
    cy, cx = (rng.uniform(0.15, 0.6, 2) * canvas).astype(int)
    k_max = int(canvas / pitch) + 2
    feats = []
    for k in range(-k_max, k_max + 1):
        # Wire k comes down at x, turns at y and runs right: corners step down-left, so wires nest.
        y, x = cy + k * pitch, cx - k * pitch
        feats.append(Feature(-pitch, x, y + lw, x + lw, "line"))  # vertical arm
        feats.append(Feature(y, x, y + lw, canvas + pitch, "line"))  # horizontal arm
    feats = _dihedral(feats, canvas, rng, flips=True)
    return Layout("turns", np.zeros(0), feats, pitch, lw)


def _logic(canvas: int, scale: float, rng: np.random.Generator) -> Layout:
    pitch, lw = _pitch_width(scale, rng, 26, 48, (0.35, 0.5))
    feats: list[Feature] = []
    tracks = list(range(int(rng.integers(0, pitch)) - pitch, canvas + pitch, pitch))
    for ti, y in enumerate(tracks):
        x = int(rng.integers(-3 * pitch, 0))
        while x < canvas + pitch:
            length = int(rng.uniform(2, 9) * pitch)
            feats.append(Feature(y, x, y + lw, x + length, "line"))
            if rng.random() < 0.3 and 0 < ti < len(tracks) - 1:  # a jog to the next track: an L / Z shape
                step = int(rng.choice([-1, 1]))
                y2 = tracks[ti + step]
                jx = x + length - lw if rng.random() < 0.5 else x
                feats.append(Feature(min(y, y2), jx, max(y, y2) + lw, jx + lw, "line"))
            gap = int(rng.uniform(0.8, 3.5) * pitch)
            if gap >= 2 * pitch and rng.random() < 0.6:  # a contact / via landing in the gap
                c = max(3, int(round(lw * rng.uniform(1.0, 1.3))))
                cx = x + length + gap // 2 - c // 2
                feats.append(Feature(y + lw // 2 - c // 2, cx, y + lw // 2 - c // 2 + c, cx + c, "contact"))
            x += length + gap
    if rng.random() < 0.4:  # a landing pad
        py, px = (rng.uniform(0, 0.8, 2) * canvas).astype(int)
        s = int(3 * pitch)
        feats.append(Feature(py, px, py + s, px + s // 2 * 3, "pad"))
    feats = _dihedral(feats, canvas, rng, flips=False)
    return Layout("logic", np.zeros(0), feats, pitch, lw)


_BUILDERS = {"line_space": _line_space, "contact_array": _contact_array, "turns": _turns, "logic": _logic}
