"""Evaluation against BM25: metrics, an in-process sparse inverted index, dev sets and the Markdown/PNG report.

``raysparse.evaluate`` re-exports this package's public API (the name the architecture document uses).
"""

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
from raysparse.evaluation.devsets import (
    CROSSLINGUAL_SETS,
    build_crosslingual_sets,
    read_beir_dir,
    read_klue_mrc_odqa,
    read_term_pairs,
    write_beir_dir,
)
from raysparse.evaluation.index import SparseIndex, activation_rate, flops, terms_to_csr
from raysparse.evaluation.metrics import (
    MetricsResult,
    compute_metrics,
    qrels_from_table,
    query_metrics,
    rank_documents,
)

__all__ = [
    "CROSSLINGUAL_SETS",
    "EvalResult",
    "MetricsResult",
    "SparseIndex",
    "activation_rate",
    "bm25_document_matrix",
    "build_crosslingual_sets",
    "compute_metrics",
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
    "read_beir_dir",
    "read_klue_mrc_odqa",
    "read_term_pairs",
    "terms_to_csr",
    "write_beir_dir",
    "write_metrics",
    "write_run",
]
