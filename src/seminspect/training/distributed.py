"""Training under ``torchrun``: the process group, which rank does what, and small collective helpers.

    torchrun --standalone --nproc_per_node=2 -m seminspect train CONFIG

``torchrun`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (and the rendezvous address) for each
process; :func:`init` reads them and joins the process group. Without them (a plain ``seminspect
train``) nothing here does anything: :func:`is_main` is true, :func:`barrier` returns at once and
the reductions return their argument, so single-process code paths are unchanged.

Backends: ``gloo`` on CPU; where CUDA exists, ``cpu:gloo,cuda:nccl`` (CUDA tensors go over NCCL,
CPU tensors over gloo: the ADC trainer keeps its tensors on the CPU today) with the process pinned
to GPU ``LOCAL_RANK``. The group's timeout (``SEMINSPECT_DIST_TIMEOUT_S``, default 7200 s) bounds
how long the other ranks wait while rank 0 encodes features or reads a checkpoint.

Who writes: :func:`writes` is the one place that says so. Shared results (the artefact, metrics,
report, head and fine-tuning checkpoints) are written by global rank 0 only; the feature cache is
written by local rank 0 of each machine, so that it also works when machines share no disk.

Also here: the per-process thread count (:func:`default_threads`), the one-line error for a world
too large for the batch (:func:`check_share`), the DDP wrapper (:func:`wrap`) and collectives that
carry an error on one rank to every rank (:func:`on_main`, :func:`writers_first`) instead of leaving
the others waiting at a barrier.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from seminspect.errors import SeminspectError

T = TypeVar("T")
S = TypeVar("S", bound=Sequence[Any] | torch.Tensor)


class DistributedError(SeminspectError):
    """A distributed run that cannot work as asked (e.g. more processes than samples in a batch)."""


@dataclass(frozen=True)
class Launch:
    """What the launcher told this process (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def launch_env() -> Launch:
    """Rank, world size and local rank from the torchrun environment variables."""
    env = os.environ
    return Launch(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def available() -> bool:
    return torch.distributed.is_available()


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def init() -> bool:
    """Join the process group when launched by torchrun with ``WORLD_SIZE > 1``; idempotent.

    Returns whether training is distributed.
    """
    if active():
        return True
    launch = launch_env()
    if launch.world_size <= 1 or not available():
        return False
    if not torch.distributed.is_initialized():
        backend = "gloo"
        if torch.cuda.is_available() and torch.distributed.is_nccl_available():
            torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
            backend = "cpu:gloo,cuda:nccl"
        timeout = timedelta(seconds=float(os.environ.get("SEMINSPECT_DIST_TIMEOUT_S", 7200)))
        torch.distributed.init_process_group(backend=backend, timeout=timeout)
    return active()


def shutdown() -> None:
    """Leave the process group (a no-op when there is none)."""
    if available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def local_rank() -> int:
    return launch_env().local_rank if active() else 0


def is_main() -> bool:
    """The process that writes shared results and logs (global rank 0)."""
    return rank() == 0


def writes(kind: Literal["result", "cache"] = "result") -> bool:
    """Whether this process writes files of ``kind``: the one rule for which rank writes what.

    ``"result"``: artefact, metrics, history, report and checkpoints -- global rank 0 only.
    ``"cache"``: the feature cache -- local rank 0 of each machine (the cache may be node-local).
    """
    return local_rank() == 0 if kind == "cache" else is_main()


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.tolist()


def all_reduce_mean(value: float) -> float:
    """Mean of one number over all ranks."""
    return all_reduce_sum([value])[0] / world_size()


def default_threads() -> int:
    """Torch threads for one process: the CPUs this process may use divided by the processes on this machine.

    ``torchrun`` sets ``OMP_NUM_THREADS=1`` unless it is set; training replaces that with this share
    (at least 1) unless ``threads`` / ``--threads`` says otherwise.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    return max(1, cores // max(1, local))


def check_share(per_step: int, what: str) -> None:
    """One line error when a batch of ``per_step`` samples cannot give every rank at least one."""
    if world_size() > per_step:
        raise DistributedError(f"{world_size()} processes but {what} holds only {per_step} sample(s): every process "
                               f"needs at least one sample of each batch; use at most {per_step} processes "
                               "or a larger train.batch_size")


def _carry(fn: Callable[[], T], run_here: bool) -> tuple[T | None, BaseException | None]:
    """``fn()`` (when ``run_here``) and the exception it raised, if any."""
    if not run_here:
        return None, None
    try:
        return fn(), None
    except Exception as exc:
        return None, exc


def _message(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    text = str(exc) if isinstance(exc, SeminspectError) else f"{type(exc).__name__}: {exc}"
    return f"{text} (on rank {rank()})"


def _raise_any(messages: Sequence[str | None], mine: BaseException | None) -> None:
    """Re-raise this rank's own error, else the first other rank's as a :class:`DistributedError`."""
    if mine is not None:
        raise mine
    first = next((m for m in messages if m), None)
    if first is not None:
        raise DistributedError(first)


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 only, its result sent to every rank (e.g. reading a checkpoint once).

    Used for files only rank 0 has written: the other ranks need not see the same disk. An error
    raised by ``fn`` on rank 0 is raised on every rank (rank 0's message), so none waits for a result.
    """
    if not active():
        return fn()
    value, error = _carry(fn, is_main())
    box: list[Any] = [(value, _message(error))]
    torch.distributed.broadcast_object_list(box, src=0)
    _raise_any([box[0][1]], error)
    return box[0][0]


def writers_first(fn: Callable[[], T], kind: Literal["result", "cache"] = "cache") -> T:
    """``fn()`` on the ranks that write ``kind`` first, then on the others (which then read what was written).

    E.g. local rank 0 encodes and caches features while the other ranks of its machine wait, then
    they read the cache. An error on any writer is raised on every rank.
    """
    if not active():
        return fn()
    value, error = _carry(fn, writes(kind))
    _raise_any(gather(_message(error)), error)
    return value if writes(kind) else fn()  # type: ignore[return-value]


def gather(obj: T) -> list[T]:
    """``obj`` of every rank, in rank order (any picklable object)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def unshare(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The inverse of :func:`share` for arrays: ``parts[r]`` is rank ``r``'s share, back in the original order."""
    if len(parts) == 1:
        return np.asarray(parts[0])
    full = np.empty(sum(len(p) for p in parts), dtype=np.asarray(parts[0]).dtype)
    for r, p in enumerate(parts):
        full[r::len(parts)] = p
    return full


def gather_shares(part: np.ndarray, total: int) -> np.ndarray:
    """The whole of a batch of ``total`` values whose ranks hold the :func:`share` s, in the batch's order.

    ``part``: this rank's values (one per sample of its share), gathered as float64 tensors; ``part``
    itself on one process.
    """
    if not active():
        return np.asarray(part)
    w = world_size()
    longest = -(-total // w)
    buf = torch.zeros(longest, dtype=torch.float64)
    buf[:len(part)] = torch.as_tensor(np.asarray(part, dtype=np.float64))
    out = [torch.empty(longest, dtype=torch.float64) for _ in range(w)]
    torch.distributed.all_gather(out, buf)
    return unshare([o[:len(range(r, total, w))].numpy() for r, o in enumerate(out)])


def mean_parts(parts: dict[str, float]) -> dict[str, float]:
    """Every value of ``parts`` averaged over the ranks (the keys are the same on every rank)."""
    if not active():
        return parts
    keys = sorted(parts)
    return dict(zip(keys, (v / world_size() for v in all_reduce_sum([parts[k] for k in keys])), strict=True))


def average_batchnorm_statistics(module: torch.nn.Module) -> None:
    """Average the running mean and variance of ``module``'s BatchNorm layers over the ranks, so that
    statistics updated on each rank's share of a batch stay the same everywhere; nothing on one process."""
    if not active():
        return
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training and m.running_mean is not None:
            for t in (m.running_mean, m.running_var):
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
                t.div_(world_size())


def same_everywhere(module: torch.nn.Module) -> bool:
    """Whether every rank holds bit-identical parameters and buffers (digests compared); True on one process."""
    if not active():
        return True
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return len(set(gather(h.hexdigest()))) == 1


def reseed(base: int) -> None:
    """Give each rank its own seeded global torch RNG (dropout): ``base`` and the rank; nothing on one process.

    Derived from the epoch, not saved state, so a resumed run reseeds exactly as an uninterrupted one.
    """
    if active():
        torch.manual_seed(base * 1009 + rank())


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged over the ranks).

    ``find_unused_parameters``: a head may get no gradient from one rank's share of a batch (the
    per-level heads when the share holds no defect), which DDP must be told to expect.
    Buffers are not synchronised before each forward: they are BatchNorm statistics (frozen, or
    averaged after each step by :func:`average_batchnorm_statistics`) and taxonomy memberships,
    equal everywhere. Nothing happens on one process.
    """
    if not active():
        return module
    ddp = torch.nn.parallel.DistributedDataParallel
    # torch >= 2.13 names the option forward_sync_buffers (broadcast_buffers is deprecated there)
    new = "forward_sync_buffers" in inspect.signature(ddp).parameters
    sync = "forward_sync_buffers" if new else "broadcast_buffers"
    return ddp(module, find_unused_parameters=True, **{sync: False})


def share(items: S) -> S:
    """This rank's disjoint, deterministic share of ``items`` (every ``world_size``-th, from ``rank``).

    ``items``: anything sliceable (a list, a tensor of indices); itself on one process.
    """
    return items[rank()::world_size()] if active() else items
