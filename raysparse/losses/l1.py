"""L1 sparsity regulariser (an alternative to FLOPS).

For representations ``w`` (N rows, V terms)::

    L1 = 1/N Σ_i Σ_v |w_iv|

Unlike FLOPS it does not favour spreading mass over many *different* terms across the batch, so it tends to push
every term down evenly. Reference: Paria et al. 2020, "Minimizing FLOPs to Learn Efficient Sparse Representations"
(https://arxiv.org/abs/2004.05665), which compares both; SNRM (Zamani et al. 2018) used L1.
"""

from __future__ import annotations

import torch
from torch import nn


class L1Loss(nn.Module):
    """Mean over rows of the L1 norm; component ``"l1"``."""

    def forward(self, reps: torch.Tensor) -> dict[str, torch.Tensor]:
        if reps.dim() != 2:
            raise ValueError(f"reps must be (N, V), got {tuple(reps.shape)}")
        return {"l1": reps.float().abs().sum(dim=1).mean()}
