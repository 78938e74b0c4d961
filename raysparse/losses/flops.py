"""FLOPS sparsity regulariser with a quadratic warm-up, computed on the global batch under data parallelism.

For representations ``w`` (N rows, V terms; queries and documents separately)::

    FLOPS(w) = Σ_v ( 1/N Σ_i w_iv )²

It approximates the expected number of floating-point operations of a sparse dot product (the probability that a
term is active in both the query and the document), so it penalises terms that are active in many rows more than
rare ones. SPLADE multiplies it by ``γ · min(1, (t/T))²`` so sparsity only bites once ranking has started to form.

References: Paria et al. 2020, "Minimizing FLOPs to Learn Efficient Sparse Representations"
(https://arxiv.org/abs/2004.05665); Formal et al. 2021, SPLADE (https://arxiv.org/abs/2107.05720).

Global batch under data parallelism (W ranks, b rows each, N = W·b)
--------------------------------------------------------------------
FLOPS is not additive over rows: the mean of per-rank FLOPS over-estimates the global one (Jensen: a local mean of
b rows is noisier than the mean of N rows), and the estimate changes with the per-worker batch size, so γ tuned on
one GPU would mean something else on eight. :func:`gather_for_flops` all-gathers the representations so each rank
computes FLOPS on the same global (N, V) matrix, with its own rows kept as the autograd-connected tensor.

Gradient scale: ∂FLOPS/∂w_iv = (2/N)·mean_v, so each rank back-propagates exactly the right gradient for its own
rows. DDP / DeepSpeed then *average* parameter gradients over the W ranks, which divides the FLOPS gradient by W
(the ranking loss does not suffer: it is a per-rank mean whose average is the global mean). :class:`FlopsLoss`
therefore multiplies the *gradient* (not the reported value) by W when it gathered, so the summed effect equals
the gradient of the global FLOPS on one big batch.
"""

from __future__ import annotations

import torch
from torch import nn


def quadratic_warmup(step: int | float, warmup_steps: int | float) -> float:
    """SPLADE's FLOPS weight factor ``min(1, (step / warmup_steps)²)``; 1.0 when there is no warm-up."""
    if warmup_steps <= 0:
        return 1.0
    return float(min(1.0, (max(0.0, float(step)) / float(warmup_steps)) ** 2))


def dist_world_size() -> int:
    """World size of torch.distributed (1 when not initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_for_flops(reps: torch.Tensor) -> torch.Tensor:
    """All-gather (b, V) rows from every rank into the global (W·b, V) batch, keeping the local rows' gradient.

    Without an initialised process group (or with one rank) it returns ``reps`` unchanged. Ranks may hold different
    numbers of rows (a last batch, a query without mined negatives): row counts are exchanged first and blocks are
    padded for the collective, then trimmed, so padding never enters the mean.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return reps
    world, rank = dist.get_world_size(), dist.get_rank()
    local = reps.contiguous()
    count = torch.tensor([local.shape[0]], device=local.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    padded = local.detach()
    if local.shape[0] < longest:
        padded = torch.cat([padded, padded.new_zeros(longest - local.shape[0], *local.shape[1:])])
    blocks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(blocks, padded)
    parts = [block[:size] for block, size in zip(blocks, sizes, strict=True)]
    parts[rank] = local  # the only autograd-connected block: gradients stay on the rank that owns the rows
    return torch.cat(parts, dim=0)


def scale_gradient(value: torch.Tensor, factor: float) -> torch.Tensor:
    """Same forward value, gradient multiplied by ``factor``."""
    if factor == 1.0:
        return value
    return value * factor - value.detach() * (factor - 1.0)


def flops(reps: torch.Tensor) -> torch.Tensor:
    """``Σ_v (mean_i w_iv)²`` of an (N, V) matrix, in float32."""
    if reps.dim() != 2:
        raise ValueError(f"reps must be (N, V), got {tuple(reps.shape)}")
    return reps.float().mean(dim=0).pow(2).sum()


class FlopsLoss(nn.Module):
    """FLOPS regulariser; component ``"flops"``. ``global_batch=True`` gathers across ranks (see module doc)."""

    def __init__(self, global_batch: bool = True) -> None:
        super().__init__()
        self.global_batch = global_batch

    def forward(self, reps: torch.Tensor) -> dict[str, torch.Tensor]:
        world = dist_world_size() if self.global_batch else 1
        if world > 1:
            return {"flops": scale_gradient(flops(gather_for_flops(reps)), float(world))}
        return {"flops": flops(reps)}
