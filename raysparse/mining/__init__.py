"""BM25 hard-negative mining: Korean-aware analyzers, a BM25 index built from analysed batches, Ray Data stages.

- :mod:`raysparse.mining.index` — corpus analysis (pure, per batch) and :class:`Bm25Index` construction.
- :mod:`raysparse.mining.retrieve` — top-k and scoring kernels over the index.
- :mod:`raysparse.mining.negatives` — hard/random negative selection, :func:`mine_batch` (pure, per batch).
- :mod:`raysparse.mining.stage` — :func:`mine`: in-process or Ray Data (analysis tasks, one index builder task,
  an actor pool that writes ``triples/part-NNNNN.parquet`` shards), plus the report.

Output rows follow :data:`raysparse.schemas.TRIPLES` (one row per query), sorted by query_id across shards.
"""

from raysparse.mining.index import (
    ANALYSED,
    Bm25Index,
    IndexBuilder,
    analyze_documents,
    bm25_weights,
    document_texts,
    normalize_for_dedup,
)
from raysparse.mining.negatives import mine_batch, random_keys, triples_table
from raysparse.mining.retrieve import score_flat, topk, topk_batch
from raysparse.mining.stage import (
    REPORT_FILE,
    SHARD_STATS,
    TRIPLES_DIR,
    TRIPLES_FILE,
    MiningReport,
    _MinerActor,
    _ray_pool,
    analysis_dataset,
    build_index_ray,
    mine,
    mine_dataset,
    mine_shard,
    mine_shard_table,
    prepare_queries,
    read_triples,
    triples_files,
    use_ray,
)

__all__ = [
    "ANALYSED",
    "REPORT_FILE",
    "SHARD_STATS",
    "TRIPLES_DIR",
    "TRIPLES_FILE",
    "Bm25Index",
    "IndexBuilder",
    "MiningReport",
    "_MinerActor",
    "_ray_pool",
    "analysis_dataset",
    "analyze_documents",
    "bm25_weights",
    "build_index_ray",
    "document_texts",
    "mine",
    "mine_batch",
    "mine_dataset",
    "mine_shard",
    "mine_shard_table",
    "normalize_for_dedup",
    "prepare_queries",
    "random_keys",
    "read_triples",
    "score_flat",
    "topk",
    "topk_batch",
    "triples_files",
    "triples_table",
    "use_ray",
]
