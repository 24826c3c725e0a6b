"""The main job end to end on a tiny virtual fab: every stage runs and leaves its files."""

from __future__ import annotations

import json

from seminspect.pipeline import run_demo


def test_demo_runs_end_to_end(tmp_path):
    messages: list[str] = []
    result = run_demo(tmp_path / "demo", n_samples=40, image_size=128, n_zooms=1, seed=1, workers=1,
                      log=messages.append)
    assert result.report.is_file() and result.report.stat().st_size > 10_000
    assert result.contact_sheet.is_file()
    assert (result.artefact / "weights.safetensors").is_file()
    assert json.loads((tmp_path / "demo" / "validation.json").read_text())["problems"] == []
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["n"] > 0 and 0.0 <= summary["auroc"] <= 1.0
    assert set(summary["seconds"]) == {"generate", "validate", "train_calibrate_evaluate", "new_sites_predict"}
    assert [m.split("]")[0] for m in messages if m.startswith("[")] == [f"[{k}/6" for k in range(1, 7)]
