"""Where the ADC runs: torch eager, or the whole model as one graph in ONNX Runtime or OpenVINO.

    rt = make_runtime(artefact, backend="onnxruntime", precision="fp32", threads=2)
    p = rt.probabilities(images, roles, indices, view_mask)   # {"abnormal", "types", "levels"} numpy

The ONNX Runtime backend exports the artefact's model (:mod:`seminspect.export.adc_graph`) on
first use, per view size, into ``<artefact>/runtime/`` (named by the model version, so a
changed model never meets a stale graph; written atomically); ``int8`` reads the graph that
``seminspect optimise`` calibrated on real sites (:mod:`seminspect.export.quantise`). The
OpenVINO backend (optional extra) compiles the same files, and runs the fp32 graph in bf16
where the CPU offers it. All return what :func:`~seminspect.models.adc_features.predict_features`
returns, averaged over the artefact's test-time dihedral ops. Reads the artefact; writes only its ``runtime/`` folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from seminspect.data.batch import collate
from seminspect.data.sample import Sample
from seminspect.errors import SeminspectError
from seminspect.inference.artefact import LoadedArtefact
from seminspect.models.adc_features import FeatureSet, dihedral, predict_features, resize_batch

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_BACKEND = os.environ.get("SEMINSPECT_BACKEND", "onnxruntime")


class BackendError(SeminspectError):
    """The asked-for backend or precision cannot run this artefact."""


def graph_path(artefact: LoadedArtefact, height: int, width: int, precision: str) -> Path:
    """``<artefact>/runtime/adc-<model_version>-<H>x<W>-<precision>.onnx``."""
    return Path(artefact.path) / "runtime" / f"adc-{artefact.model_version}-{height}x{width}-{precision}.onnx"


def user_cache_path(path: Path) -> Path:
    """Where a graph goes when the artefact folder is read-only: ``$XDG_CACHE_HOME/seminspect/runtime``
    (``~/.cache`` by default), under the same name (the model version keeps names apart)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "seminspect" / "runtime" / path.name


def existing_graph(path: Path) -> Path | None:
    """``path`` (in the artefact) or its copy in the user's cache, whichever exists; None if neither."""
    return next((p for p in (path, user_cache_path(path)) if p.is_file()), None)


def graph_or_export(path: Path, export: Callable[[Path], Path]) -> Path:
    """``path`` or its copy in the user's cache when either exists, else the file ``export(destination)``
    writes, the destination being :func:`writable_graph` of ``path``."""
    found = existing_graph(path)
    return found if found is not None else export(writable_graph(path))


def threads_text(threads: int | None) -> str:
    """``", 2 threads"`` / ``", 1 thread"`` for a runtime note; empty when the runtime's default is used."""
    return f", {threads} thread{'s' if threads > 1 else ''}" if threads else ""


def writable_graph(path: Path) -> Path:
    """``path`` if its artefact folder can be written, else its place in the user's cache (a read-only
    artefact in a shared model store); the folder is created."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.access(path.parent, os.W_OK):
            return path
    except OSError:
        pass
    path = user_cache_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def site_inputs(artefact: LoadedArtefact, prepared: Sample) -> tuple[torch.Tensor, ...]:
    """The model's inputs for one prepared site: ``images (1, V, 1, H, W)`` resized as in training,
    ``roles``, ``indices``, ``view_mask`` (labels never reach the judges)."""
    batch = collate([prepared], None)
    return resize_batch(batch.images, artefact.image.resize), batch.roles, batch.indices, batch.view_mask


class TorchRuntime:
    """The model's own torch code (the reference every other backend is compared with)."""

    name = "torch"
    precision = "fp32"

    def __init__(self, artefact: LoadedArtefact) -> None:
        self.artefact = artefact

    def warm(self, height: int, width: int) -> None:
        """Nothing to prepare: the model is already loaded."""

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, roles: torch.Tensor, indices: torch.Tensor,
                      view_mask: torch.Tensor) -> dict[str, Any]:
        art = self.artefact
        feats = torch.stack([art.model.encode_views(dihedral(images, op), view_mask, roles, indices)
                             .to(torch.float16) for op in art.tta])
        fs = FeatureSet(feats, roles, indices, view_mask, torch.zeros(len(roles), dtype=torch.bool),
                        torch.full((len(roles),), -1), [""] * len(roles), list(art.tta))
        return predict_features(art.model, fs, art.tta)


