"""Fast inspection, one run: ``seminspect predict`` end to end per backend, and where one site's time goes.

    python benchmarks/fast_predict.py ARTEFACT --data-root /tmp/fast [--n 200] [--result FILE]

Generates ``--n`` unlabelled virtual-fab sites of 5 target + 5 reference views at 460 px, the
defect anywhere in the inner 80 % of the field (``site_offset`` 0.4; seed 11), under
``--data-root`` (reused when present). Then, one after the other in child processes on the same
files, ``seminspect predict`` (PNG on disk -> Parquet) with:

- the artefact as trained (its crop and crop centre) on ``--backend torch`` (eager; and with two
  reader threads), ``onnxruntime`` fp32 (without reader threads, and with predict's default)
  and, when ``seminspect optimise`` made one, int8; with OpenVINO installed, ``openvino`` fp32,
  bf16 (only where the CPU has bf16 instructions, `bf16_is_fast`) and int8;
- the same weights with ``crop: null`` (every view whole, 460 px, native resolution, sub-pixel
  registration as the inspector does without a crop) on torch and onnxruntime, on the first
  ``--n-whole`` sites only (it is slow): what looking at the whole field at full resolution costs.

In-process, on the first 50 sites: the time per stage (decode, registration, locating the
window and cropping, the ADC, triage), the ADC's FLOPs per site (torch's FlopCounterMode) and
the rate this achieves next to a fp32 GEMM micro-benchmark of the same process.
Writes ``benchmarks/results/fast_predict.md`` (or ``--result``).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from predict_common import header, load, predict_child  # noqa: E402
from predict_throughput import gemm_gflops  # noqa: E402

from seminspect.models.anomaly.search import bf16_is_fast  # noqa: E402
from seminspect.utils.io import atomic_write_text, read_yaml_mapping  # noqa: E402


def make_sites(root: Path, n: int, seed: int = 11) -> Path:
    from seminspect.data.synth import FabConfig
    from seminspect.pipeline import unlabelled_batch

    if (root / "manifest.csv").is_file():
        return root
    fab = FabConfig(image_size=460, n_angles=5, n_zooms=0, site_offset=0.4)
    return unlabelled_batch(root, n, fab, seed=seed, workers=None)


def whole_field_copy(artefact: Path, dest: Path) -> Path:
    """The artefact with ``image.crop: null`` (same weights): every view seen whole."""
    import yaml

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(artefact, dest, ignore=shutil.ignore_patterns("runtime", "cache", "*.html", "checkpoint.pt"))
    cfg = read_yaml_mapping(dest / "config.yaml", ValueError)
    cfg["image"].update({"crop": None, "crop_centre": "image", "registration_method": "phase"})
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def stages(artefact: Path, data: Path, n: int = 50) -> tuple[list[str], float]:
    """Mean ms per stage over ``n`` sites (onnxruntime fp32), and the ADC's GFLOP per site."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from seminspect.data.stream import iter_sites
    from seminspect.export.adc_graph import ADCGraph
    from seminspect.inference.inspector import Inspector
    from seminspect.inference.runtime import site_inputs

    insp = Inspector.load(artefact, threads=torch.get_num_threads())
    art, prep = insp.artefact, insp.prepare
    t = {k: 0.0 for k in ("decode", "registration", "locate + crop", "ADC (onnxruntime fp32)", "triage")}
    sites = iter_sites(data)
    flops, k = 0.0, 0
    for _ in range(n):
        t0 = time.perf_counter()
        s = next(sites).sample
        t1 = time.perf_counter()
        a = prep.align(s)
        t2 = time.perf_counter()
        p = prep.apply(s, a)
        t3 = time.perf_counter()
        inputs = site_inputs(art, p)
        probs = insp.runtime.probabilities(*inputs)
        t4 = time.perf_counter()
        insp._route(probs["abnormal"].astype(np.float64), probs["types"].astype(np.float64), None)
        t5 = time.perf_counter()
        for key, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            t[key] += dt
        if k == 0:
            with FlopCounterMode(display=False) as fc, torch.no_grad():
                ADCGraph(art.model)(*inputs)
            flops = fc.get_total_flops() * len(art.tta)
        k += 1
    rows = [f"| {key} | {1000 * v / n:.1f} |" for key, v in t.items()]
    rows.append(f"| total | {1000 * sum(t.values()) / n:.1f} |")
    return rows, flops / 1e9


