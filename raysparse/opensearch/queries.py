"""Queries (rank_feature / neural_sparse, BM25, recency), client-side fusion and runs for evaluation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from raysparse.config import OpenSearchConfig
from raysparse.fusion import DEFAULT_BM25_WEIGHT, fuse_min_max, fuse_rrf
from raysparse.opensearch.client import OpenSearchError, error_reason, make_client
from raysparse.opensearch.mapping import (
    BM25_FIELD,
    SPARSE_FIELD,
    TermEncoder,
    TermWeights,
    feature_name,
    sanitize_terms,
)


# --------------------------------------------------------------------------------------------- queries
def prune_query(
    terms: Mapping[str, float], max_ratio: float = 0.0, max_terms: int | None = None
) -> TermWeights:
    """Keep query terms with weight >= ``max_ratio`` * max weight (neural_sparse's max_ratio pruning), top first."""
    ordered = sorted(terms.items(), key=lambda kv: (-kv[1], kv[0]))
    if ordered and max_ratio > 0:
        floor = ordered[0][1] * max_ratio
        ordered = [kv for kv in ordered if kv[1] >= floor]
    if max_terms is not None:
        ordered = ordered[:max_terms]
    return dict(ordered)


def sparse_query(
    terms: Mapping[str, float],
    field_name: str = SPARSE_FIELD,
    neural: bool = False,
    max_terms: int = 1000,
) -> dict[str, Any]:
    """The query for sparse ``terms``: ``neural_sparse`` (plugin) or a ``bool.should`` of linear rank_features.

    Both score sum(query weight * stored feature value). ``max_terms`` stays under OpenSearch's default
    ``indices.query.bool.max_clause_count`` (1024); the strongest terms are kept.
    """
    clean, _ = sanitize_terms(terms)
    clean = prune_query(clean, max_terms=max_terms)
    if neural:
        return {"neural_sparse": {field_name: {"query_tokens": clean}}}
    return {
        "bool": {
            "should": [
                {"rank_feature": {"field": f"{field_name}.{t}", "linear": {}, "boost": w}}
                for t, w in clean.items()
            ]
        }
    }


def bm25_query(text: str, analyzer: str | None = "bigram", field_name: str = BM25_FIELD) -> dict[str, Any]:
    """BM25 ``match`` on the BM25 field; with ``analyzer`` the query is pre-analysed like the documents were."""
    if analyzer:
        from raysparse.analyzers import get_analyzer

        tokens = get_analyzer(analyzer)([text])[0]
        text = " ".join(tokens)
    return {"match": {field_name: {"query": text, "operator": "or"}}}


RECENCY_DECAYS = ("gauss", "exp", "linear")


def recency_query(
    query: Mapping[str, Any],
    date_field: str = "date",
    decay: str = "exp",
    origin: str = "now",
    scale: str = "30d",
    offset: str = "0d",
    decay_value: float = 0.5,
) -> dict[str, Any]:
    """``query`` wrapped in a ``function_score`` that multiplies its score by a decay on ``date_field``.

    OpenSearch's decay functions: at distance ``d = max(0, |date - origin| - offset)`` the factor is
    ``exp``: ``decay_value ** (d / scale)``; ``gauss``: ``decay_value ** ((d / scale) ** 2)``; ``linear``:
    ``max(0, 1 - (1 - decay_value) * d / scale)``. So with ``exp`` and ``decay_value=0.5`` the scale is a
    half-life: a document ``scale`` older than ``origin`` keeps half its score. ``origin`` is ``"now"`` or an ISO
    date (the reference date); documents without the date field get factor 1 (OpenSearch's rule for missing
    values).
    """
    if decay not in RECENCY_DECAYS:
        raise ValueError(f"decay must be one of {RECENCY_DECAYS}, got {decay!r}")
    if not 0.0 < decay_value < 1.0:
        raise ValueError(f"decay_value must be in (0, 1), got {decay_value}")
    return {
        "function_score": {
            "query": dict(query),
            "functions": [
                {
                    decay: {
                        date_field: {"origin": origin, "scale": scale, "offset": offset, "decay": decay_value}
                    }
                }
            ],
            "score_mode": "multiply",
            "boost_mode": "multiply",
        }
    }


def recency_from_config(time_cfg: Any) -> dict[str, Any] | None:
    """``recency_query`` keyword arguments from a TimeConfig, or None unless time.enabled and
    time.opensearch_recency are both on (the ``recency`` argument of :func:`search_run`)."""
    if not (time_cfg.enabled and time_cfg.opensearch_recency):
        return None
    return {
        "date_field": time_cfg.opensearch_date_field,
        "decay": time_cfg.opensearch_decay,
        "origin": time_cfg.opensearch_origin,
        "scale": time_cfg.opensearch_scale,
        "offset": time_cfg.opensearch_offset,
        "decay_value": time_cfg.opensearch_decay_value,
    }


def neural_hybrid_query(bm25: Mapping[str, Any], sparse: Mapping[str, Any]) -> dict[str, Any]:
    """neural-search's ``hybrid`` compound query (needs the plugin and a pipeline from :func:`hybrid_pipeline`)."""
    return {"hybrid": {"queries": [dict(bm25), dict(sparse)]}}


def hybrid_pipeline(bm25_weight: float = DEFAULT_BM25_WEIGHT, technique: str = "min_max") -> dict[str, Any]:
    """Search pipeline body for neural-search's normalization processor (same fusion as :func:`fuse_min_max`)."""
    return {
        "description": "raysparse hybrid: min-max normalised BM25 + sparse, weighted sum",
        "phase_results_processors": [
            {
                "normalization-processor": {
                    "normalization": {"technique": technique},
                    "combination": {
                        "technique": "arithmetic_mean",
                        "parameters": {"weights": [bm25_weight, 1.0 - bm25_weight]},
                    },
                }
            }
        ],
    }


@dataclass
class Hit:
    doc_id: str
    score: float
    title: str = ""
    text: str = ""
    matched: dict[str, tuple[float, float]] = field(default_factory=dict)  # token -> (query w, doc w)


def _hits(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "error" in response:
        raise OpenSearchError(f"search failed: {error_reason(response['error'])}")
    return list(response["hits"]["hits"])


def _hit_scores(hits: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {h["_id"]: float(h["_score"]) for h in hits}


def _msearch(client, index: str, bodies: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []
    for body in bodies:
        lines.extend([{"index": index}, body])
    responses = client.msearch(body=lines)["responses"]
    return [_hits(r) for r in responses]


def search_run(
    client,
    index: str,
    queries: Mapping[str, str] | Sequence[tuple[str, str]],
    query_encoder: TermEncoder | None = None,
    mode: str = "sparse",
    size: int = 100,
    bm25_analyzer: str | None = "bigram",
    bm25_weight: float = DEFAULT_BM25_WEIGHT,
    fusion: str = "min_max",
    neural: bool = False,
    prune_ratio: float = 0.0,
    batch_size: int = 32,
    recency: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Run ``queries`` ({qid: text}) against ``index`` -> ``{qid: {doc_id: score}}`` (the shape evaluation reads).

    ``mode``: ``sparse`` (needs ``query_encoder``), ``bm25`` or ``hybrid`` (both lists, ``size`` each, fused
    client-side by ``fusion`` = ``min_max`` (weighted by ``bm25_weight``) or ``rrf``). Queries run through
    ``_msearch`` in batches of ``batch_size``. Every query gets an entry, empty when nothing matched.
    ``recency`` (keyword arguments of :func:`recency_query`, e.g. from :func:`recency_from_config`) multiplies
    every score by a date decay.
    """

    def wrap(query: dict[str, Any]) -> dict[str, Any]:
        return recency_query(query, **recency) if recency else query

    if mode not in ("sparse", "bm25", "hybrid"):
        raise ValueError(f"mode must be sparse, bm25 or hybrid, got {mode!r}")
    if mode != "bm25" and query_encoder is None:
        raise ValueError(f"mode {mode!r} needs a query_encoder (texts -> term weights)")
    items = list(queries.items()) if isinstance(queries, Mapping) else list(queries)
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        texts = [t for _, t in chunk]
        sparse_lists: list[dict[str, float]] = [{} for _ in chunk]
        bm25_lists: list[dict[str, float]] = [{} for _ in chunk]
        if mode in ("sparse", "hybrid"):
            weights = query_encoder(texts)
            bodies = [
                {
                    "size": size,
                    "_source": False,
                    "query": wrap(sparse_query(prune_query(w, prune_ratio), neural=neural)),
                }
                for w in weights
            ]
            sparse_lists = [_hit_scores(h) for h in _msearch(client, index, bodies)]
        if mode in ("bm25", "hybrid"):
            bodies = [
                {"size": size, "_source": False, "query": wrap(bm25_query(t, bm25_analyzer))} for t in texts
            ]
            bm25_lists = [_hit_scores(h) for h in _msearch(client, index, bodies)]
        for i, (qid, _) in enumerate(chunk):
            if mode == "sparse":
                run[qid] = sparse_lists[i]
            elif mode == "bm25":
                run[qid] = bm25_lists[i]
            elif fusion == "rrf":
                run[qid] = fuse_rrf([bm25_lists[i], sparse_lists[i]])
            else:
                run[qid] = fuse_min_max(bm25_lists[i], sparse_lists[i], bm25_weight)
    return run


def search(
    client,
    index: str,
    text: str,
    query_encoder: TermEncoder | None = None,
    mode: str = "sparse",
    size: int = 10,
    bm25_analyzer: str | None = "bigram",
    bm25_weight: float = DEFAULT_BM25_WEIGHT,
) -> list[Hit]:
    """One query -> hits with title/text and, for sparse/hybrid, the matched terms (query weight, doc weight)."""
    run = search_run(
        client, index, {"q": text}, query_encoder, mode, size, bm25_analyzer, bm25_weight, batch_size=1
    )["q"]
    ranked = sorted(run.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
    if not ranked:
        return []
    docs = client.mget(index=index, body={"ids": [d for d, _ in ranked]})["docs"]
    qw = sanitize_terms(query_encoder([text])[0])[0] if query_encoder is not None else {}
    hits = []
    for (doc_id, score), doc in zip(ranked, docs, strict=True):
        src = doc.get("_source", {})
        stored = src.get(SPARSE_FIELD, {})
        matched = {t: (w, float(stored[t])) for t, w in qw.items() if t in stored}
        matched = dict(sorted(matched.items(), key=lambda kv: -kv[1][0] * kv[1][1]))
        hits.append(Hit(doc_id, score, src.get("title", ""), src.get("text", ""), matched))
    return hits


def model_query_encoder(model_dir: str | Path, max_length: int | None = None) -> TermEncoder:
    """Queries -> term weights with a trained SparseEncoder (inference-free query mode when it was trained so)."""
    from raysparse.model import SparseEncoder

    model = SparseEncoder.from_pretrained(model_dir)
    model.eval()
    return partial(model.encode, is_query=True, max_length=max_length)


def opensearch_run(
    url: str,
    index: str,
    data,
    query_encoder: TermEncoder | None = None,
    mode: str = "sparse",
    size: int = 100,
    os_cfg: OpenSearchConfig | None = None,
    **search_kwargs: Any,
):
    """Evaluate ``data`` (RetrievalData: queries + qrels) against an existing index from OpenSearch's own results.

    Returns ``(run, metrics)`` where ``metrics`` is :func:`raysparse.evaluation.compute_metrics`'s result.
    """
    from raysparse.evaluation import compute_metrics, qrels_from_table

    client = make_client(os_cfg, url=url)
    queries = dict(
        zip(data.queries.column("query_id").to_pylist(), data.queries.column("text").to_pylist(), strict=True)
    )
    run = search_run(client, index, queries, query_encoder, mode, size, **search_kwargs)
    return run, compute_metrics(run, qrels_from_table(data.qrels))


def index_term_stats(
    client, index: str, query_terms: Sequence[Mapping[str, float]], field_name: str = SPARSE_FIELD
) -> dict[str, float]:
    """avg_query_terms, avg_doc_terms and SPLADE FLOPS measured on what the index actually stores.

    Document vectors are read back from ``_source`` (after sanitising and clipping), so the figures describe the
    deployed index, not the in-process model. FLOPS = sum_v p_q(v) * p_d(v), as in raysparse.evaluation.
    """
    from opensearchpy import helpers

    doc_rate: Counter[str] = Counter()
    num_docs = 0
    total_doc_terms = 0
    for hit in helpers.scan(client, index=index, query={"query": {"match_all": {}}, "_source": [field_name]}):
        vector = (hit.get("_source") or {}).get(field_name) or {}
        num_docs += 1
        total_doc_terms += len(vector)
        doc_rate.update(vector.keys())
    query_rate: Counter[str] = Counter()
    for terms in query_terms:
        query_rate.update(feature_name(t) for t, w in terms.items() if w > 0)
    num_queries = len(query_terms)
    flops_value = 0.0
    if num_queries and num_docs:  # the one FLOPS definition, on rates read from the index and the queries
        import numpy as np

        from raysparse.evaluation.index import expected_flops

        terms = list(query_rate)
        flops_value = expected_flops(
            np.array([query_rate[t] / num_queries for t in terms]),
            np.array([doc_rate.get(t, 0) / num_docs for t in terms]),
        )
    return {
        "avg_query_terms": sum(query_rate.values()) / num_queries if num_queries else 0.0,
        "avg_doc_terms": total_doc_terms / num_docs if num_docs else 0.0,
        "flops": float(flops_value),
    }
