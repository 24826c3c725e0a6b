"""Checkpoints that survive a kill: model, optimiser, scheduler, epoch, RNG states, written atomically."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.errors import SeminspectError
from seminspect.utils.io import atomic_path


class CheckpointError(SeminspectError):
    """A checkpoint file is missing or unreadable."""


def rng_state() -> dict[str, Any]:
    """The global RNG states as tensors, numbers and tuples: loadable with ``weights_only=True``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))  # noqa: NPY002
    random.setstate(state["python"])


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, epoch: int = 0, extra: dict[str, Any] | None = None) -> None:
    """Write everything needed to resume after epoch ``epoch`` (completed) to ``path``, atomically.

    ``extra`` must hold tensors, numbers, strings and lists/tuples/dicts of them only: the file is
    read back with ``weights_only=True`` (no code runs when a checkpoint is loaded).
    """
    state = {
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "epoch": int(epoch),
        "rng": rng_state(),
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of a checkpoint file (``weights_only=True``: no code runs); CheckpointError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None


def restore_checkpoint(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                       scheduler: Any = None, restore_rng: bool = True) -> dict[str, Any]:
    """Restore what :func:`read_checkpoint` returned in place; returns ``{"epoch", "extra"}``."""
    model.load_state_dict(state["model"])
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return {"epoch": state["epoch"], "extra": state["extra"]}


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, restore_rng: bool = True) -> dict[str, Any]:
    """Read and restore a checkpoint in place; returns ``{"epoch", "extra"}``."""
    return restore_checkpoint(read_checkpoint(path), model, optimizer, scheduler, restore_rng)
