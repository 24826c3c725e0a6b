"""validate_dataset: one test per kind of bad input, each checking the kind, file and row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from seminspect.data.manifest import DatasetInfo, DatasetWriter
from seminspect.data.sample import Sample, View
from seminspect.data.validate import KINDS, validate_dataset


def _sample(sid: str, abnormal: bool | None, dtype: str | None, n: int = 2, size: int = 16,
            seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    views = []
    for i in range(n):
        img = rng.integers(0, 255, (size, size), dtype=np.uint8)
        mask = np.zeros((size, size), bool)
        if abnormal:
            mask[4:8, 4:8] = True
        views.append(View("target", i, img, mask if abnormal else None))
        views.append(View("reference", i, rng.integers(0, 255, (size, size), dtype=np.uint8)))
    return Sample(sid, views, is_abnormal=abnormal, defect_type=dtype, metadata={"lot": "L1", "split": "train"})


def make_good(root: Path) -> Path:
    """3 samples: abnormal bridge, normal, unlabelled; 2 targets + 2 references each, 16x16."""
    with DatasetWriter(root, DatasetInfo(taxonomy="sem_default")) as w:
        w.add(_sample("s1", True, "bridge", seed=1))
        w.add(_sample("s2", False, None, seed=2))
        w.add(_sample("s3", None, None, seed=3))
    return root


def edit(root: Path, fn) -> None:
    path = root / "manifest.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = fn(df)
    df.to_csv(path, index=False)


def only(report, kind: str):
    found = [p for p in report.problems if p.kind == kind]
    assert found, f"expected a {kind!r} problem, got {[str(p) for p in report.problems]}"
    return found


def test_good_dataset_passes_with_counts(tmp_path):
    rep = validate_dataset(make_good(tmp_path / "d"), progress=False)
    assert rep.ok and rep.problems == []
    assert (rep.n_samples, rep.n_views) == (3, 12)
    assert rep.labels == {"": 1, "abnormal": 1, "normal": 1}
    assert rep.defect_types == {"bridge": 1}
    assert rep.roles == {"reference": 6, "target": 6}
    assert rep.views_per_sample == {4: 3}
    assert rep.splits == {"train": 3}
    assert rep.image_sizes == {"16x16": 12} and rep.dtypes == {"uint8": 12}


def test_missing_file_reported_with_row(tmp_path):
    root = make_good(tmp_path / "d")
    df = pd.read_csv(root / "manifest.csv", dtype=str)
    (root / df["path"].iloc[3]).unlink()
    (root / df["path"].iloc[5]).unlink()
    rep = validate_dataset(root, progress=False)
    probs = only(rep, "missing_file")
    assert [p.row for p in probs] == [5, 7]  # both reported, line numbers (header = 1)
    assert probs[0].file.endswith("manifest.csv") and df["path"].iloc[3] in probs[0].message
    assert not rep.ok


def test_corrupt_image(tmp_path):
    root = make_good(tmp_path / "d")
    df = pd.read_csv(root / "manifest.csv", dtype=str)
    (root / df["path"].iloc[0]).write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    rep = validate_dataset(root, progress=False)
    (p,) = only(rep, "corrupt_image")
    assert p.row == 2 and p.sample_id == "s1" and "cannot decode" in p.message


def test_colour_image_is_rejected(tmp_path):
    from PIL import Image

    root = make_good(tmp_path / "d")
    df = pd.read_csv(root / "manifest.csv", dtype=str)
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(root / df["path"].iloc[1])
    (p,) = only(rep := validate_dataset(root, progress=False), "corrupt_image")
    assert "colour" in p.message and p.row == 3 and not rep.ok


def test_target_reference_size_mismatch(tmp_path):
    from seminspect.data.imageio import write_image

    root = make_good(tmp_path / "d")
    df = pd.read_csv(root / "manifest.csv", dtype=str)
    ref_row = int(np.flatnonzero((df["sample_id"] == "s2") & (df["role"] == "reference"))[0])
    write_image(root / df["path"].iloc[ref_row], np.zeros((20, 16), np.uint8))
    (p,) = only(validate_dataset(root, progress=False), "size_mismatch")
    assert p.row == ref_row + 2 and p.sample_id == "s2" and "20x16" in p.message and "16x16" in p.message


def test_mask_size_mismatch(tmp_path):
    from seminspect.data.imageio import write_image

    root = make_good(tmp_path / "d")
    df = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    row = int(np.flatnonzero(df["mask"] != "")[0])
    write_image(root / df["mask"].iloc[row], np.zeros((8, 8), bool))
    (p,) = only(validate_dataset(root, progress=False), "mask_size_mismatch")
    assert p.row == row + 2 and "8x8" in p.message


def test_duplicate_view_rows(tmp_path):
    root = make_good(tmp_path / "d")
    edit(root, lambda df: pd.concat([df, df.iloc[[0]]], ignore_index=True))
    rep = validate_dataset(root, progress=False)
    (p,) = only(rep, "duplicate_view")
    assert p.row == 14 and "row 2" in p.message
    assert only(rep, "duplicate_path")[0].severity == "warning"


def test_duplicate_sample_ids_differing_in_case(tmp_path):
    root = make_good(tmp_path / "d")

    def fn(df):
        df.loc[df["sample_id"] == "s3", "sample_id"] = "S1"
        return df

    edit(root, fn)
    (p,) = only(validate_dataset(root, progress=False), "duplicate_sample_id")
    assert p.sample_id == "S1" and "'s1'" in p.message and p.row == 10


def test_inconsistent_sample_fields(tmp_path):
    root = make_good(tmp_path / "d")

    def fn(df):
        df.loc[3, "lot"] = "L2"
        df.loc[2, "label"] = "normal"
        return df

    edit(root, fn)
    probs = only(validate_dataset(root, progress=False), "inconsistent_sample")
    assert sorted((p.row, p.message.split()[0]) for p in probs) == [(4, "label"), (5, "lot")]


def test_bad_label(tmp_path):
    root = make_good(tmp_path / "d")
    edit(root, lambda df: df.assign(label=df["label"].replace({"normal": "ok"})))
    (p,) = only(validate_dataset(root, progress=False), "bad_label")
    assert p.sample_id == "s2" and "'ok'" in p.message


def test_unknown_defect_type_and_taxonomy_override(tmp_path):
    root = make_good(tmp_path / "d")
    edit(root, lambda df: df.assign(defect_type=df["defect_type"].replace({"bridge": "brdge"})))
    (p,) = only(validate_dataset(root, progress=False), "unknown_defect_type")
    assert "'brdge'" in p.message and "sem-default" in p.message and p.row == 2
    # "bridge" itself is not a DeepPCB type: the --taxonomy override is honoured
    root2 = make_good(tmp_path / "d2")
    rep = validate_dataset(root2, taxonomy="deeppcb", progress=False)
    assert only(rep, "unknown_defect_type")[0].message.startswith("defect_type 'bridge'")


def test_type_on_normal_sample(tmp_path):
    root = make_good(tmp_path / "d")

    def fn(df):
        df.loc[df["sample_id"] == "s2", "defect_type"] = "open"
        return df

    edit(root, fn)
    (p,) = only(validate_dataset(root, progress=False), "type_on_normal")
    assert p.sample_id == "s2" and "'normal'" in p.message


def test_no_target_view(tmp_path):
    root = make_good(tmp_path / "d")
    edit(root, lambda df: df[~((df["sample_id"] == "s2") & (df["role"] == "target"))])
    (p,) = only(validate_dataset(root, progress=False), "no_target")
    assert p.sample_id == "s2"


def test_bad_role_and_index(tmp_path):
    root = make_good(tmp_path / "d")

    def fn(df):
        df.loc[0, "role"] = "tgt"
        df.loc[1, "index"] = "x"
        df.loc[2, "index"] = "7"
        return df

    edit(root, fn)
    rep = validate_dataset(root, progress=False)
    assert only(rep, "bad_role")[0].row == 2
    assert only(rep, "bad_index")[0].row == 3
    assert only(rep, "index_out_of_range")[0].row == 4


def test_more_than_15_views(tmp_path):
    root = make_good(tmp_path / "d")

    def fn(df):
        extra = []
        for role in ("target", "reference", "zoom"):
            for i in range(5):
                row = df.iloc[0].copy()
                row["role"], row["index"] = role, str(i)
                extra.append(row)
        extra.append(df.iloc[1])  # a 16th row (a duplicate too)
        rest = df[df["sample_id"] != "s1"]
        return pd.concat([pd.DataFrame(extra), rest], ignore_index=True)

    edit(root, fn)
    rep = validate_dataset(root, progress=False)
    (p,) = only(rep, "too_many_views")
    assert p.sample_id == "s1" and "16 views" in p.message


def test_missing_required_column(tmp_path):
    root = make_good(tmp_path / "d")
    edit(root, lambda df: df.drop(columns=["role"]))
    rep = validate_dataset(root, progress=False)
    (p,) = only(rep, "missing_column")
    assert "'role'" in p.message and not rep.ok


def test_empty_required_field(tmp_path):
    root = make_good(tmp_path / "d")

    def fn(df):
        df.loc[4, "path"] = ""
        return df

    edit(root, fn)
    (p,) = only(validate_dataset(root, progress=False), "empty_field")
    assert p.row == 6 and "path" in p.message


def test_no_manifest_and_empty_manifest(tmp_path):
    (tmp_path / "e").mkdir()
    assert only(validate_dataset(tmp_path / "e", progress=False), "no_manifest")
    root = make_good(tmp_path / "d")
    edit(root, lambda df: df.iloc[0:0])
    assert only(validate_dataset(root, progress=False), "empty_manifest")
    assert only(validate_dataset(tmp_path / "nope", progress=False), "no_manifest")


@pytest.mark.parametrize("text,needle", [("taxonomy: [unclosed", "not valid YAML"),
                                         ("- a\n- b\n", "expected a mapping"),
                                         ("taxonomy: no_such_tree\n", "cannot be loaded")])
def test_bad_dataset_yaml(tmp_path, text, needle):
    root = make_good(tmp_path / "d")
    (root / "dataset.yaml").write_text(text)
    rep = validate_dataset(root, progress=False)
    (p,) = only(rep, "bad_dataset_yaml")
    assert needle in p.message and p.file.endswith("dataset.yaml") and not rep.ok


def test_missing_and_corrupt_depth(tmp_path):
    root = tmp_path / "d"
    s = _sample("s1", None, None)
    s.depth = np.zeros((16, 16), np.float32)
    t = _sample("s2", None, None)
    t.depth = np.zeros((12, 16), np.float32)
    with DatasetWriter(root, DatasetInfo()) as w:
        w.add(s)
        w.add(t)
    rep = validate_dataset(root, progress=False)
    (w,) = only(rep, "depth_size_mismatch")
    assert w.severity == "warning" and w.sample_id == "s2" and rep.ok
    (root / "images/s1/depth.tiff").write_bytes(b"junk")
    (root / "images/s2/depth.tiff").unlink()
    rep = validate_dataset(root, progress=False)
    assert only(rep, "corrupt_image")[0].sample_id == "s1"
    assert only(rep, "missing_file")[0].sample_id == "s2"


def test_every_problem_reported_not_just_first(tmp_path):
    root = make_good(tmp_path / "d")

    def fn(df):
        df.loc[0, "role"] = "bogus"
        df.loc[5, "path"] = "images/none.png"
        df.loc[df["sample_id"] == "s2", "label"] = "maybe"
        return df

    edit(root, fn)
    kinds = validate_dataset(root, progress=False).kinds()
    assert {"bad_role", "missing_file", "bad_label"} <= set(kinds)
    assert set(kinds) <= set(KINDS)


def test_parquet_manifest(tmp_path):
    root = tmp_path / "d"
    with DatasetWriter(root, DatasetInfo(), manifest_format="parquet") as w:
        w.add(_sample("s1", True, "open"))
    rep = validate_dataset(root, progress=False)
    assert rep.ok and rep.n_views == 4 and rep.manifest.endswith("manifest.parquet")


def test_report_json_and_summary(tmp_path):
    root = make_good(tmp_path / "d")
    edit(root, lambda df: df.assign(label=df["label"].replace({"normal": "ok"})))
    rep = validate_dataset(root, progress=False)
    rep.save_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["ok"] is False and data["n_errors"] == 1 and data["problems"][0]["kind"] == "bad_label"
    assert rep.summary().startswith("FAILED") and "bad_label=1" in rep.summary()


def test_cli_validate_exit_codes(tmp_path):
    from seminspect.cli import app

    root = make_good(tmp_path / "d")
    runner = CliRunner()
    res = runner.invoke(app, ["validate", str(root), "--json", str(tmp_path / "ok.json")])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output and json.loads((tmp_path / "ok.json").read_text())["ok"] is True
    edit(root, lambda df: df.assign(defect_type=df["defect_type"].replace({"bridge": "nope"})))
    res = runner.invoke(app, ["validate", str(root)])
    assert res.exit_code == 1
    assert "unknown_defect_type" in res.output and "FAILED" in res.output
    res = runner.invoke(app, ["validate", str(tmp_path / "absent")])
    assert res.exit_code == 1 and "Traceback" not in res.output


def test_data_format_doc_lists_every_problem_kind():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "data_format.md").read_text(encoding="utf-8")
    table = doc.split("## What `seminspect validate` checks", 1)[1].split("\n## ", 1)[0]
    missing = [kind for kind in KINDS if f"`{kind}`" not in table]
    assert not missing, f"docs/data_format.md's table of validate problem kinds lacks {missing}"
