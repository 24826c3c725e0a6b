"""The depth training loop: one U-Net (L1 alone, or pix2pix: L1 + lambda * GAN), or an ensemble of them.

Data: every site is ``x (C, H, W)`` float32 in [0, 1] (C acquisitions of one view, stacked as
channels) and ``y (H, W)`` float32 depth in the data's units (:mod:`seminspect.training.depth_data`).

Training is deterministic for a seed and a thread count: the order and flips of epoch ``e``
come from a generator seeded by ``(seed, e)`` (:mod:`seminspect.training.depth_schedule`), so a
run stopped after any step and resumed from ``last.pt`` replays exactly the same batches as an
uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from seminspect.models.depth import PatchGAN, UNet, UNetEnsemble
from seminspect.training.depth_config import DepthConfig, DepthConfigError
from seminspect.training.depth_data import DepthData, DepthDataError, load_data
from seminspect.training.depth_predictor import DepthPredictor, Normaliser
from seminspect.training.depth_schedule import _ema_avg_fn, _epoch_plan, _flip, _lr_lambda, _resample_plan
from seminspect.utils.io import atomic_path, atomic_write_json
from seminspect.utils.progress import make_progress


@dataclass
class TrainResult:
    best_rmse: float
    best_epoch: int
    epochs_run: int
    steps: int
    finished: bool  # False when stopped early by `stop_after_steps`
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path | None = None


def errors(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Overall RMSE and MAE over all pixels of all sites (data's depth units)."""
    d = np.asarray(pred, np.float64) - np.asarray(true, np.float64)
    return {"rmse": float(np.sqrt(np.mean(d**2))), "mae": float(np.mean(np.abs(d)))}


