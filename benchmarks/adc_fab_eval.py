"""Evaluate a trained ADC artefact on a freshly generated virtual-fab test set (CPU-starved fallback).

    # 1. close an interrupted generation: manifest of the samples that are complete
    python benchmarks/adc_fab_eval.py assemble /tmp/fabh/run/data/test
    # 2. encode it in shards, one thread each (two processes = the two threads allowed)
    nice -n 10 python benchmarks/adc_fab_eval.py encode ARTEFACT DATA CACHE --shard 0/2 &
    nice -n 10 python benchmarks/adc_fab_eval.py encode ARTEFACT DATA CACHE --shard 1/2
    # 3. metrics of the artefact, the same model without references, one trained without them
    nice -n 10 python benchmarks/adc_fab_eval.py eval ARTEFACT DATA CACHE --shards 2 \
        --train-data DEMO_DATA=DEMO_CACHE --out /tmp/fabh/eval

ARTEFACT is a folder written by ``train`` (here the README main job's, trained on the seed-0
virtual fab); DATA a virtual-fab folder generated with another seed (never seen in training).
The thresholds are the artefact's own (calibrated on its calib split); the variant without
references is re-calibrated on that calib split without references; the model trained without
references is trained on the artefact's training split (same stratified validation carve-out as
``train``), read from the training dataset's feature cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from adc_common import fit_heads  # noqa: E402
from adc_virtual_fab import HEADER, Clock, concat, evaluate_calibrated, headline, row  # noqa: E402
from bench_env import load  # noqa: E402

from seminspect.data.dataset import SampleDataset  # noqa: E402
from seminspect.data.manifest import DatasetInfo, write_manifest  # noqa: E402
from seminspect.data.synth.dataset import _done_rows, plan_dataset  # noqa: E402
from seminspect.inference import load_artefact  # noqa: E402
from seminspect.training.adc_trainer import features_for, split_validation  # noqa: E402
from seminspect.training.config import ADCConfig  # noqa: E402
from seminspect.utils.io import atomic_write_json, atomic_write_text  # noqa: E402


def assemble(root: Path) -> None:
    """Write manifest + dataset.yaml for the complete samples of an interrupted ``generate_dataset``."""
    g = json.loads((root / "generation.json").read_text())
    plan = plan_dataset(g["n_samples"], g["abnormal_fraction"], g["seed"], g["splits"])
    rows: list[dict[str, Any]] = []
    done = 0
    for sid, dtype, sseed, split in plan:
        r = _done_rows(root, sid, sseed, dtype, split)
        if r is not None:
            rows += r
            done += 1
    DatasetInfo(taxonomy="sem_default", depth_units="nm",
                description=f"virtual fab: {done} of {g['n_samples']} planned samples (generation stopped early), "
                            f"difficulty {g['config']['difficulty']}, seed {g['seed']}",
                extra={"generator": "seminspect.data.synth", "image_size": g["config"]["image_size"],
                       "planned_samples": g["n_samples"], "complete_samples": done}).write(root)
    write_manifest(root, rows, "csv")
    types = {r["defect_type"] for r in rows if r.get("defect_type")}
    print(f"{root}: manifest of {done} complete samples of {g['n_samples']} planned; {len(types)} defect types")


def _shard(ds: SampleDataset, i: int, n: int) -> SampleDataset:
    return ds.subset(ds.sample_ids[i::n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["assemble", "encode", "eval"])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--shard", default="0/1")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--train-data", default=None, metavar="DATA=CACHE")
    ap.add_argument("--out", default="/tmp/fabh/eval")
    ap.add_argument("--trained-without", default="ref,zoom", help="roles: a model trained and tested without each")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.mode == "assemble":
        assemble(Path(a.paths[0]))
        return
    artefact, data, cache = a.paths
    art = load_artefact(artefact)
    model, thresholds, tax = art.model, art.thresholds, art.taxonomy
    cfg = ADCConfig.from_yaml(Path(artefact) / "config.yaml")
    ds = SampleDataset(data)
    if a.mode == "encode":
        i, n = (int(x) for x in a.shard.split("/"))
        clk = Clock()
        sub = _shard(ds, i, n)
        features_for(model, sub, cfg, cfg.train.tta, Path(cache), f"encoding shard {i}/{n}")
        st = clk.done(sites=len(sub), views_per_site=len(ds[0].views), threads=1)
        atomic_write_json(Path(cache) / f"encode_shard{i}of{n}.json", st)
        print(st)
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"argv": sys.argv, "load_at_start": load(),
                               "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                               "artefact": str(artefact), "test_data": str(data), "stages": {}}
    parts, order = [], []
    for i in range(a.shards):
        sub = _shard(ds, i, a.shards)
        parts.append((f"shard{i}", features_for(model, sub, cfg, cfg.train.tta, Path(cache), f"shard {i}")))
        order += sub.sample_ids
        f = Path(cache) / f"encode_shard{i}of{a.shards}.json"
        if f.is_file():
            summary["stages"][f"encode_test_shard{i}"] = json.loads(f.read_text())
    test = concat(parts)
    test.sample_ids = order
    troot, _, tcache = (a.train_data or "").partition("=")
    tds = SampleDataset(troot)
    calib = features_for(model, tds.split(cfg.data.calib_split), cfg, cfg.train.tta, Path(tcache), "calib")
    counts = np.asarray(thresholds["type_train_counts"], dtype=np.int64)
    y = test.is_abnormal.numpy()
    summary["test_sites"], summary["test_abnormal"] = len(test), int((y == 1).sum())
    summary["test_types_present"] = int(len(np.unique(test.type_index.numpy()[y == 1])))
    rows = []
    clk = Clock()
    m, th, pt = evaluate_calibrated(model, cfg, tax, calib, test, counts)
    summary["stages"]["calibrate_evaluate"] = clk.done()
    summary["plain"] = headline(m)
    rows.append(row("README main job's model (5 target + 5 reference views + 2 zooms)", m, None))
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "rows.md", HEADER + "\n" + "\n".join(rows) + "\n")
    summary["variants"] = {}
    mv, _, _ = evaluate_calibrated(model, cfg, tax, calib.drop_role(1), test.drop_role(1), counts)
    summary["variants"]["noref_test"] = headline(mv)
    rows.append(row("same model, reference views removed at test (re-calibrated on calib without them)", mv, None))
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "rows.md", HEADER + "\n" + "\n".join(rows) + "\n")
    roles = [r for r in a.trained_without.split(",") if r]
    if roles:
        tr_all = features_for(model, tds.split(cfg.data.train_split), cfg, cfg.train.augment, Path(tcache), "train")
        tr, va = split_validation(tr_all, cfg.data.val_fraction, cfg.seed)
    for role in roles:
        code = {"ref": 1, "zoom": 2}[role]
        clk = Clock()
        mdl, secs = fit_heads(cfg, tax, tr.drop_role(code), va.drop_role(code), seed=cfg.seed)
        st = clk.done(train_sites=len(tr), val_sites=len(va))
        mv, _, _ = evaluate_calibrated(mdl, cfg, tax, calib.drop_role(code), test.drop_role(code), counts)
        summary["variants"][f"no{role}_trained"] = {**headline(mv), "stage": st}
        rows.append(row(f"trained (same {len(tr)} + {len(va)} sites) and tested without {role} views", mv, secs))
        atomic_write_json(out / "summary.json", summary)
        atomic_write_text(out / "rows.md", HEADER + "\n" + "\n".join(rows) + "\n")
    summary["load_at_end"] = load()
    summary["finished_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "rows.md", HEADER + "\n" + "\n".join(rows) + "\n")
    print(HEADER + "\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
