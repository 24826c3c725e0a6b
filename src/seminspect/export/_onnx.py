"""ONNX export (atomic, checked) and an ONNX Runtime wrapper for fast CPU inference.

`export_onnx` writes a model to ``.onnx`` with the new (dynamo) exporter when it works here, else the
TorchScript-based one; `OnnxModule` runs it with onnxruntime and returns numpy; `max_abs_diff` /
`assert_parity` compare it with the torch module. Touches only the output file it is given.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seminspect.errors import SeminspectError
from seminspect.utils.io import atomic_path
from seminspect.utils.modules import eval_mode

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


class ExportError(SeminspectError):
    """Export failed, the exported file is unreadable, or it disagrees with the torch module."""


def _to_tuple(example_inputs: Any) -> tuple[Any, ...]:
    return tuple(example_inputs) if isinstance(example_inputs, list | tuple) else (example_inputs,)


def _dynamic_shapes(
    input_names: Sequence[str], n_inputs: int, dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None
) -> tuple[Any, ...] | None:
    """dynamic_axes (old exporter's format) -> dynamic_shapes for torch.export, inputs only."""
    if not dynamic_axes:
        return None
    shapes: list[Any] = []
    for i in range(n_inputs):
        axes = dynamic_axes.get(input_names[i]) if i < len(input_names) else None
        if not axes:
            shapes.append(None)
            continue
        names = axes if isinstance(axes, Mapping) else {a: f"{input_names[i]}_dim{a}" for a in axes}
        shapes.append({int(a): torch.export.Dim(str(n), min=1) for a, n in names.items()})
    return tuple(shapes)


def export_onnx(
    module: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamo: bool | None = None,
) -> Path:
    """Export ``module`` (in eval mode) to ``path`` atomically and check the file with ``onnx.checker``.

    Args:
        module: any module; a list/tuple output becomes several graph outputs (name them in ``output_names``).
        example_inputs: tensor or tuple of tensors used for tracing (their shapes are only examples when
            the axes are listed in ``dynamic_axes``).
        dynamic_axes: e.g. ``{"image": {0: "batch", 2: "height", 3: "width"}, "feat0": {0: "batch"}}``.
        dynamo: None tries the default (dynamo) exporter and falls back to the TorchScript one on any
            failure; True/False forces one.

    Returns:
        ``path``. Weights are stored inside the one file (no external data).
    """
    path = Path(path)
    args = _to_tuple(example_inputs)
    errors: list[str] = []
    with eval_mode(module):
        for use_dynamo in ([True, False] if dynamo is None else [dynamo]):
            try:
                with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if use_dynamo:
                        program = torch.onnx.export(
                            module,
                            args,
                            input_names=list(input_names),
                            output_names=list(output_names) if output_names else None,
                            opset_version=opset,
                            dynamo=True,
                            dynamic_shapes=_dynamic_shapes(input_names, len(args), dynamic_axes),
                            verbose=False,
                        )
                        program.save(str(tmp), external_data=False)
                    else:
                        torch.onnx.export(
                            module,
                            args,
                            str(tmp),
                            input_names=list(input_names),
                            output_names=list(output_names) if output_names else None,
                            opset_version=opset,
                            dynamo=False,
                            dynamic_axes=dict(dynamic_axes) if dynamic_axes else None,
                            do_constant_folding=True,
                        )
                    _check(tmp)
                return path
            except Exception as exc:  # noqa: BLE001 - try the other exporter, report both if both fail
                errors.append(f"{'dynamo' if use_dynamo else 'torchscript'} exporter: {type(exc).__name__}: {exc}")
                log.info("ONNX export attempt failed: %s", errors[-1])
    raise ExportError(f"{path}: ONNX export failed; " + " | ".join(e[:500] for e in errors))


def _check(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path))


