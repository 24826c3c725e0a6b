"""[trust] depth training: strict config, numerical guards, a checked Samsung file, resumes that cannot go stale.

Each refusal is one line naming the file (or option) and the problem, with exit status 2 from the
CLI and no traceback; a refused run leaves no run folder (or ``config.yaml``) it did not find, and
no output ever names a ``best.pt`` that was not written.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from seminspect.training.depth import (
    DepthConfig,
    DepthConfigError,
    DepthData,
    DepthDataError,
    DepthPredictor,
    DepthTrainingError,
    load_samsung_npz,
    train_depth,
)
from test_depth import _cfg, _tiny_data, _write_dataset
from trust_fixtures import error_lines, run_main

TINY = {
    "model": {"levels": 1, "width": 4},
    "optim": {"epochs": 1, "batch_size": 4, "warmup_steps": 1},
    "channels_last": False,
}


def _one_error(code: int, out: str, err: str) -> str:
    assert code == 2, out + err
    assert "Traceback" not in out + err, out + err
    lines = error_lines(err)
    assert len(lines) == 1, err
    return lines[0]


# ----- strict config ---------------------------------------------------------------------------
def test_depth_config_every_problem_on_one_line_naming_file_and_keys(tmp_path):
    bad = tmp_path / "depth_bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "data": {"val_fraction": 1.5, "channels": 0, "crop": -4, "max_sites": 0, "split_seed": -1},
                "loss": {"disc_width": 0, "disc_layers": 0},
                "optim": {
                    "batch_size": 0,
                    "lr": 0.0,
                    "disc_lr": 5.0,
                    "patience": 0,
                    "max_minutes": -1,
                    "epochs": 0,
                    "flip_lr_channels": [0, -1],
                },
                "threads": 0,
                "seed": -2,
                "ensemble": 0,
                "checkpoint_every": 0,
            }
        )
    )
    with pytest.raises(DepthConfigError) as exc:
        DepthConfig.load(bad)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"{bad}: ")
    for key in (
        "data.val_fraction",
        "data.channels",
        "data.crop",
        "data.max_sites",
        "data.split_seed",
        "loss.disc_width",
        "loss.disc_layers",
        "optim.batch_size",
        "optim.lr",
        "optim.disc_lr",
        "optim.patience",
        "optim.max_minutes",
        "optim.epochs",
        "optim.flip_lr_channels.1",
        "threads",
        "seed",
        "ensemble",
        "checkpoint_every",
    ):
        assert f"{key}: " in text, key
    assert "(got 0)" in text  # the value given is shown


def test_depth_config_refuses_nan_and_inf_numbers(tmp_path):
    bad = tmp_path / "nan.yaml"
    bad.write_text("optim:\n  lr: .nan\n  weight_decay: .inf\n")
    with pytest.raises(DepthConfigError, match=r"nan\.yaml: .*optim\.lr: .*optim\.weight_decay: "):
        DepthConfig.load(bad)


def test_depth_train_options_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    data = _write_dataset(tmp_path / "ds")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    code, out, err = run_main(
        ["depth", "train", "-c", str(cfg), "--data", str(data), "-o", str(run), "--epochs", "-3", "--threads", "0"],
        capsys,
        monkeypatch,
    )
    line = _one_error(code, out, err)
    assert "command line options" in line and "optim.epochs" in line and "threads" in line, line
    assert not run.exists()  # nothing created, no best.pt named
    assert "best.pt" not in out


# ----- numerical guards ------------------------------------------------------------------------
def test_non_finite_inputs_are_refused_before_training(tmp_path):
    train, val = _tiny_data(16, 0), _tiny_data(8, 1)
    x = train.x.clone()
    x[3, 0, 2, 2] = float("nan")
    bad = DepthData(x, train.y, train.ids, "nm", "sites.npz")
    with pytest.raises(
        DepthDataError,
        match=r"sites\.npz: the train sites hold 1 NaN/Inf input value\(s\) "
        r"\(first in site 's3'\)",
    ):
        train_depth(_cfg(), tmp_path / "run", data=(bad, val), verbose=False)
    assert not (tmp_path / "run").exists()


def test_depth_values_too_large_for_float32_are_refused_before_training(tmp_path):
    train, val = _tiny_data(16, 0), _tiny_data(8, 1)
    huge = DepthData(train.x, train.y / train.y.max() * 3e38, train.ids, "nm")
    with pytest.raises(DepthDataError, match="overflow float32"):
        train_depth(_cfg(), tmp_path / "run", data=(huge, val), verbose=False)
    assert not (tmp_path / "run").exists()


def test_a_loss_that_becomes_nan_stops_the_run_naming_the_epoch_and_cause(tmp_path):
    train, val = _tiny_data(16, 0), _tiny_data(8, 1)
    cfg = _cfg(optim={"warmup_steps": 0, "batch_size": 4})
    cfg.optim.lr = 1e30  # past the config's range (<= 1): only an API caller can still ask for it
    with pytest.raises(DepthTrainingError) as exc:
        train_depth(cfg, tmp_path / "run", data=(train, val), verbose=False)
    text = str(exc.value)
    assert "\n" not in text and "epoch 1" in text and "training loss became nan" in text, text
    assert "learning rate too high (optim.lr = 1e+30" in text and "no model (best.pt) was written" in text, text
    assert not (tmp_path / "run" / "best.pt").exists()


def test_cli_nan_loss_is_one_line_and_names_no_model_that_was_not_written(tmp_path, capsys, monkeypatch):
    import torch.nn.functional as F

    data = _write_dataset(tmp_path / "ds")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "optim": {**TINY["optim"], "epochs": 3}}))
    real, calls = F.l1_loss, []

    def l1_nan_from_epoch_2(pred, target):  # 9 train sites, batch 4: 3 steps per epoch
        calls.append(1)
        loss = real(pred, target)
        return loss * float("nan") if len(calls) > 3 else loss

    monkeypatch.setattr(F, "l1_loss", l1_nan_from_epoch_2)
    run = tmp_path / "run"
    code, out, err = run_main(
        ["depth", "train", "-c", str(cfg), "--data", str(data), "-o", str(run)], capsys, monkeypatch
    )
    line = _one_error(code, out, err)
    assert "epoch 2 (step 4)" in line and "training loss became nan" in line and "learning rate" in line, line
    assert "best.pt keeps epoch 1" in line, line
    assert "model:" not in out  # the success line (naming best.pt) is never printed
    assert DepthPredictor.load(run / "best.pt").generator is not None  # the one named is epoch 1's, and exists


# ----- the Samsung file ------------------------------------------------------------------------
def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _good(n: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "sem": rng.integers(0, 255, (n, 4, 6, 5), dtype=np.uint8),
        "depth": rng.integers(0, 255, (n, 6, 5), dtype=np.uint8),
        "name": np.array([f"site{i}" for i in range(n)]),
    }


def _with(**over: np.ndarray | None) -> dict[str, np.ndarray]:
    arrays = _good()
    for k, v in over.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    return arrays


def _nan_depth() -> np.ndarray:
    d = _good()["depth"].astype(np.float32)
    d[4, 1, 1] = np.nan
    return d


def _inf_sem() -> np.ndarray:
    s = _good()["sem"].astype(np.float32) / 255
    s[2, 0, 0, 0] = np.inf
    return s


BAD_NPZ = {
    "missing_depth": (lambda p: _npz(p, **_with(depth=None)), "missing array 'depth'"),
    "object_array": (lambda p: _npz(p, **_with(name=np.array([object()] * 6, dtype=object))), "Python objects"),
    "shape_mismatch": (lambda p: _npz(p, **_with(depth=np.zeros((6, 5, 5), np.uint8))), "do not match"),
    "depth_2d": (lambda p: _npz(p, **_with(depth=np.zeros((6, 30), np.uint8))), "expected (N, H, W)"),
    "sem_text": (lambda p: _npz(p, **_with(sem=np.full((6, 6, 5), "a"))), "array 'sem' has type"),
    "sem_int64": (lambda p: _npz(p, **_with(sem=np.zeros((6, 4, 6, 5), np.int64))), "array 'sem' has type"),
    "nan_depth": (
        lambda p: _npz(p, **_with(depth=_nan_depth())),
        "array 'depth' holds 1 NaN and 0 Inf value(s) (first at site 4, 'site4')",
    ),
    "inf_sem": (lambda p: _npz(p, **_with(sem=_inf_sem())), "array 'sem' holds 0 NaN and 1 Inf value(s)"),
    "float_sem_range": (lambda p: _npz(p, **_with(sem=_good()["sem"].astype(np.float32))), "must lie in [0, 1]"),
    "one_site": (lambda p: _npz(p, sem=_good()["sem"][:1], depth=_good()["depth"][:1]), "at least 2 are needed"),
    "names_count": (lambda p: _npz(p, **_with(name=np.array(["a", "b"]))), "expected 6 strings"),
    "not_zip": (lambda p: (p.write_bytes(b"\x93NUMPY not a zip" * 20), p)[1], "not a readable .npz archive"),
    "truncated": (lambda p: (p.write_bytes(_npz(p, **_good()).read_bytes()[:300]), p)[1], "not a readable .npz"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_samsung_npz_is_checked_with_one_line_naming_the_file(tmp_path, case):
    make, needle = BAD_NPZ[case]
    path = make(tmp_path / "train.npz")
    with pytest.raises(DepthDataError) as exc:
        load_samsung_npz(path)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"{path}: ") and needle in text, text


def test_samsung_npz_header_declaring_too_many_pixels_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMINSPECT_MAX_PIXELS", "20")
    path = _npz(tmp_path / "train.npz", **_good())  # 6 x 5 = 30 pixels per view
    with pytest.raises(Exception, match=r"train\.npz: 5x6 is 30 pixels, over the limit of 20"):
        load_samsung_npz(path)


def test_samsung_npz_good_file_still_loads(tmp_path):
    tr, va = load_samsung_npz(_npz(tmp_path / "train.npz", **_good()), val_fraction=0.34)
    assert len(tr) + len(va) == 6 and tr.x.shape[1:] == (4, 6, 5) and float(tr.x.max()) <= 1.0
    assert tr.source == str(tmp_path / "train.npz")


def test_cli_bad_npz_is_one_line(tmp_path, capsys, monkeypatch):
    path = _npz(tmp_path / "train.npz", **_with(depth=_nan_depth()))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    code, out, err = run_main(
        ["depth", "train", "-c", str(cfg), "--data", str(path), "-o", str(run)], capsys, monkeypatch
    )
    line = _one_error(code, out, err)
    assert str(path) in line and "NaN" in line
    assert not run.exists()


# ----- resume: last.pt that is corrupt, foreign, or from other data ----------------------------
def _stopped_run(run: Path, **over) -> tuple[DepthData, DepthData]:
    train, val = _tiny_data(16, 0), _tiny_data(8, 1)
    r = train_depth(_cfg(**over), run, data=(train, val), stop_after_steps=2, verbose=False)
    assert not r.finished and (run / "last.pt").is_file()
    return train, val


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign_dict", "best_pt"])
def test_bad_last_pt_is_refused_in_one_line_and_no_resume_trains_afresh(tmp_path, damage):
    run = tmp_path / "run"
    train, val = _stopped_run(run)
    last = run / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:200])
    elif damage == "garbage":
        last.write_bytes(b"\x00\x01 not a checkpoint" * 10)
    elif damage == "foreign_dict":
        torch.save({"model": {"w": torch.zeros(2)}, "epoch": 3}, last)
    else:  # a best.pt copied over last.pt
        train_depth(_cfg(optim={"epochs": 1}), tmp_path / "other", data=(train, val), verbose=False)
        last.write_bytes((tmp_path / "other" / "best.pt").read_bytes())
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(DepthConfigError) as exc:
        train_depth(_cfg(), run, data=(train, val), verbose=False)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"{last}: ") and "--no-resume" in text, text
    assert sorted(p.name for p in run.iterdir()) == before  # refused before any work
    r = train_depth(_cfg(), run, data=(train, val), resume=False, verbose=False)
    assert r.finished and (run / "best.pt").is_file()


def test_cli_corrupt_last_pt_is_one_line_without_traceback(tmp_path, capsys, monkeypatch):
    data = _write_dataset(tmp_path / "ds")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    args = ["depth", "train", "-c", str(cfg), "--data", str(data), "-o", str(run)]
    assert run_main(args, capsys, monkeypatch)[0] == 0
    (run / "last.pt").write_bytes(b"PK\x03\x04 broken")
    line = _one_error(*run_main(args, capsys, monkeypatch))
    assert f"{run / 'last.pt'}: cannot read this checkpoint" in line, line


@pytest.mark.parametrize("change", ["depth", "inputs", "sites", "val"])
def test_resume_refuses_data_that_changed_naming_what(tmp_path, change):
    run = tmp_path / "run"
    train, val = _stopped_run(run)
    if change == "depth":
        train = DepthData(train.x, train.y + 1.0, train.ids, train.units)
    elif change == "inputs":
        train = DepthData(train.x * 0.5, train.y, train.ids, train.units)
    elif change == "sites":
        train = DepthData(train.x, train.y, [f"t{i}" for i in range(len(train))], train.units)
    else:
        val = _tiny_data(8, 2)
    with pytest.raises(DepthConfigError, match=r"last\.pt: the data changed since this checkpoint was written"):
        train_depth(_cfg(), run, data=(train, val), verbose=False)


def test_resume_with_the_same_data_still_resumes(tmp_path):
    run = tmp_path / "run"
    train, val = _stopped_run(run)
    r = train_depth(_cfg(), run, data=(train, val), verbose=False)
    assert r.finished and r.steps == 6  # 2 before the stop + 4 after: resumed, not restarted


def test_ensemble_members_are_all_checked_before_any_work(tmp_path):
    run = tmp_path / "run"
    train, val = _tiny_data(16, 0), _tiny_data(8, 1)
    train_depth(_cfg(ensemble=2), run, data=(train, val), stop_after_steps=8, verbose=False)  # member1 started
    (run / "member1" / "last.pt").write_bytes(b"garbage")
    stamp = (run / "member0" / "last.pt").stat().st_mtime_ns
    with pytest.raises(DepthConfigError, match=r"member1/last\.pt: cannot read"):
        train_depth(_cfg(ensemble=2), run, data=(train, val), verbose=False)
    assert (run / "member0" / "last.pt").stat().st_mtime_ns == stamp


def test_other_config_does_not_overwrite_the_run_folders_config_yaml(tmp_path, capsys, monkeypatch):
    data = _write_dataset(tmp_path / "ds")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    assert (
        run_main(["depth", "train", "-c", str(cfg), "--data", str(data), "-o", str(run)], capsys, monkeypatch)[0] == 0
    )
    kept = (run / "config.yaml").read_text()
    wider = tmp_path / "wider.yaml"
    wider.write_text(yaml.safe_dump({**TINY, "model": {"levels": 1, "width": 6}}))
    line = _one_error(
        *run_main(["depth", "train", "-c", str(wider), "--data", str(data), "-o", str(run)], capsys, monkeypatch)
    )
    assert "different config (model.width)" in line, line
    assert (run / "config.yaml").read_text() == kept  # the folder still describes what it holds


def test_leftover_temporary_files_in_the_run_folder_are_removed(tmp_path):
    run = tmp_path / "run"
    train, val = _stopped_run(run)
    left = [run / ".last.pt.k2j_9xq1.pt", run / ".history.json.abcdefgh.json"]
    for p in left:
        p.write_bytes(b"half-written by a killed run")
    keep = run / ".notes.txt"
    keep.write_text("mine")
    train_depth(_cfg(), run, data=(train, val), verbose=False)
    assert not any(p.exists() for p in left) and keep.exists()


def test_zip_member_sizes_are_checked_against_headers(tmp_path):
    """An archive whose member is shorter than its header declares is refused before reading it."""
    good = _npz(tmp_path / "good.npz", **_good())
    bad = tmp_path / "train.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            blob = src.read(item)
            dst.writestr(item.filename, blob[:-40] if item.filename == "depth.npy" else blob)
    with pytest.raises(DepthDataError, match=r"array 'depth' is truncated"):
        load_samsung_npz(bad)
