"""raysparse's nDCG / MRR / recall / precision equal ranx's (an independent implementation) on tie-free runs.

Ties are where the two may legitimately differ (raysparse breaks them by doc_id ascending, see
raysparse/evaluation/metrics.py), so the runs here have no tied scores within a query.
"""

from __future__ import annotations

import random

import pytest

from raysparse.evaluation import compute_metrics

pytestmark = (
    pytest.mark.slow
)  # ranx compiles its numba kernels on first use (minutes on a loaded 2-core machine)


def _tie_free_run_and_graded_qrels(seed: int, queries: int = 40):
    rng = random.Random(seed)
    run, qrels = {}, {}
    for q in range(queries):
        qid = f"q{q}"
        retrieved = [f"d{i}" for i in rng.sample(range(500), rng.randint(5, 120))]  # short and long hit lists
        run[qid] = {d: rng.uniform(-3.0, 40.0) for d in retrieved}
        assert len(set(run[qid].values())) == len(run[qid])
        relevant = rng.sample(retrieved, rng.randint(0, min(4, len(retrieved))))
        relevant += [f"d{500 + i}" for i in range(rng.randint(0 if relevant else 1, 2))]  # never retrieved
        qrels[qid] = {d: rng.choice([1, 1, 2, 3]) for d in relevant}  # graded: nDCG uses the grades
    return run, qrels


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_ranx_on_tie_free_runs(seed):
    ranx = pytest.importorskip("ranx")
    run, qrels = _tie_free_run_and_graded_qrels(seed)
    ks = (1, 5, 10, 100)
    ours = compute_metrics(run, qrels, ks=ks)
    assert ours.num_queries == len(qrels) and not ours.queries_without_results
    names = [f"{m}@{k}" for m in ("ndcg", "mrr", "recall", "precision") for k in ks]
    theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), names, make_comparable=False)
    for name in names:
        assert ours.metrics[name] == pytest.approx(float(theirs[name]), abs=1e-9), name
    # per query as well (ranx returns one value per query in the qrels' order)
    per_query = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), "ndcg@10", return_mean=False)
    order = list(ranx.Qrels(qrels).keys())
    for qid, value in zip(order, per_query, strict=True):
        assert ours.per_query[qid]["ndcg@10"] == pytest.approx(float(value), abs=1e-9), qid
