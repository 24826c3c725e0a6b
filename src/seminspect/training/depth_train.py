"""Depth training runs: one U-Net (L1 alone, or pix2pix: L1 + lambda * GAN), or an ensemble of them.

Data: every site is ``x (C, H, W)`` float32 in [0, 1] (C acquisitions of one view, stacked as
channels) and ``y (H, W)`` float32 depth in the data's units (:mod:`seminspect.training.depth_data`).

:func:`train_depth` checks everything it can before any work -- the data against the config
(channels, flip orders, finite values) and an existing ``last.pt`` against the config and the
data (:mod:`seminspect.training.depth_resume`) -- and only then creates the run folder and writes
its ``config.yaml``; a refused run leaves no folder or file it did not find. The loop of one
generator is :mod:`seminspect.training.depth_loop`.

Training is deterministic for a seed and a thread count: the order and flips of epoch ``e``
come from a generator seeded by ``(seed, e)`` (:mod:`seminspect.training.depth_schedule`), so a
run stopped after any step and resumed from ``last.pt`` replays exactly the same batches as an
uninterrupted run.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from seminspect.models.depth import UNetEnsemble
from seminspect.training.depth_config import DepthConfig, DepthConfigError
from seminspect.training.depth_data import DepthData, DepthDataError, load_data
from seminspect.training.depth_loop import DepthTrainingError, TrainResult, errors, train_one
from seminspect.training.depth_predictor import DepthPredictor, Normaliser
from seminspect.training.depth_resume import data_fingerprint, load_last
from seminspect.utils.io import atomic_write_json, atomic_write_text
from seminspect.utils.leftovers import remove_leftover_temps

__all__ = ["DepthTrainingError", "TrainResult", "check_data", "errors", "train_depth"]


def check_data(cfg: DepthConfig, train: DepthData, val: DepthData) -> None:
    """Refuse data the config cannot train on, one line each: channel counts, flip orders, NaN / Inf values,
    values so large that their mean or spread overflows float32."""
    if train.channels != val.channels:
        raise DepthDataError(f"{train.source or 'depth data'}: train has {train.channels} channels, val {val.channels}")
    for key in ("flip_lr_channels", "flip_ud_channels"):
        order = getattr(cfg.optim, key)
        if order is not None and sorted(order) != list(range(train.channels)):
            raise DepthConfigError(
                f"optim.{key} = {order} is not an order of the data's {train.channels} "
                f"channels (a permutation of 0..{train.channels - 1})"
            )
    for name, d in (("train", train), ("val", val)):
        for what, t in (("input", d.x), ("depth", d.y)):
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                site = int(torch.nonzero(bad.reshape(len(d), -1).any(dim=1))[0])
                raise DepthDataError(
                    f"{d.source or 'depth data'}: the {name} sites hold {int(bad.sum())} NaN/Inf {what} value(s) "
                    f"(first in site {d.ids[site]!r}); training on them gives NaN losses: fix or drop those sites"
                )
    norm = Normaliser.fit(train)
    if not all(math.isfinite(v) for v in vars(norm).values()):
        raise DepthDataError(
            f"{train.source or 'depth data'}: the training data's mean and spread overflow float32 (inputs mean "
            f"{norm.x_mean:g}, std {norm.x_std:g}; depth mean {norm.y_mean:g}, std {norm.y_std:g}; largest |depth| "
            f"{float(train.y.abs().max()):g}): values too large to train on; rescale them (e.g. depth in nm or um)"
        )


def _members(cfg: DepthConfig, out: Path) -> list[tuple[DepthConfig, Path]]:
    """``(config, folder)`` of each generator a run trains: the run itself, or its ensemble members."""
    if cfg.ensemble == 1:
        return [(cfg, out)]
    return [
        (cfg.model_copy(update={"seed": cfg.seed + k, "ensemble": 1}, deep=True), out / f"member{k}")
        for k in range(cfg.ensemble)
    ]


def train_depth(
    cfg: DepthConfig,
    out_dir: str | Path,
    data: tuple[DepthData, DepthData] | None = None,
    resume: bool = True,
    stop_after_steps: int | None = None,
    verbose: bool = True,
) -> TrainResult:
    """Train; write ``config.yaml``, ``best.pt`` (a :class:`DepthPredictor`), ``last.pt`` (resumable), ``history.json``.

    Before anything is written the data is checked against the config (:func:`check_data`) and any
    ``last.pt`` to be resumed against the config and the data: a mismatch or an unreadable file is a
    one-line :class:`DepthConfigError` (``resume=False`` trains afresh instead). A loss or
    validation RMSE that stops being finite raises :class:`DepthTrainingError` naming the epoch.

    With ``cfg.ensemble > 1`` the members train in ``member0``, ``member1``, ... (each with its own
    ``best.pt``, ``last.pt``, ``history.json``) and ``best.pt`` is their average; ``ensemble.json``
    records each member's and the average's validation RMSE.

    Args:
        cfg: the run's configuration.
        out_dir: run folder; an existing ``last.pt`` there is resumed when ``resume``.
        data: ``(train, val)``; loaded from ``cfg.data`` when None.
        stop_after_steps: stop (after saving ``last.pt``) once this many optimiser steps are done
            in total (over all members) -- simulates a killed job in tests.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DepthConfigError(f"{out}: the run folder is a file")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train, val = data if data is not None else load_data(cfg.data)
    check_data(cfg, train, val)
    data_fp = data_fingerprint(train, val)
    if resume:  # every checkpoint this run would resume is checked before anything is written
        for member_cfg, folder in _members(cfg, out):
            if (folder / "last.pt").is_file():
                load_last(folder / "last.pt", member_cfg.model_dump(), data_fp)
    out.mkdir(parents=True, exist_ok=True)
    for _, folder in _members(cfg, out):  # temporary files of a killed run
        remove_leftover_temps(folder)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    budget_s = None if cfg.optim.max_minutes is None else 60.0 * cfg.optim.max_minutes
    if cfg.ensemble == 1:
        return train_one(cfg, out, train, val, resume, stop_after_steps, verbose, budget_s, data_fp)
    return _train_ensemble(cfg, out, train, val, resume, stop_after_steps, verbose, budget_s, data_fp)