def adc_alone(artefact: Path, data: Path, n: int = 50) -> list[str]:
    """ms per site of the ADC alone on the same ``n`` prepared sites, per backend (torch.compile included).

    Each backend judges every site once to warm up (torch.compile compiles then: its time is given),
    then once more, timed; the largest p(abnormal) difference from torch eager is given too.
    """
    import torch

    from seminspect.data.stream import iter_sites
    from seminspect.inference.inspector import Inspector
    from seminspect.inference.runtime import site_inputs

    insp = Inspector.load(artefact, threads=torch.get_num_threads(), backend="torch", with_anomaly=False)
    sites = iter_sites(data)
    inputs = [site_inputs(insp.artefact, insp.prepare.apply(s, insp.prepare.align(s)))
              for s in (next(sites).sample for _ in range(n))]
    choices = [("torch eager", "torch", "fp32"), ("torch.compile", "torch", "fp32"),
               ("onnxruntime", "onnxruntime", "fp32")]
    if importlib.util.find_spec("openvino") is not None:
        choices += [("openvino", "openvino", "fp32"), *((("openvino", "openvino", "bf16"),) if bf16_is_fast() else ())]
    rows, ref, base_ms = [], None, None
    for label, backend, precision in choices:
        judge = Inspector.load(artefact, threads=torch.get_num_threads(), backend=backend, precision=precision,
                               with_anomaly=False)
        if label == "torch.compile":
            model = judge.artefact.model
            model.encode_views = torch.compile(model.encode_views)
        t0 = time.perf_counter()
        for x in inputs:
            judge.runtime.probabilities(*x)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = np.concatenate([judge.runtime.probabilities(*x)["abnormal"] for x in inputs])
        ms = 1000 * (time.perf_counter() - t0) / n
        ref = got if ref is None else ref
        base_ms = ms if base_ms is None else base_ms
        rows.append(f"| {label} | {precision} | {ms:.1f} | {base_ms / ms:.1f} | {float(np.abs(got - ref).max()):.1e} "
                    f"| {warm:.1f} |")
        print(rows[-1], flush=True)
    return rows


