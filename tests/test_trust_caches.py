"""[trust] caches and resumes keyed by content; temporary files of a killed run cleaned on the next run.

* a label fixed in the manifest, ``train`` re-run into the same folder: the heads train again on the
  new labels (before, the checkpoint was resumed: 0 epochs, the old labels' weights);
* an image replaced in place: the feature cache is re-encoded and the checkpoint not resumed, each
  said in one line;
* a corrupt or foreign feature cache / checkpoint: re-encoded / trained afresh with one line, no
  traceback;
* a refused ``train`` leaves no output folder it created;
* a killed ``generate`` (SIGKILL while an image is half written) leaves a temporary file that the
  next ``generate`` into the same folder removes; likewise ``train``'s output folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seminspect.data.dataset import SampleDataset
from seminspect.data.fingerprint import changed, dataset_fingerprint
from seminspect.training.adc_trainer import train
from seminspect.utils.leftovers import is_leftover_temp, remove_leftover_temps
from test_inference import make_shifted_dataset, tiny_config
from trust_fixtures import error_lines, run_main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def ds(tmp_path) -> Path:
    return make_shifted_dataset(tmp_path / "ds", n=48)


def _train(ds: Path, out: Path, epochs: int = 3, val_split: str | None = None) -> list[str]:
    cfg = tiny_config(ds, out)
    cfg.train.epochs = epochs
    cfg.data.val_split = val_split
    logs: list[str] = []
    train(cfg, log=logs.append)
    return logs


def _fix_labels(ds: Path, n: int = 4) -> list[str]:
    """Flip the label of the first ``n`` normal train sites to abnormal (as a reviewer's correction)."""
    m = pd.read_csv(ds / "manifest.csv", dtype=str, keep_default_na=False)
    first = m.groupby("sample_id", sort=False).first()
    ids = first[(first["split"] == "train") & (first["label"] == "normal")].index[:n].tolist()
    rows = m["sample_id"].isin(ids)
    m.loc[rows, "label"] = "abnormal"
    m.loc[rows, "defect_type"] = first[first["label"] == "abnormal"]["defect_type"].iloc[0]
    m.to_csv(ds / "manifest.csv", index=False)
    return ids


def _epochs_trained(logs: list[str]) -> int:
    return sum(1 for line in logs if line.startswith("epoch "))


# ----- the fingerprint -------------------------------------------------------------------------
def test_fingerprint_names_what_changed(ds):
    before = dataset_fingerprint(SampleDataset(ds).split("train"))
    _fix_labels(ds, 1)
    after = dataset_fingerprint(SampleDataset(ds).split("train"))
    assert changed(before, after) == ["labels"]
    img = ds / "images" / "s0000" / "target0.png"
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert changed(after, dataset_fingerprint(SampleDataset(ds).split("train"))) == ["image files"]
    # a view a dataset drops does not count
    ref = ds / "images" / "s0000" / "reference0.png"
    targets = dataset_fingerprint(SampleDataset(ds, roles=["target"]))
    os.utime(ref, ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000_000))
    assert changed(targets, dataset_fingerprint(SampleDataset(ds, roles=["target"]))) == []
    assert changed(None, targets) == ["sites", "labels", "image files"]


# ----- train: the scenario and its relatives -------------------------------------------
def test_fixed_labels_retrain_the_heads_instead_of_resuming(ds, tmp_path):
    # A fixed validation split: the same sites train before and after the fix (a carved-out one
    # would move with the labels, which hid the bug), only their labels differ.
    out = tmp_path / "art"
    assert _epochs_trained(_train(ds, out, val_split="calib")) == 3
    _fix_labels(ds)
    logs = _train(ds, out, val_split="calib")
    assert _epochs_trained(logs) == 3, logs  # before: resumed after epoch 3, 0 epochs on the new labels
    assert not any("resuming head training" in line for line in logs), logs
    said = [line for line in logs if "checkpoint.pt" in line]
    assert said and "the labels changed since this checkpoint was written; training afresh" in said[0], logs
    assert any("labels changed since the feature cache was written; features reused" in line for line in logs), logs
    # said once: the cache now holds the new labels' fingerprint, the checkpoint the new run
    again = _train(ds, out, val_split="calib")
    assert _epochs_trained(again) == 0 and not any("changed" in line for line in again), again


