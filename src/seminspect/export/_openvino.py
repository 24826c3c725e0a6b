"""An exported ONNX graph run by OpenVINO on the CPU (optional: ``pip install seminspect[openvino]``).

    run = OpenVinoModule("adc.onnx", threads=2, precision="bf16")
    abnormal_logit, type_logits = run(images, roles, indices, view_mask)   # numpy in, numpy out

The same calling convention as :class:`~seminspect.export._onnx.OnnxModule`; ``precision`` is
OpenVINO's inference precision hint (``fp32``, or ``bf16`` where the CPU offers it: then the
graph's fp32 weights run in bf16). An int8 (QDQ) graph runs in int8 whatever the hint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seminspect.export._onnx import ExportError

HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def cpu_offers(capability: str) -> bool:
    """Whether OpenVINO's CPU plugin reports ``capability`` (``BF16``, ``INT8``, ...) on this machine."""
    import openvino as ov

    return capability in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoModule:
    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32") -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ExportError("the openvino backend needs OpenVINO: pip install 'seminspect[openvino]'") from None
        self.path = Path(path)
        if precision == "bf16" and not cpu_offers("BF16"):
            raise ExportError(f"{self.path}: this CPU has no bf16 support (OpenVINO reports no BF16); use fp32")
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.model = ov.Core().compile_model(str(self.path), "CPU", config)
        except Exception as exc:  # noqa: BLE001 - a corrupt or unsupported file is the user's problem
            raise ExportError(f"{self.path}: OpenVINO cannot compile it ({type(exc).__name__}: {exc})") from exc
        self.request = self.model.create_infer_request()

    def __call__(self, *inputs: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        feed = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in inputs]
        out = self.request.infer(feed)
        return [np.asarray(out[o]) for o in self.model.outputs]
