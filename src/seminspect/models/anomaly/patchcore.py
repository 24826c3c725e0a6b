"""PatchCore (Roth et al., CVPR 2022) with optional conditioning on the registered reference die.

Pure PyTorch: :class:`PatchCoreModel` embeds patches and scores them against a memory bank;
filling the bank (greedy coreset under a memory bound) is :func:`greedy_coreset`, driven by the
fit/predict wrapper in :mod:`seminspect.models.anomaly.detector`.

Reference conditioning (``conditioning="reference"``): each target patch feature ``f_t`` is
paired with the reference feature ``f_r`` at the same place after image registration (or, with
``match_radius > 0``, the closest one in a small window -- only useful without registration: on
the virtual fab a 1-cell window let small defects match a neighbouring reference patch and cost
0.03 image AUROC) and the embedding becomes ``[f_t, w * (f_t - f_r)]``. On a normal site the
difference half is near zero wherever the dies agree, so the bank learns what normal die-to-die
differences look like (noise, residual misalignment) and a defect -- present in the target but
not in the reference -- lands far from every bank entry even when its texture alone looks
normal (e.g. a missing or extra feature that is a legitimate pattern elsewhere).

``conditioning="difference"`` keeps only ``f_t - f_r``: the bank then models normal die-to-die
differences alone (noise, charging, residual misalignment), which ignores how common the
target's pattern is -- the classic die-to-die comparison, learned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seminspect.models.anomaly.features import (
    AnomalyMapModel,
    best_local_match,
    freeze,
    patch_embedding,
)
from seminspect.models.anomaly.search import QUERY_BLOCK, Blocks, bank_blocks, int8_scale, min_distance, quantise_int8
from seminspect.models.anomaly.search import chunked_min_distance as chunked_min_distance  # re-exported

CONDITIONINGS = ("none", "reference", "difference")


def greedy_coreset(features: torch.Tensor, n_select: int, proj_dim: int = 128, seed: int = 0,
                   chunk: int = 65536, progress: bool = False, precision: str = "fp32") -> torch.Tensor:
    """Indices of a greedy k-center coreset of ``features`` ``(N, D)``.

    Distances are computed on a seeded Gaussian random projection to ``proj_dim`` dimensions
    (Johnson-Lindenstrauss: distances roughly kept, cost cut), computed ``chunk`` rows at a time;
    only the ``(N,)`` vector of distances to the selected set is kept and updated in place, so
    memory is ``O(N * proj_dim)`` regardless of ``n_select``.

    Each step is one matrix-vector product over the whole pool, memory-bound: the pool is held
    transposed, ``(D, N)`` contiguous, which streams ~3x faster than ``(N, D)`` rows on the 2-core
    machine (3.8 vs 10.5 ms per step at N=200,000, D=128; 2026-12-05). ``precision="int8"`` holds
    the projected pool as int8 (one symmetric scale) and computes each step's distances exactly in
    int32 on those values (``torch._int_mm``; a quarter of the bytes to stream: 1.5 against 4.5 ms
    per step at N=200,000, projected to 128, on a 2-core Xeon with AVX512-VNNI); the rows selected
    are real features.
    """
    if precision not in ("fp32", "int8"):
        raise ValueError(f"coreset precision must be 'fp32' or 'int8', got {precision!r}")
    n = features.shape[0]
    if n_select >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    project = bool(proj_dim and proj_dim < features.shape[1])
    proj = torch.randn(features.shape[1], proj_dim, generator=gen) / math.sqrt(proj_dim) if project else None
    dim = proj_dim if project else features.shape[1]
    reduced_t = torch.empty(dim, n)  # (D, N): each step reads it as one contiguous stream
    for s in range(0, n, chunk):
        block = features[s:s + chunk] if proj is None else features[s:s + chunk] @ proj
        reduced_t[:, s:s + block.shape[0]] = block.t()
    selected = torch.empty(n_select, dtype=torch.long)
    selected[0] = int(torch.randint(n, (1,), generator=gen))
    if precision == "int8":
        return _greedy_int8(reduced_t, selected, chunk, progress)
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: one matrix-vector product per step (BLAS), no (N, D) temporary
    sq_norms = reduced_t.pow(2).sum(0) if n <= chunk else \
        torch.cat([reduced_t[:, s:s + chunk].pow(2).sum(0) for s in range(0, n, chunk)])
    min_d = torch.full((n,), math.inf)
    d = torch.empty(n)
    for k in _coreset_steps(n_select, progress):
        c_idx = int(selected[k - 1])
        centre = reduced_t[:, c_idx].contiguous()
        torch.addmv(sq_norms, reduced_t.t(), centre, alpha=-2.0, out=d)
        d += sq_norms[c_idx]
        torch.minimum(min_d, d, out=min_d)
        if k < n_select:
            selected[k] = int(torch.argmax(min_d))
    return selected


def _coreset_steps(n_select: int, progress: bool) -> Iterable[int]:
    """Steps ``1 .. n_select`` of the greedy coreset, behind a progress bar when asked."""
    steps = range(1, n_select + 1)
    if not progress:
        return steps
    from seminspect.utils.progress import track

    return track(steps, "coreset", total=n_select)


def _greedy_int8(reduced_t: torch.Tensor, selected: torch.Tensor, chunk: int, progress: bool) -> torch.Tensor:
    """:func:`greedy_coreset`'s steps on the int8 pool: squared distances exact in int32 on the quantised values."""
    dim, n = reduced_t.shape
    scale = int8_scale(reduced_t)
    pool = torch.empty(n, dim, dtype=torch.int8)  # (N, D) rows: the int8 product reads them as one stream
    sq_norms = torch.empty(n, dtype=torch.int32)  # <= D * 127^2: int32 while D < 33,000
    for s in range(0, n, chunk):
        block = quantise_int8(reduced_t[:, s:s + chunk].t(), scale)
        pool[s:s + block.shape[0]] = block
        sq_norms[s:s + block.shape[0]] = block.to(torch.int32).pow(2).sum(1, dtype=torch.int32)
    min_d = torch.full((n,), torch.iinfo(torch.int32).max, dtype=torch.int32)
    for k in _coreset_steps(selected.shape[0], progress):
        c_idx = int(selected[k - 1])
        d = torch._int_mm(pool, pool[c_idx].view(dim, 1)).view(n)  # x.c
        d.mul_(-2).add_(sq_norms).add_(sq_norms[c_idx])  # |x - c|^2 = |x|^2 - 2 x.c + |c|^2
        torch.minimum(min_d, d, out=min_d)
        if k < selected.shape[0]:
            selected[k] = int(torch.argmax(min_d))
    return selected


