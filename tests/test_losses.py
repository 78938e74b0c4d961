"""Losses on hand-computed examples, the FLOPS warm-up, global-batch FLOPS over real gloo ranks, and the combination."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch

from raysparse.config import LossConfig
from raysparse.losses import (
    CrossLingualCosineLoss,
    FlopsLoss,
    InfoNCELoss,
    KLDistillationLoss,
    L1Loss,
    MarginMSELoss,
    MarginRankingLoss,
    SparseRetrievalLoss,
    flops,
    gather_for_flops,
    quadratic_warmup,
    scale_gradient,
)


def test_infonce_in_batch_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # scores = [[2, 0], [0, 1]]; query 0 -> positive column 0, query 1 -> column 1
    want = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(math.e / (1 + math.e))) / 2
    got = InfoNCELoss()(q, pos)["ranking"]
    assert got.item() == pytest.approx(want, rel=1e-6)
    # temperature 0.5 doubles every score
    want_t = (-math.log(math.exp(4) / (math.exp(4) + 1)) - math.log(math.exp(2) / (1 + math.exp(2)))) / 2
    assert InfoNCELoss(temperature=0.5)(q, pos)["ranking"].item() == pytest.approx(want_t, rel=1e-6)


def test_infonce_hard_negatives_join_every_querys_pool():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[[1.0, 1.0]], [[3.0, 0.0]]])  # (B, N=1, V)
    # scores vs [pos0, pos1, neg0, neg1] = q0: [2, 0, 1, 3]; q1: [0, 1, 1, 0]
    lse0 = math.log(math.exp(2) + 1 + math.e + math.exp(3))
    lse1 = math.log(1 + math.e + math.e + 1)
    want = ((lse0 - 2) + (lse1 - 1)) / 2
    assert InfoNCELoss()(q, pos, neg)["ranking"].item() == pytest.approx(want, rel=1e-6)
    assert InfoNCELoss()(q, pos, neg.reshape(2, 2))["ranking"].item() == pytest.approx(want, rel=1e-6)
    # per-query negatives only
    want_own = ((math.log(math.exp(2) + math.e) - 2) + (math.log(math.e + 1) - 1)) / 2
    assert InfoNCELoss(in_batch=False)(q, pos, neg)["ranking"].item() == pytest.approx(want_own, rel=1e-6)
    with pytest.raises(ValueError, match="B=2"):
        InfoNCELoss()(q, pos, torch.zeros(3, 1, 2))


def test_margin_ranking_hand_computed():
    q = torch.tensor([[1.0, 2.0], [0.5, 0.0]])
    pos = torch.tensor([[1.0, 1.0], [2.0, 0.0]])  # s+ = 3, 1
    neg = torch.tensor([[[0.0, 1.0], [1.0, 0.5]], [[4.0, 0.0], [0.0, 9.0]]])  # s- = [2, 2], [2, 0]
    # max(0, 1 - 3 + 2)=0, max(0, 1-3+2)=0, max(0, 1-1+2)=2, max(0, 1-1+0)=0 -> mean 0.5
    assert MarginRankingLoss(margin=1.0)(q, pos, neg)["ranking"].item() == pytest.approx(0.5)
    # in-batch fallback: query 0's negative is pos 1 (s=2), query 1's is pos 0 (s=0.5)
    # max(0, 1-3+2)=0, max(0, 1-1+0.5)=0.5 -> 0.25
    assert MarginRankingLoss(margin=1.0)(q, pos)["ranking"].item() == pytest.approx(0.25)


def test_cross_lingual_cosine():
    ko = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    en = torch.tensor([[3.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    # cos = 1, 1/sqrt(2), 0
    want = (0.0 + (1 - 1 / math.sqrt(2)) + 1.0) / 3
    assert CrossLingualCosineLoss()(ko, en)["cross_lingual"].item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="same"):
        CrossLingualCosineLoss()(ko, en[:2])


def test_flops_and_l1_exact_on_a_tiny_matrix():
    w = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    # column means [2, 1, 0] -> 4 + 1 + 0
    assert flops(w).item() == 5.0
    assert FlopsLoss()(w)["flops"].item() == 5.0
    # L1: (1+2) and 3 -> mean 3
    assert L1Loss()(w)["l1"].item() == 3.0
    # FLOPS rewards spreading over different terms, L1 does not care
    spread = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    same = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    assert flops(spread) < flops(same) and L1Loss()(spread)["l1"] == L1Loss()(same)["l1"]


def test_quadratic_warmup_schedule():
    assert quadratic_warmup(0, 10) == 0.0
    assert quadratic_warmup(5, 10) == pytest.approx(0.25)
    assert quadratic_warmup(10, 10) == 1.0
    assert quadratic_warmup(50, 10) == 1.0
    assert quadratic_warmup(3, 0) == 1.0
    assert quadratic_warmup(-1, 10) == 0.0


def test_scale_gradient_keeps_value_scales_gradient():
    x = torch.tensor([2.0], requires_grad=True)
    y = scale_gradient(x * x, 3.0)
    assert y.item() == 4.0
    y.backward()
    assert x.grad.item() == pytest.approx(12.0)  # 3 * d(x²)/dx


def test_distillation_hand_computed():
    s_pos, s_neg = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0])
    t_pos, t_neg = torch.tensor([10.0, 5.0]), torch.tensor([9.0, 5.0])
    # student margins [2, -1], teacher margins [1, 0] -> ((1)² + (-1)²) / 2
    assert MarginMSELoss()(s_pos, s_neg, t_pos, t_neg)["distillation"].item() == pytest.approx(1.0)

    s_pos, s_neg = torch.tensor([1.0]), torch.tensor([[0.0]])
    t_pos, t_neg = torch.tensor([0.0]), torch.tensor([[0.0]])
    # teacher uniform [0.5, 0.5]; student softmax [e/(1+e), 1/(1+e)]
    p = math.e / (1 + math.e)
    want = 0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))
    got = KLDistillationLoss()(s_pos, s_neg, t_pos, t_neg)["distillation"].item()
    assert got == pytest.approx(want, rel=1e-5)
    assert KLDistillationLoss()(t_pos, t_neg, t_pos, t_neg)["distillation"].item() == pytest.approx(
        0.0, abs=1e-7
    )


def make_reps(seed: int, rows: int = 4, vocab: int = 12) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(rows, vocab, generator=g).requires_grad_()
    pos = torch.rand(rows, vocab, generator=g).requires_grad_()
    neg = torch.rand(rows, 2, vocab, generator=g).requires_grad_()
    return q, pos, neg


def test_combined_weights_and_components():
    cfg = LossConfig(alpha=0.7, beta=0.2, gamma_query=0.03, gamma_doc=0.01, sparsity_warmup_fraction=0.5)
    loss_fn = SparseRetrievalLoss(cfg, total_steps=100)  # warm-up over 50 steps
    q, pos, neg = make_reps(0)
    ko, en = torch.rand(3, 12), torch.rand(3, 12)
    out = loss_fn(q, pos, neg, step=25, ko=ko, en=en)
    factor = 0.25
    assert out["weight_gamma_query"].item() == pytest.approx(0.03 * factor)
    assert out["weight_gamma_doc"].item() == pytest.approx(0.01 * factor)
    docs = torch.cat([pos, neg.reshape(-1, 12)])
    ranking = InfoNCELoss()(q, pos, neg)["ranking"]
    cross = CrossLingualCosineLoss()(ko, en)["cross_lingual"]
    want = 0.7 * ranking + 0.2 * cross + 0.03 * factor * flops(q) + 0.01 * factor * flops(docs)
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    assert out["ranking"].item() == pytest.approx(ranking.item())
    assert out["flops_query"].item() == pytest.approx(flops(q).item())
    assert out["flops_doc"].item() == pytest.approx(flops(docs).item())
    assert out["distillation"].item() == 0.0
    for name, value in out.items():
        assert value.dim() == 0, name
        assert (name == "loss") == value.requires_grad, name
    out["loss"].backward()
    assert q.grad is not None and neg.grad is not None

    # before the warm-up nothing is sparsified; without parallel rows there is no cross-lingual term
    early = loss_fn(q, pos, neg, step=0)
    assert early["weight_gamma_query"].item() == 0.0
    assert early["loss"].item() == pytest.approx(0.7 * ranking.item(), rel=1e-6)
    with pytest.raises(ValueError, match="ko and en"):
        loss_fn(q, pos, neg, step=0, ko=ko)


def test_combined_margin_l1_and_distillation():
    cfg = LossConfig(ranking="margin", sparsity="l1", delta=0.5, distillation="margin_mse", margin=0.3)
    cfg.sparsity_warmup_fraction = 0.0
    loss_fn = SparseRetrievalLoss(cfg, total_steps=10)
    q, pos, neg = make_reps(1)
    t_pos, t_neg = torch.tensor([9.0, 8.0, 7.0, 6.0]), torch.rand(4, 2) * 5
    out = loss_fn(q, pos, neg, step=3, teacher_pos=t_pos, teacher_neg=t_neg)
    docs = torch.cat([pos, neg.reshape(-1, 12)])
    s_pos = (q * pos).sum(-1)
    s_neg = torch.einsum("bv,bnv->bn", q, neg)
    distill = MarginMSELoss()(s_pos, s_neg, t_pos, t_neg)["distillation"]
    want = (
        MarginRankingLoss(0.3)(q, pos, neg)["ranking"]
        + cfg.gamma_query * L1Loss()(q)["l1"]
        + cfg.gamma_doc * L1Loss()(docs)["l1"]
        + 0.5 * distill
    )
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    assert out["sparsity_query"].item() == pytest.approx(L1Loss()(q)["l1"].item())
    assert out["flops_query"].item() == pytest.approx(flops(q).item())  # FLOPS is still logged
    with pytest.raises(ValueError, match="teacher"):
        loss_fn(q, pos, neg, step=3)

    kl = SparseRetrievalLoss(LossConfig(delta=1.0, distillation="kl"), total_steps=10)
    assert kl(q, pos, neg, step=3, teacher_pos=t_pos, teacher_neg=t_neg)["distillation"].item() > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flops_worker(rank: int, world: int, port: int, full: torch.Tensor, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        bounds = [0, 4, full.shape[0]]  # unequal blocks (4 and 2 rows): gather must not pad into the mean
        start, stop = bounds[rank], bounds[rank + 1]
        local = full[start:stop].clone().requires_grad_()
        gathered = gather_for_flops(local)
        value = FlopsLoss()(local)["flops"]
        value.backward()
        # treat the full matrix as the shared "parameter": this rank's gradient touches only its rows, and
        # DDP / DeepSpeed average parameter gradients over ranks (all-reduce sum / world)
        grad = torch.zeros_like(full)
        grad[start:stop] = local.grad
        dist.all_reduce(grad)
        torch.save(
            {"gathered": gathered.detach(), "value": value.detach(), "grad_mean": grad / world},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes each import torch (~30-50 s on a loaded 2-core machine)
def test_global_flops_over_two_gloo_ranks(tmp_path):
    """Two real processes: each sees the global FLOPS, and the DDP-averaged gradient equals the single-batch one."""
    import torch.multiprocessing as mp

    full = torch.rand(6, 5, generator=torch.Generator().manual_seed(3))
    mp.spawn(_flops_worker, args=(2, _free_port(), full, str(tmp_path)), nprocs=2, join=True)
    single = full.clone().requires_grad_()
    flops(single).backward()
    for rank in range(2):
        res = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(res["gathered"], full)
        assert res["value"].item() == pytest.approx(flops(full).item(), rel=1e-6)
        # the DDP-averaged gradient equals the gradient of FLOPS on one big batch (thanks to the W× scaling)
        torch.testing.assert_close(res["grad_mean"], single.grad)
    # the local-mean FLOPS is not the global one (the reason to gather)
    local_mean = (flops(full[:3]) + flops(full[3:])) / 2
    assert local_mean.item() != pytest.approx(flops(full).item(), rel=1e-3)


def test_gather_without_process_group_is_identity():
    x = torch.rand(3, 4)
    assert gather_for_flops(x) is x
