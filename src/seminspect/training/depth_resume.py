"""Resuming depth training from ``last.pt``: what the file holds, and what it must match to be resumed.

``last.pt`` (written atomically every ``checkpoint_every`` steps and at each epoch end) holds the
generator, optimiser, schedule, RNG and loop state, the config it was written with, and a
fingerprint of the data: for the training and the validation sites, a content hash of their
ids, input images and depth maps (the data is in memory, so hashing it is cheap next to one epoch).

A run finding a ``last.pt`` resumes it only if config and data are those it was written with.
Anything else is refused with one line that names the file and what differs, before any work:
the run folder's ``best.pt`` and history belong to that checkpoint, so starting afresh over them
would silently replace them. ``--no-resume`` (``resume=False``) trains afresh on purpose; so does
a new output folder. A file that cannot be read (corrupt, truncated, or not a depth checkpoint)
is refused the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.training.depth_config import DepthConfigError
from seminspect.training.depth_data import DepthData
from seminspect.utils.io import atomic_path

#: keys every depth checkpoint holds (``disc``/``d_opt`` for pix2pix and ``ema`` with an EMA too)
CHECKPOINT_KEYS = ("config", "gen", "opt", "sched", "state", "torch_rng")
_REMEDY = "use a new output folder, or --no-resume to train afresh here"


def _digest(*arrays: np.ndarray | bytes) -> str:
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        if isinstance(a, bytes):
            h.update(a)
        else:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def data_fingerprint(train: DepthData, val: DepthData) -> dict[str, str]:
    """Content hashes of both splits: ``{"train sites", "train inputs", "train depth maps", "val ..."}``."""
    out: dict[str, str] = {}
    for name, d in (("train", train), ("val", val)):
        out[f"{name} sites"] = _digest("\n".join(d.ids).encode())
        out[f"{name} inputs"] = _digest(d.x.detach().cpu().numpy())
        out[f"{name} depth maps"] = _digest(d.y.detach().cpu().numpy())
    return out


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _differing(old: Any, new: dict[str, Any]) -> list[str]:
    a, b = _flat(old if isinstance(old, dict) else {}), _flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def read_last(path: Path) -> dict[str, Any]:
    """The contents of ``last.pt`` (``weights_only``: no code runs); one-line error if unreadable or foreign."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated, corrupt or pickled-object files
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise DepthConfigError(f"{path}: cannot read this checkpoint ({reason}); {_REMEDY}") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise DepthConfigError(
            f"{path}: not a depth training checkpoint (no {', '.join(missing)}; written by another command?); {_REMEDY}"
        )
    return ck


def check_last(ck: dict[str, Any], path: Path, config: dict[str, Any], data: dict[str, str]) -> None:
    """Refuse (one line naming ``path`` and what differs) a checkpoint from another config or other data."""
    keys = _differing(ck.get("config"), config)
    if keys:
        shown = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
        raise DepthConfigError(f"{path}: checkpoint was written with a different config ({shown}); {_REMEDY}")
    saved = ck.get("data")
    if not isinstance(saved, dict):
        raise DepthConfigError(
            f"{path}: checkpoint holds no fingerprint of its data (written by an older seminspect), so "
            f"resuming could mix two datasets; {_REMEDY}"
        )
    changed = [k for k in data if saved.get(k) != data[k]]
    if changed:
        raise DepthConfigError(
            f"{path}: the data changed since this checkpoint was written ({', '.join(changed)} differ); {_REMEDY}"
        )


def load_last(path: Path, config: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    """:func:`read_last` then :func:`check_last`: a checkpoint this run may resume."""
    ck = read_last(path)
    check_last(ck, path, config, data)
    return ck


def restore_last(ck: dict[str, Any], path: Path, modules: dict[str, Any]) -> None:
    """Load the state dicts of ``modules`` (``gen``, ``opt``, ``sched``, optionally ``ema``, ``disc``, ``d_opt``)."""
    try:
        for key, module in modules.items():
            if module is not None:
                module.load_state_dict(ck[key])
        torch.set_rng_state(ck["torch_rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise DepthConfigError(f"{path}: checkpoint does not fit this model ({reason}); {_REMEDY}") from None


def save_last(
    path: Path, config: dict[str, Any], data: dict[str, str], state: dict[str, Any], modules: dict[str, Any]
) -> None:
    """Write ``last.pt`` atomically: config, data fingerprint, loop state, RNG and every module's state dict."""
    ck: dict[str, Any] = {"config": config, "data": data, "state": state, "torch_rng": torch.get_rng_state()}
    for key, module in modules.items():
        if module is not None:
            ck[key] = module.state_dict()
    with atomic_path(path) as tmp:
        torch.save(ck, tmp)