class PatchCoreModel(AnomalyMapModel):
    """Patch embedding + memory-bank scoring.

    Args:
        backbone: frozen feature extractor returning a list of maps.
        layers: which returned maps to combine (indices into the backbone's output list).
        pool: local averaging neighbourhood (patch context), in feature cells.
        embed_dim: if set, a fixed seeded random projection to this many dimensions (bank memory).
        conditioning: ``"none"`` or ``"reference"`` (see module docstring).
        reference_weight: weight ``w`` of the difference half of a conditioned embedding.
        match_radius: search radius (feature cells) for the reference match (0 = same place).
        sigma: Gaussian smoothing of the anomaly map, in image pixels.
        map_dilation: local-max window (image pixels) applied to the map before smoothing; 0/1 = off.
        top_k: image score = mean of the top-k map pixels (1 = max).
        centre_sigma: if > 0, multiply maps by a centre prior of this width (fraction of size).
        position_weight: if > 0, each patch feature gets its (y, x) grid position in [-1, 1] times this weight
            (two channels after any projection), so the bank's nearest patch tends to come from the same place.
    """

    def __init__(self, backbone: nn.Module, layers: tuple[int, ...] = (0, 1), pool: int = 3,
                 embed_dim: int | None = None, conditioning: str = "none", reference_weight: float = 1.0,
                 match_radius: int = 0, sigma: float = 4.0, top_k: int = 1, centre_sigma: float = 0.0,
                 seed: int = 0, map_dilation: int = 0, position_weight: float = 0.0):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        self.backbone = freeze(backbone)
        self.layers = tuple(layers)
        self.pool = pool
        self.conditioning = conditioning
        self.reference_weight = reference_weight
        self.match_radius = match_radius
        self.sigma = sigma
        self.map_dilation = map_dilation
        self.top_k = top_k
        self.centre_sigma = centre_sigma
        self.position_weight = float(position_weight)
        self.query_chunk = QUERY_BLOCK  # query rows per nearest-bank distance block (a memory budget lowers it)
        # How prediction runs (set by seminspect.inference.anomaly_runtime; never saved): the nearest-bank
        # search in fp32 or bf16 (models/anomaly/search.py), and a replacement for :meth:`embed` (an
        # exported graph in ONNX Runtime / OpenVINO) taking and returning the same tensors.
        self.search = "fp32"
        self.embedder: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None
        self._blocks: dict[int | None, tuple[tuple[int, int, int, str], Blocks]] = {}
        # bank_per_group (set by the detector, saved in its meta): group i owns bank[group_bounds[i][0]:[1]]
        self.group_bounds: list[tuple[int, int]] | None = None
        raw_dim = sum(backbone.feature_info[i]["num_chs"] for i in self.layers)
        if conditioning == "reference":
            raw_dim *= 2  # [f_t, w (f_t - f_r)]
        self.raw_dim = raw_dim
        if embed_dim and embed_dim < raw_dim:
            gen = torch.Generator().manual_seed(seed + 1)
            proj = torch.randn(raw_dim, embed_dim, generator=gen) / math.sqrt(embed_dim)
        else:
            proj = torch.empty(0)
        self.register_buffer("projection", proj)
        self.register_buffer("bank", torch.empty(0, self.dim))

    @property
    def dim(self) -> int:
        """Bank columns: the (projected) feature, and two position channels when ``position_weight > 0``."""
        return (self.projection.shape[1] if self.projection.numel() else self.raw_dim) + 2 * (self.position_weight > 0)

    def train(self, mode: bool = True) -> PatchCoreModel:  # the backbone stays frozen in eval mode
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def embed(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, D, h, w)`` patch embeddings of ``(N, 1, H, W)`` targets (and registered references)."""
        f_t = patch_embedding(self.backbone(target), self.layers, self.pool)
        if self.conditioning != "none":
            if reference is None:
                raise ValueError(f"conditioning={self.conditioning!r} needs a reference image for every target")
            f_r = patch_embedding(self.backbone(reference), self.layers, self.pool)
            f_r = best_local_match(f_t, f_r, self.match_radius)
            if self.conditioning == "reference":
                f_t = torch.cat([f_t, self.reference_weight * (f_t - f_r)], dim=1)
            else:
                f_t = f_t - f_r
        if self.projection.numel():
            f_t = torch.einsum("nchw,cd->ndhw", f_t, self.projection)
        return f_t

    @torch.no_grad()
    def patch_features(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, dim, h, w)``: what the bank holds and is searched with -- :meth:`embed` (or the exported
        ``embedder`` standing in for it), then the position channels when ``position_weight > 0``."""
        emb = self.embed(target, reference) if self.embedder is None else self.embedder(target, reference)
        if self.position_weight <= 0:
            return emb
        n, _, h, w = emb.shape
        yy = torch.linspace(-1.0, 1.0, h, dtype=emb.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        xx = torch.linspace(-1.0, 1.0, w, dtype=emb.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        return torch.cat([emb, self.position_weight * yy, self.position_weight * xx], dim=1)

    @torch.no_grad()
    def raw_maps(self, target: torch.Tensor, reference: torch.Tensor | None = None,
                 groups: Sequence[int] | None = None) -> torch.Tensor:
        """``(N, 1, H, W)`` nearest-bank distances upsampled to the image, before any post-processing.

        ``groups``: with one bank per group (``group_bounds``), each image's group index: it is compared with its
        own group's normal patches only.
        """
        if self.bank.numel() == 0:
            raise RuntimeError("PatchCore memory bank is empty: fit the model first")
        emb = self.patch_features(target, reference)
        n, d, h, w = emb.shape
        flat = emb.permute(0, 2, 3, 1).reshape(n, h * w, d).contiguous()
        if self.group_bounds is None:
            dist = min_distance(flat.view(-1, d), self.bank, self.bank_blocks(), self.search, self.query_chunk)
        else:
            if groups is None or len(groups) != n:
                raise ValueError("this PatchCore holds one memory bank per group: give each image's group index")
            dist = torch.empty(n, h * w)
            for g in sorted(set(groups)):
                rows = [i for i, gi in enumerate(groups) if gi == g]
                lo, hi = self.group_bounds[g]
                dist[rows] = min_distance(flat[rows].reshape(-1, d), self.bank[lo:hi], self.bank_blocks(g),
                                          self.search, self.query_chunk).view(len(rows), h * w)
        return F.interpolate(dist.view(n, 1, h, w), size=target.shape[-2:], mode="bilinear", align_corners=False)

    def bank_blocks(self, group: int | None = None) -> Blocks:
        """The search blocks of the bank (or of one group's part of it) for ``self.search``, made once per bank
        (refitting makes them again); an unknown ``search`` is refused by
        :func:`~seminspect.models.anomaly.search.min_distance`."""
        key = (self.bank.data_ptr(), int(self.bank.shape[0]), self.bank._version, self.search)
        cached = self._blocks.get(group)
        if cached is None or cached[0] != key:
            part = self.bank if group is None or self.group_bounds is None else \
                self.bank[self.group_bounds[group][0]:self.group_bounds[group][1]]
            cached = self._blocks[group] = (key, bank_blocks(part, self.search))
        return cached[1]
