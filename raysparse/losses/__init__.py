"""Losses for sparse (and dense bi-encoder) retrieval training, one per module; each ``forward`` returns ``dict[str, Tensor]``.

:class:`SparseRetrievalLoss` combines them as configured by :class:`raysparse.config.LossConfig`;
:class:`DenseRetrievalLoss` is the dense bi-encoder's objective (``model.kind: dense``).
"""

from raysparse.losses.combined import SparseRetrievalLoss
from raysparse.losses.cross_lingual import CrossLingualCosineLoss
from raysparse.losses.dense import DenseRetrievalLoss
from raysparse.losses.distillation import KLDistillationLoss, MarginMSELoss
from raysparse.losses.flops import FlopsLoss, flops, gather_for_flops, quadratic_warmup, scale_gradient
from raysparse.losses.infonce import InfoNCELoss
from raysparse.losses.l1 import L1Loss
from raysparse.losses.margin import MarginRankingLoss

__all__ = [
    "CrossLingualCosineLoss",
    "DenseRetrievalLoss",
    "FlopsLoss",
    "InfoNCELoss",
    "KLDistillationLoss",
    "L1Loss",
    "MarginMSELoss",
    "MarginRankingLoss",
    "SparseRetrievalLoss",
    "flops",
    "gather_for_flops",
    "quadratic_warmup",
    "scale_gradient",
]
