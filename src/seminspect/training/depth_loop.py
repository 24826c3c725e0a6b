"""The loop that trains one depth generator: batches, losses, validation, best.pt and last.pt.

Deterministic for a seed and a thread count (:mod:`seminspect.training.depth_schedule`), resumable
from ``last.pt`` (:mod:`seminspect.training.depth_resume`), and guarded: a training loss or a
validation RMSE that stops being finite ends the run with a :class:`DepthTrainingError` naming the
epoch and the likely cause, before the optimiser applies it; nothing is saved from that step on.
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

from seminspect.errors import SeminspectError
from seminspect.models.depth import PatchGAN, UNet
from seminspect.training.depth_config import DepthConfig, DepthConfigError
from seminspect.training.depth_data import DepthData
from seminspect.training.depth_predictor import DepthPredictor, Normaliser
from seminspect.training.depth_resume import load_last, restore_last, save_last
from seminspect.training.depth_schedule import (
    _ema_avg_fn,
    _epoch_plan,
    _flip,
    _intensity_aug,
    _lr_lambda,
    _resample_plan,
)
from seminspect.utils.io import atomic_write_json
from seminspect.utils.progress import make_progress


class DepthTrainingError(SeminspectError, RuntimeError):
    """Depth training cannot go on (a loss or validation error that is no longer a finite number)."""


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


def _not_finite(
    cfg: DepthConfig, out: Path, what: str, value: float, epoch: int, step: int, state: dict[str, Any]
) -> DepthTrainingError:
    """The one-line error for a loss or RMSE that stopped being finite: where, the likely cause, what is kept."""
    if step <= 1 and what != "validation RMSE":  # before any update: the weights are the initial ones
        cause = "the input values (finite, but too large or too far apart for float32 arithmetic; check their range)"
    else:
        lrs = f"optim.lr = {cfg.optim.lr:g}"
        if cfg.loss.mode == "pix2pix":
            lrs += f", optim.disc_lr = {cfg.optim.disc_lr:g}"
        cause = f"a learning rate too high ({lrs}; try 10x lower), or extreme input values"
    kept = f"best.pt keeps epoch {state['best_epoch']}" if state["best_epoch"] > 0 else "no model (best.pt) was written"
    return DepthTrainingError(
        f"{out}: depth training stopped in epoch {epoch + 1} (step {step}): the {what} became {value} "
        f"(not a finite number); likely cause: {cause}; {kept}"
    )


def train_one(
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
    """One generator (see :func:`~seminspect.training.depth_train.train_depth`).

    ``budget_s``: this call's wall-clock budget in seconds; ``data_fp``: the data's fingerprint
    (:func:`~seminspect.training.depth_resume.data_fingerprint`), kept in ``last.pt``.
    """
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    norm = Normaliser.fit(train, per_site=cfg.data.site_norm)
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
    xt = norm.inputs(train.x)
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
    modules = {"gen": gen, "opt": opt, "sched": sched, "ema": ema, "disc": disc, "d_opt": d_opt}

    state = {"epoch": 0, "batch": 0, "step": 0, "best_rmse": math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}
    last = out / "last.pt"
    config = cfg.model_dump()
    if resume and last.is_file():
        ck = load_last(last, config, data_fp)
        restore_last(ck, last, modules)
        state = ck["state"]

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
                if cfg.optim.intensity_aug > 0:
                    xb = _intensity_aug(xb, cfg.seed, epoch, b, cfg.optim.intensity_aug, norm.x_std)
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
                    if not torch.isfinite(d_loss):
                        raise _not_finite(
                            cfg, out, "discriminator loss", float(d_loss.detach()), epoch, state["step"] + 1, state
                        )
                    d_opt.zero_grad(set_to_none=True)
                    d_loss.backward()
                    d_opt.step()
                    g_fake = disc(xb, pred)
                    loss = rec + cfg.loss.gan_weight * F.binary_cross_entropy_with_logits(
                        g_fake, torch.ones_like(g_fake)
                    )
                if not torch.isfinite(loss):  # before the step: the weights (and last.pt) stay finite
                    raise _not_finite(cfg, out, "training loss", float(loss.detach()), epoch, state["step"] + 1, state)
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
                    save_last(last, config, data_fp, state, modules)
            if stopped:
                break
            model = gen if ema is None else ema.module
            m = errors(DepthPredictor(model, norm, meta).predict(val.x), val.y.numpy())
            if not math.isfinite(m["rmse"]):
                raise _not_finite(cfg, out, "validation RMSE", m["rmse"], epoch, state["step"], state)
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
            save_last(last, config, data_fp, state, modules)
            atomic_write_json(out / "history.json", state["history"])
    if stopped:
        save_last(last, config, data_fp, state, modules)
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