class OnnxModule:
    """An ONNX file run by onnxruntime on the CPU: ``module(*inputs) -> list of numpy arrays`` (one per output).

    Inputs may be numpy arrays or torch tensors (floating ones converted to float32; integer and
    boolean ones kept). ``threads`` sets onnxruntime's intra-op threads (None: its default, all cores).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"ONNX file not found: {self.path}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - a corrupt or unsupported file is the user's problem
            raise ExportError(f"{self.path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, *inputs: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        if len(inputs) != len(self.input_names):
            raise ExportError(
                f"{self.path}: expects {len(self.input_names)} inputs {self.input_names}, got {len(inputs)}"
            )
        feed = {}
        for name, x in zip(self.input_names, inputs, strict=True):
            if isinstance(x, torch.Tensor):
                x = x.detach().cpu().numpy()
            x = np.asarray(x)
            # integer and boolean inputs (view roles, masks) keep their type; everything else is float32
            keep = x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer)
            feed[name] = np.ascontiguousarray(x) if keep else np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run(None, feed)

    def __repr__(self) -> str:
        return f"OnnxModule({str(self.path)!r}, inputs={self.input_names}, outputs={self.output_names})"


def onnx_session(path: str | Path, threads: int | None = None) -> OnnxModule:
    """Open an exported model for CPU inference; see `OnnxModule`."""
    return OnnxModule(path, threads=threads)


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, list | tuple):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    raise ExportError(f"cannot compare an output of type {type(out).__name__}")


@dataclass
class ParityReport:
    """Torch vs ONNX Runtime on the same inputs: the largest absolute difference per output."""

    max_abs_diff: list[float]
    shapes_match: bool

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff) if self.max_abs_diff else 0.0


def compare_outputs(
    module: nn.Module, onnx_module: OnnxModule | str | Path, inputs: torch.Tensor | Sequence[torch.Tensor]
) -> ParityReport:
    """Run both on ``inputs`` (torch in eval mode, no grad) and measure the differences."""
    runner = onnx_module if isinstance(onnx_module, OnnxModule) else OnnxModule(onnx_module)
    args = _to_tuple(inputs)
    with eval_mode(module), torch.no_grad():
        ref = [t.float().numpy() for t in _flatten(module(*args))]
    got = runner(*args)
    if len(ref) != len(got) or any(a.shape != b.shape for a, b in zip(ref, got, strict=False)):
        return ParityReport(max_abs_diff=[float("inf")], shapes_match=False)
    return ParityReport(
        max_abs_diff=[float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(ref, got, strict=True)],
        shapes_match=True,
    )


def max_abs_diff(
    module: nn.Module, onnx_module: OnnxModule | str | Path, inputs: torch.Tensor | Sequence[torch.Tensor]
) -> float:
    """Largest absolute difference over all outputs (inf when shapes differ)."""
    return compare_outputs(module, onnx_module, inputs).worst


def assert_parity(
    module: nn.Module,
    onnx_module: OnnxModule | str | Path,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    atol: float = 1e-4,
) -> ParityReport:
    """`compare_outputs`, raising `ExportError` when shapes differ or any difference exceeds ``atol``."""
    report = compare_outputs(module, onnx_module, inputs)
    if not report.shapes_match or report.worst > atol:
        raise ExportError(
            f"ONNX output disagrees with torch: max abs diff {report.worst:.3g} > {atol:g} "
            f"(shapes match: {report.shapes_match})"
        )
    return report


def export_backbone(
    backbone: nn.Module, path: str | Path, example_hw: tuple[int, int] = (64, 64), batch: int = 2
) -> Path:
    """Export a `create_backbone` module with dynamic batch, height and width; outputs ``feat0..featK``.

    Input ``image``: ``(N, in_chans, H, W)`` float32 in [0, 1], as for the torch module.
    """
    n_out = len(backbone.feature_info)
    outs = [f"feat{i}" for i in range(n_out)]
    axes: dict[str, dict[int, str]] = {"image": {0: "batch", 2: "height", 3: "width"}}
    for i, name in enumerate(outs):
        axes[name] = {0: "batch", 2: f"h{i}", 3: f"w{i}"}
    example = torch.rand(batch, backbone.in_chans, *example_hw, generator=torch.Generator().manual_seed(0))
    return export_onnx(backbone, example, path, input_names=["image"], output_names=outs, dynamic_axes=axes)
