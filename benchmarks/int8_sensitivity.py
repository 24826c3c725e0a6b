"""How far an artefact's routes are from int8: route sensitivity to p(abnormal), and each convolution's share.

    python benchmarks/int8_sensitivity.py runs/demo/adc --data runs/demo/data \
        --report test=runs/demo/data:test --report new=runs/demo/new_sites

The int8 bar of issue 23 is "routes identical to fp32 on >= 99.5 % of sites". A route moves when
p(abnormal) crosses one of the policy's thresholds, so the first table counts the sites whose route
would move if p(abnormal) moved by +-eps (fp32 scores, the artefact's own policy): how small the
error of any cheaper arithmetic must be. The second quantises the ADC graph as `seminspect optimise`
does (300 sites of the calib split, min-max ranges, per-channel weights) and then one pointwise
convolution alone (every other convolution fp32), and measures on the next 400 calib sites how far
p(abnormal) moves and how many routes change, with the time per site beside fp32's in the same
process. Sites are drawn as `optimise` draws them (seed 0). Nothing here is chosen on the --report
sets. Writes ``benchmarks/results/int8_sensitivity.md`` (or ``--result``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from predict_common import header, load  # noqa: E402

from seminspect.inference.guard import decide  # noqa: E402
from seminspect.utils.io import atomic_write_text  # noqa: E402

EPS = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def prepared(art, data: str, idx=None) -> list[tuple]:
    """The ADC's inputs for the sites of ``data`` (``FOLDER[:SPLIT]``), or its sites ``idx``."""
    from seminspect.data.dataset import SampleDataset
    from seminspect.inference.optimise import _inputs
    from seminspect.utils.progress import track

    root, _, split = data.partition(":")
    ds = SampleDataset(root)
    ds = ds.split(split) if split else ds
    idx = range(len(ds)) if idx is None else idx
    return [_inputs(art, ds[int(i)]) for i in track(idx, f"prepare {data}")]


def judge(art, runtime, sites: list[tuple]) -> tuple[np.ndarray, np.ndarray, object, float]:
    """p(abnormal), type probabilities, the policy's decisions and ms per site."""
    t = time.perf_counter()
    ps = [runtime.probabilities(*x) for x in sites]
    ms = 1000 * (time.perf_counter() - t) / len(sites)
    ab, ty = np.concatenate([p["abnormal"] for p in ps]), np.concatenate([p["types"] for p in ps])
    return ab, ty, decide(art.policy, ab, ty), ms


def moved(art, ab: np.ndarray, ty: np.ndarray, route: np.ndarray, eps: float) -> int:
    """Sites whose route changes when p(abnormal) moves by +eps or -eps."""
    out = np.zeros(len(ab), bool)
    for sign in (-1.0, 1.0):
        out |= decide(art.policy, np.clip(ab + sign * eps, 0.0, 1.0), ty).route != route
    return int(out.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artefact", type=Path)
    ap.add_argument("--data", required=True, help="labelled dataset folder with a calib split")
    ap.add_argument("--report", action="append", default=[], help="NAME=FOLDER[:SPLIT] for the eps table only")
    ap.add_argument("--calib-sites", type=int, default=300)
    ap.add_argument("--select-sites", type=int, default=400)
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "int8_sensitivity.md")
    args = ap.parse_args()

    from seminspect.data.dataset import SampleDataset
    from seminspect.export.quantise import conv_names, kept_fp32, preprocess, quantise_int8
    from seminspect.inference.artefact import load_artefact
    from seminspect.inference.optimise import _feeds
    from seminspect.inference.runtime import OrtRuntime, open_graph

    t0 = time.time()
    lines = header("int8 and the routes: how small the error must be, and each convolution's share", sys.argv)
    art = load_artefact(args.artefact, with_anomaly=False)
    if art.policy is None:
        raise SystemExit(f"{args.artefact}: no calibrated policy, so no routes to compare")
    n_cal = len(SampleDataset(args.data).split("calib"))
    order = np.random.default_rng(0).permutation(n_cal)
    cal_idx, sel_idx = order[:args.calib_sites], order[args.calib_sites:args.calib_sites + args.select_sites]
    cal = SampleDataset(args.data).split("calib")
    sel = prepared(art, f"{args.data}:calib", sel_idx)
    sets = {"calib (selection sites)": sel} | {
        name: prepared(art, spec) for name, spec in (r.split("=", 1) for r in args.report)}
    fp32 = OrtRuntime(art, "fp32")
    fp32.warm(*sel[0][0].shape[-2:])
    ref = {name: judge(art, fp32, xs) for name, xs in sets.items()}

    lines += [f"Artefact `{args.artefact}` (model version {art.model_version}); routes by its own calibrated policy "
              "from ONNX Runtime fp32 scores.", "",
              "Sites whose route moves when p(abnormal) moves by +-eps:", "",
              "| set | sites | " + " | ".join(f"eps {e:g}" for e in EPS) + " |",
              "|---|---|" + "---|" * len(EPS)]
    for name, (ab, ty, dec, _) in ref.items():
        lines.append(f"| {name} | {len(ab)} | "
                     + " | ".join(f"{moved(art, ab, ty, dec.route, e)}" for e in EPS) + " |")

    ab0, ty0, dec0, _ = ref["calib (selection sites)"]
    with tempfile.TemporaryDirectory() as tmp:
        src = fp32.graph_file(*sel[0][0].shape[-2:])
        pre = preprocess(src, Path(tmp) / "pre.onnx")  # the names quantise_int8 sees (its own pre-processing)
        convs, default_keep = conv_names(pre), kept_fp32(pre)
        if conv_names(preprocess(src, Path(tmp) / "again.onnx")) != convs:
            raise SystemExit("the quantiser's pre-processing names convolutions differently from run to run")
        cache = Path(tmp) / "ranges.json"
        variants = [("as `optimise` (stem and depthwise fp32)", default_keep)] + [
            (f"only pointwise conv {i} (`{n}`)", [c for c in convs if c != n])
            for i, n in enumerate(c for c in convs if c not in default_keep)]
        rows = []
        for k, (label, keep) in enumerate(variants):
            dst = Path(tmp) / f"v{k}.onnx"
            samples = (cal[int(i)] for i in cal_idx)
            quantise_int8(src, dst, _feeds(art, samples), keep_fp32=keep, calibration_cache=cache)
            rt = OrtRuntime(art, "int8")
            rt._sessions[tuple(sel[0][0].shape[-2:])] = open_graph(dst, "onnxruntime", "int8")
            ab, ty, dec, ms = judge(art, rt, sel)
            _, _, _, ms32 = judge(art, fp32, sel)  # fp32 beside it, same process, same moment
            rows.append(f"| {label} | {np.abs(ab - ab0).mean():.4f} | {np.abs(ab - ab0).max():.4f} | "
                        f"{int((dec.route != dec0.route).sum())} | {(ty.argmax(1) == ty0.argmax(1)).mean():.3f} | "
                        f"{ms:.1f} | {ms32:.1f} |")
            print(rows[-1], flush=True)
    lines += ["", f"int8 against fp32 on the {len(sel)} selection sites (calibrated on {len(cal_idx)} other calib "
              "sites; ms per site, one site per call, 2 threads):", "",
              "| quantised | mean abs dp(abnormal) | max | routes changed | top type as fp32 | int8 ms | fp32 ms |",
              "|---|---|---|---|---|---|---|", *rows, "",
              f"Load average at the end: {load()}; whole run {time.time() - t0:.0f} s.", ""]
    atomic_write_text(args.result, "\n".join(lines))
    print(f"wrote {args.result}")


if __name__ == "__main__":
    main()
