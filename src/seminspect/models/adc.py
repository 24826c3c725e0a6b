"""Multi-view automatic defect classification (ADC): one shared backbone, die comparison, fusion, heads.

Data flow for one batch (shapes, ``B`` samples, ``V`` view slots, ``g`` the pooled grid size)::

    images (B, V, 1, H, W) --[backbone, real views only]--> per-scale maps
        --[adaptive avg-pool each scale to g x g, concat channels]--> view features (B, V, C, g, g)
        --[per-cell linear projection]--> (B, V, g, g, D)
    per target slot: pooled (target map - reference map of the same index), taken at full map
        resolution before pooling (learned "no reference" map if absent)
    per target slot:   [ target , target - reference ]
        --[per-cell MLP, optional CBAM]--> avg+max pool --> angle token (B, V, D)
    angles --[fusion: mean | attention | gru, masked by view_mask]--> (B, D)
    zooms  --[pool, masked mean; learned "no zoom" vector when absent]--> (B, D)
    [angles, zooms] --> trunk MLP --> abnormal_logit (B,)
                    --> trunk MLP (shared) or one MLP per head (independent level features)
                        --> type_logits (B, L), level_logits {level: (B, n)}

The pooled view features (``encode``) are all that depends on the backbone: with a frozen
backbone they can be computed once and cached (:mod:`seminspect.training.feature_cache`), and
:meth:`MultiViewADC.forward_features` trains the rest on them. The model knows nothing about
training loops; losses live in :mod:`seminspect.training.losses`.

Registration of reference to target happens before the model, once, at the data level
(:func:`seminspect.data.registration.register_sample`): the model assumes aligned views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seminspect.data.batch import reference_slots
from seminspect.data.sample import PAD_ROLE, Role
from seminspect.data.taxonomy import Taxonomy
from seminspect.models.cbam import GridCBAM

ROLE_TARGET, ROLE_REFERENCE, ROLE_ZOOM, ROLE_PAD = Role.TARGET.code, Role.REFERENCE.code, Role.ZOOM.code, PAD_ROLE
FUSIONS = ("mean", "attention", "gru")
LEVEL_FEATURES = ("shared", "independent")
ATTENTIONS = ("none", "cbam")
MAX_INDEX = 16  # detector / angle indices are clamped into an embedding of this size


class TinyBackbone(nn.Module):
    """A small from-scratch CNN with the backbone interface (list of maps + ``feature_info``).

    Used by tests and as a stand-in when :mod:`seminspect.models.backbones` is unavailable.
    Input ``(N, in_chans, H, W)`` float32 in [0, 1]; outputs maps at reductions 2, 4, 8.
    """

    def __init__(self, in_chans: int = 1, width: int = 8) -> None:
        super().__init__()
        chans = [width, width * 2, width * 4]
        layers = []
        prev = in_chans
        for c in chans:
            layers.append(nn.Sequential(nn.Conv2d(prev, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU()))
            prev = c
        self.stages = nn.ModuleList(layers)
        self.feature_info = [{"num_chs": c, "reduction": 2 ** (i + 1)} for i, c in enumerate(chans)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - 0.5) / 0.25
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def build_backbone(
    name: str,
    pretrained: bool = True,
    out_indices: Sequence[int] = (1, 2, 3),
    weights_path: str | None = None,
) -> nn.Module:
    """A backbone from the registry (:func:`seminspect.models.backbones.create_backbone`), or ``tiny``."""
    if name == "tiny":
        return TinyBackbone()
    from seminspect.models.backbones import create_backbone

    return create_backbone(name, pretrained=pretrained, in_chans=1, out_indices=tuple(out_indices),
                           weights_path=weights_path)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x (B, V, D)`` over slots where ``mask (B, V)``; zeros where no slot is set."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class MultiViewADC(nn.Module):
    """Multi-view defect classifier.

    Args:
        backbone_name: registry name (``mobilenetv2``, ``efficientnet_lite0``, ``simple_cnn``, ``tiny``).
        pretrained: load the backbone's packaged ImageNet weights.
        taxonomy: category tree; gives the number of leaf types and per-level heads. If None,
            ``num_types`` leaf types and no intermediate levels.
        num_types: number of leaf types when no taxonomy is given.
        out_indices: backbone stages whose maps are used (multi-scale).
        grid: each scale is pooled to ``grid x grid`` cells before comparison; keeps the
            die comparison spatial while making cached features small.
        pool: grid pooling, ``avg``, ``max`` or ``avgmax`` (both, concatenated).
        dim: token width ``D``.
        fusion: ``mean``, ``attention`` or ``gru`` (fusion across target angles).
        backbone: a ready module (overrides ``backbone_name``; used by tests).
        weights_path: user weights file for the backbone.
        dropout: dropout before the heads.
        level_features: ``shared``: the type and level heads read the trunk that the abnormal head
            reads; ``independent``: the leaf-type head and each level head read their own trunk
            (the user's study: independent per-level features beat shared ones).
        attention: ``cbam``: channel and spatial attention (:class:`GridCBAM`) on each view's
            die-compared grid before it is pooled; ``none``.
    """

    def __init__(
        self,
        backbone_name: str = "mobilenetv2",
        pretrained: bool = True,
        taxonomy: Taxonomy | None = None,
        num_types: int | None = None,
        out_indices: Sequence[int] = (1, 2, 3),
        grid: int = 8,
        dim: int = 128,
        fusion: str = "attention",
        backbone: nn.Module | None = None,
        weights_path: str | None = None,
        dropout: float = 0.1,
        pool: str = "avgmax",
        level_features: str = "shared",
        attention: str = "none",
    ) -> None:
        super().__init__()
        if level_features not in LEVEL_FEATURES:
            raise ValueError(f"unknown level_features {level_features!r}; use one of {LEVEL_FEATURES}")
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; use one of {ATTENTIONS}")
        self.level_features = level_features
        if pool not in ("avg", "max", "avgmax"):
            raise ValueError(f"unknown grid pooling {pool!r}; use avg, max or avgmax")
        self.pool = pool
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; use one of {FUSIONS}")
        self.backbone = backbone if backbone is not None else build_backbone(
            backbone_name, pretrained, out_indices, weights_path)
        backbone_chs = int(sum(f["num_chs"] for f in self.backbone.feature_info))
        self.view_channels = backbone_chs * (2 if pool == "avgmax" else 1)
        # Die comparison happens on the full-resolution maps, before pooling: a 1-3 px particle
        # is a strong local difference that a pooled-then-subtracted feature would average away.
        # Per target slot: [avg(t - r), max|t - r|] per scale.
        self.diff_channels = 2 * backbone_chs
        self.feature_channels = self.view_channels + self.diff_channels
        self.grid = int(grid)
        self.dim = int(dim)
        self.fusion = fusion
        if taxonomy is not None:
            self.num_types = taxonomy.num_leaves
            self.level_names = list(taxonomy.levels[:-1])
            level_sizes = [len(taxonomy.nodes(lv)) for lv in self.level_names]
            for name in self.level_names:
                self.register_buffer(f"membership_{name}", torch.from_numpy(taxonomy.membership(name)),
                                     persistent=False)
        else:
            if num_types is None:
                raise ValueError("give a taxonomy or num_types")
            self.num_types = int(num_types)
            self.level_names = []
            level_sizes = []
        d = self.dim
        # A per-scale-agnostic linear projection; difference after projection equals projection
        # of the difference (linear), so projecting each view once is enough.
        # Per-cell linear layers on channels-last grids: on 4x4-8x8 grids with large batches a
        # matmul is ~10x faster than a (mkldnn) convolution on CPU.
        self.proj = nn.Linear(self.view_channels, d)
        self.proj_diff = nn.Linear(self.diff_channels, d)
        self.no_reference = nn.Parameter(torch.zeros(d))
        self.pair = nn.Sequential(nn.Linear(2 * d, d), nn.LayerNorm(d), nn.GELU(), nn.Linear(d, d))
        self.cbam = GridCBAM(d) if attention == "cbam" else None
        self.angle_out = nn.Sequential(nn.Linear(2 * d, d), nn.GELU())
        self.index_embed = nn.Embedding(MAX_INDEX, d)
        if fusion == "attention":
            self.attn = nn.MultiheadAttention(d, num_heads=4 if d % 4 == 0 else 1, batch_first=True)
            self.attn_norm = nn.LayerNorm(d)
            self.attn_score = nn.Linear(d, 1)
        elif fusion == "gru":
            self.gru = nn.GRU(d, d // 2, batch_first=True, bidirectional=True)
        self.zoom_out = nn.Sequential(nn.Linear(2 * d, d), nn.GELU())
        self.no_zoom = nn.Parameter(torch.zeros(d))
        self.trunk = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Dropout(dropout))
        if level_features == "independent":  # one trunk per type-level head: leaf types, then each level
            self.level_trunks = nn.ModuleList([
                nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Dropout(dropout))
                for _ in range(1 + len(level_sizes))])
        self.abnormal_head = nn.Linear(d, 1)
        self.type_head = nn.Linear(d, self.num_types)
        self.level_heads = nn.ModuleList([nn.Linear(d, n) for n in level_sizes])

    # ----- backbone part (cacheable) ---------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone + grid pooling: ``(N, 1, H, W)`` -> ``(N, C, grid, grid)`` float32."""
        return self.pool_maps(self.backbone(images))

    def pool_maps(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Grid pooling of backbone maps ``[(N, C_i, h_i, w_i)]`` -> ``(N, C, grid, grid)``
        (separate from the backbone so an exported backbone can feed it)."""
        pooled = []
        if self.pool in ("avg", "avgmax"):
            pooled += [F.adaptive_avg_pool2d(m, self.grid) for m in maps]
        if self.pool in ("max", "avgmax"):
            # max keeps a 1-3 px particle's response that averaging over a cell would dilute
            pooled += [F.adaptive_max_pool2d(m, self.grid) for m in maps]
        return torch.cat(pooled, dim=1)

    def encode_views(self, images: torch.Tensor, view_mask: torch.Tensor, roles: torch.Tensor | None = None,
                     indices: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone once over the real views only: ``(B, V, 1, H, W)`` -> ``(B, V, C, g, g)``.

        Channels ``[:view_channels]`` hold each view's pooled maps; ``[view_channels:]`` hold, for
        target slots with a same-index reference, the pooled full-resolution difference
        ``target - reference`` (zeros elsewhere, or when ``roles`` is not given).
        """
        bsz, nv = view_mask.shape
        flat = images.reshape(bsz * nv, *images.shape[2:])
        return self.features_from_maps(self.backbone(flat[view_mask.reshape(-1)]), view_mask, roles, indices)

    def features_from_maps(self, maps: Sequence[torch.Tensor], view_mask: torch.Tensor,
                           roles: torch.Tensor | None = None, indices: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`encode_views` after the backbone: ``maps`` hold the real views in slot order
        (e.g. from an exported ONNX backbone)."""
        bsz, nv = view_mask.shape
        real = view_mask.reshape(-1)
        dev = maps[0].device
        base = self.pool_maps(maps)
        n = base.shape[0]
        diff = base.new_zeros(n, self.diff_channels, self.grid, self.grid)
        if roles is not None and indices is not None:
            roles = torch.where(view_mask, roles, torch.full_like(roles, ROLE_PAD))
            ref = reference_slots(roles, indices).reshape(-1)
            pos = torch.full((bsz * nv,), -1, dtype=torch.long, device=dev)
            pos[real] = torch.arange(n, device=dev)
            slots = torch.arange(bsz * nv, device=dev)
            has = (ref >= 0) & real
            if bool(has.any()):
                t_idx = pos[slots[has]]
                r_idx = pos[(slots[has] // nv) * nv + ref[has]]
                keep = r_idx >= 0
                t_idx, r_idx = t_idx[keep], r_idx[keep]
                d_maps = [m[t_idx] - m[r_idx] for m in maps]
                pooled = [F.adaptive_avg_pool2d(d, self.grid) for d in d_maps]
                pooled += [F.adaptive_max_pool2d(d.abs(), self.grid) for d in d_maps]
                diff[t_idx] = torch.cat(pooled, dim=1)
        feats = torch.cat([base, diff], dim=1)
        out = feats.new_zeros(bsz * nv, *feats.shape[1:])
        out[real] = feats
        return out.reshape(bsz, nv, *feats.shape[1:])

    # ----- head part --------------------------------------------------------------------------
    def forward(
        self,
        batch_or_images: Any,
        roles: torch.Tensor | None = None,
        indices: torch.Tensor | None = None,
        view_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """Forward a :class:`~seminspect.data.batch.Batch` or its tensors.

        Returns a dict: ``abnormal_logit (B,)``, ``type_logits (B, L)``, ``level_logits``
        ``{level: (B, n_level)}`` (per-level heads) and ``embedding (B, D)``.
        """
        if roles is None:
            b = batch_or_images
            images, roles, indices, view_mask = b.images, b.roles, b.indices, b.view_mask
        else:
            images = batch_or_images
            if view_mask is None:
                view_mask = roles != ROLE_PAD
        feats = self.encode_views(images, view_mask, roles, indices)
        return self.forward_features(feats, roles, indices, view_mask)

    def forward_features(
        self, feats: torch.Tensor, roles: torch.Tensor, indices: torch.Tensor, view_mask: torch.Tensor
    ) -> dict[str, Any]:
        """Heads on pooled view features ``(B, V, C, g, g)`` (live or cached)."""
        feats = feats.float()
        bsz, nv = roles.shape
        roles = torch.where(view_mask, roles, torch.full_like(roles, ROLE_PAD))
        cl = feats.permute(0, 1, 3, 4, 2)  # (B, V, g, g, C) channels last
        p = self.proj(cl[..., :self.view_channels])  # (B, V, g, g, D)
        dp = self.proj_diff(cl[..., self.view_channels:])
        has_ref = reference_slots(roles, indices) >= 0  # (B, V): a same-index reference is present
        diff = torch.where(has_ref[:, :, None, None, None], dp, self.no_reference.expand_as(dp))
        h = self.pair(torch.cat([p, diff], dim=-1))  # (B, V, g, g, D)
        if self.cbam is not None:
            h = self.cbam(h)
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=-1)  # (B, V, 2D)
        idx = indices.clamp(0, MAX_INDEX - 1)
        tokens = self.angle_out(pooled) + self.index_embed(idx)  # (B, V, D)
        is_target = (roles == ROLE_TARGET) & view_mask
        angles = self._fuse(tokens, is_target)

        is_zoom = (roles == ROLE_ZOOM) & view_mask
        zp = torch.cat([p.mean((2, 3)), p.amax((2, 3))], dim=-1)  # zooms: own pooled stream
        ztok = self.zoom_out(zp)
        has_zoom = is_zoom.any(1, keepdim=True)
        zoom = torch.where(has_zoom, _masked_mean(ztok, is_zoom), self.no_zoom.expand(bsz, -1))

        fused = torch.cat([angles, zoom], dim=1)
        emb = self.trunk(fused)
        if self.level_features == "independent":
            type_emb, *level_embs = (t(fused) for t in self.level_trunks)
        else:
            type_emb, level_embs = emb, [emb] * len(self.level_heads)
        return {
            "abnormal_logit": self.abnormal_head(emb).squeeze(1),
            "type_logits": self.type_head(type_emb),
            "level_logits": {name: head(e) for name, head, e in
                             zip(self.level_names, self.level_heads, level_embs, strict=True)},
            "embedding": type_emb,  # what the leaf-type head reads (open-set rules use it)
        }

    def _fuse(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fuse target-angle tokens ``(B, V, D)`` over slots in ``mask (B, V)`` -> ``(B, D)``."""
        if self.fusion == "mean":
            return _masked_mean(tokens, mask)
        any_valid = mask.any(1)
        # A row with no target at all would make attention NaN: let it attend to slot 0 and zero it.
        safe = mask.clone()
        safe[~any_valid, 0] = True
        if self.fusion == "attention":
            x = self.attn_norm(tokens + self._self_attention(tokens, safe))
            score = self.attn_score(x).squeeze(-1).masked_fill(~safe, float("-inf"))
            w = torch.softmax(score, dim=1).unsqueeze(-1)
            out = (w * x).sum(1)
        else:  # gru over the angles in slot order (canonical order: by index)
            order = torch.argsort((~safe).to(torch.int8), dim=1, stable=True)
            seq = torch.gather(tokens, 1, order[:, :, None].expand_as(tokens))
            lengths = safe.sum(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(seq, lengths, batch_first=True, enforce_sorted=False)
            _, hidden = self.gru(packed)  # (2, B, D/2)
            out = torch.cat([hidden[0], hidden[1]], dim=1)
        return out * any_valid.unsqueeze(1).to(out.dtype)

    def _self_attention(self, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``self.attn(tokens, tokens, tokens, key_padding_mask=~keep)`` written out with
        ``scaled_dot_product_attention``: the same weights and result, but no sizes fixed in
        Python, so an exported graph takes any number of views (the fused kernel has no ONNX form)."""
        attn = self.attn
        bsz, d, heads = tokens.shape[0], self.dim, attn.num_heads
        q, k, v = F.linear(tokens, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(bsz, -1, heads, d // heads).transpose(1, 2) for t in (q, k, v))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        return attn.out_proj(ctx.transpose(1, 2).reshape(bsz, -1, d))

    # ----- probabilities ----------------------------------------------------------------------
    def membership(self, level: str) -> torch.Tensor:
        return getattr(self, f"membership_{level}")

    @torch.no_grad()
    def predict_proba(self, out: dict[str, Any]) -> dict[str, Any]:
        """Probabilities from a forward output: ``abnormal (B,)``, ``types (B, L)``,
        ``levels {level: (B, n)}`` obtained by summing leaf probabilities through the tree
        (so a predicted family always contains the predicted type's family probability mass).
        """
        types = torch.softmax(out["type_logits"].float(), dim=1)
        levels = {name: types @ self.membership(name).T for name in self.level_names}
        return {"abnormal": torch.sigmoid(out["abnormal_logit"].float()), "types": types, "levels": levels}

    def head_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter outside the backbone."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.")]

    def backbone_stages(self) -> list[nn.Module]:
        """The backbone's blocks in forward order, for unfreezing the last ones.

        Descends through single containers (``features``, ``stages``) and takes the longest list
        of parameterised children (e.g. MobileNetV2's 14 ``features`` blocks, EfficientNet's
        ``_blocks``).
        """
        best: list[nn.Module] = []

        def visit(m: nn.Module, depth: int) -> None:
            nonlocal best
            kids = [c for c in m.children() if any(True for _ in c.parameters())]
            if len(kids) > len(best):
                best = kids
            if depth < 2:
                for c in kids:
                    if len(list(c.children())) > 1:
                        visit(c, depth + 1)

        visit(self.backbone, 0)
        return best
