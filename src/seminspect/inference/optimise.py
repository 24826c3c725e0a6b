"""``seminspect optimise``: calibrate an artefact's int8 graph on real sites (or take bf16) and check it against fp32.

    report = optimise("runs/demo/adc", "runs/demo/data", split="calib", n_sites=300)

Sites are drawn at random (seeded) from one split of a labelled or unlabelled dataset, prepared
exactly as the inspector prepares them, and fed to ONNX Runtime's static quantiser
(:func:`seminspect.export.quantise.quantise_int8`); then fp32 and int8 judge ``n_check`` other
sites of the same split and the differences are written beside the graph
(``runtime/adc-<version>-<H>x<W>-int8.json``; ``-bf16.json`` for ``precision="bf16"``, which
compares OpenVINO's bf16 run of the fp32 graph and calibrates nothing) and returned: p(abnormal)
and type probabilities, and, where the artefact is calibrated, the share of sites whose route and
type decision are fp32's (a route moves when p(abnormal) crosses a threshold, so sites near one move
first). Its largest differences set the margins of the fp32 check that ``predict`` then
applies at that precision (:mod:`seminspect.inference.guard`). Reads the artefact and the data;
writes only the artefact's ``runtime/`` folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.data.dataset import SampleDataset
from seminspect.data.sample import Sample
from seminspect.inference.artefact import LoadedArtefact, load_artefact
from seminspect.inference.guard import SAFETY, check_report_path, decide
from seminspect.inference.runtime import BackendError, OrtRuntime, graph_path, make_runtime, site_inputs, writable_graph
from seminspect.models.adc_features import dihedral
from seminspect.utils.io import atomic_write_json
from seminspect.utils.progress import track


def _inputs(art: LoadedArtefact, sample: Sample) -> tuple[Any, ...]:
    prep = art.prepare
    return site_inputs(art, prep.apply(sample, prep.align(sample)))


def _feeds(art: LoadedArtefact, samples: Sequence[Sample]) -> Iterator[dict[str, np.ndarray]]:
    for s in track(samples, "int8 calibration"):
        images, roles, indices, mask = _inputs(art, s)
        for op in art.tta:
            yield {"images": dihedral(images, op).numpy(), "roles": roles.numpy(), "indices": indices.numpy(),
                   "view_mask": mask.numpy()}


def _same_decisions(art: LoadedArtefact, pa: list[dict[str, Any]], pb: list[dict[str, Any]]) -> dict[str, Any]:
    """Shares of sites routed, and given a type, alike by the artefact's policy from fp32 ``pa`` and int8 ``pb``."""
    pol = art.policy
    if pol is None or not pa:
        return {"route_agreement": None, "type_decision_agreement": None}

    def decided(ps: list[dict[str, Any]]) -> Any:
        return decide(pol, np.concatenate([p["abnormal"] for p in ps]), np.concatenate([p["types"] for p in ps]))

    a, b = decided(pa), decided(pb)
    return {"route_agreement": float(np.mean(a.route == b.route)),
            "type_decision_agreement": float(np.mean(a.type_decision == b.type_decision))}


def optimise(artefact: str | Path, data: str | Path, split: str | None = "calib", n_sites: int = 300,
             n_check: int = 100, seed: int = 0, threads: int | None = None,
             log: Callable[[str], None] | None = print, precision: str = "int8") -> dict[str, Any]:
    """Make the int8 graph of ``artefact`` from ``n_sites`` sites of ``data`` (``split``; None = all), or
    (``precision="bf16"``, nothing to calibrate) only compare OpenVINO bf16 with fp32 on the check sites."""
    from seminspect.export.quantise import quantise_int8

    if precision not in ("int8", "bf16"):
        raise BackendError(f"optimise makes int8 or checks bf16, not {precision!r}")
    art = load_artefact(artefact, with_anomaly=False)
    ds = SampleDataset(data)
    if split is not None:
        ds = ds.split(split)
    order = np.random.default_rng(seed).permutation(len(ds))
    calib_idx = order[:n_sites] if precision == "int8" else order[:0]  # bf16 calibrates nothing
    check_idx = order[len(calib_idx):len(calib_idx) + n_check]
    first = ds[int(order[0])]
    fp32 = OrtRuntime(art, "fp32", threads)
    size = tuple(int(x) for x in _inputs(art, first)[0].shape[-2:])
    # beside the fp32 graph (the user's cache if read-only); for bf16 only the comparison is written
    dst = writable_graph(graph_path(art, *size, precision))
    calib, n_feeds = [], 0
    if precision == "int8":
        calib = [ds[int(i)] for i in calib_idx]
        n_feeds = quantise_int8(fp32.graph_file(*size), dst, _feeds(art, calib))
    low = make_runtime(art, "onnxruntime" if precision == "int8" else "openvino", precision, threads)
    pa: list[dict[str, Any]] = []
    pb: list[dict[str, Any]] = []
    for i in track(check_idx, f"{precision} check"):
        x = _inputs(art, ds[int(i)])
        pa.append(fp32.probabilities(*x))
        pb.append(low.probabilities(*x))
    d_ab = [float(np.abs(a["abnormal"] - b["abnormal"]).max()) for a, b in zip(pa, pb, strict=True)]
    d_ty = [float(np.abs(a["types"] - b["types"]).max()) for a, b in zip(pa, pb, strict=True)]
    same_type = [bool(a["types"].argmax() == b["types"].argmax()) for a, b in zip(pa, pb, strict=True)]
    routes = _same_decisions(art, pa, pb)
    report = {"graph": dst.name if precision == "int8" else graph_path(art, *size, "fp32").name,
              "precision": precision, "backend": low.name, "dataset": str(data), "split": split, "seed": seed,
              "calibration_sites": len(calib),
              "calibration_inputs": n_feeds, "check_sites": len(check_idx),
              "max_abs_diff_p_abnormal": max(d_ab, default=None),
              "mean_abs_diff_p_abnormal": float(np.mean(d_ab)) if d_ab else None,
              "max_abs_diff_p_type": max(d_ty, default=None),
              "top_type_agreement": float(np.mean(same_type)) if same_type else None, **routes}
    atomic_write_json(writable_graph(check_report_path(art, *size, precision)), report)  # what predict reads
    if log:
        made = (f"int8 graph {dst} from {len(calib)} sites of {data} ({split or 'all'})" if precision == "int8"
                else f"bf16 on {low.name} against fp32, on sites of {data} ({split or 'all'})")
        log(f"{made}; on {len(check_idx)} other "
            f"sites: p(abnormal) differs by {report['mean_abs_diff_p_abnormal'] or 0:.4f} on average "
            f"(max {report['max_abs_diff_p_abnormal'] or 0:.4f}), top type agrees on "
            f"{100 * (report['top_type_agreement'] or 0):.1f} %"
            + ("" if routes["route_agreement"] is None else
               f", routes as fp32 on {100 * routes['route_agreement']:.1f} % and type decisions on "
               f"{100 * routes['type_decision_agreement']:.1f} % (bar: 99.5 %)"))
        if d_ab and routes["route_agreement"] is not None:
            log(f"`predict --precision {precision}` judges again in fp32 every site within {SAFETY:g}x these largest "
                "differences of a threshold (--no-fp32-check: never)")
    return report
