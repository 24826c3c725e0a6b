"""View features of the multi-view ADC and the probabilities computed from them.

    fs = compute_features(model, samples, taxonomy, prepare, ops=[0])   # backbone once per view and op
    pred = predict_features(model, fs, ops=[0])                        # heads; TTA = mean over ops

With the backbone frozen, a view's pooled multi-scale feature grid (``MultiViewADC.encode``,
``(C, g, g)``) never changes, so it is computed once per view and per dihedral transform and kept
as float16 (:class:`FeatureSet`). Training caches these on disk (:mod:`seminspect.training.feature_cache`);
inference computes them per site and applies the same heads, so both paths see the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from seminspect.data.batch import collate
from seminspect.data.prepare import PrepareSample
from seminspect.data.sample import Sample
from seminspect.data.taxonomy import Taxonomy
from seminspect.models.adc import MultiViewADC
from seminspect.utils.modules import eval_mode
from seminspect.utils.progress import make_progress

MOVED = 8  # a feature slice's op is ``op + MOVED`` when it was encoded from training's jittered window


def dihedral(images: torch.Tensor, op: int) -> torch.Tensor:
    """Apply dihedral op ``0..7`` (``op % 4`` quarter turns, then a horizontal flip if ``op >= 4``)
    to the last two dims of ``images`` -- the same op on every view keeps the views in step."""
    out = torch.rot90(images, op % 4, dims=(-2, -1)) if op % 4 else images
    return torch.flip(out, dims=(-1,)) if op >= 4 else out


def resize_batch(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """``(B, V, 1, H, W)`` -> ``(B, V, 1, size, size)`` (bilinear, antialiased)."""
    if size is None or images.shape[-1] == size:
        return images
    b, v = images.shape[:2]
    flat = F.interpolate(images.flatten(0, 1), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)
    return flat.reshape(b, v, *flat.shape[1:])


@dataclass
class FeatureSet:
    """Cached view features of ``N`` samples.

    Attributes:
        feats: ``(T, N, V, C, g, g)`` float16, one slice per dihedral op in ``ops``.
        roles, indices: ``(N, V)`` int64 (-1 padding). view_mask: ``(N, V)`` bool.
        is_abnormal, type_index: ``(N,)`` int64.
        sample_ids: list of ids. ops: dihedral ops of the slices (``op + MOVED``: from the jittered
            training window of ``compute_features(moved=...)``).
    """

    feats: torch.Tensor
    roles: torch.Tensor
    indices: torch.Tensor
    view_mask: torch.Tensor
    is_abnormal: torch.Tensor
    type_index: torch.Tensor
    sample_ids: list[str]
    ops: list[int]

    def __len__(self) -> int:
        return len(self.sample_ids)

    def subset(self, idx: Sequence[int] | np.ndarray) -> FeatureSet:
        ix = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return FeatureSet(self.feats[:, ix], self.roles[ix], self.indices[ix], self.view_mask[ix],
                          self.is_abnormal[ix], self.type_index[ix], [self.sample_ids[i] for i in ix.tolist()],
                          list(self.ops))

    def drop_role(self, role_code: int) -> FeatureSet:
        """The same samples with every view of a role removed (e.g. references, code 1)."""
        keep = self.view_mask & (self.roles != role_code)
        return FeatureSet(self.feats, torch.where(keep, self.roles, torch.full_like(self.roles, -1)),
                          torch.where(keep, self.indices, torch.full_like(self.indices, -1)), keep,
                          self.is_abnormal, self.type_index, self.sample_ids, list(self.ops))


@torch.no_grad()
def compute_features(
    model: torch.nn.Module,
    dataset: Sequence[Sample],
    taxonomy: Taxonomy | None,
    prepare: PrepareSample | None = None,
    ops: Sequence[int] = (0,),
    batch_size: int = 16,
    resize: int | None = None,
    description: str = "encoding views",
    moved: PrepareSample | None = None,
) -> FeatureSet:
    """Encode every real view of every sample once per dihedral op (backbone in eval mode).

    ``moved``: a second preparation (training's jittered window, ``PrepareSample(jitter=...)``); every op
    is then encoded again from it, as the slices ``op + 8`` after those of ``prepare``.
    """
    n = len(dataset)
    slices = list(ops) + ([op + MOVED for op in ops] if moved is not None else [])
    chunks: list[list[torch.Tensor]] = [[] for _ in slices]
    roles, indices, masks, ab, ti, ids = [], [], [], [], [], []
    encoded_at: list[int] = []  # dataset position of each encoded sample, in encoding order
    vmax = 0
    with eval_mode(model), make_progress() as progress:
        task = progress.add_task(description, total=n)
        for start in range(0, n, batch_size):
            raw = [dataset[i] for i in range(start, min(n, start + batch_size))]
            # one registration per site, shared by the moved windows (same registration settings)
            aligned = [(s, (prepare or moved).align(s)) for s in raw] if prepare or moved else []
            samples = [prepare.apply(s, a) for s, a in aligned] if prepare is not None else raw
            shifted = [moved.apply(s, a) for s, a in aligned] if moved is not None else None
            # collate pads every view to the largest view of the batch, and padding changes pooled
            # features: encode samples of equal size together so that a sample's features never
            # depend on its batch neighbours (mixed-size data such as DeepPCB patches).
            for group in _same_size_groups(samples):
                encoded_at.extend(start + i for i in group)
                batch = collate([samples[i] for i in group], taxonomy)
                # the unmoved windows fill slices 0 .. len(ops) - 1, the moved ones the next len(ops)
                windows = [(batch, 0)]
                if shifted is not None:
                    windows.append((collate([shifted[i] for i in group], taxonomy), len(ops)))
                for b, first in windows:
                    images = resize_batch(b.images, resize)
                    for k, op in enumerate(ops):
                        chunks[first + k].append(model.encode_views(dihedral(images, op), b.view_mask, b.roles,
                                                                     b.indices).to(torch.float16))
                vmax = max(vmax, batch.roles.shape[1])
                roles.append(batch.roles)
                indices.append(batch.indices)
                masks.append(batch.view_mask)
                ab.append(batch.is_abnormal)
                ti.append(batch.type_index)
                ids.extend(batch.sample_ids)
            progress.advance(task, len(samples))

    def pad(t: torch.Tensor, value: float) -> torch.Tensor:
        extra = vmax - t.shape[1]
        if extra == 0:
            return t
        shape = (t.shape[0], extra, *t.shape[2:])
        return torch.cat([t, torch.full(shape, value, dtype=t.dtype)], dim=1)

    feats = torch.stack([torch.cat([pad(c, 0) for c in ch]) for ch in chunks])
    fs = FeatureSet(feats, torch.cat([pad(r, -1) for r in roles]), torch.cat([pad(r, -1) for r in indices]),
                    torch.cat([pad(m, 0) for m in masks]).bool(), torch.cat(ab), torch.cat(ti), ids, slices)
    if encoded_at != sorted(encoded_at):  # groups reordered samples inside a batch: back to the dataset's order
        fs = fs.subset(np.argsort(np.asarray(encoded_at), kind="stable"))
    return fs


def _same_size_groups(samples: list[Sample]) -> list[list[int]]:
    """Positions in ``samples`` grouped by the largest view size (the size collate pads a batch to)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(samples):
        key = (max(v.image.shape[0] for v in s.views), max(v.image.shape[1] for v in s.views))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


@torch.no_grad()
def predict_features(model: MultiViewADC, fs: FeatureSet, ops: Sequence[int] | None = None,
                     batch_size: int = 256) -> dict[str, np.ndarray]:
    """Probabilities on cached features, averaged over the dihedral slices ``ops`` (TTA).

    Returns ``abnormal (N,)``, ``types (N, L)``, ``levels {level: (N, n)}``, ``embedding (N, D)``.
    """
    model.eval()
    slots = [fs.ops.index(op) for op in (ops if ops is not None else fs.ops[:1])]
    ab, ty, emb = [], [], []
    lv: dict[str, list] = {n: [] for n in model.level_names}
    for start in range(0, len(fs), batch_size):
        idx = torch.arange(start, min(len(fs), start + batch_size))
        acc_ab, acc_ty, acc_emb = 0.0, 0.0, 0.0
        acc_lv = dict.fromkeys(model.level_names, 0.0)
        for s in slots:
            out = model.forward_features(fs.feats[s, idx].float(), fs.roles[idx], fs.indices[idx], fs.view_mask[idx])
            pr = model.predict_proba(out)
            acc_ab = acc_ab + pr["abnormal"]
            acc_ty = acc_ty + pr["types"]
            acc_emb = acc_emb + out["embedding"]
            for n in model.level_names:
                acc_lv[n] = acc_lv[n] + pr["levels"][n]
        ab.append(acc_ab / len(slots))
        ty.append(acc_ty / len(slots))
        emb.append(acc_emb / len(slots))
        for n in model.level_names:
            lv[n].append(acc_lv[n] / len(slots))
    return {"abnormal": torch.cat(ab).numpy(), "types": torch.cat(ty).numpy(),
            "levels": {n: torch.cat(v).numpy() for n, v in lv.items()}, "embedding": torch.cat(emb).numpy()}
