"""Where the depth U-Net runs: torch eager, or its exported graph in ONNX Runtime or OpenVINO.

    run = DepthRuntime(predictor, "runs/depth/best.pt", backend="onnxruntime", threads=2)
    depth = run.predict(x)          # x (N, C, H, W) float in [0, 1] -> (N, H, W) float32, data units

The graph (generator and normalisation; batch axis free, image size fixed) is exported on first
use per input size into ``<model folder>/runtime/depth-<first 12 hex of the model file's
SHA-256>-<H>x<W>-fp32.onnx`` (the user's cache when that folder is read-only), so a retrained
model never meets a stale graph. The predictor is duck-typed (``predict``, ``export_onnx``,
``generator.in_channels``): this layer reads trained models without importing training code.
Reads the model file; writes only that graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.inference.runtime import BackendError, check_choice, graph_or_export, open_graph, threads_text
from seminspect.utils.digest import sha256_file


class DepthRuntime:
    """A depth predictor on ``backend`` (None: ``SEMINSPECT_BACKEND`` or onnxruntime) at ``precision``
    (fp32; bf16 on OpenVINO; int8 is not offered: no calibration exists for the depth U-Net)."""

    def __init__(self, predictor: Any, model_path: str | Path, backend: str | None = None,
                 precision: str = "fp32", threads: int | None = None) -> None:
        self.backend = check_choice(backend, precision)
        if precision == "int8":
            raise BackendError("the depth U-Net runs fp32 (bf16 on --backend openvino); int8 is not calibrated for it")
        self.predictor, self.model_path = predictor, Path(model_path)
        self.precision, self.threads = precision, threads
        self._runs: dict[tuple[int, int], Any] = {}
        self._digest: str | None = None

    def graph_file(self, height: int, width: int) -> Path:
        """The fp32 graph for ``height x width`` inputs: found beside the model or in the user's cache,
        else exported now."""
        if self._digest is None:
            self._digest = sha256_file(self.model_path)[:12]
        path = self.model_path.parent / "runtime" / f"depth-{self._digest}-{height}x{width}-fp32.onnx"
        return graph_or_export(path, lambda destination: self.predictor.export_onnx(destination, height, width))

    def _run(self, height: int, width: int) -> Any:
        key = (height, width)
        if key not in self._runs:
            self._runs[key] = open_graph(self.graph_file(height, width), self.backend, self.precision, self.threads)
        return self._runs[key]

    def predict(self, x: torch.Tensor | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """``x (N, C, H, W)`` float in [0, 1] -> ``(N, H, W)`` float32 depth, as ``predictor.predict``."""
        if self.backend == "torch":
            return self.predictor.predict(x, batch_size=batch_size)
        x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        x = np.ascontiguousarray(x, dtype=np.float32)
        run = self._run(int(x.shape[-2]), int(x.shape[-1]))
        out = [run(x[i:i + batch_size])[0] for i in range(0, x.shape[0], batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, *x.shape[-2:]), np.float32)

    def describe(self) -> str:
        """``torch (fp32)`` / ``onnxruntime (fp32, 2 threads)``: where the U-Net ran, for summaries."""
        return f"{self.backend} ({self.precision}{threads_text(self.threads if self.backend != 'torch' else None)})"


__all__ = ["DepthRuntime"]
