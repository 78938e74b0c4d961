"""Hybrid fusion of a BM25 hit list and a sparse-model hit list: the one implementation raysparse uses.

Two methods, per query, on ``{doc_id: score}`` lists:

- **min-max** (:func:`fuse_min_max`): each list is min-max normalised on its own, ``(s - min) / (max - min)`` over
  the hits *that list returned* (so its best hit gets 1.0 and its worst 0.0), then
  ``bm25_weight * bm25 + (1 - bm25_weight) * sparse``. A document missing from one list scores 0 there. A list whose
  scores are all equal normalises to 1.0 (it still ranks its hits above documents it did not return). This is
  ranx's ``fuse(norm="min-max", method="wsum")`` and OpenSearch neural-search's ``min_max`` normalisation with an
  ``arithmetic_mean`` combination (weights summing to 1), so client-side and server-side hybrids agree.
- **RRF** (:func:`fuse_rrf`): ``sum over lists of 1 / (k + rank)``, rank 1-based by score descending (ties broken
  by doc id), ``k = 60`` as in Cormack et al. 2009 and ranx. Scores are not normalised (RRF only uses ranks).

One default weight, :data:`DEFAULT_BM25_WEIGHT` = 0.3 on BM25 (0.7 on the sparse model), used by
``raysparse search``, ``opensearch.search_run`` and OpenSearch's search pipeline (``hybrid_pipeline``). It leans on
the model because the model is what raysparse trains; it has not been tuned on a dev set, so pass ``bm25_weight``
explicitly when comparing settings (and say which one a reported hybrid used).

:func:`fuse_runs` applies either method to whole runs (``{query_id: {doc_id: score}}``), as evaluation reports need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

#: Weight of the BM25 list in the min-max hybrid (the sparse list gets ``1 - DEFAULT_BM25_WEIGHT``).
DEFAULT_BM25_WEIGHT = 0.3
#: RRF's rank constant.
DEFAULT_RRF_K = 60

Scores = Mapping[str, float]
Run = Mapping[str, Mapping[str, float]]


def min_max_normalise(scores: Scores) -> dict[str, float]:
    """``(s - min) / (max - min)`` over one hit list; all-equal scores become 1.0 (see the module docstring)."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {d: (s - lo) / span if span > 0 else 1.0 for d, s in scores.items()}


def fuse_min_max(bm25: Scores, sparse: Scores, bm25_weight: float = DEFAULT_BM25_WEIGHT) -> dict[str, float]:
    """Min-max normalise both lists, then ``bm25_weight * bm25 + (1 - bm25_weight) * sparse`` (missing hit = 0)."""
    if not 0.0 <= bm25_weight <= 1.0:
        raise ValueError(f"bm25_weight must be in [0, 1], got {bm25_weight}")
    a, b = min_max_normalise(bm25), min_max_normalise(sparse)
    return {d: bm25_weight * a.get(d, 0.0) + (1.0 - bm25_weight) * b.get(d, 0.0) for d in a.keys() | b.keys()}


def fuse_rrf(lists: Sequence[Scores], k: int = DEFAULT_RRF_K) -> dict[str, float]:
    """Reciprocal rank fusion: sum over lists of ``1 / (k + rank)``, rank 1-based, ties broken by doc id."""
    fused: dict[str, float] = {}
    for scores in lists:
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        for rank, (doc_id, _) in enumerate(ranked, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (k + rank)
    return fused


def fuse_runs(
    bm25: Run,
    sparse: Run,
    method: str = "min_max",
    bm25_weight: float = DEFAULT_BM25_WEIGHT,
    k: int = DEFAULT_RRF_K,
) -> dict[str, dict[str, float]]:
    """Fuse two runs query by query with ``method`` = ``min_max`` or ``rrf``; a query in one run only keeps its list."""
    if method not in ("min_max", "rrf"):
        raise ValueError(f"fusion method must be 'min_max' or 'rrf', got {method!r}")
    fused: dict[str, dict[str, float]] = {}
    for qid in bm25.keys() | sparse.keys():
        a, b = bm25.get(qid, {}), sparse.get(qid, {})
        fused[qid] = fuse_min_max(a, b, bm25_weight) if method == "min_max" else fuse_rrf([a, b], k)
    return fused
