"""Small helpers for the [trust] tests of configs, outputs and importers: a tiny dataset, the CLI entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

#: PatchCore on the tiny random backbone: fits a 32 px dataset in well under a second.
TINY_ANOMALY = {
    "model": "patchcore",
    "backbone": "tiny",
    "pretrained": False,
    "out_indices": [0, 1, 2],
    "layers": [0, 1],
    "max_bank_patches": 100,
    "conditioning": "reference",
    "sigma": 1.0,
}


def write_tiny_dataset(
    root: Path,
    n_normal: int = 8,
    n_abnormal: int = 0,
    test_normal: int = 3,
    test_abnormal: int = 0,
    shape: tuple[int, int] = (32, 32),
) -> Path:
    """Target + reference sites of ``shape``: ``n_*`` in split train, ``test_*`` in split test."""
    from seminspect.data.manifest import DatasetInfo, DatasetWriter
    from seminspect.data.sample import Role, Sample, View

    rng = np.random.default_rng(0)
    plan = (
        [("train", False)] * n_normal
        + [("train", True)] * n_abnormal
        + [("test", False)] * test_normal
        + [("test", True)] * test_abnormal
    )
    with DatasetWriter(root, DatasetInfo(taxonomy="deeppcb")) as w:
        for i, (split, abnormal) in enumerate(plan):
            base = (rng.random(shape) * 60 + 60).astype(np.uint8)
            target = base.copy()
            mask = None
            if abnormal:
                cy, cx = shape[0] // 2, shape[1] // 2
                target[cy - 3 : cy + 3, cx - 3 : cx + 3] = 250
                mask = np.zeros(shape, bool)
                mask[cy - 3 : cy + 3, cx - 3 : cx + 3] = True
            views = [View(Role.TARGET, 0, target, mask), View(Role.REFERENCE, 0, base)]
            w.add(
                Sample(
                    f"s{i:04d}",
                    views,
                    is_abnormal=abnormal,
                    defect_type="short" if abnormal else None,
                    metadata={"split": split},
                )
            )
    return root


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def run_main(args: list[str], capsys: Any, monkeypatch: Any) -> tuple[int, str, str]:
    """Run ``seminspect ARGS`` through the console entry point: ``(exit status, stdout, stderr)``."""
    from seminspect.cli import main

    monkeypatch.setattr(sys, "argv", ["seminspect", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(stderr: str) -> list[str]:
    """The ``error:`` lines of a run's stderr (rich may wrap nothing: errors print with soft_wrap)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def strict_json(path: Path) -> Any:
    """Parse ``path`` as standard JSON: ``NaN``, ``Infinity`` and ``-Infinity`` raise ``ValueError``."""

    def refuse(token: str) -> Any:
        raise ValueError(f"{path}: non-standard JSON constant {token}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
