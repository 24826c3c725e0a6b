"""The service's settings: database, data root, upload store and request limits."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from seminspect.data.sample import MAX_VIEWS


@dataclass
class ServeConfig:
    """Everything ``create_app`` needs besides the artefact.

    ``data_root``: the only folder JSON requests may reference files under. ``store``: where uploaded
    views are kept (content-addressed by sha256); default ``<data_root>/.seminspect-uploads``.
    Limits: ``max_upload_bytes`` (a whole request), ``max_views`` (<= 15), ``max_pixels`` (one view),
    ``max_in_flight`` (concurrent inspections; more get 503). ``claim_minutes``: how long a reviewer
    holds a task. ``secret``: signs session cookies (random per process unless given).
    """

    db_url: str
    data_root: Path
    store: Path | None = None
    max_upload_bytes: int = 64 * 1024 * 1024
    max_views: int = MAX_VIEWS
    max_pixels: int = 4096 * 4096
    max_in_flight: int = 8
    claim_minutes: float = 10.0
    secret: str = field(default_factory=lambda: secrets.token_hex(32))

    def __post_init__(self) -> None:
        self.data_root = Path(self.data_root).resolve()
        self.store = Path(self.store).resolve() if self.store else self.data_root / ".seminspect-uploads"
        if not 1 <= self.max_views <= MAX_VIEWS:
            raise ValueError(f"max_views must be 1..{MAX_VIEWS}, got {self.max_views}")
