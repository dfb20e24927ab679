"""CSMAE loss terms as pure functions (method.md section 4).

All functions compute in at least float32 (bf16/fp16 inputs are upcast) and return scalars.
The model composes them with weights (see CrossSensorMAE.training_loss).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def normalize_patches(target: Tensor, eps: float = 1e-6) -> Tensor:
    """Standardise each patch (last dim) by its mean and (unbiased) variance: the norm-pix target."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor, *, norm_pix: bool = False) -> Tensor:
    """MSE per patch, averaged over the masked patches only.

    Args:
        pred: (N, L, P) predicted patches.
        target: (N, L, P) patchified normalised input.
        mask: (N, L), 1 = masked (the patches that count).
        norm_pix: standardise each target patch first.
    """
    keep = mask.bool()  # (N, L)
    # select the masked patches first: half the elementwise work and memory at mask ratio 0.5
    pred_m, target_m = _upcast(pred[keep]), _upcast(target[keep])  # (K, P)
    if norm_pix:
        target_m = normalize_patches(target_m)
    # every patch has P values, so the mean over K x P = the mean over patches of per-patch MSE
    return F.mse_loss(pred_m, target_m)


def umr_loss(pred: Tensor, target: Tensor, mask: Tensor, *, norm_pix: bool = False) -> Tensor:
    """Uni-modal reconstruction: a sensor's own pixels at its own masked positions."""
    return masked_mse(pred, target, mask, norm_pix=norm_pix)


def cmr_loss(pred: Tensor, target: Tensor, source_mask: Tensor, *, norm_pix: bool = False) -> Tensor:
    """Cross-modal reconstruction: target-sensor pixels at the positions masked in the SOURCE sensor."""
    return masked_mse(pred, target, source_mask, norm_pix=norm_pix)


def reconstruction_terms(
    pred: Mapping[tuple[str, str], Tensor],
    targets: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    *,
    norm_pix: bool = False,
) -> dict[str, Tensor]:
    """UMR/CMR terms for every (source, target) prediction.

    Names: ``umr_<s>`` for (s, s); ``cmr_<tgt>_from_<src>`` otherwise (loss on ``masks[src]``).
    """
    terms = {}
    for (src, tgt), p in pred.items():
        if src == tgt:
            terms[f"umr_{tgt}"] = umr_loss(p, targets[tgt], masks[src], norm_pix=norm_pix)
        else:
            terms[f"cmr_{tgt}_from_{src}"] = cmr_loss(p, targets[tgt], masks[src], norm_pix=norm_pix)
    return terms


class RowGatherLike(Protocol):
    """Gathers this rank's rows into the global batch (``csmae.training.gather.RowGather``)."""

    @property
    def offset(self) -> int: ...  # index of this rank's first row in the gathered tensor

    def __call__(self, x: Tensor) -> Tensor: ...


def nt_xent(z1: Tensor, z2: Tensor, tau: float = 0.5, *, gather: RowGatherLike | None = None) -> Tensor:
    """NT-Xent (InfoNCE) over the 2B rows of [z1; z2].

    Rows are L2-normalised; row i's positive is its other-sensor partner; the denominator runs
    over all 2B-1 other rows; the loss is the mean over the 2B rows.

    With ``gather`` (several ranks), the B pairs here are this rank's slice of a global batch of
    M pairs: this rank's 2B rows are scored against all 2M rows of the global batch (the
    negatives of one device at batch M) and the mean is over this rank's rows. The global loss is
    the row-weighted mean over ranks.
    """
    a, b_ = F.normalize(_upcast(z1), dim=1), F.normalize(_upcast(z2), dim=1)  # (B, D) each
    b = a.shape[0]
    if gather is None:
        g1, g2, offset = a, b_, 0
    else:
        g1, g2, offset = gather(a), gather(b_), gather.offset  # (M, D) each
    m = g1.shape[0]
    rows = torch.cat([a, b_], dim=0)  # (2B, D)
    cols = torch.cat([g1, g2], dim=0)  # (2M, D)
    logits = rows @ cols.T / tau  # (2B, 2M)
    own = torch.arange(offset, offset + b, device=rows.device)  # global index of this rank's pairs
    self_col = torch.cat([own, own + m])  # (2B,) each row's own column
    partner = torch.cat([own + m, own])  # (2B,) the other sensor of the same pair
    logits = logits.index_put((torch.arange(2 * b, device=rows.device), self_col),
                              torch.tensor(float("-inf"), device=rows.device, dtype=logits.dtype))
    return F.cross_entropy(logits, partner)


def mde_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """Minimised form of MDE: ``-mean(softplus(cos(z1_i, z2_i)))`` (maximises pair similarity)."""
    cos = F.cosine_similarity(_upcast(z1), _upcast(z2), dim=1)
    return -F.softplus(cos).mean()


def weighted_total(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """Sum of ``weights[prefix] * term`` where a term's prefix is the text before its first ``_``.

    Terms without a weight (e.g. an informational sum) are ignored.
    """
    total: Tensor | None = None
    for name, value in terms.items():
        w = weights.get(name.split("_", 1)[0])
        if w is None or w == 0:
            continue
        total = value * w if total is None else total + value * w
    if total is None:
        raise ValueError(f"no weighted loss term among {sorted(terms)} (weights {dict(weights)})")
    return total
