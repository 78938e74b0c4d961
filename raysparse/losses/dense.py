"""The dense bi-encoder's training objective: InfoNCE over temperature-scaled inner products (+ alignment).

With pooled (optionally L2-normalised) vectors ``q``, ``d`` and temperature ``τ`` (``loss.dense_temperature``)::

    loss = α · InfoNCE(q, d+, d-; τ) + β · cross_lingual(ko, en)             (β term only with a parallel batch)

    InfoNCE = -1/B Σ_i log( exp(q_i·d_i+/τ) / Σ_{d ∈ D} exp(q_i·d/τ) ),   D = in-batch positives ∪ mined negatives

(:class:`~raysparse.losses.infonce.InfoNCELoss`; the cross-lingual term is
:class:`~raysparse.losses.cross_lingual.CrossLingualCosineLoss` on the dense vectors). No sparsity term: a dense
vector has no vocabulary to sparsify. τ = 0.05 because cosine scores lie in [-1, 1]: at τ = 1 the softmax over a
batch is nearly flat and the gradient small (DPR uses raw dot products; E5 and GTE use τ = 0.01-0.05).

References: van den Oord et al. 2018 (https://arxiv.org/abs/1807.03748); Karpukhin et al. 2020, DPR
(https://arxiv.org/abs/2004.04906); Wang et al. 2022, E5 (https://arxiv.org/abs/2212.03533).

Components returned by name like :class:`~raysparse.losses.combined.SparseRetrievalLoss`: ``loss`` (the only one
with a gradient), ``ranking``, ``cross_lingual`` and the weights in effect, so the training loop logs either model
the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from raysparse.losses.cross_lingual import CrossLingualCosineLoss
from raysparse.losses.infonce import InfoNCELoss

if TYPE_CHECKING:
    from raysparse.config import LossConfig


class DenseRetrievalLoss(nn.Module):
    """α·InfoNCE(τ) + β·cross_lingual; ``forward`` takes the sparse loss's arguments and ignores what it cannot use
    (``step``: nothing warms up; distillation is not implemented for the dense model and is refused)."""

    def __init__(self, loss_cfg: LossConfig, total_steps: int = 1) -> None:
        super().__init__()
        if loss_cfg.delta > 0:
            raise ValueError("loss.delta > 0 (distillation) is not supported with model.kind: dense")
        if loss_cfg.ranking != "infonce":
            raise ValueError(f"model.kind: dense trains with loss.ranking: infonce, got {loss_cfg.ranking!r}")
        self.cfg = loss_cfg
        self.ranking = InfoNCELoss(temperature=loss_cfg.dense_temperature)
        self.cross_lingual = CrossLingualCosineLoss()

    def forward(
        self,
        q: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor | None = None,
        *,
        step: int = 0,
        ko: torch.Tensor | None = None,
        en: torch.Tensor | None = None,
        **_: object,
    ) -> dict[str, torch.Tensor]:
        """``q``, ``pos``: (B, H); ``neg``: (B, N, H), (M, H) or None; ``ko``/``en``: (P, H) aligned rows."""
        cfg = self.cfg
        zero = torch.zeros((), device=q.device)
        ranking = self.ranking(q, pos, neg)["ranking"]
        if (ko is None) != (en is None):
            raise ValueError("pass both ko and en (aligned parallel rows) or neither")
        cross = self.cross_lingual(ko, en)["cross_lingual"] if ko is not None else zero
        return {
            "loss": cfg.alpha * ranking + cfg.beta * cross,
            "ranking": ranking.detach(),
            "cross_lingual": cross.detach(),
            "weight_alpha": torch.tensor(float(cfg.alpha), device=q.device),
            "weight_beta": torch.tensor(float(cfg.beta), device=q.device),
        }