def test_an_image_replaced_in_place_re_encodes_and_retrains(ds, tmp_path):
    out = tmp_path / "art"
    _train(ds, out)
    cached = {p: p.read_bytes() for p in (out / "cache").glob("*.safetensors")}
    img = ds / "images" / "s0000" / "target0.png"  # s0000 is a train site
    from seminspect.data.imageio import read_image, write_image

    write_image(img, (255 - read_image(img)).astype(np.uint8))
    logs = _train(ds, out)
    assert any("image files changed since the feature cache was written; re-encoding" in line for line in logs), logs
    assert any("the image files changed since this checkpoint was written; training afresh" in line for line in logs), (
        logs
    )
    assert _epochs_trained(logs) == 3
    assert any(p.read_bytes() != blob for p, blob in cached.items())  # the train split's cache was rewritten


@pytest.mark.parametrize("damage", ["garbage_tensors", "garbage_json", "truncated", "json_only"])
def test_a_corrupt_feature_cache_is_re_encoded_with_one_line(ds, tmp_path, damage):
    out = tmp_path / "art"
    _train(ds, out)
    (feats, *_) = sorted((out / "cache").glob("*.safetensors"))
    if damage == "garbage_tensors":
        feats.write_bytes(b"\x00\xffnot safetensors" * 8)
    elif damage == "garbage_json":
        feats.with_suffix(".json").write_text("{not json")
    elif damage == "truncated":
        feats.write_bytes(feats.read_bytes()[:-100])
    else:  # killed between the metadata and the tensors
        feats.unlink()
    logs = _train(ds, out)
    said = [line for line in logs if str(feats) in line]
    if damage == "json_only":
        assert said and "re-encoding" in said[0], logs
    else:
        assert said and "feature cache unreadable" in said[0] and "re-encoding" in said[0], logs
    assert all("\n" not in line for line in said)
    assert feats.is_file() and feats.stat().st_size > 1000  # rebuilt


@pytest.mark.parametrize("damage", ["garbage", "tensor", "depth_last_pt"])
def test_a_corrupt_or_foreign_checkpoint_trains_afresh_with_one_line(ds, tmp_path, damage):
    out = tmp_path / "art"
    _train(ds, out)
    ckpt = out / "checkpoint.pt"
    if damage == "garbage":
        ckpt.write_bytes(b"garbage" * 10)
    elif damage == "tensor":
        torch.save(torch.zeros(3), ckpt)
    else:
        torch.save({"config": {}, "gen": {}, "state": {"epoch": 2}}, ckpt)
    logs = _train(ds, out)
    said = [line for line in logs if str(ckpt) in line]
    assert said and "training afresh" in said[0], logs
    assert _epochs_trained(logs) == 3


def test_cli_train_with_corrupt_cache_and_checkpoint_has_no_traceback(ds, tmp_path, capsys, monkeypatch):
    import yaml

    out = tmp_path / "art"
    _train(ds, out)
    for p in (out / "cache").glob("*.safetensors"):
        p.write_bytes(b"junk")
    (out / "checkpoint.pt").write_bytes(b"junk")
    cfg = tiny_config(ds, out)
    cfg.train.epochs = 2
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    code, stdout, stderr = run_main(["train", str(path)], capsys, monkeypatch)
    assert code == 0 and "Traceback" not in stdout + stderr, stdout + stderr
    said = (stdout + stderr).replace("\n", "")  # the console wraps long lines for the terminal
    assert "feature cache unreadable" in said and "training afresh" in said, said


