"""Cross-lingual alignment: a Korean text and its English translation should get similar sparse vectors.

For parallel pairs (term pairs from glossaries and parallel sentences) with representations ``k_i`` and ``e_i``::

    L = mean_i (1 - cos(k_i, e_i)),   cos(a, b) = a·b / max(‖a‖‖b‖, ε)

Cosine (not the raw dot product) so the loss cannot be lowered by inflating weights, which FLOPS would fight.

Reference: the users' plan (../shared/seed/plan.md); cosine alignment of translation pairs as in Reimers & Gurevych
2020, "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation"
(https://arxiv.org/abs/2004.09813).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossLingualCosineLoss(nn.Module):
    """``mean(1 - cos(rep_ko, rep_en))`` over aligned rows; component ``"cross_lingual"``."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, ko: torch.Tensor, en: torch.Tensor) -> dict[str, torch.Tensor]:
        if ko.shape != en.shape or ko.dim() != 2:
            raise ValueError(f"ko {tuple(ko.shape)} and en {tuple(en.shape)} must be the same (N, V) shape")
        if ko.shape[0] == 0:
            raise ValueError("CrossLingualCosineLoss got an empty batch")
        cos = F.cosine_similarity(ko.float(), en.float(), dim=-1, eps=self.eps)
        return {"cross_lingual": (1.0 - cos).mean()}
