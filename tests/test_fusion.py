"""raysparse.fusion, the one hybrid fusion, checked against ranx (an independent implementation) on tie-free runs."""

from __future__ import annotations

import inspect
import random

import pytest

from raysparse.fusion import DEFAULT_BM25_WEIGHT, fuse_min_max, fuse_rrf, fuse_runs, min_max_normalise


def _tie_free_runs(seed: int, queries: int = 25) -> tuple[dict, dict]:
    """Two runs over the same queries with partly overlapping hit lists and no tied scores within a list."""
    rng = random.Random(seed)
    bm25, sparse = {}, {}
    for q in range(queries):
        docs = [f"d{i}" for i in rng.sample(range(300), 40)]
        a, b = docs[:30], docs[12:] + docs[:3]  # overlap of 18 + 3 documents; 10 and 9 in one list only
        bm25[f"q{q}"] = {d: rng.uniform(0.0, 30.0) for d in a}
        sparse[f"q{q}"] = {d: rng.uniform(0.0, 5.0) for d in b}
        for scores in (bm25[f"q{q}"], sparse[f"q{q}"]):
            assert len(set(scores.values())) == len(scores)
    return bm25, sparse


@pytest.mark.slow  # ranx compiles its numba kernels on first use (minutes on a loaded 2-core machine)
@pytest.mark.parametrize("weight", [DEFAULT_BM25_WEIGHT, 0.5, 0.8])
def test_min_max_fusion_equals_ranx_wsum_of_min_max_normalised_runs(weight):
    ranx = pytest.importorskip("ranx")
    bm25, sparse = _tie_free_runs(seed=int(weight * 10))
    ours = fuse_runs(bm25, sparse, "min_max", bm25_weight=weight)
    theirs = ranx.fuse(
        [ranx.Run(bm25), ranx.Run(sparse)],
        norm="min-max",
        method="wsum",
        params={"weights": [weight, 1 - weight]},
    ).to_dict()
    assert ours.keys() == theirs.keys()
    for qid in ours:
        assert ours[qid].keys() == theirs[qid].keys()
        for doc_id, score in ours[qid].items():
            # ranx divides by max(max - min, 1e-9): equal to ours up to rounding on lists with a real spread
            assert score == pytest.approx(theirs[qid][doc_id], abs=1e-9), (qid, doc_id)


@pytest.mark.slow
@pytest.mark.parametrize("k", [60, 10])
def test_rrf_equals_ranx_rrf(k):
    ranx = pytest.importorskip("ranx")
    bm25, sparse = _tie_free_runs(seed=k)
    ours = fuse_runs(bm25, sparse, "rrf", k=k)
    theirs = ranx.fuse([ranx.Run(bm25), ranx.Run(sparse)], norm=None, method="rrf", params={"k": k}).to_dict()
    for qid in ours:
        assert ours[qid] == pytest.approx(theirs[qid], abs=1e-12), qid


def test_fusion_by_hand_and_edge_cases():
    bm25 = {"a": 10.0, "b": 5.0, "c": 0.0}
    sparse = {"b": 4.0, "d": 2.0}
    assert fuse_min_max(bm25, sparse, bm25_weight=0.25) == pytest.approx(
        {"a": 0.25, "b": 0.25 * 0.5 + 0.75, "c": 0.0, "d": 0.0}
    )
    rrf = fuse_rrf([bm25, sparse], k=60)
    assert rrf["b"] == pytest.approx(1 / 62 + 1 / 61) and rrf["a"] == pytest.approx(1 / 61)
    # all-equal list: 1.0 (its hits still beat documents it did not return; ranx would give 0.0 here)
    assert min_max_normalise({"x": 3.0, "y": 3.0}) == {"x": 1.0, "y": 1.0} and min_max_normalise({}) == {}
    assert fuse_min_max({}, {"x": 2.0, "y": 1.0}) == pytest.approx({"x": 1 - DEFAULT_BM25_WEIGHT, "y": 0.0})
    # a query only one run answered keeps that run's list
    assert fuse_runs({"q": {"x": 1.0}}, {}, "rrf") == {"q": {"x": 1 / 61}}
    with pytest.raises(ValueError, match="bm25_weight"):
        fuse_min_max(bm25, sparse, 1.5)
    with pytest.raises(ValueError, match="'borda'"):
        fuse_runs({}, {}, "borda")


def test_one_default_weight_everywhere():
    """OpenSearch search, its server-side pipeline and the search CLI all default to fusion's one weight."""
    from raysparse import opensearch
    from raysparse.cli import build_parser

    assert opensearch.fuse_min_max is fuse_min_max and opensearch.fuse_rrf is fuse_rrf  # no second copy
    for fn in (opensearch.search_run, opensearch.search, opensearch.hybrid_pipeline):
        assert inspect.signature(fn).parameters["bm25_weight"].default == DEFAULT_BM25_WEIGHT
    weights = opensearch.hybrid_pipeline()["phase_results_processors"][0]["normalization-processor"]
    assert weights["combination"]["parameters"]["weights"] == [DEFAULT_BM25_WEIGHT, 1 - DEFAULT_BM25_WEIGHT]
    args = build_parser().parse_args(["search", "q"])
    assert args.bm25_weight == DEFAULT_BM25_WEIGHT