def test_a_refused_train_leaves_no_output_folder_it_created(ds, tmp_path, capsys, monkeypatch):
    import yaml

    (ds / "images" / "s0000" / "target0.png").write_bytes(b"not a png")
    out = tmp_path / "new" / "art"
    cfg = tiny_config(ds, out)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    code, stdout, stderr = run_main(["train", str(path)], capsys, monkeypatch)
    assert code == 2 and len(error_lines(stderr)) == 1 and "target0.png" in error_lines(stderr)[0], stderr
    assert not out.exists()
    # a folder that was there keeps what it held
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    code, _, _ = run_main(["train", str(path)], capsys, monkeypatch)
    assert code == 2 and (out / "notes.txt").read_text() == "mine"


def test_train_removes_temporary_files_a_killed_run_left(ds, tmp_path):
    out = tmp_path / "art"
    _train(ds, out)
    left = [
        out / ".checkpoint.pt.x1y2z3w4.pt",
        out / "cache" / ".feats_0123456789abcdef.safetensors.k_9abcde.safetensors",
    ]
    for p in left:
        p.write_bytes(b"half")
    _train(ds, out)
    assert not any(p.exists() for p in left)


# ----- temporary files ---------------------------------------------------------------------------
def test_leftover_pattern_is_exactly_atomic_paths(tmp_path):
    from seminspect.utils.io import atomic_path

    # a real temporary name: the writer is killed inside atomic_path (os._exit skips its cleanup)
    code = textwrap.dedent(f"""
        import os
        from seminspect.utils.io import atomic_path
        with atomic_path({str(tmp_path / "rows.json")!r}) as tmp:
            tmp.write_text("half")
            os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    (left,) = [p for p in tmp_path.iterdir() if p.name != "rows.json"]
    assert is_leftover_temp(left.name)
    with atomic_path(tmp_path / "done.png") as tmp:
        tmp.write_bytes(b"x")
    for name in ("done.png", ".gitignore", ".done.png", ".done.png.abc.png", ".done.png.abcdefgh.jpg", "a.tmp"):
        assert not is_leftover_temp(name), name
    keep = [tmp_path / n for n in (".gitignore", ".done.png.abcdefgh.jpg")]
    for p in keep:
        p.write_text("keep")
    assert remove_leftover_temps(tmp_path) == [left]
    assert all(p.exists() for p in keep) and (tmp_path / "done.png").exists()


def _killed_generate(out: Path) -> subprocess.CompletedProcess:
    """``seminspect generate`` SIGKILLed right after its first image reaches its temporary file."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        from PIL import Image
        real = Image.Image.save
        def save_then_die(self, fp, *args, **kwargs):
            real(self, fp, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        Image.Image.save = save_then_die
        from seminspect.cli import main
        sys.argv = ["seminspect", "generate", {str(out)!r}, "--n", "3", "--size", "48", "--angles", "1",
                    "--zooms", "0", "--workers", "1"]
        main()
    """)
    env = {**os.environ, "SEMINSPECT_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_a_killed_generate_leaves_a_temporary_file_the_next_generate_removes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "fab"
    res = _killed_generate(out)
    assert res.returncode == -signal.SIGKILL, res.stderr
    left = [p for p in out.rglob(".*") if is_leftover_temp(p.name)]
    assert left, sorted(out.rglob("*"))  # the image being written when the process died
    planted = out / ".manifest.csv.abcd1234.csv"  # and one where the manifest is written
    planted.write_text("half a manifest")
    code, stdout, stderr = run_main(
        ["generate", str(out), "--n", "3", "--size", "48", "--angles", "1", "--zooms", "0", "--workers", "1"],
        capsys,
        monkeypatch,
    )
    assert code == 0, stdout + stderr
    assert not [p for p in out.rglob(".*") if is_leftover_temp(p.name)]
    assert len(SampleDataset(out)) == 3
