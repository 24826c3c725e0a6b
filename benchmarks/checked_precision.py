"""bf16 and int8 with the fp32 check: how many routes stay fp32's, how many sites are judged twice, what speed is left.

    python benchmarks/checked_precision.py runs/demo/adc --calib runs/demo/data --data-root /tmp/fast \
        --judge test=runs/demo/data:test --judge centred=runs/fov/centred --judge offcentre=runs/fov/offcentre

1. The margins: ``seminspect optimise ARTEFACT --data CALIB --split calib`` (int8: 300 calibration sites,
   then 400 check sites) and ``--precision bf16`` (400 check sites), so every margin comes from the
   calibration split, never from a judged set.
2. Every ``--judge`` set (``FOLDER[:SPLIT]``) through the inspector on ONNX Runtime fp32 (the reference),
   and on ONNX Runtime int8 and OpenVINO bf16, each without and with the fp32 check: the share of sites
   whose route and type decision are fp32's (the bar of issue 23: 99.5 %), and the share judged again.
   Each site is read and aligned once and judged by all five.
3. ``seminspect predict`` end to end (PNG on disk -> Parquet) on ``--n`` unlabelled 460 px sites
   (``fast_predict.make_sites``: 10 views, defect anywhere in the inner 80 %), each row ``--repeats``
   runs round robin in child processes: sites/s by predict's clock (start-up excluded) and wall.
Writes ``benchmarks/results/checked_precision.md`` (or ``--result``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from fast_predict import make_sites  # noqa: E402
from predict_common import header, load, predict_child, run_child  # noqa: E402

from seminspect.utils.io import atomic_write_text  # noqa: E402

CHOICES = [("onnxruntime", "int8", False), ("onnxruntime", "int8", True), ("openvino", "bf16", False),
           ("openvino", "bf16", True)]


def agreement(artefact: Path, spec: str, chunk: int = 100) -> list[tuple[int, int, int, int]]:
    """Per choice: (sites, routes as fp32, type decisions as fp32, judged again) on the set ``spec``."""
    from seminspect.data.dataset import SampleDataset
    from seminspect.inference.guard import CheckedRuntime
    from seminspect.inference.inspector import Inspector
    from seminspect.utils.progress import track

    root, _, split = spec.partition(":")
    ds = SampleDataset(root)
    ds = ds.split(split) if split else ds
    ref = Inspector.load(artefact, with_anomaly=False)
    judges = [Inspector.load(artefact, backend=b, precision=p, fp32_check=c, with_anomaly=False)
              for b, p, c in CHOICES]
    counts = np.zeros((len(CHOICES), 3), dtype=np.int64)
    for start in track(range(0, len(ds), chunk), f"judge {spec}"):
        prepared = [ref.prepare_site(ds[i]) for i in range(start, min(len(ds), start + chunk))]
        want = ref.judge(prepared)
        for k, judge in enumerate(judges):
            got = judge.judge(prepared)
            counts[k] += [int((got.route == want.route).sum()),
                          int((got.triage.type_decision == want.triage.type_decision).sum()), 0]
    for k, judge in enumerate(judges):
        counts[k, 2] = judge.runtime.checked if isinstance(judge.runtime, CheckedRuntime) else 0
    return [(len(ds), *map(int, row)) for row in counts]


def speed(artefact: Path, sites: Path, root: Path, repeats: int) -> list[str]:
    runs = [("onnxruntime", "fp32", None), *CHOICES]
    seen: dict[int, list[tuple[float, float, str, str]]] = {i: [] for i in range(len(runs))}
    for _ in range(repeats):
        for i, (backend, precision, check) in enumerate(runs):
            out = root / f"d_{backend}_{precision}_{check}.parquet"
            flag = [] if check is None else ["--fp32-check" if check else "--no-fp32-check"]
            before = load()
            summary, wall, _ = predict_child(artefact, sites, out, ["--backend", backend, "--precision", precision,
                                                                  *flag], f"predict {backend} {precision} {flag}")
            note = next((n for n in summary["notes"] if n.startswith("ADC on")), "")
            seen[i].append((wall, summary["sites_per_second"], before, note))
            print(backend, precision, check, seen[i][-1], flush=True)
    lines, base = [], None
    for i, (backend, precision, check) in enumerate(runs):
        walls, rates, befores, notes = zip(*seen[i], strict=True)
        mean = float(np.mean(rates))
        base = mean if base is None else base
        checked = "-" if check is None else ("yes" if check else "no")
        lines.append(f"| {backend} {precision} | {checked} | {' / '.join(f'{r:.2f}' for r in rates)} | "
                     f"{mean / base:.2f} | {' / '.join(f'{w:.1f}' for w in walls)} | {notes[-1]} | "
                     f"{' ; '.join(befores)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artefact", type=Path)
    ap.add_argument("--calib", type=Path, required=True, help="dataset whose calib split sets the margins")
    ap.add_argument("--judge", action="append", default=[], help="NAME=FOLDER[:SPLIT], labelled or not")
    ap.add_argument("--data-root", type=Path, required=True, help="where the unlabelled speed sites go")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "checked_precision.md")
    a = ap.parse_args()
    if importlib.util.find_spec("openvino") is None:
        raise SystemExit("needs OpenVINO (pip install 'seminspect[openvino]') for the bf16 rows")
    t0 = time.time()
    lines = header("bf16 and int8 with the fp32 check near the policy's thresholds", sys.argv)
    reports = {}
    for precision in ("int8", "bf16"):
        code, wall, _ = run_child(["optimise", str(a.artefact), "--data", str(a.calib), "--split", "calib",
                                   "--check", "400", "--precision", precision])
        if code != 0:
            raise SystemExit(f"optimise --precision {precision} exited {code}")
        found = sorted((a.artefact / "runtime").glob(f"adc-*-{precision}.json"), key=lambda p: p.stat().st_mtime)
        reports[precision] = json.loads(found[-1].read_text()) | {"wall": wall}
    lines += [f"Artefact `{a.artefact}`; margins from `seminspect optimise` on its calib split "
              f"(`{a.calib}`), twice the largest difference from fp32 on 400 check sites:", "",
              "| precision | calibration sites | check sites | max abs dp(abnormal) | max abs dp(type) | "
              "routes as fp32 on the check sites, unchecked | optimise wall (s) |", "|---|---|---|---|---|---|---|"]
    for precision, r in reports.items():
        lines.append(f"| {precision} ({r['backend']}) | {r['calibration_sites']} | {r['check_sites']} | "
                     f"{r['max_abs_diff_p_abnormal']:.4f} | {r['max_abs_diff_p_type']:.4f} | "
                     f"{100 * r['route_agreement']:.1f} % | {r['wall']:.0f} |")
    lines += ["", "Decisions against ONNX Runtime fp32 on the judged sets (the same sites read once, judged by each):",
              "", "| set | precision | fp32 check | sites | routes as fp32 | type decisions as fp32 | judged again |",
              "|---|---|---|---|---|---|---|"]
    for spec in a.judge:
        name, _, folder = spec.partition("=")
        for (backend, precision, check), (n, same, same_t, again) in zip(CHOICES, agreement(a.artefact, folder),
                                                                         strict=True):
            lines.append(f"| {name} | {backend} {precision} | {'yes' if check else 'no'} | {n} | "
                         f"{100 * same / n:.2f} % ({n - same} differ) | {100 * same_t / n:.2f} % | "
                         f"{f'{100 * again / n:.1f} %' if check else '-'} |")
            print(lines[-1], flush=True)
    sites = make_sites(a.data_root / "speed", a.n)
    lines += ["", f"`seminspect predict` end to end on {a.n} unlabelled sites (`{sites}`; 10 views of 460 px), "
              f"{a.repeats} runs round robin, child processes one at a time:", "",
              "| ADC | fp32 check | sites/s (predict's clock), each run | x ONNX Runtime fp32 | wall (s) "
              "| runtime note (last run) | load before |", "|---|---|---|---|---|---|---|",
              *speed(a.artefact, sites, a.data_root, a.repeats), "",
              f"Load average at the end: {load()}; whole run {time.time() - t0:.0f} s.", ""]
    atomic_write_text(a.result, "\n".join(lines))
    print(f"wrote {a.result}")


if __name__ == "__main__":
    main()
