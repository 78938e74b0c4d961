"""OpenSearch: client and auth, mapping and terms, ingest, queries and fusion, ml-commons.

Two query routes return the same Lucene ``FeatureField`` linear scores:

* core OpenSearch (any version >= 1.1, mapper-extras module): ``bool.should`` of ``rank_feature`` clauses with
  ``linear`` and ``boost = query weight`` — what :func:`sparse_query` builds by default; runs everywhere, including
  the loopback node from ``scripts/opensearch.sh`` (OpenSearch 2.19.1 core, no neural-search plugin);
* the neural-search plugin (>= 2.14): ``neural_sparse`` with ``query_tokens`` — chosen when the plugin is present.

Feature names are tokens, and OpenSearch addresses one feature as ``<field>.<token>``. Verified on 2.19.1: a token
containing ``"."`` is *stored* but can never be queried (the path splits), a weight <= 0 is rejected
(``featureValue must be a positive normal float``), ``"##"`` WordPiece prefixes and spaces are fine. So
:func:`sanitize_terms` maps ``"."`` to ONE DOT LEADER (U+2024) on both the document and the query side, drops empty
tokens and non-positive/non-finite weights (counted, never silent) and clips weights to 64 (ml-commons' cap for
``neural_sparse``). Lucene keeps ~9 significant bits of a feature value, so OpenSearch scores match the
in-process dot product to ~0.4 % relative.

Modules: :mod:`.client` (client, auth, errors), :mod:`.mapping` (mapping, ``_meta``, term sanitising),
:mod:`.ingest` (bulk indexing, Ray Data), :mod:`.queries` (queries, fusion, runs), :mod:`.mlcommons` (register,
deploy, predict). Every public name is importable from ``raysparse.opensearch``.
"""

from raysparse.opensearch.client import (
    AccessDenied,
    OpenSearchError,
    PluginUnavailable,
    ServerUnreachable,
    TLSFailure,
    check_reachable,
    error_reason,
    has_neural_search,
    installed_plugins,
    make_client,
)
from raysparse.opensearch.ingest import (
    BULK_LOAD_SETTINGS,
    IndexInterrupted,
    IndexReport,
    bulk_index,
    bulk_load_settings,
    document_body,
    index_corpus,
    index_corpus_on_workers,
    index_documents,
    lexical_encoder_factory,
    model_encoder_factory,
    prepare_index,
)
from raysparse.opensearch.mapping import (
    BM25_FIELD,
    BM25_MODES,
    DOT_REPLACEMENT,
    MAX_WEIGHT,
    SPARSE_FIELD,
    EncoderMismatch,
    SanitizeReport,
    TermEncoder,
    TermWeights,
    check_encoder,
    create_index,
    dot_product,
    encoder_differences,
    encoder_identity,
    feature_name,
    index_mapping,
    index_meta,
    lexical_term_weights,
    model_sha256,
    sanitize_terms,
)
from raysparse.opensearch.mlcommons import (
    DeployedModel,
    MLCommonsError,
    deploy_bundle,
    predict_sparse,
    register_sparse_tokenize_model,
    server_query_encoder,
    sparse_ingest_pipeline,
)
from raysparse.opensearch.queries import (
    RECENCY_DECAYS,
    Hit,
    bm25_query,
    fuse_min_max,
    fuse_rrf,
    hybrid_pipeline,
    index_term_stats,
    model_query_encoder,
    neural_hybrid_query,
    opensearch_run,
    prune_query,
    recency_from_config,
    recency_query,
    search,
    search_run,
    sparse_query,
)

__all__ = [
    "BM25_FIELD",
    "BM25_MODES",
    "BULK_LOAD_SETTINGS",
    "DOT_REPLACEMENT",
    "MAX_WEIGHT",
    "RECENCY_DECAYS",
    "SPARSE_FIELD",
    "AccessDenied",
    "DeployedModel",
    "EncoderMismatch",
    "Hit",
    "IndexInterrupted",
    "IndexReport",
    "MLCommonsError",
    "OpenSearchError",
    "PluginUnavailable",
    "SanitizeReport",
    "ServerUnreachable",
    "TLSFailure",
    "TermEncoder",
    "TermWeights",
    "bm25_query",
    "bulk_index",
    "bulk_load_settings",
    "check_encoder",
    "check_reachable",
    "create_index",
    "deploy_bundle",
    "document_body",
    "dot_product",
    "encoder_differences",
    "encoder_identity",
    "error_reason",
    "feature_name",
    "fuse_min_max",
    "fuse_rrf",
    "has_neural_search",
    "hybrid_pipeline",
    "index_corpus",
    "index_corpus_on_workers",
    "index_documents",
    "index_mapping",
    "index_meta",
    "index_term_stats",
    "installed_plugins",
    "lexical_encoder_factory",
    "lexical_term_weights",
    "make_client",
    "model_encoder_factory",
    "model_query_encoder",
    "model_sha256",
    "neural_hybrid_query",
    "opensearch_run",
    "predict_sparse",
    "prepare_index",
    "prune_query",
    "recency_from_config",
    "recency_query",
    "register_sparse_tokenize_model",
    "sanitize_terms",
    "search",
    "search_run",
    "server_query_encoder",
    "sparse_ingest_pipeline",
    "sparse_query",
]
