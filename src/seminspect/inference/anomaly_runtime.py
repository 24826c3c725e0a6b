"""Where PatchCore predicts: its patch embedding in torch, ONNX Runtime or OpenVINO; its bank search in fp32/bf16/int8.

    use_runtime(detector, "runs/pc", backend="onnxruntime", precision="bf16", threads=2)
    result = detector.score(data)          # the same AnomalyResult, computed on the chosen runtime

The embedding (backbone, local pooling, layer mixing, reference conditioning, projection) is
exported once per saved model into ``<model folder>/runtime/patchcore-embed-<first 12 hex of the
SHA-256 of config.json and weights.safetensors>-fp32.onnx`` (the user's cache when the folder is
read-only), with batch, height and width free. The nearest-bank search stays in torch (blocked
matrix products, models/anomaly/search.py): ``fp32`` is exact; ``bf16`` finds the nearest row in
bf16 and measures it in fp32 (and runs OpenVINO's embedding in bf16); ``int8`` finds a few
candidate rows in int8 and measures them in fp32 (the embedding stays fp32). STPM, DRAEM and diffusion run in torch.
Reads the model folder; writes only that graph.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from seminspect.inference.runtime import BackendError, check_choice, graph_or_export, open_graph, threads_text
from seminspect.models.anomaly import AnomalyDetector
from seminspect.models.anomaly.patchcore import PatchCoreModel
from seminspect.models.anomaly.search import bf16_is_fast, int8_is_fast
from seminspect.utils.digest import sha256_file


class _Embedding(torch.nn.Module):
    """What the graph holds: ``PatchCoreModel.embed`` (target, and the registered reference when conditioned)."""

    def __init__(self, model: PatchCoreModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.embed(target, reference)


def embedding_graph(model: PatchCoreModel, directory: str | Path) -> Path:
    """The exported embedding of the model saved in ``directory``: found, or exported now."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for name in ("config.json", "weights.safetensors"):
        digest.update(sha256_file(directory / name).encode())
    path = directory / "runtime" / f"patchcore-embed-{digest.hexdigest()[:12]}-fp32.onnx"

    def export(destination: Path) -> Path:
        from seminspect.export import export_onnx

        names = ["target", "reference"] if model.conditioning != "none" else ["target"]
        example = tuple(torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(len(names)))
        axes: dict[str, dict[int, str]] = {n: {0: "batch", 2: "height", 3: "width"} for n in names}
        axes["embedding"] = {0: "batch", 2: "h", 3: "w"}
        return export_onnx(_Embedding(model).eval(), example, destination, input_names=names,
                           output_names=["embedding"], dynamic_axes=axes, dynamo=False)

    return graph_or_export(path, export)


class _GraphEmbedder:
    """Calls an opened graph as ``PatchCoreModel.embed`` is called: tensors in, tensor out."""

    def __init__(self, run: Any, conditioned: bool) -> None:
        self.run, self.conditioned = run, conditioned

    def __call__(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditioned and reference is None:
            raise ValueError("this PatchCore model is conditioned on the reference: give a reference for every target")
        return torch.from_numpy(self.run(*((target, reference) if self.conditioned else (target,)))[0])


def use_runtime(detector: AnomalyDetector, directory: str | Path, backend: str | None = None,
                precision: str = "fp32", threads: int | None = None) -> str:
    """Make ``detector`` (loaded from ``directory``) predict on ``backend`` at ``precision``; returns where it runs.

    None picks ``SEMINSPECT_BACKEND`` or onnxruntime for PatchCore and torch for STPM, DRAEM and diffusion.
    ``bf16`` runs the bank search in bf16 on every backend (and OpenVINO's embedding too); it is
    refused on a CPU without native bf16, where it would be slower. ``int8`` runs the bank search
    in int8 (the embedding stays fp32: nothing calibrates it); refused on a CPU without VNNI.
    """
    model = detector.model
    if not isinstance(model, PatchCoreModel):
        if backend not in (None, "torch") or precision != "fp32":
            raise BackendError(f"{directory}: only PatchCore runs on other backends or precisions; "
                               f"{detector.config.model} runs in torch fp32 (leave out --backend/--precision)")
        return "torch (fp32)"
    chosen = check_choice(backend, "fp32")  # bf16 and int8 are the search's (on every backend), checked below
    if precision not in ("fp32", "bf16", "int8"):
        raise BackendError(f"PatchCore runs fp32, bf16 or int8, not {precision!r}")
    if precision == "bf16" and not bf16_is_fast():
        raise BackendError("this CPU has no native bf16 (AVX512-BF16 or AMX): use --precision fp32, faster here")
    if precision == "int8" and not int8_is_fast():
        raise BackendError("this CPU has no int8 dot products (AVX512-VNNI) that torch reports: use --precision "
                           "fp32, faster here")
    model.search = precision
    model.embedder = None
    if chosen != "torch":
        graph_precision = "bf16" if chosen == "openvino" and precision == "bf16" else "fp32"
        run = open_graph(embedding_graph(model, directory), chosen, graph_precision, threads)
        model.embedder = _GraphEmbedder(run, model.conditioning != "none")
    return f"{chosen} ({precision} search{threads_text(threads if chosen != 'torch' else None)})"


__all__ = ["embedding_graph", "use_runtime"]
