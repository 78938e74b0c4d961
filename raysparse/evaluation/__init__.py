"""Evaluation against BM25: metrics, an in-process sparse inverted index, dev sets and the Markdown/PNG report."""

from __future__ import annotations

from raysparse.evaluation.core import (
    EvalResult,
    bm25_document_matrix,
    document_texts,
    encode_sparse,
    evaluate_bm25,
    evaluate_model,
    evaluate_run,
    metric_cutoffs,
    write_metrics,
    write_run,
)
from raysparse.evaluation.devsets import EVAL_CROSSLINGUAL_SETS, crosslingual_dev_sets, dictionary_pairs
from raysparse.evaluation.index import SparseIndex, activation_rate, flops, terms_to_csr
from raysparse.evaluation.metrics import (
    MetricsResult,
    compute_metrics,
    qrels_from_table,
    query_metrics,
    rank_documents,
)

__all__ = [
    "EVAL_CROSSLINGUAL_SETS",
    "EvalResult",
    "MetricsResult",
    "SparseIndex",
    "activation_rate",
    "bm25_document_matrix",
    "compute_metrics",
    "crosslingual_dev_sets",
    "dictionary_pairs",
    "document_texts",
    "encode_sparse",
    "evaluate_bm25",
    "evaluate_model",
    "evaluate_run",
    "flops",
    "metric_cutoffs",
    "qrels_from_table",
    "query_metrics",
    "rank_documents",
    "terms_to_csr",
    "write_metrics",
    "write_run",
]
