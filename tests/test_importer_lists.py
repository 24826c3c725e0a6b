"""[trust] importers: ``--list`` chooses DeepPCB's pair list, ``--skip-bad`` records unreadable items and goes on.

The DeepPCB-, ELPV- and SEM-pairs-shaped source folders are small synthetic ones built here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seminspect.data.adapters import AdapterError, import_deeppcb
from seminspect.data.dataset import SampleDataset
from seminspect.data.manifest import read_manifest
from seminspect.data.validate import validate_dataset
from trust_fixtures import error_lines, run_main

SIZE = 64


def _board(rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random((SIZE, SIZE)) > 0.5, 255, 0).astype(np.uint8)


def deeppcb_source(
    root: Path, trainval: list[str], test: list[str], colour: str | None = None, no_template: str | None = None
) -> Path:
    """``groupG/G/<id>_test.jpg``, ``_temp.jpg`` and ``groupG/G_not/<id>.txt`` for each id, plus the two lists.

    ``colour``: this id's tested image is an RGB visualisation with a red box drawn on it (as one
    image of the public test split is); ``no_template``: this id has no template file.
    """
    rng = np.random.default_rng(0)
    for image_id in trainval + test:
        img_dir, box_dir = root / "group1" / "1", root / "group1" / "1_not"
        img_dir.mkdir(parents=True, exist_ok=True)
        box_dir.mkdir(parents=True, exist_ok=True)
        board = _board(rng)
        test_img = board.copy()
        test_img[20:26, 20:26] = 255 - test_img[20:26, 20:26]
        if image_id == colour:
            rgb = np.stack([test_img] * 3, axis=-1)
            rgb[10:40, 10, :] = (255, 0, 0)
            Image.fromarray(rgb).save(img_dir / f"{image_id}_test.jpg")
        else:
            Image.fromarray(test_img).save(img_dir / f"{image_id}_test.jpg")
        if image_id != no_template:
            Image.fromarray(board).save(img_dir / f"{image_id}_temp.jpg")
        (box_dir / f"{image_id}.txt").write_text("18 18 28 28 2\n")
    for name, ids in (("trainval.txt", trainval), ("test.txt", test)):
        (root / name).write_text("".join(f"group1/1/{i}.jpg group1/1_not/{i}.txt\n" for i in ids))
    return root


TRAINVAL = ["00000001", "00000002", "00000003", "00000004"]
TEST = ["00000101", "00000102", "00000103"]


def _ids(root: Path) -> set[str]:
    return set(read_manifest(root)["image_id"])


def test_list_chooses_the_pair_list(tmp_path):
    src = deeppcb_source(tmp_path / "src", TRAINVAL, TEST)
    default = import_deeppcb(src, tmp_path / "tv", mode="pairs")
    assert _ids(default) == set(TRAINVAL)
    root = import_deeppcb(src, tmp_path / "te", mode="pairs", list_file="test.txt", split_as="test")
    assert _ids(root) == set(TEST)
    assert set(read_manifest(root)["split"]) == {"test"}
    assert SampleDataset(root).info.extra["list"] == "test.txt"
    assert validate_dataset(root, progress=False).problems == []
    with pytest.raises(AdapterError, match="nope.txt"):
        import_deeppcb(src, tmp_path / "x", list_file="nope.txt")


def test_cli_list_and_split_as(tmp_path, capsys, monkeypatch):
    src = deeppcb_source(tmp_path / "src", TRAINVAL, TEST)
    out = tmp_path / "te"
    args = ["import", "deeppcb", str(src), str(out), "--list", "test.txt", "--split-as", "test", "--patch-size", "32"]
    code, stdout, stderr = run_main(args, capsys, monkeypatch)
    assert code == 0, stdout + stderr
    df = read_manifest(out)
    assert set(df["image_id"]) == set(TEST) and set(df["split"]) == {"test"}


def test_bad_pair_stops_the_import_in_one_line_without_skip_bad(tmp_path, capsys, monkeypatch):
    src = deeppcb_source(tmp_path / "src", TRAINVAL, TEST, colour="00000102")
    out = tmp_path / "te"
    code, stdout, stderr = run_main(
        ["import", "deeppcb", str(src), str(out), "--list", "test.txt", "--patch-size", "32"], capsys, monkeypatch
    )
    assert code == 2 and "Traceback" not in stdout + stderr
    (line,) = error_lines(stderr)
    assert "00000102_test.jpg" in line and "colour" in line
    assert not (out / "manifest.csv").exists()


def test_skip_bad_records_unreadable_pairs_and_goes_on(tmp_path, capsys, monkeypatch):
    src = deeppcb_source(tmp_path / "src", TRAINVAL, TEST, colour="00000102", no_template="00000103")
    with (src / "test.txt").open("a") as fh:
        fh.write("a malformed line with four words\n")
    out = tmp_path / "te"
    args = ["import", "deeppcb", str(src), str(out), "--list", "test.txt", "--skip-bad", "--mode", "pairs"]
    code, stdout, stderr = run_main(args, capsys, monkeypatch)
    assert code == 0, stdout + stderr
    assert _ids(out) == {"00000101"}
    with open(out / "import_skipped.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["item"] for r in rows} == {"00000102", "00000103", "line 4"}
    by_item = {r["item"]: r for r in rows}
    assert "colour" in by_item["00000102"]["error"] and "template" in by_item["00000103"]["error"]
    assert all("\n" not in r["error"] for r in rows)
    (summary,) = [ln for ln in stderr.splitlines() if ln.startswith("warning:")]
    assert "skipped 3 of 4 pairs" in summary and "import_skipped.csv" in summary
    assert "import_skipped.csv" in SampleDataset(out).info.extra["skipped"]
    assert validate_dataset(out, progress=False).problems == []

    # a clean re-import into the same folder removes the old report
    import_deeppcb(src, out, mode="pairs", overwrite=True, skip_bad=True)
    assert not (out / "import_skipped.csv").exists() and _ids(out) == set(TRAINVAL)


def test_skip_bad_with_nothing_readable_is_an_error(tmp_path):
    src = deeppcb_source(tmp_path / "src", ["00000001"], ["00000101"], colour="00000101")
    with pytest.raises(AdapterError, match="every one of the 1 pairs"):
        import_deeppcb(src, tmp_path / "te", list_file="test.txt", skip_bad=True)
    assert not (tmp_path / "te" / "manifest.csv").exists()


def elpv_source(root: Path, n: int = 4, broken: int | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        path = root / "images" / f"cell{i:04d}.png"
        if i == broken:
            path.write_bytes(b"not a png at all")
        else:
            Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(path)
        lines.append(f"images/cell{i:04d}.png {1.0 if i % 2 else 0.0} mono")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_elpv_skip_bad(tmp_path, capsys, monkeypatch):
    src = elpv_source(tmp_path / "el", broken=2)
    out = tmp_path / "out"
    code, stdout, stderr = run_main(["import", "elpv", str(src), str(out)], capsys, monkeypatch)
    assert code == 2 and len(error_lines(stderr)) == 1 and "cell0002.png" in error_lines(stderr)[0]
    code, stdout, stderr = run_main(["import", "elpv", str(src), str(out), "--skip-bad"], capsys, monkeypatch)
    assert code == 0, stdout + stderr
    assert SampleDataset(out).sample_ids == ["cell0000", "cell0001", "cell0003"]
    assert "skipped 1 of 4 cells" in stderr


def test_elpv_package_alias(tmp_path, capsys, monkeypatch):
    pytest.importorskip("elpv_dataset")
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # no folder named elpv_dataset here
    code, stdout, stderr = run_main(["import", "elpv", "elpv_dataset", str(out), "--limit", "3"], capsys, monkeypatch)
    assert code == 0, stdout + stderr
    assert len(SampleDataset(out)) == 3


def test_import_help_names_the_elpv_sources(capsys, monkeypatch):
    code, stdout, _ = run_main(["import", "--help"], capsys, monkeypatch)
    text = " ".join(stdout.split())
    assert code == 0 and "'-' (or 'elpv_dataset')" in text and "--skip-bad" in text and "--list" in text


def test_sem_pairs_skip_bad(tmp_path):
    from seminspect.data.adapters import import_sem_pairs

    src = tmp_path / "sp"
    src.mkdir()
    rng = np.random.default_rng(0)
    for case in ("case1", "case3"):
        img = (rng.random((40, 48)) * 255).astype(np.uint8)
        Image.fromarray(img).save(src / f"{case}_inspected_image.tif")
        if case == "case1":
            Image.fromarray(img).save(src / f"{case}_reference_image.tif")
    with pytest.raises(AdapterError, match="case3_reference_image.tif"):
        import_sem_pairs(src, tmp_path / "a")
    lines: list[str] = []
    root = import_sem_pairs(src, tmp_path / "b", skip_bad=True, log=lines.append)
    assert SampleDataset(root).sample_ids == ["case1"] and len(lines) == 1 and "case3" in lines[0]


@pytest.mark.parametrize(("kind", "extra"), [("elpv", ["--list", "test.txt"]), ("samsung-depth", ["--skip-bad"])])
def test_options_that_do_not_apply_are_refused(tmp_path, kind, extra, capsys, monkeypatch):
    code, stdout, stderr = run_main(["import", kind, str(tmp_path), str(tmp_path / "o"), *extra], capsys, monkeypatch)
    assert code == 2 and len(error_lines(stderr)) == 1 and extra[0] in error_lines(stderr)[0]


def test_patch_larger_than_the_image_is_one_line(tmp_path):
    src = deeppcb_source(tmp_path / "src", TRAINVAL[:1], TEST[:1])
    with pytest.raises(AdapterError, match="smaller than the patch size 96"):
        import_deeppcb(src, tmp_path / "o", patch_size=96)
