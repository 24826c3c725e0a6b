"""Losses for the multi-view ADC model.

- :func:`focal_loss`: binary focal loss (Lin et al. 2017) for the normal/abnormal head.
- :func:`type_loss`: label-smoothed cross-entropy on the leaf types, defect samples only.
- :func:`hierarchical_loss`: for every non-leaf level of the category tree, the negative log of
  the ancestor's probability obtained by *summing leaf probabilities* through the membership
  matrix (so the leaf head is trained to be consistent with the tree), plus cross-entropy of the
  per-level head and a consistency term (KL from the summed distribution to the level head).
- :class:`ADCLoss`: the weighted sum, returning the parts for logging.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, alpha: float = 0.5) -> torch.Tensor:
    """Mean binary focal loss.

    ``FL = -a_t (1 - p_t)^gamma log(p_t)`` with ``p_t = sigmoid(logit)`` for positives and
    ``1 - sigmoid(logit)`` for negatives, ``a_t = alpha`` for positives, ``1 - alpha`` for negatives
    (``alpha = 0.5`` weighs both equally; the result is then half the unweighted focal loss).

    Args:
        logits: ``(B,)`` raw scores. targets: ``(B,)`` 0/1 (float or int).
    """
    t = targets.to(logits.dtype)
    logp = F.logsigmoid(logits)
    log1mp = F.logsigmoid(-logits)
    logpt = t * logp + (1 - t) * log1mp
    pt = logpt.exp()
    at = t * alpha + (1 - t) * (1 - alpha)
    return (-at * (1 - pt).pow(gamma) * logpt).mean()


def type_loss(type_logits: torch.Tensor, type_index: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """Label-smoothed cross-entropy over samples with a known type (``type_index >= 0``); 0 if none."""
    keep = type_index >= 0
    if not bool(keep.any()):
        return type_logits.sum() * 0.0
    return F.cross_entropy(type_logits[keep], type_index[keep], label_smoothing=smoothing)


def hierarchical_loss(
    type_logits: torch.Tensor,
    type_index: torch.Tensor,
    memberships: dict[str, torch.Tensor],
    level_logits: dict[str, torch.Tensor] | None = None,
    consistency: float = 0.5,
) -> torch.Tensor:
    """Tree loss averaged over the non-leaf levels, on samples with a known type.

    For level ``l`` with membership ``M_l (n_l, L)``: ``q_l = softmax(type_logits) @ M_l.T``;
    loss ``-log q_l[ancestor]``. With per-level heads: ``+ CE(level_logits[l], ancestor)`` and
    ``+ consistency * KL(q_l || softmax(level_logits[l]))``.
    """
    keep = type_index >= 0
    if not memberships or not bool(keep.any()):
        return type_logits.sum() * 0.0
    probs = torch.softmax(type_logits[keep].float(), dim=1)
    leaf = type_index[keep]
    total = type_logits.new_zeros(())
    for name, m in memberships.items():
        anc = m.argmax(0)[leaf]  # (K,) ancestor index of each sample's leaf
        q = (probs @ m.T.to(probs.dtype)).clamp_min(1e-8)
        total = total + F.nll_loss(q.log(), anc)
        if level_logits is not None and name in level_logits:
            lg = level_logits[name][keep]
            total = total + F.cross_entropy(lg, anc)
            if consistency > 0:
                total = total + consistency * F.kl_div(F.log_softmax(lg, dim=1), q, reduction="batchmean")
    return total / len(memberships)


class ADCLoss:
    """Weighted total of the binary, type and tree losses.

    Args:
        gamma, alpha: focal-loss parameters.
        smoothing: label smoothing of the type cross-entropy.
        w_abnormal, w_type, w_hier: weights.
        consistency: weight of the level-head consistency term.
    """

    def __init__(self, gamma: float = 2.0, alpha: float = 0.5, smoothing: float = 0.1, w_abnormal: float = 1.0,
                 w_type: float = 0.5, w_hier: float = 0.25, consistency: float = 0.5) -> None:
        self.gamma, self.alpha, self.smoothing = gamma, alpha, smoothing
        self.w_abnormal, self.w_type, self.w_hier, self.consistency = w_abnormal, w_type, w_hier, consistency

    def __call__(self, out: dict[str, Any], is_abnormal: torch.Tensor, type_index: torch.Tensor,
                 memberships: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        labelled = is_abnormal >= 0
        if bool(labelled.any()):
            lb = focal_loss(out["abnormal_logit"][labelled], is_abnormal[labelled], self.gamma, self.alpha)
        else:
            lb = out["abnormal_logit"].sum() * 0.0
        # Types are learned on defect samples only.
        tidx = torch.where(is_abnormal == 1, type_index, torch.full_like(type_index, -1))
        lt = type_loss(out["type_logits"], tidx, self.smoothing)
        lh = hierarchical_loss(out["type_logits"], tidx, memberships, out.get("level_logits"), self.consistency)
        total = self.w_abnormal * lb + self.w_type * lt + self.w_hier * lh
        return total, {"loss": float(total.detach()), "abnormal": float(lb.detach()), "type": float(lt.detach()),
                       "hier": float(lh.detach())}
