"""The unit of work: one suspected defect site seen in several SEM views.

A :class:`Sample` holds 1 to 15 :class:`View` objects, each tagged with a role (target die,
reference die, zoom) and an index (detector / angle number). Images keep their on-disk dtype
(uint8 or uint16, shape ``(H, W)``) until :func:`seminspect.data.imageio.to_float` turns them
into float32 in [0, 1] -- once, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

MAX_VIEWS = 15
MAX_VIEWS_PER_ROLE = 5


class Role(StrEnum):
    """What a view shows. The integer code is used in :class:`~seminspect.data.batch.Batch`."""

    TARGET = "target"
    REFERENCE = "reference"
    ZOOM = "zoom"

    @property
    def code(self) -> int:
        return ROLE_CODES[self]

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"unknown view role {value!r}; expected one of {[r.value for r in cls]}") from None


ROLE_CODES: dict[Role, int] = {Role.TARGET: 0, Role.REFERENCE: 1, Role.ZOOM: 2}
PAD_ROLE = -1


@dataclass
class View:
    """One image of a site.

    ``image`` is ``(H, W)`` uint8, uint16 or float32; ``mask`` is an optional ``(H, W)`` bool defect
    mask in the same pixel grid. ``source`` names the file it came from (for error messages).
    """

    role: Role
    index: int
    image: np.ndarray
    mask: np.ndarray | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        self.role = Role.parse(self.role)
        if self.image.ndim != 2:
            raise ValueError(f"{self.source or 'view'}: image must be 2-D (H, W), got shape {self.image.shape}")
        if self.mask is not None and self.mask.shape != self.image.shape:
            raise ValueError(
                f"{self.source or 'view'}: mask shape {self.mask.shape} differs from image {self.image.shape}"
            )

    @property
    def key(self) -> tuple[int, int]:
        """Canonical sort key: role, then index."""
        return (self.role.code, self.index)


@dataclass
class Sample:
    """A suspected defect site.

    Attributes:
        sample_id: unique id within a dataset.
        views: 1..15 views, any role may be missing.
        is_abnormal: True (defect), False (normal) or None (unlabelled).
        defect_type: leaf name in the dataset's taxonomy, or None (normal or unknown type).
        depth: optional ``(H, W)`` float32 height/depth map in the data's depth units.
        metadata: free-form strings (lot, wafer, die, product, tool, split, ...).
    """

    sample_id: str
    views: list[View]
    is_abnormal: bool | None = None
    defect_type: str | None = None
    depth: np.ndarray | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.views:
            raise ValueError(f"sample {self.sample_id!r}: has no views")
        if len(self.views) > MAX_VIEWS:
            raise ValueError(f"sample {self.sample_id!r}: {len(self.views)} views, at most {MAX_VIEWS} allowed")
        keys = [v.key for v in self.views]
        if len(set(keys)) != len(keys):
            raise ValueError(f"sample {self.sample_id!r}: two views share the same role and index")
        self.views.sort(key=lambda v: v.key)

    def by_role(self, role: Role | str) -> list[View]:
        role = Role.parse(role)
        return [v for v in self.views if v.role == role]

    @property
    def targets(self) -> list[View]:
        return self.by_role(Role.TARGET)

    @property
    def references(self) -> list[View]:
        return self.by_role(Role.REFERENCE)

    @property
    def zooms(self) -> list[View]:
        return self.by_role(Role.ZOOM)

    def view(self, role: Role | str, index: int) -> View | None:
        role = Role.parse(role)
        return next((v for v in self.views if v.role == role and v.index == index), None)

    def pairs(self) -> list[tuple[View, View | None]]:
        """Each target view with the reference view of the same index (or None)."""
        return [(t, self.view(Role.REFERENCE, t.index)) for t in self.targets]

    @property
    def defect_mask(self) -> np.ndarray | None:
        """Union of the target views' masks, or None when no view has one."""
        masks = [v.mask for v in self.targets if v.mask is not None]
        if not masks:
            return None
        return np.logical_or.reduce(masks)
