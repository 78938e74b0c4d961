"""BM25 + model hybrids with the fusion weight chosen on validation queries only, reported on the others.

Both hybrids (BM25 + sparse, BM25 + dense) are :func:`raysparse.fusion.fuse_runs` -- the one fusion raysparse has:
per-query min-max normalisation of each top-k list, then ``w * bm25 + (1 - w) * model`` (a document missing from a
list scores 0 there). The weight ``w`` on BM25 is picked from :data:`WEIGHT_GRID` by nDCG@10 on the *validation*
half of the dev set's queries and the hybrid is reported on the *test* half, which took no part in the choice.
The halves are :func:`raysparse.pipeline.split_validation_test` (hash of each query group; a query and its
translation -- the same MS MARCO id in the other language -- stay on the same side), the split the pipeline uses to
keep checkpoint selection away from the reported queries. Every single system in the same table is evaluated on the
same test half, so the rows compare.

Ties in the validation metric go to the weight closest to 0.5 (then the smaller weight): with few validation queries
several weights often tie, and the middle one assumes least about which list is better.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raysparse.evaluation.core import evaluate_run
from raysparse.evaluation.metrics import Qrels, Run, qrels_from_table
from raysparse.schemas import RetrievalData

#: BM25 weights tried on the validation half (0 = the model alone, 1 = BM25 alone).
WEIGHT_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass
class HybridResult:
    """A hybrid's chosen BM25 weight, its validation curve and its metrics on the test half."""

    weight: float
    validation: dict[float, float]  # weight -> validation metric
    test_metrics: dict[str, float]
    validation_queries: int
    test_queries: int
    metric: str = "ndcg@10"
    info: dict[str, Any] = field(default_factory=dict)


def validation_test_qrels(data: RetrievalData, seed: int = 13) -> tuple[Qrels, Qrels]:
    """The dev set's qrels split into the validation and the test half (:func:`split_validation_test`)."""
    from raysparse.pipeline import split_validation_test

    val, test = split_validation_test(data, seed)
    return qrels_from_table(val.qrels), qrels_from_table(test.qrels)


def restrict(run: Run, qrels: Qrels) -> dict[str, dict[str, float]]:
    """The run's queries that have qrels in ``qrels`` (a half)."""
    return {q: dict(docs) for q, docs in run.items() if q in qrels}


def choose_weight(
    bm25: Run,
    model: Run,
    validation: Qrels,
    grid: Sequence[float] = WEIGHT_GRID,
    metric: str = "ndcg@10",
) -> tuple[float, dict[float, float]]:
    """The BM25 weight of ``grid`` with the best ``metric`` on the ``validation`` qrels (ties: closest to 0.5)."""
    from raysparse.fusion import fuse_runs

    if not grid:
        raise ValueError("the fusion weight grid is empty")
    if not validation:
        raise ValueError("no validation queries to choose the fusion weight on")
    bm25_v, model_v = restrict(bm25, validation), restrict(model, validation)
    curve: dict[float, float] = {}
    for w in grid:
        fused = fuse_runs(bm25_v, model_v, method="min_max", bm25_weight=float(w))
        curve[float(w)] = float(evaluate_run(fused, validation).metrics[metric])
    best = max(curve, key=lambda w: (round(curve[w], 12), -abs(w - 0.5), -w))
    return best, curve


def evaluate_hybrid(
    bm25: Run,
    model: Run,
    data: RetrievalData,
    *,
    seed: int = 13,
    grid: Sequence[float] = WEIGHT_GRID,
    metric: str = "ndcg@10",
) -> HybridResult:
    """Choose the weight on the validation half of ``data``'s queries, report the fused run on the test half."""
    from raysparse.fusion import fuse_runs

    validation, test = validation_test_qrels(data, seed)
    if not test:
        raise ValueError("no test queries left after the validation/test split")
    weight, curve = choose_weight(bm25, model, validation, grid, metric)
    fused = fuse_runs(restrict(bm25, test), restrict(model, test), method="min_max", bm25_weight=weight)
    result = evaluate_run(fused, test, system="hybrid")
    return HybridResult(weight, curve, dict(result.metrics), len(validation), len(test), metric)


def metrics_on_test_half(run: Run, data: RetrievalData, seed: int = 13) -> dict[str, float]:
    """A single system's metrics on the test half (the rows next to a hybrid)."""
    _, test = validation_test_qrels(data, seed)
    return dict(evaluate_run(restrict(run, test), test).metrics)


def fusion_latency_ms(bm25: Run, model: Run, query_ids: Sequence[str]) -> list[float]:
    """Milliseconds to fuse each query's two top-k lists (the hybrid's own cost on top of the two searches)."""
    from raysparse.fusion import fuse_min_max

    samples = []
    for qid in query_ids:
        a, b = bm25.get(qid, {}), model.get(qid, {})
        t0 = time.perf_counter()
        fuse_min_max(a, b, 0.5)
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def combined_latency(
    first: Mapping[str, Any] | None, second: Mapping[str, Any] | None, fusion_ms: Sequence[float]
) -> dict[str, float]:
    """p50/p99 of a hybrid query run sequentially: BM25 search + model search + fusion, per query.

    ``first``/``second`` are the ``info.latency`` records of the two systems (same queries, same order, batch 1);
    empty when either was not timed."""
    if not first or not second or not first.get("samples_ms") or not second.get("samples_ms"):
        return {}
    n = min(len(first["samples_ms"]), len(second["samples_ms"]), len(fusion_ms))
    if n == 0:
        return {}
    total = (
        np.asarray(first["samples_ms"][:n]) + np.asarray(second["samples_ms"][:n]) + np.asarray(fusion_ms[:n])
    )
    return {
        "latency_p50_ms": float(np.percentile(total, 50)),
        "latency_p99_ms": float(np.percentile(total, 99)),
    }
