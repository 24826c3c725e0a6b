"""Training checkpoints of the trained anomaly models (STPM, DRAEM, diffusion): safetensors + JSON, no pickle.

:func:`write_checkpoint` stores one module's weights and the optimiser's state (flattened to
tensors) atomically; :func:`read_checkpoint` restores both after :func:`changed_settings` has
checked that the checkpoint was written with the same training settings. A setting the checkpoint
does not hold (added to the config after it was written) counts as its default, so a new field
with a default that keeps the old behaviour never invalidates an old checkpoint.
:func:`resume_state` does all three for one checkpoint: read, check, restore. :func:`checked_step`
is the training loops' optimiser step, refused on a non-finite loss.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seminspect.models.anomaly.config import AnomalyConfig
from seminspect.models.anomaly.features import AnomalyConfigError
from seminspect.utils.io import atomic_path, atomic_write_json

# settings that change only the map post-processing or the threshold, never what a network learns
POSTPROCESSING = ("map_dilation", "sigma", "score_sigma", "score_dilation", "top_k", "centre_sigma",
                  "false_alarm_rate", "confidence", "view_combine")


def changed_settings(saved: dict[str, Any], now: dict[str, Any], ignore: Iterable[str]) -> list[str]:
    """Keys of ``now`` whose value differs from the checkpoint's (missing keys read as their default)."""
    skip = set(ignore)
    defaults = {k: f.get_default(call_default_factory=True) for k, f in AnomalyConfig.model_fields.items()}
    return [k for k in now if k not in skip and saved.get(k, defaults.get(k)) != now[k]]


def write_checkpoint(directory: Path, prefix: str, module: nn.Module, opt: torch.optim.Optimizer | None,
                     meta: dict[str, Any], stem: str = "checkpoint") -> None:
    """``<stem>.safetensors`` (``prefix.*`` weights, ``opt.*`` state unless ``opt`` is None) and ``<stem>.json``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"{prefix}.{k}": v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    for pid, st in (opt.state_dict()["state"] if opt is not None else {}).items():
        for name, val in st.items():
            tensors[f"opt.{pid}.{name}"] = torch.as_tensor(val).detach().contiguous().clone()
    with atomic_path(directory / f"{stem}.safetensors") as tmp:
        save_file(tensors, str(tmp))
    atomic_write_json(directory / f"{stem}.json", meta)


def read_meta(directory: Path, what: str, stem: str = "checkpoint") -> dict[str, Any]:
    """``<stem>.json``, or one line naming the folder when it cannot be read."""
    try:
        return json.loads((directory / f"{stem}.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError) as exc:
        raise AnomalyConfigError(f"{directory}: unreadable {what} checkpoint ({exc}); "
                                 "delete it to start over") from None


def read_checkpoint(directory: Path, prefix: str, module: nn.Module, opt: torch.optim.Optimizer | None, what: str,
                    stem: str = "checkpoint") -> None:
    """Load ``prefix.*`` weights into ``module`` and the ``opt.*`` state into ``opt`` (unless None)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(directory / f"{stem}.safetensors"))
        module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise AnomalyConfigError(f"{directory}: unreadable {what} checkpoint ({str(exc).splitlines()[0]}); "
                                 "delete it to start over") from None
    if opt is None:
        return
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def require_same_settings(directory: Path, saved: dict[str, Any], cfg: AnomalyConfig, ignore: Iterable[str],
                          what: str = "checkpoint") -> None:
    """Refuse, in one line, a checkpoint whose training settings differ from ``cfg``'s."""
    differs = changed_settings(saved, cfg.model_dump(), ignore)
    if differs:
        raise AnomalyConfigError(f"{directory}: {what} was written with different settings {differs}; "
                                 "use another checkpoint folder")


def resume_state(directory: Path, stem: str, prefix: str, module: nn.Module, opt: torch.optim.Optimizer | None,
                 cfg: AnomalyConfig, ignore: Iterable[str], what: str, tag: str) -> dict[str, Any]:
    """Read ``<stem>.json``, check its model ``tag`` and settings, restore weights and optimiser; the metadata."""
    meta = read_meta(directory, what, stem)
    if meta.get("model") != tag:
        raise AnomalyConfigError(f"{directory / (stem + '.json')}: not a {what} checkpoint; "
                                 "use another checkpoint folder")
    require_same_settings(directory, dict(meta.get("config", {})), cfg, ignore)
    read_checkpoint(directory, prefix, module, opt, what, stem=stem)
    return meta


def checked_step(opt: torch.optim.Optimizer, loss: torch.Tensor, what: str, epoch: int,
                 hint: str = "lower lr") -> float:
    """One optimiser step on ``loss``; returns its value. A non-finite loss stops training with one line naming
    ``what`` and the 1-based ``epoch`` (a step on it would make every weight NaN for good)."""
    if not torch.isfinite(loss):
        raise AnomalyConfigError(f"{what} diverged (non-finite loss) in epoch {epoch}; {hint}")
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())
