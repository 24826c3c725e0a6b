"""The whole ADC model as one graph: backbone, grid pooling, die comparison, fusion and heads.

    graph = ADCGraph(model)                       # torch module, same numbers as the model
    path = export_adc(model, "adc.onnx", view_size=128)
    abnormal_logit, type_logits, embedding = onnx_session(path)(images, roles, indices, view_mask)

Inputs: ``images (B, V, 1, H, W)`` float32 in [0, 1], ``roles`` and ``indices (B, V)`` int64,
``view_mask (B, V)`` bool; batch and view count are dynamic, the view size is fixed at export
(the artefact's crop). Where :meth:`MultiViewADC.encode_views` picks the real views and their
references with data-dependent indexing, this graph runs the backbone over every slot and pairs
each target with its reference by a gather, zeroing what is not there: the same numbers for
real views, in a form every runtime can compile. The pooled features are rounded through
float16 as the training cache stores them, so decisions match the torch path. Reads the model;
writes only the file it is given.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seminspect.data.batch import reference_slots
from seminspect.export._onnx import export_onnx
from seminspect.models.adc import ROLE_PAD, MultiViewADC

INPUTS = ("images", "roles", "indices", "view_mask")
OUTPUTS = ("abnormal_logit", "type_logits", "embedding")  # graphs exported before 2026-12-05 lack "embedding"


def _windows(n: int, g: int) -> list[tuple[int, int]]:
    """Adaptive pooling's cell bounds along an axis of length ``n`` cut into ``g`` cells."""
    return [((i * n) // g, -((-(i + 1) * n) // g)) for i in range(g)]


def grid_pool(x: torch.Tensor, g: int, kind: str) -> torch.Tensor:
    """``adaptive_{avg,max}_pool2d(x, g)`` with the cells computed from ``x``'s static size, so the
    exported graph holds plain slices and reductions (the same windows as torch's adaptive pooling)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % g == 0 and w % g == 0:
        k = (h // g, w // g)
        return F.avg_pool2d(x, k) if kind == "avg" else F.max_pool2d(x, k)
    reduce = (lambda t, d: t.mean(d)) if kind == "avg" else (lambda t, d: t.amax(d))
    rows = torch.stack([reduce(x[:, :, a:b, :], 2) for a, b in _windows(h, g)], dim=2)
    return torch.stack([reduce(rows[:, :, :, a:b], 3) for a, b in _windows(w, g)], dim=3)


class ADCGraph(nn.Module):
    """:class:`MultiViewADC` inference in a traceable form (see the module docstring)."""

    def __init__(self, model: MultiViewADC) -> None:
        super().__init__()
        self.model = model

    def _pool(self, maps: list[torch.Tensor], kinds: tuple[str, ...]) -> list[torch.Tensor]:
        return [grid_pool(x, self.model.grid, k) for k in kinds for x in maps]

    def features(self, images: torch.Tensor, roles: torch.Tensor, indices: torch.Tensor,
                 view_mask: torch.Tensor) -> torch.Tensor:
        """Pooled view features ``(B, V, C, g, g)``, as ``encode_views`` gives them."""
        m = self.model
        bsz, nv = roles.shape
        maps = m.backbone(images.reshape(bsz * nv, *images.shape[2:]))
        roles = torch.where(view_mask, roles, torch.full_like(roles, ROLE_PAD))
        ref = reference_slots(roles, indices)  # (B, V): the slot of each target's reference, -1 if none
        ref0 = ref.clamp(min=0)
        has = (ref >= 0) & view_mask & torch.gather(view_mask, 1, ref0)
        r_idx = (torch.arange(bsz, device=ref.device)[:, None] * nv + ref0).reshape(-1)
        d_maps = [x - x.index_select(0, r_idx) for x in maps]
        pooled = self._pool(d_maps, ("avg",)) + self._pool([d.abs() for d in d_maps], ("max",))
        diff = torch.cat(pooled, dim=1) * has.reshape(-1, 1, 1, 1).to(images.dtype)
        kinds = {"avg": ("avg",), "max": ("max",), "avgmax": ("avg", "max")}[m.pool]
        base = torch.cat(self._pool(maps, kinds), dim=1)
        feats = torch.cat([base, diff], dim=1) * view_mask.reshape(-1, 1, 1, 1).to(images.dtype)
        return feats.reshape(bsz, nv, *feats.shape[1:]).to(torch.float16).to(torch.float32)

    def forward(self, images: torch.Tensor, roles: torch.Tensor, indices: torch.Tensor,
                view_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.features(images, roles, indices, view_mask)
        out = self.model.forward_features(feats, roles, indices, view_mask)
        return out["abnormal_logit"], out["type_logits"], out["embedding"]


def example_inputs(view_size: int, n_sites: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs of ``n_sites`` sites of 5 target + 5 reference + 2 zoom views (the shapes are only examples)."""
    g = torch.Generator().manual_seed(0)
    roles = torch.tensor([[0] * 5 + [1] * 5 + [2] * 2] * n_sites)
    indices = torch.tensor([list(range(5)) * 2 + [0, 1]] * n_sites)
    images = torch.rand(n_sites, roles.shape[1], 1, view_size, view_size, generator=g)
    return images, roles, indices, torch.ones_like(roles, dtype=torch.bool)


def export_adc(model: MultiViewADC, path: str | Path, view_size: int) -> Path:
    """Export ``model`` as one ONNX graph for ``view_size`` px views (dynamic sites and views)."""
    axes = {"images": {0: "sites", 1: "views"}, "roles": {0: "sites", 1: "views"},
            "indices": {0: "sites", 1: "views"}, "view_mask": {0: "sites", 1: "views"},
            "abnormal_logit": {0: "sites"}, "type_logits": {0: "sites"}, "embedding": {0: "sites"}}
    return export_onnx(ADCGraph(model).eval(), example_inputs(view_size), path, input_names=INPUTS,
                       output_names=OUTPUTS, dynamic_axes=axes, dynamo=False)
