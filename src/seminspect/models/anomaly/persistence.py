"""A saved anomaly detector on disk: ``config.json`` + ``weights.safetensors`` (no pickle), read with checks.

:func:`write_model` writes both files atomically; :func:`read_meta` and :func:`read_weights` read
them back, refusing a missing, corrupt or mismatched file with one line naming it. The estimator
(:mod:`.detector`) decides what goes into the metadata and rebuilds the model between the two reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seminspect.models.anomaly.features import AnomalyConfigError
from seminspect.utils.io import atomic_path, atomic_write_json

FORMAT = "seminspect-anomaly"
FORMAT_VERSION = 1


def write_model(directory: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model``'s state and ``meta`` (with the format tag) into ``directory``, atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(directory / "weights.safetensors") as tmp:
        save_file(state, str(tmp))
    atomic_write_json(directory / "config.json", {"format": FORMAT, "version": FORMAT_VERSION, **meta})
    return directory


def read_meta(directory: str | Path, has_backbone: bool) -> dict[str, Any]:
    """The checked ``config.json`` of a saved detector folder."""
    cfg_path = Path(directory) / "config.json"
    if not cfg_path.is_file():
        raise AnomalyConfigError(f"{cfg_path}: not found; not a saved anomaly model folder")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AnomalyConfigError(f"{cfg_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise AnomalyConfigError(f"{cfg_path}: not a seminspect anomaly model (format {found!r})")
    if meta.get("custom_backbone") and not has_backbone:
        raise AnomalyConfigError(f"{cfg_path}: fitted with a custom backbone module; pass it to load()")
    return meta


def read_weights(directory: str | Path, model: nn.Module) -> None:
    """Load ``weights.safetensors`` into ``model`` (a memory bank is sized from the file first)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(directory) / "weights.safetensors"
    if not weights.is_file():
        raise AnomalyConfigError(f"{weights}: not found")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:  # corrupt, truncated or not safetensors at all
        raise AnomalyConfigError(f"{weights}: not a readable safetensors file ({exc})") from None
    try:
        if isinstance(getattr(model, "bank", None), torch.Tensor):
            model.bank = torch.empty_like(state["bank"])
        model.load_state_dict(state)
    except KeyError as exc:
        raise AnomalyConfigError(f"{weights}: does not match the model in config.json (no tensor {exc})") from None
    except RuntimeError as exc:
        detail = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())[:300]
        raise AnomalyConfigError(f"{weights}: does not match the model in config.json ({detail})") from None
    model.eval()
