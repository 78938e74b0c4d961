"""Ranking metrics from a run and qrels, with the trec_eval / BEIR definitions and deterministic tie-breaking.

A *run* is ``{query_id: {doc_id: score}}`` (what any retriever returns: our inverted index, BM25, OpenSearch); *qrels*
are ``{query_id: {doc_id: grade}}``. Grades <= 0 mean "judged not relevant".

Definitions (per query, then averaged over the evaluated queries):

- ``ndcg@k``: ``DCG@k / IDCG@k`` with linear gain and log2 discount, ``DCG@k = sum_{i=1..k} grade_i / log2(i + 1)``
  (rank i is 1-based) -- what trec_eval's ``ndcg_cut`` and BEIR (via pytrec_eval) compute. IDCG@k is the DCG of the
  judged grades sorted descending.
- ``mrr@k``: ``1 / rank`` of the first relevant document within the top k, 0 if none.
- ``recall@k``: relevant documents in the top k / all relevant documents of the query.
- ``precision@k``: relevant documents in the top k / k (trec_eval's ``P_k``: a run shorter than k is not rewarded).

Ties: documents are ranked by score descending, then by ``doc_id`` ascending (string order). trec_eval breaks ties by
doc_id *descending*; we chose ascending because it is what a reader expects and what our index and OpenSearch-side
re-sorting both produce, and document it here because ties change nDCG on small integer-valued scores.

Which queries count: every query of the qrels with at least one relevant (grade > 0) document. A query the run does
not contain (retriever returned nothing) scores 0 on every metric -- unlike pytrec_eval, which silently skips it;
dropping failed queries would flatter the system. Run queries without judgements are ignored and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 100)
METRIC_NAMES = ("ndcg", "mrr", "recall", "precision")


def rank_documents(scores: Mapping[str, float]) -> list[str]:
    """Doc ids sorted by score descending, ties by doc_id ascending (the one tie rule used everywhere)."""
    return [doc_id for doc_id, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]


def query_metrics(ranking: Sequence[str], judged: Mapping[str, int], ks: Iterable[int]) -> dict[str, float]:
    """All metrics at every cut-off for one query; ``ranking`` is already ordered (best first)."""
    relevant = {d: g for d, g in judged.items() if g > 0}
    ideal = sorted(relevant.values(), reverse=True)
    out: dict[str, float] = {}
    first_hit = next((i for i, d in enumerate(ranking) if d in relevant), None)
    for k in ks:
        top = ranking[:k]
        gains = [relevant.get(d, 0) for d in top]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains) if g)
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        hits = sum(1 for g in gains if g)
        out[f"ndcg@{k}"] = dcg / idcg if idcg else 0.0
        out[f"mrr@{k}"] = 1.0 / (first_hit + 1) if first_hit is not None and first_hit < k else 0.0
        out[f"recall@{k}"] = hits / len(relevant) if relevant else 0.0
        out[f"precision@{k}"] = hits / k
    return out


@dataclass
class MetricsResult:
    """Averages, per-query values and the bookkeeping that says which queries were (not) evaluated."""

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    num_queries: int
    queries_without_results: list[str] = field(default_factory=list)
    run_queries_without_qrels: int = 0


def compute_metrics(run: Run, qrels: Qrels, ks: Iterable[int] = DEFAULT_KS) -> MetricsResult:
    """Mean nDCG/MRR/recall/precision at each k over the judged queries (see the module docstring)."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"cut-offs must be positive integers, got {ks}")
    per_query: dict[str, dict[str, float]] = {}
    missing: list[str] = []
    for qid in sorted(qrels):
        judged = qrels[qid]
        if not any(g > 0 for g in judged.values()):
            continue
        scores = run.get(qid)
        if not scores:
            missing.append(qid)
        per_query[qid] = query_metrics(rank_documents(scores or {}), judged, ks)
    names = [f"{m}@{k}" for m in METRIC_NAMES for k in ks]
    n = len(per_query)
    means = {name: (sum(q[name] for q in per_query.values()) / n if n else 0.0) for name in names}
    extra = sum(1 for qid in run if qid not in per_query)
    return MetricsResult(means, per_query, n, missing, extra)


def qrels_from_table(qrels: pa.Table) -> dict[str, dict[str, int]]:
    """QRELS Arrow table -> ``{query_id: {doc_id: grade}}``; a repeated (query, doc) pair is an error."""
    out: dict[str, dict[str, int]] = {}
    cols = [qrels.column(c).to_pylist() for c in ("query_id", "doc_id", "score")]
    for row, (qid, did, grade) in enumerate(zip(*cols, strict=True)):
        judged = out.setdefault(qid, {})
        if did in judged:
            raise ValueError(f"qrels row {row}: ({qid!r}, {did!r}) is judged twice")
        judged[did] = int(grade)
    return out
