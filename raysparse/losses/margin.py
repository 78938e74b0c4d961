"""Pairwise margin ranking loss (the users' plan).

For each query with positive ``d+`` and negative ``d-`` (dot-product scores ``s``) and margin ``m``::

    L = mean over (q, d+, d-) of max(0, m - s(q, d+) + s(q, d-))

With (B, N, V) negatives every one of the N pairs per query counts. Without mined negatives the positive of the next
query in the batch is used as the negative (in-batch), so the loss is still defined.

Reference: Herbrich et al. 1999, "Support vector learning for ordinal regression"; as used for retrieval in
e.g. Burges et al. 2005, RankNet (https://dl.acm.org/doi/10.1145/1102351.1102363);
torch.nn.MarginRankingLoss (https://pytorch.org/docs/stable/generated/torch.nn.MarginRankingLoss.html).
"""

from __future__ import annotations

import torch
from torch import nn


class MarginRankingLoss(nn.Module):
    """``mean(max(0, margin - s(q,d+) + s(q,d-)))``; component ``"ranking"``."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)

    def forward(
        self, q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if q.shape != pos.shape:
            raise ValueError(
                f"queries {tuple(q.shape)} and positives {tuple(pos.shape)} must have the same shape"
            )
        if neg is None:
            if q.shape[0] < 2:
                raise ValueError("MarginRankingLoss without negatives needs a batch of at least 2 (in-batch)")
            neg = torch.roll(pos, shifts=-1, dims=0)
        if neg.dim() == 2:
            neg = neg.unsqueeze(1)
        if neg.dim() != 3 or neg.shape[0] != q.shape[0] or neg.shape[-1] != q.shape[-1]:
            raise ValueError(
                f"negatives must be (B, V) or (B, N, V) with B={q.shape[0]}, got {tuple(neg.shape)}"
            )
        pos_scores = (q * pos).sum(-1, keepdim=True)  # (B, 1)
        neg_scores = torch.einsum("bv,bnv->bn", q, neg)  # (B, N)
        return {"ranking": torch.relu(self.margin - pos_scores + neg_scores).float().mean()}