class OrtRuntime:
    """The exported whole-model graph in ONNX Runtime; heads' probabilities (and the site embedding,
    from graphs that output it) as in torch."""

    name = "onnxruntime"

    def __init__(self, artefact: LoadedArtefact, precision: str = "fp32", threads: int | None = None) -> None:
        self.artefact, self.precision, self.threads = artefact, precision, threads
        self._sessions: dict[tuple[int, int], Any] = {}

    def _open(self, path: Path) -> Any:
        return open_graph(path, self.name, self.precision, self.threads)

    def graph_file(self, height: int, width: int) -> Path:
        """The graph for ``height x width`` views at this precision (bf16 runs the fp32 graph with a bf16
        hint): found in the artefact or the user's cache, else (fp32) exported now."""
        path = graph_path(self.artefact, height, width, "int8" if self.precision == "int8" else "fp32")

        def export(destination: Path) -> Path:
            if self.precision == "int8":
                raise BackendError(f"{path}: no int8 graph for {height}x{width} px views; make it "
                                   f"with `seminspect optimise {self.artefact.path} --data DATASET`")
            if height != width:
                raise BackendError(f"{self.artefact.path}: the {self.name} backend needs square views, "
                                   f"got {height}x{width}; use --backend torch")
            from seminspect.export.adc_graph import export_adc

            return export_adc(self.artefact.model, destination, height)

        return graph_or_export(path, export)

    def session(self, height: int, width: int) -> Any:
        key = (height, width)
        if key not in self._sessions:
            self._sessions[key] = self._open(self.graph_file(height, width))
        return self._sessions[key]

    def warm(self, height: int, width: int) -> None:
        """Export / open the graph now, so that its errors come before any site is read."""
        self.session(height, width)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, roles: torch.Tensor, indices: torch.Tensor,
                      view_mask: torch.Tensor) -> dict[str, Any]:
        """As :func:`~seminspect.models.adc_features.predict_features`: probabilities averaged over the TTA ops."""
        art = self.artefact
        run = self.session(int(images.shape[-2]), int(images.shape[-1]))
        probs, embeddings = [], []
        for op in art.tta:
            ab, ty, *emb = run(dihedral(images, op), roles, indices, view_mask)  # older graphs: no embedding
            probs.append(art.model.predict_proba({"abnormal_logit": torch.from_numpy(ab),
                                                  "type_logits": torch.from_numpy(ty)}))
            embeddings += [torch.from_numpy(e) for e in emb]

        def mean(get: Any) -> Any:
            return (sum(get(p) for p in probs) / len(probs)).numpy()

        out = {"abnormal": mean(lambda p: p["abnormal"]), "types": mean(lambda p: p["types"]),
               "levels": {n: mean(lambda p, n=n: p["levels"][n]) for n in probs[0]["levels"]}}
        if embeddings:
            out["embedding"] = (sum(embeddings) / len(embeddings)).numpy()
        return out


class OpenVinoRuntime(OrtRuntime):
    """The same graph files compiled by OpenVINO (fp32, bf16 on the fp32 graph, int8 on the int8 graph)."""

    name = "openvino"


def make_runtime(artefact: LoadedArtefact, backend: str | None = None, precision: str = "fp32",
                 threads: int | None = None) -> TorchRuntime | OrtRuntime:
    """The runtime for ``backend`` (None: ``SEMINSPECT_BACKEND`` or onnxruntime) at ``precision``."""
    backend = check_choice(backend, precision)
    if backend == "torch":
        return TorchRuntime(artefact)
    if backend == "onnxruntime":
        return OrtRuntime(artefact, precision, threads)
    return OpenVinoRuntime(artefact, precision, threads)


def check_choice(backend: str | None, precision: str) -> str:
    """The backend to use (None: ``SEMINSPECT_BACKEND`` or onnxruntime), refusing in one line a backend
    or precision that does not exist or a pair that cannot run (torch is fp32; bf16 is OpenVINO's)."""
    backend = backend or DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise BackendError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if backend == "torch" and precision != "fp32":
        raise BackendError(f"the torch backend runs fp32 only; use --backend onnxruntime or openvino for {precision}")
    if backend == "onnxruntime" and precision == "bf16":
        raise BackendError("bf16 runs on --backend openvino only (ONNX Runtime's CPU kernels here are fp32/int8)")
    return backend


def open_graph(path: Path, backend: str, precision: str = "fp32", threads: int | None = None) -> Any:
    """An exported graph file opened on ``backend`` (onnxruntime or openvino): numpy in, list of numpy out."""
    from seminspect.export._onnx import ExportError

    try:
        if backend == "onnxruntime":
            from seminspect.export import onnx_session

            return onnx_session(path, threads=threads)
        from seminspect.export._openvino import OpenVinoModule

        return OpenVinoModule(path, threads=threads, precision=precision)
    except ExportError as exc:
        raise BackendError(str(exc)) from None


__all__ = ["BACKENDS", "PRECISIONS", "BackendError", "OpenVinoRuntime", "OrtRuntime", "TorchRuntime", "check_choice",
           "existing_graph", "graph_or_export", "graph_path", "make_runtime", "open_graph", "site_inputs",
           "threads_text", "writable_graph"]