def train_depth(
    cfg: DepthConfig,
    out_dir: str | Path,
    data: tuple[DepthData, DepthData] | None = None,
    resume: bool = True,
    stop_after_steps: int | None = None,
    verbose: bool = True,
) -> TrainResult:
    """Train; write ``best.pt`` (a :class:`DepthPredictor`), ``last.pt`` (resumable), ``history.json``.

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
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train, val = data if data is not None else load_data(cfg.data)
    if train.channels != val.channels:
        raise DepthDataError(f"train has {train.channels} channels, val {val.channels}")
    for key in ("flip_lr_channels", "flip_ud_channels"):
        order = getattr(cfg.optim, key)
        if order is not None and sorted(order) != list(range(train.channels)):
            raise DepthConfigError(
                f"optim.{key} = {order} is not an order of the data's {train.channels} "
                f"channels (a permutation of 0..{train.channels - 1})"
            )
    budget_s = None if cfg.optim.max_minutes is None else 60.0 * cfg.optim.max_minutes
    if cfg.ensemble == 1:
        return _train_one(cfg, out, train, val, resume, stop_after_steps, verbose, budget_s)
    return _train_ensemble(cfg, out, train, val, resume, stop_after_steps, verbose, budget_s)


def _train_ensemble(
    cfg: DepthConfig,
    out: Path,
    train: DepthData,
    val: DepthData,
    resume: bool,
    stop_after_steps: int | None,
    verbose: bool,
    budget_s: float | None,
) -> TrainResult:
    """Train ``cfg.ensemble`` members in turn, then save and score their average (see :func:`train_depth`)."""
    t_start = time.time()
    results: list[TrainResult] = []
    steps = 0
    for k in range(cfg.ensemble):
        member_cfg = cfg.model_copy(update={"seed": cfg.seed + k, "ensemble": 1}, deep=True)
        share = None if budget_s is None else max(0.0, budget_s - (time.time() - t_start)) / (cfg.ensemble - k)
        left = None if stop_after_steps is None else stop_after_steps - steps
        if left is not None and left <= 0:
            break
        if verbose:
            print(f"ensemble member {k + 1}/{cfg.ensemble} (seed {member_cfg.seed})", flush=True)
        r = _train_one(member_cfg, out / f"member{k}", train, val, resume, left, verbose, share)
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


def _train_one(
    cfg: DepthConfig,
    out: Path,
    train: DepthData,
    val: DepthData,
    resume: bool,
    stop_after_steps: int | None,
    verbose: bool,
    budget_s: float | None,
) -> TrainResult:
    """One generator (see :func:`train_depth`); ``budget_s``: this call's wall-clock budget in seconds."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    norm = Normaliser.fit(train)
    xt = (train.x - norm.x_mean) / norm.x_std
    yt = ((train.y - norm.y_mean) / norm.y_std)[:, None]
    mem = torch.channels_last if cfg.channels_last else torch.contiguous_format
    gen = UNet(train.channels, 1, **cfg.model.model_dump())
    if cfg.init_from:
        init = DepthPredictor.load(cfg.init_from)
        g0 = init.generator
        if g0.hparams() != gen.hparams():
            raise DepthConfigError(
                f"{cfg.init_from}: model architecture {g0.hparams()} differs from the config's {gen.hparams()}"
            )
        gen.load_state_dict(g0.state_dict())
        norm = init.norm
        xt = (train.x - norm.x_mean) / norm.x_std
        yt = ((train.y - norm.y_mean) / norm.y_std)[:, None]
    gen = gen.to(memory_format=mem)
    opt = torch.optim.AdamW(gen.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    n_batches = math.ceil(len(train) / cfg.optim.batch_size)
    total = cfg.optim.epochs * n_batches
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.optim, total))
    pix2pix = cfg.loss.mode == "pix2pix"
    disc = d_opt = None
    if pix2pix:
        disc = PatchGAN(train.channels, 1, cfg.loss.disc_width, cfg.loss.disc_layers).to(memory_format=mem)
        d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.optim.disc_lr, betas=(0.5, 0.999))
    meta = {"norm": cfg.model.norm, "units": train.units, "config": cfg.model_dump()}
    # The EMA copy (weights and batch-norm buffers) is what validation sees and best.pt holds:
    # it removes the epoch-to-epoch swings of the raw weights at a high learning rate.
    ema = None
    if cfg.optim.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel

        ema = AveragedModel(gen, avg_fn=_ema_avg_fn(cfg.optim.ema_decay), use_buffers=True)

    state = {"epoch": 0, "batch": 0, "step": 0, "best_rmse": math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}
    last = out / "last.pt"
    if resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        if ck.get("config") != cfg.model_dump():
            raise DepthConfigError(
                f"{last}: checkpoint was written with a different config; use a new output folder or --no-resume"
            )
        gen.load_state_dict(ck["gen"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        if pix2pix:
            disc.load_state_dict(ck["disc"])
            d_opt.load_state_dict(ck["d_opt"])
        torch.set_rng_state(ck["torch_rng"])
        state = ck["state"]

    def save_last() -> None:
        ck = {
            "config": cfg.model_dump(),
            "gen": gen.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "state": state,
            "torch_rng": torch.get_rng_state(),
        }
        if pix2pix:
            ck["disc"], ck["d_opt"] = disc.state_dict(), d_opt.state_dict()
        if ema is not None:
            ck["ema"] = ema.state_dict()
        with atomic_path(last) as tmp:
            torch.save(ck, tmp)

    stopped = False
    t_start = time.time()
    with make_progress() as progress:
        task = progress.add_task("depth training", total=total, completed=state["step"])
        while state["epoch"] < cfg.optim.epochs:
            epoch = state["epoch"]
            t0 = time.time()
            perm, codes = _epoch_plan(cfg.seed, epoch, len(train), cfg.optim.flips)
            picks = (
                _resample_plan(cfg.seed, epoch, len(train), xt.shape[1]) if cfg.optim.resample_acquisitions else None
            )
            use_mse = epoch >= cfg.optim.epochs - cfg.loss.mse_epochs
            gen.train()
            loss_sum = torch.tensor(state.get("loss_sum", 0.0) if state["batch"] else 0.0)
            for b in range(state["batch"], n_batches):
                idx = perm[b * cfg.optim.batch_size : (b + 1) * cfg.optim.batch_size]
                xb, yb = xt[idx], yt[idx]
                if picks is not None:
                    xb = torch.gather(xb, 1, picks[idx][:, :, None, None].expand_as(xb))
                if cfg.optim.flips:
                    xb = _flip(xb, codes[idx], cfg.optim.flip_lr_channels, cfg.optim.flip_ud_channels)
                    yb = _flip(yb, codes[idx])
                xb = xb.contiguous(memory_format=mem)
                pred = gen(xb)
                rec = F.mse_loss(pred, yb) if use_mse else F.l1_loss(pred, yb)
                loss = rec
                if pix2pix:
                    # Discriminator step on (SEM, real) vs (SEM, generated) pairs.
                    d_real, d_fake = disc(xb, yb), disc(xb, pred.detach())
                    d_loss = 0.5 * (
                        F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                        + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
                    )
                    d_opt.zero_grad(set_to_none=True)
                    d_loss.backward()
                    d_opt.step()
                    g_fake = disc(xb, pred)
                    loss = rec + cfg.loss.gan_weight * F.binary_cross_entropy_with_logits(
                        g_fake, torch.ones_like(g_fake)
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update_parameters(gen)
                loss_sum += rec.detach()
                state["loss_sum"] = float(loss_sum)
                state["batch"] = b + 1
                state["step"] += 1
                progress.update(task, advance=1, description=f"depth epoch {epoch + 1}/{cfg.optim.epochs}")
                if stop_after_steps is not None and state["step"] >= stop_after_steps:
                    stopped = True
                    break
                if state["step"] % cfg.checkpoint_every == 0:
                    save_last()
            if stopped:
                break
            model = gen if ema is None else ema.module
            m = errors(DepthPredictor(model, norm, meta).predict(val.x), val.y.numpy())
            row = {
                "epoch": epoch + 1,
                "train_loss": float(loss_sum) / max(1, n_batches),
                "val_rmse": m["rmse"],
                "val_mae": m["mae"],
                "lr": opt.param_groups[0]["lr"],
                "seconds": time.time() - t0,
            }
            if ema is not None:  # the raw weights too, to show what the average adds
                row["val_rmse_raw"] = errors(DepthPredictor(gen, norm, meta).predict(val.x), val.y.numpy())["rmse"]
            state["history"].append(row)
            if verbose:
                progress.console.print(
                    f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  val RMSE {m['rmse']:.3f}  "
                    f"MAE {m['mae']:.3f}"
                    + (f"  raw RMSE {row['val_rmse_raw']:.3f}" if ema is not None else "")
                    + f"  ({row['seconds']:.0f}s)",
                    highlight=False,
                )
            if m["rmse"] < state["best_rmse"]:
                state.update(best_rmse=m["rmse"], best_epoch=epoch + 1, bad_epochs=0)
                DepthPredictor(model, norm, meta).save(out / "best.pt")
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch + 1
            state["batch"] = 0
            # Early stopping never cuts into the MSE fine-tuning phase.
            early = (
                cfg.optim.patience is not None
                and state["bad_epochs"] >= cfg.optim.patience
                and state["epoch"] < cfg.optim.epochs - cfg.loss.mse_epochs
            )
            out_of_time = budget_s is not None and time.time() - t_start > budget_s
            if early or out_of_time:
                state["stopped_reason"] = "early stopping" if early else "time budget"
                state["epoch"] = cfg.optim.epochs
            save_last()
            atomic_write_json(out / "history.json", state["history"])
    if stopped:
        save_last()
    else:  # the weights training ended with (the EMA's, when used), beside best.pt's best epoch
        DepthPredictor(gen if ema is None else ema.module, norm, meta).save(out / "final.pt")
    return TrainResult(
        best_rmse=state["best_rmse"],
        best_epoch=state["best_epoch"],
        epochs_run=len(state["history"]),
        steps=state["step"],
        finished=not stopped,
        history=list(state["history"]),
        out_dir=out,
    )
