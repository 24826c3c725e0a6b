"""Export to ONNX and fast CPU inference with ONNX Runtime.

    from seminspect.export import export_onnx, onnx_session, assert_parity
    export_onnx(model, example, "m.onnx", input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}})
    run = onnx_session("m.onnx", threads=2)
    (logits,) = run(images)        # numpy in, list of numpy out
"""

from ._onnx import (
    DEFAULT_OPSET,
    ExportError,
    OnnxModule,
    ParityReport,
    assert_parity,
    compare_outputs,
    export_backbone,
    export_onnx,
    max_abs_diff,
    onnx_session,
)

__all__ = [
    "DEFAULT_OPSET",
    "ExportError",
    "OnnxModule",
    "ParityReport",
    "assert_parity",
    "compare_outputs",
    "export_backbone",
    "export_onnx",
    "max_abs_diff",
    "onnx_session",
]
