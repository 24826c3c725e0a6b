"""A trained depth model: the generator with its normalisation (``best.pt``), and its ONNX export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.models.depth import UNet, UNetEnsemble, build_generator
from seminspect.training.depth_config import DepthConfigError
from seminspect.training.depth_data import DepthData
from seminspect.utils.io import atomic_path

MODEL_KIND = "seminspect.depth.unet/1"


@dataclass
class Normaliser:
    """Scalar standardisation of inputs and depth, fitted on the training split."""

    x_mean: float
    x_std: float
    y_mean: float
    y_std: float
    per_site: bool = False  # each site's inputs standardised by its own mean and spread first (data.site_norm)

    @classmethod
    def fit(cls, data: DepthData, per_site: bool = False) -> Normaliser:
        x = site_standardise(data.x) if per_site else data.x
        return cls(float(x.mean()), float(x.std()) or 1.0, float(data.y.mean()), float(data.y.std()) or 1.0, per_site)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """SEM in [0, 1] ``(N, C, H, W)`` -> the generator's inputs."""
        if self.per_site:
            x = site_standardise(x)
        return (x - self.x_mean) / self.x_std


def site_standardise(x: torch.Tensor) -> torch.Tensor:
    """Each site ``(C, H, W)`` of ``x (N, C, H, W)`` minus its mean, divided by its spread (+ 1/255)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / (std + 1.0 / 255.0)


class DepthPredictor:
    """A trained generator with its normalisation: SEM in [0, 1] -> depth in the data's units."""

    def __init__(self, generator: UNet | UNetEnsemble, norm: Normaliser, meta: dict[str, Any] | None = None) -> None:
        self.generator = generator.eval()
        self.norm = norm
        self.meta = meta or {}

    @torch.no_grad()
    def predict(self, x: torch.Tensor | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """``x (N, C, H, W)`` float in [0, 1] -> ``(N, H, W)`` float32 depth."""
        x = torch.as_tensor(np.asarray(x, np.float32) if isinstance(x, np.ndarray) else x)
        self.generator.eval()
        out = []
        for i in range(0, x.shape[0], batch_size):
            xb = self.norm.inputs(x[i : i + batch_size])
            out.append(self.generator(xb)[:, 0] * self.norm.y_std + self.norm.y_mean)
        return torch.cat(out).numpy().astype(np.float32)

    def state(self) -> dict[str, Any]:
        g = self.generator
        return {
            "kind": MODEL_KIND,
            "model": g.hparams(),
            "norm": vars(self.norm),
            "meta": self.meta,
            "state_dict": {k: v.detach().clone() for k, v in g.state_dict().items()},
        }

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.state(), tmp)

    def export_onnx(self, path: str | Path, height: int, width: int) -> Path:
        """Export generator + normalisation for ``(batch, C, height, width)`` inputs in [0, 1] (ONNX Runtime).

        The file maps SEM in [0, 1] straight to depth in the data's units; the batch axis is
        dynamic, the image size fixed (the pad-and-crop is traced for this size).
        """
        from seminspect.export import export_onnx

        module = _NormalisedGenerator(self.generator, self.norm).eval()
        example = torch.rand(2, self.generator.in_channels, height, width)
        return export_onnx(
            module,
            example,
            path,
            input_names=["sem"],
            output_names=["depth"],
            dynamic_axes={"sem": {0: "batch"}},
            dynamo=False,
        )

    @classmethod
    def load(cls, path: str | Path) -> DepthPredictor:
        path = Path(path)
        if not path.is_file():
            raise DepthConfigError(f"{path}: depth model file not found")
        try:
            st = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DepthConfigError(f"{path}: not a depth model ({type(exc).__name__}: {exc})") from None
        if not isinstance(st, dict) or st.get("kind") != MODEL_KIND:
            kind = st.get("kind") if isinstance(st, dict) else None
            raise DepthConfigError(f"{path}: not a seminspect depth model (kind {kind!r})")
        try:
            g = build_generator(st["model"])  # files written before hparams() lack newer keys: defaults apply
            g.load_state_dict(st["state_dict"])
        except (TypeError, RuntimeError) as exc:
            raise DepthConfigError(f"{path}: model does not match its stored architecture ({exc})") from None
        return cls(g, Normaliser(**st["norm"]), st.get("meta", {}))


class _NormalisedGenerator(torch.nn.Module):
    """SEM in [0, 1] ``(N, C, H, W)`` -> depth ``(N, H, W)`` in data units (what ONNX exports)."""

    def __init__(self, generator: UNet | UNetEnsemble, norm: Normaliser) -> None:
        super().__init__()
        self.generator, self.norm = generator, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.generator(self.norm.inputs(x))
        return y[:, 0] * self.norm.y_std + self.norm.y_mean
