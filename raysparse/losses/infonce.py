"""In-batch contrastive loss with mined hard negatives (InfoNCE).

For queries ``q_i``, their positives ``d_i^+`` and a pool of negatives (every other query's positive plus all mined
hard negatives in the batch), with dot-product scores ``s(q, d) = q · d`` and temperature ``τ``::

    L = -1/B Σ_i log( exp(s(q_i, d_i^+)/τ) / Σ_{d ∈ D} exp(s(q_i, d)/τ) ),   D = {d_1^+..d_B^+} ∪ {all negatives}

References: van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding"
(https://arxiv.org/abs/1807.03748); in-batch negatives for retrieval: Karpukhin et al. 2020, DPR
(https://arxiv.org/abs/2004.04906); SPLADE v2 (https://arxiv.org/abs/2109.10086).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def flatten_negatives(neg: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
    """Accept negatives as (B, V), (B, N, V) or (M, V) and return them as (M, V) (None stays None)."""
    if neg is None:
        return None
    if neg.dim() == 3:
        if neg.shape[0] != batch_size:
            raise ValueError(f"negatives (B, N, V) must have B={batch_size}, got {tuple(neg.shape)}")
        return neg.reshape(-1, neg.shape[-1])
    if neg.dim() != 2:
        raise ValueError(f"negatives must be 2-D (M, V) or 3-D (B, N, V), got {tuple(neg.shape)}")
    return neg


class InfoNCELoss(nn.Module):
    """Cross-entropy over in-batch + hard-negative dot-product scores; component ``"ranking"``."""

    def __init__(self, temperature: float = 1.0, in_batch: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.in_batch = in_batch

    def forward(
        self, q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if q.shape != pos.shape:
            raise ValueError(
                f"queries {tuple(q.shape)} and positives {tuple(pos.shape)} must have the same shape"
            )
        batch = q.shape[0]
        negs = flatten_negatives(neg, batch)
        if self.in_batch:
            docs = pos if negs is None else torch.cat([pos, negs], dim=0)
            scores = q @ docs.T  # (B, B + M): column i is query i's positive
            labels = torch.arange(batch, device=q.device)
        else:
            pos_scores = (q * pos).sum(-1, keepdim=True)
            if neg is None:
                raise ValueError("InfoNCELoss(in_batch=False) needs negatives")
            neg_scores = torch.einsum("bv,bnv->bn", q, neg if neg.dim() == 3 else neg.unsqueeze(1))
            scores = torch.cat([pos_scores, neg_scores], dim=1)
            labels = torch.zeros(batch, dtype=torch.long, device=q.device)
        return {"ranking": F.cross_entropy(scores.float() / self.temperature, labels)}
