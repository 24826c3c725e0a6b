"""``seminspect optimise``: calibrate an artefact's int8 graph on real sites and check it against fp32.

    report = optimise("runs/demo/adc", "runs/demo/data", split="calib", n_sites=300)

Sites are drawn at random (seeded) from one split of a labelled or unlabelled dataset, prepared
exactly as the inspector prepares them, and fed to ONNX Runtime's static quantiser
(:func:`seminspect.export.quantise.quantise_int8`); then fp32 and int8 judge ``n_check`` other
sites of the same split and the differences are written beside the graph
(``runtime/adc-<version>-<H>x<W>-int8.json``) and returned. Reads the artefact and the data;
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
from seminspect.inference.runtime import OrtRuntime, graph_path, site_inputs, writable_graph
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


def optimise(artefact: str | Path, data: str | Path, split: str | None = "calib", n_sites: int = 300,
             n_check: int = 100, seed: int = 0, threads: int | None = None,
             log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Make the int8 graph of ``artefact`` from ``n_sites`` sites of ``data`` (``split``; None = all)."""
    from seminspect.export.quantise import quantise_int8

    art = load_artefact(artefact, with_anomaly=False)
    ds = SampleDataset(data)
    if split is not None:
        ds = ds.split(split)
    order = np.random.default_rng(seed).permutation(len(ds))
    calib_idx, check_idx = order[:n_sites], order[n_sites:n_sites + n_check]
    calib = [ds[int(i)] for i in calib_idx]
    fp32 = OrtRuntime(art, "fp32", threads)
    size = tuple(int(x) for x in _inputs(art, calib[0])[0].shape[-2:])
    dst = writable_graph(graph_path(art, *size, "int8"))  # beside the fp32 graph (the user's cache if read-only)
    n_feeds = quantise_int8(fp32.graph_file(*size), dst, _feeds(art, calib))
    int8 = OrtRuntime(art, "int8", threads)
    d_ab, d_ty, same_type = [], [], []
    for i in track(check_idx, "int8 check"):
        x = _inputs(art, ds[int(i)])
        a, b = fp32.probabilities(*x), int8.probabilities(*x)
        d_ab.append(float(np.abs(a["abnormal"] - b["abnormal"]).max()))
        d_ty.append(float(np.abs(a["types"] - b["types"]).max()))
        same_type.append(bool(a["types"].argmax() == b["types"].argmax()))
    report = {"graph": dst.name, "dataset": str(data), "split": split, "seed": seed, "calibration_sites": len(calib),
              "calibration_inputs": n_feeds, "check_sites": len(check_idx),
              "max_abs_diff_p_abnormal": max(d_ab, default=None),
              "mean_abs_diff_p_abnormal": float(np.mean(d_ab)) if d_ab else None,
              "max_abs_diff_p_type": max(d_ty, default=None),
              "top_type_agreement": float(np.mean(same_type)) if same_type else None}
    atomic_write_json(dst.with_suffix(".json"), report)
    if log:
        log(f"int8 graph {dst} from {len(calib)} sites of {data} ({split or 'all'}); on {len(check_idx)} other "
            f"sites: p(abnormal) differs by {report['mean_abs_diff_p_abnormal'] or 0:.4f} on average "
            f"(max {report['max_abs_diff_p_abnormal'] or 0:.4f}), top type agrees on "
            f"{100 * (report['top_type_agreement'] or 0):.1f} %")
    return report
