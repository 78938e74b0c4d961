"""Distillation from teacher scores carried with the training triples (e.g. BM25 scores from mining).

Student scores are dot products ``s(q, d)``; teacher scores ``t(q, d)`` come with the data.

MarginMSE (Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
Distillation", https://arxiv.org/abs/2010.02666)::

    L = mean over (q, d+, d-) of ( (s(q,d+) - s(q,d-)) - (t(q,d+) - t(q,d-)) )²

KL distillation over each query's candidate list [d+, d-_1..d-_N] (as in SPLADE++, Formal et al. 2022,
https://arxiv.org/abs/2205.04733)::

    L = 1/B Σ_q KL( softmax(t(q, ·)/τ) ‖ softmax(s(q, ·)/τ) )

Teacher scores of a different scale (BM25 ≈ 10–30, student ≈ 1–100) are why MarginMSE uses *margins* and KL a
temperature; pick δ (the combined weight) accordingly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _as_2d(scores: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if scores.dim() == 1:
        scores = scores.unsqueeze(1)
    if scores.dim() != 2 or scores.shape[0] != batch:
        raise ValueError(f"{name} must be (B,) or (B, N) with B={batch}, got {tuple(scores.shape)}")
    return scores


class MarginMSELoss(nn.Module):
    """MSE between student and teacher score margins; component ``"distillation"``."""

    def forward(
        self,
        student_pos: torch.Tensor,
        student_neg: torch.Tensor,
        teacher_pos: torch.Tensor,
        teacher_neg: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        batch = student_pos.shape[0]
        s_pos = _as_2d(student_pos, batch, "student_pos").float()
        s_neg = _as_2d(student_neg, batch, "student_neg").float()
        t_pos = _as_2d(teacher_pos.to(s_pos.device), batch, "teacher_pos").float()
        t_neg = _as_2d(teacher_neg.to(s_pos.device), batch, "teacher_neg").float()
        if s_neg.shape != t_neg.shape:
            raise ValueError(f"student_neg {tuple(s_neg.shape)} and teacher_neg {tuple(t_neg.shape)} differ")
        return {"distillation": F.mse_loss(s_pos - s_neg, t_pos - t_neg)}


class KLDistillationLoss(nn.Module):
    """KL(teacher ‖ student) over softmaxed candidate scores; component ``"distillation"``."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(
        self,
        student_pos: torch.Tensor,
        student_neg: torch.Tensor,
        teacher_pos: torch.Tensor,
        teacher_neg: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        batch = student_pos.shape[0]
        student = torch.cat(
            [_as_2d(student_pos, batch, "student_pos"), _as_2d(student_neg, batch, "student_neg")], dim=1
        ).float()
        teacher = torch.cat(
            [_as_2d(teacher_pos, batch, "teacher_pos"), _as_2d(teacher_neg, batch, "teacher_neg")], dim=1
        ).float()
        if student.shape != teacher.shape:
            raise ValueError(
                f"student scores {tuple(student.shape)} and teacher scores {tuple(teacher.shape)} differ"
            )
        teacher = teacher.to(student.device)
        log_p_student = F.log_softmax(student / self.temperature, dim=1)
        p_teacher = F.softmax(teacher / self.temperature, dim=1)
        return {"distillation": F.kl_div(log_p_student, p_teacher, reduction="batchmean")}
