"""The training objective: ranking + cross-lingual alignment + sparsity (+ distillation), with logging values.

::

    loss = α · ranking(q, d+, d-)
         + β · cross_lingual(ko, en)                          (only when a parallel batch is given)
         + γ_q · w(t) · sparsity(q) + γ_d · w(t) · sparsity(d+ ∪ d-)
         + δ · distillation(s, teacher)                        (only when δ > 0)

    w(t) = min(1, (t / T_w)²),   T_w = sparsity_warmup_fraction · total_steps      (SPLADE's quadratic warm-up)

Sparsity is FLOPS (:mod:`.flops`, on the global batch across data-parallel ranks) or L1 (:mod:`.l1`), chosen by
``LossConfig.sparsity``. Queries and documents are regularised separately (queries must be much sparser: their
terms are the posting lists a search has to walk).

The returned dict has ``"loss"`` (the only tensor with a gradient meant for ``backward``) plus every component,
every weight in effect at this step, and the FLOPS of queries and documents (always FLOPS, detached, whatever the
regulariser) so training curves are comparable across configurations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from raysparse.losses.cross_lingual import CrossLingualCosineLoss
from raysparse.losses.distillation import KLDistillationLoss, MarginMSELoss
from raysparse.losses.flops import FlopsLoss, flops, quadratic_warmup
from raysparse.losses.infonce import InfoNCELoss
from raysparse.losses.l1 import L1Loss
from raysparse.losses.margin import MarginRankingLoss

if TYPE_CHECKING:
    from raysparse.config import LossConfig


class SparseRetrievalLoss(nn.Module):
    """α·ranking + β·cross_lingual + γ_q(t)·sparsity_query + γ_d(t)·sparsity_doc (+ δ·distillation)."""

    def __init__(self, loss_cfg: LossConfig, total_steps: int, *, global_flops: bool = True) -> None:
        super().__init__()
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.cfg = loss_cfg
        self.total_steps = int(total_steps)
        self.warmup_steps = loss_cfg.sparsity_warmup_fraction * total_steps
        if loss_cfg.ranking == "infonce":
            self.ranking: nn.Module = InfoNCELoss(temperature=loss_cfg.temperature)
        else:
            self.ranking = MarginRankingLoss(margin=loss_cfg.margin)
        self.cross_lingual = CrossLingualCosineLoss()
        self.sparsity: nn.Module = (
            FlopsLoss(global_batch=global_flops) if loss_cfg.sparsity == "flops" else L1Loss()
        )
        if loss_cfg.distillation == "margin_mse":
            self.distillation: nn.Module = MarginMSELoss()
        else:
            self.distillation = KLDistillationLoss(temperature=loss_cfg.temperature)

    def sparsity_weights(self, step: int) -> tuple[float, float]:
        """(γ_q, γ_d) in effect at ``step`` (after the quadratic warm-up factor)."""
        factor = quadratic_warmup(step, self.warmup_steps)
        return self.cfg.gamma_query * factor, self.cfg.gamma_doc * factor

    def forward(
        self,
        q: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor | None = None,
        *,
        step: int,
        ko: torch.Tensor | None = None,
        en: torch.Tensor | None = None,
        teacher_pos: torch.Tensor | None = None,
        teacher_neg: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Representations in, named loss terms out.

        ``q``, ``pos``: (B, V); ``neg``: (B, V), (B, N, V) or None; ``ko``/``en``: (P, V) aligned parallel rows;
        ``teacher_pos``: (B,), ``teacher_neg``: (B,) or (B, N) teacher scores (required when δ > 0).
        """
        cfg = self.cfg
        device = q.device
        zero = torch.zeros((), device=device)
        out: dict[str, torch.Tensor] = {}

        ranking = self.ranking(q, pos, neg)["ranking"]
        docs = pos if neg is None else torch.cat([pos, neg.reshape(-1, neg.shape[-1])], dim=0)

        if (ko is None) != (en is None):
            raise ValueError("pass both ko and en (aligned parallel rows) or neither")
        cross = self.cross_lingual(ko, en)["cross_lingual"] if ko is not None else zero

        sparsity_q = next(iter(self.sparsity(q).values()))
        sparsity_d = next(iter(self.sparsity(docs).values()))
        gamma_q, gamma_d = self.sparsity_weights(step)

        distill = zero
        if cfg.delta > 0:
            if neg is None or teacher_pos is None or teacher_neg is None:
                raise ValueError("loss.delta > 0 needs negatives and teacher_pos/teacher_neg scores")
            neg3 = neg if neg.dim() == 3 else neg.unsqueeze(1)
            student_pos = (q * pos).sum(-1)
            student_neg = torch.einsum("bv,bnv->bn", q, neg3)
            distill = self.distillation(student_pos, student_neg, teacher_pos, teacher_neg)["distillation"]

        loss = (
            cfg.alpha * ranking
            + cfg.beta * cross
            + gamma_q * sparsity_q
            + gamma_d * sparsity_d
            + cfg.delta * distill
        )
        out["loss"] = loss
        out["ranking"] = ranking.detach()
        out["cross_lingual"] = cross.detach()
        out["sparsity_query"] = sparsity_q.detach()
        out["sparsity_doc"] = sparsity_d.detach()
        out["distillation"] = distill.detach()
        out["flops_query"] = flops(q.detach())
        out["flops_doc"] = flops(docs.detach())
        out["active_terms_query"] = (q.detach() > 0).float().sum(-1).mean()
        out["active_terms_doc"] = (docs.detach() > 0).float().sum(-1).mean()
        for name, value in (
            ("alpha", cfg.alpha),
            ("beta", cfg.beta),
            ("gamma_query", gamma_q),
            ("gamma_doc", gamma_d),
            ("delta", cfg.delta),
        ):
            out[f"weight_{name}"] = torch.tensor(float(value), device=device)
        return out