def _train_ensemble(
    cfg: DepthConfig,
    out: Path,
    train: DepthData,
    val: DepthData,
    resume: bool,
    stop_after_steps: int | None,
    verbose: bool,
    budget_s: float | None,
    data_fp: dict[str, str],
) -> TrainResult:
    """Train ``cfg.ensemble`` members in turn, then save and score their average (see :func:`train_depth`)."""
    t_start = time.time()
    results: list[TrainResult] = []
    steps = 0
    for k, (member_cfg, folder) in enumerate(_members(cfg, out)):
        share = None if budget_s is None else max(0.0, budget_s - (time.time() - t_start)) / (cfg.ensemble - k)
        left = None if stop_after_steps is None else stop_after_steps - steps
        if left is not None and left <= 0:
            break
        if verbose:
            print(f"ensemble member {k + 1}/{cfg.ensemble} (seed {member_cfg.seed})", flush=True)
        r = train_one(member_cfg, folder, train, val, resume, left, verbose, share, data_fp)
        results.append(r)
        steps += r.steps
        if not r.finished:
            break
    history = [{"member": k, **row} for k, r in enumerate(results) for row in r.history]
    atomic_write_json(out / "history.json", history)
    if len(results) < cfg.ensemble or not results[-1].finished:
        return TrainResult(
            best_rmse=min(r.best_rmse for r in results) if results else math.inf,
            best_epoch=-1,
            epochs_run=len(history),
            steps=steps,
            finished=False,
            history=history,
            out_dir=out,
        )
    summary: dict[str, Any] = {"members": [], "val_sites": len(val)}
    averages = {}
    for weights in ("best", "final"):
        members = [DepthPredictor.load(out / f"member{k}" / f"{weights}.pt") for k in range(cfg.ensemble)]
        norms = {tuple(vars(m.norm).values()) for m in members}
        if len(norms) != 1:
            raise DepthConfigError(f"{out}: the members were trained with different normalisations {norms}")
        meta = {**members[0].meta, "config": cfg.model_dump(), "ensemble_of": weights}
        averages[weights] = DepthPredictor(UNetEnsemble([m.generator for m in members]), members[0].norm, meta)
        summary[f"val_rmse_{weights}"] = errors(averages[weights].predict(val.x), val.y.numpy())["rmse"]
    for k, r in enumerate(results):
        summary["members"].append(
            {
                "seed": cfg.seed + k,
                "best_epoch": r.best_epoch,
                "val_rmse_best": r.best_rmse,
                "val_rmse_final": r.history[-1]["val_rmse"] if r.history else None,
            }
        )
    averages["best"].save(out / "best.pt")
    averages["final"].save(out / "final.pt")
    atomic_write_json(out / "ensemble.json", summary)
    if verbose:
        print(
            f"ensemble of {cfg.ensemble}: val RMSE {summary['val_rmse_best']:.3f} (members' best epochs), "
            f"{summary['val_rmse_final']:.3f} (members' final weights); members "
            + ", ".join(f"{m['val_rmse_best']:.3f}" for m in summary["members"]),
            flush=True,
        )
    return TrainResult(
        best_rmse=summary["val_rmse_best"],
        best_epoch=-1,
        epochs_run=len(history),
        steps=steps,
        finished=True,
        history=history,
        out_dir=out,
    )