def predict_rows(a: argparse.Namespace, data: Path, data_whole: Path, whole: Path, int8: bool) -> list[str]:
    """One table row per (input, backend, precision, reader threads), each run ``a.repeats`` times round
    robin (rows move by a few sites/s between runs on a VM): the rates of every run, the ratio of their means."""
    trained = [("torch", "fp32", None), ("torch", "fp32", 2), ("onnxruntime", "fp32", 0), ("onnxruntime", "fp32", None)]
    runs = [("as trained", a.artefact, *r) for r in trained]
    if int8:
        runs.append(("as trained", a.artefact, "onnxruntime", "int8", None))
    if importlib.util.find_spec("openvino") is not None:  # bf16 only where the CPU has it (else it runs fp32)
        runs += [("as trained", a.artefact, "openvino", p, None)
                 for p in ("fp32", *(("bf16",) if bf16_is_fast() else ()), *(("int8",) if int8 else ()))]
    runs += [("whole views, 460 px", whole, "torch", "fp32", None),
             ("whole views, 460 px", whole, "onnxruntime", "fp32", None)]
    seen: dict[int, list[tuple[float, float, float, str, str]]] = {i: [] for i in range(len(runs))}
    for _ in range(a.repeats):
        for i, (name, art, backend, precision, prefetch) in enumerate(runs):
            out = a.data_root / f"d_{art.name}_{backend}_{precision}_{prefetch}.parquet"
            before = load()
            sites = data if art == a.artefact else data_whole
            extra = [] if prefetch is None else ["--prefetch", str(prefetch)]
            summary, wall, peak = predict_child(art, sites, out, ["--backend", backend, "--precision", precision,
                                                                  *extra], f"{name} {backend} {precision}")
            found = re.search(r"ahead by (\d+) thread", summary["notes"][-1])
            seen[i].append((wall, summary["sites_per_second"], peak, before, found.group(1) if found else "0"))
            print(name, backend, precision, prefetch, seen[i][-1], flush=True)
    lines, base = [], {}
    for i, (name, art, backend, precision, prefetch) in enumerate(runs):
        walls, rates, peaks, befores, readers = zip(*seen[i], strict=True)
        n = a.n if art == a.artefact else a.n_whole
        mean = float(np.mean(rates))
        base.setdefault(name, mean)
        default = "" if prefetch is not None else " (default)"
        lines.append(f"| {name} ({n} sites) | {backend} {precision} | {readers[0]}{default} "
                     f"| {' / '.join(f'{w:.1f}' for w in walls)} | {' / '.join(f'{n / w:.2f}' for w in walls)} "
                     f"| {' / '.join(f'{r:.2f}' for r in rates)} | {mean / base[name]:.1f} | {max(peaks):.0f} "
                     f"| {' ; '.join(befores)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artefact", type=Path)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-whole", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each row, round robin; the table gives each")
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "fast_predict.md")
    a = ap.parse_args()
    t_start = time.perf_counter()
    data = make_sites(a.data_root / f"offcentre{a.n}", a.n)
    data_whole = make_sites(a.data_root / f"offcentre{a.n_whole}", a.n_whole)
    whole = whole_field_copy(a.artefact, a.data_root / "whole_field_artefact")
    cfg = read_yaml_mapping(a.artefact / "config.yaml", ValueError)["image"]
    int8 = any((a.artefact / "runtime").glob("*-int8.onnx"))
    lines = header("Fast inspection: 10-view 460 px sites through `seminspect predict`, per backend", sys.argv)
    lines += [f"Artefact `{a.artefact}` (crop {cfg.get('crop')}, crop_centre {cfg.get('crop_centre', 'image')}); "
              f"{a.n} unlabelled virtual-fab sites, 5 target + 5 reference views of 460x460 px (8-bit PNG), "
              f"defect anywhere in the inner 80 % of the field (site_offset 0.4), under `{data}`. Each row is a "
              f"child process run alone, one after the other, every row {a.repeats} times round robin (each run's "
              "figure "
              "given, the ratio is of their means); wall time includes starting Python and loading "
              "the model (and exporting the graph when the artefact has none yet).", ""]
    gflops = gemm_gflops()
    lines += [f"fp32 GEMM 2048x2048 in this process, torch default threads: {gflops:.0f} GFLOP/s.", "",
              "| model input | backend | reader threads | wall (s) | sites/s (wall) | sites/s (predict's clock) "
              "| x torch eager | peak RSS (MiB) | load before |", "|---|---|---|---|---|---|---|---|---|"]
    lines += predict_rows(a, data, data_whole, whole, int8)
    rows, gflop_site = stages(a.artefact, data)
    lines += ["", "Where one site's time goes (as trained, onnxruntime fp32, in-process, mean of 50 sites):", "",
              "| stage | ms per site |", "|---|---|", *rows, "",
              f"The ADC costs {gflop_site:.2f} GFLOP per site (FlopCounterMode on the exported graph's torch twin, "
              f"test-time ops included) against {gflops:.0f} GFLOP/s fp32 GEMM peak of this process.",
              "", "The ADC alone on the same 50 prepared sites, one site per call, in this process (after a "
              "warm-up pass over them; its time, which holds torch.compile's compilation, in the last column):", "",
              "| backend | precision | ms per site | x torch eager | max abs p(abnormal) difference "
              "| warm-up pass (s) |",
              "|---|---|---|---|---|---|", *adc_alone(a.artefact, data),
              "", f"Load average at the end: {load()}; whole run {time.perf_counter() - t_start:.0f} s."]
    atomic_write_text(a.result, "\n".join(lines) + "\n")
    print(f"-> {a.result}")


if __name__ == "__main__":
    main()
