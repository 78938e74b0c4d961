"""OpenSearch: index mapping, term sanitising, bulk indexing (Ray Data encoding), queries, hybrid fusion, runs.

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
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

from raysparse.config import OpenSearchConfig

TermWeights = dict[str, float]
#: texts -> one {token: weight} dict per text (what SparseEncoder.encode returns).
TermEncoder = Callable[[Sequence[str]], list[TermWeights]]

SPARSE_FIELD = "sparse"
BM25_FIELD = "bm25"
DOT_REPLACEMENT = "\u2024"  # ONE DOT LEADER: looks like ".", is not a path separator
MAX_WEIGHT = 64.0
BM25_MODES = ("whitespace", "nori", "standard")


class OpenSearchError(RuntimeError):
    """A request OpenSearch answered with an error we cannot recover from (message names index and cause)."""


class PluginUnavailable(OpenSearchError):
    """The cluster lacks a plugin a feature needs (neural-search, ml-commons, analysis-nori)."""


# --------------------------------------------------------------------------------------------- client
def make_client(cfg: OpenSearchConfig | None = None, url: str | None = None, timeout: float = 60.0):
    """An ``opensearchpy.OpenSearch`` client for ``cfg`` (``url`` overrides ``cfg.url``).

    Basic auth when ``username`` is set; TLS from an ``https://`` URL with ``verify_certs``; AWS SigV4 (Amazon
    OpenSearch Service) when ``aws_region`` is set — that needs boto3, which is optional and imported only then.
    5xx answers are retried by the transport (``retry_on_status``), 429s by the bulk helper with back-off.
    """
    from opensearchpy import OpenSearch, RequestsHttpConnection

    cfg = cfg or OpenSearchConfig()
    target = url or cfg.url
    kwargs: dict[str, Any] = {
        "hosts": [target],
        "timeout": timeout,
        "max_retries": cfg.max_retries,
        "retry_on_timeout": True,
        "retry_on_status": (502, 503, 504),
        "http_compress": True,
    }
    if target.startswith("https://"):
        kwargs.update(use_ssl=True, verify_certs=cfg.verify_certs, ssl_show_warn=cfg.verify_certs)
    if cfg.aws_region:
        try:
            import boto3
        except ImportError as exc:
            raise OpenSearchError(
                "opensearch.aws_region is set but boto3 is not installed (pip install boto3)"
            ) from exc
        from opensearchpy import RequestsAWSV4SignerAuth

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise OpenSearchError("opensearch.aws_region is set but boto3 found no AWS credentials")
        kwargs.update(http_auth=RequestsAWSV4SignerAuth(credentials, cfg.aws_region, "es"))
        kwargs.update(connection_class=RequestsHttpConnection)
    elif cfg.username:
        kwargs["http_auth"] = (cfg.username, cfg.password.get_secret_value() if cfg.password else "")
    return OpenSearch(**kwargs)


def installed_plugins(client) -> set[str]:
    """Component names from ``_cat/plugins`` (e.g. ``opensearch-neural-search``, ``analysis-nori``)."""
    rows = client.cat.plugins(format="json")
    return {row.get("component", "") for row in rows}


def has_neural_search(client) -> bool:
    return "opensearch-neural-search" in installed_plugins(client)


# --------------------------------------------------------------------------------------------- mapping
def index_mapping(
    with_date: bool = False, bm25_mode: str = "whitespace", shards: int = 1, replicas: int = 0
) -> dict[str, Any]:
    """Settings + mappings for a raysparse index.

    ``bm25_mode``: ``whitespace`` (default) stores raysparse's own pre-analysed tokens (char bigrams or Kiwi
    morphemes from :mod:`raysparse.analyzers`, space-joined) under a whitespace analyzer, so OpenSearch's BM25
    sees exactly the tokens raysparse's BM25 baseline sees; ``nori`` analyses raw text with the analysis-nori
    plugin (users' clusters; not on Maven Central for 2.19.1); ``standard`` is OpenSearch's default analyzer.
    """
    if bm25_mode not in BM25_MODES:
        raise ValueError(f"bm25_mode must be one of {BM25_MODES}, got {bm25_mode!r}")
    analyzer = {"whitespace": "whitespace", "nori": "nori", "standard": "standard"}[bm25_mode]
    properties: dict[str, Any] = {
        "doc_id": {"type": "keyword"},
        "title": {"type": "text"},
        "text": {"type": "text"},
        "lang": {"type": "keyword"},
        SPARSE_FIELD: {"type": "rank_features"},
        BM25_FIELD: {"type": "text", "analyzer": analyzer, "similarity": "BM25"},
    }
    if with_date:
        properties["date"] = {"type": "date", "format": "strict_date_optional_time||epoch_second"}
    return {
        "settings": {"index": {"number_of_shards": shards, "number_of_replicas": replicas}},
        "mappings": {
            "dynamic": "strict",  # a typo'd field is an error per document, not a silent new field
            "_meta": {"raysparse": {"bm25_mode": bm25_mode, "dot_replacement": DOT_REPLACEMENT}},
            "properties": properties,
        },
    }


def create_index(client, index: str, mapping: Mapping[str, Any], recreate: bool = False) -> bool:
    """Create ``index`` (drop it first when ``recreate``); returns False when it already existed and was kept."""
    if client.indices.exists(index=index):
        if not recreate:
            return False
        client.indices.delete(index=index)
    client.indices.create(index=index, body=dict(mapping))
    return True


def index_meta(client, index: str) -> dict[str, Any]:
    """The ``_meta.raysparse`` block written by :func:`index_mapping` (empty for foreign indices)."""
    mapping = client.indices.get_mapping(index=index)
    body = next(iter(mapping.values()))["mappings"]
    return dict(body.get("_meta", {}).get("raysparse", {}))


# --------------------------------------------------------------------------------------------- terms
@dataclass
class SanitizeReport:
    """What :func:`sanitize_terms` changed; counts are per term occurrence."""

    kept: int = 0
    renamed: int = 0  # "." mapped to DOT_REPLACEMENT
    clipped: int = 0  # weight > MAX_WEIGHT set to MAX_WEIGHT
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    merged: int = 0  # two raw tokens that map to one feature name (max weight kept)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def merge(self, other: SanitizeReport) -> None:
        self.kept += other.kept
        self.renamed += other.renamed
        self.clipped += other.clipped
        self.merged += other.merged
        for reason, n in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "kept": self.kept,
            "renamed": self.renamed,
            "clipped": self.clipped,
            "merged": self.merged,
            "dropped": dict(self.dropped),
        }


def feature_name(token: str) -> str:
    """The ``rank_features`` key for ``token``: "." -> U+2024 (documents and queries must both use this)."""
    return token.replace(".", DOT_REPLACEMENT)


def sanitize_terms(
    term_weights: Mapping[str, float], max_weight: float = MAX_WEIGHT
) -> tuple[TermWeights, SanitizeReport]:
    """Make ``{token: weight}`` storable and queryable as ``rank_features`` (see the module docstring)."""
    report = SanitizeReport()
    clean: TermWeights = {}
    for token, raw in term_weights.items():
        if not isinstance(token, str) or not token.strip():
            report.drop("empty token")
            continue
        try:
            weight = float(raw)
        except (TypeError, ValueError):
            report.drop("non-numeric weight")
            continue
        if math.isnan(weight):
            report.drop("NaN weight")
            continue
        if weight <= 0.0:
            report.drop("non-positive weight")
            continue
        if weight > max_weight:
            weight = max_weight
            report.clipped += 1
        name = feature_name(token)
        if name != token:
            report.renamed += 1
        if name in clean:
            report.merged += 1
            clean[name] = max(clean[name], weight)
            continue
        # Lucene stores features as positive *normal* floats; sub-normal values are rejected too.
        if weight < 1.1754944e-38:
            report.drop("weight below the smallest normal float")
            continue
        clean[name] = weight
        report.kept += 1
    return clean, report


def lexical_term_weights(texts: Sequence[str], analyzer: str = "bigram") -> list[TermWeights]:
    """A deterministic, model-free term encoder over raysparse analyzer tokens: weight = (1 + ln tf) * g(token).

    ``g`` is a fixed pseudo-random factor in [1, 2) from CRC32, so rankings depend on both term frequency and
    token identity (a dot product over these vectors is not just BM25). Used by tests and benchmarks where no
    trained :class:`raysparse.model.SparseEncoder` is available; same interface as ``SparseEncoder.encode``.
    """
    from raysparse.analyzers import get_analyzer

    out: list[TermWeights] = []
    for tokens in get_analyzer(analyzer)(list(texts)):
        counts = Counter(tokens)
        out.append(
            {
                t: round((1.0 + math.log(n)) * (1.0 + (zlib.crc32(t.encode()) % 1000) / 1000.0), 4)
                for t, n in counts.items()
            }
        )
    return out


def dot_product(query: Mapping[str, float], doc: Mapping[str, float]) -> float:
    """In-process sparse score (what OpenSearch's linear rank_feature sum approximates)."""
    if len(query) > len(doc):
        query, doc = doc, query
    return sum(w * doc[t] for t, w in query.items() if t in doc)


# --------------------------------------------------------------------------------------------- documents
def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def document_body(
    row: Mapping[str, Any], terms: Mapping[str, float], bm25_tokens: Sequence[str] | None
) -> tuple[dict[str, Any], SanitizeReport]:
    """One OpenSearch document from a CORPUS row, its term weights and (optionally) pre-analysed BM25 tokens."""
    clean, report = sanitize_terms(terms)
    body: dict[str, Any] = {
        "doc_id": row["doc_id"],
        "title": row.get("title") or "",
        "text": row["text"],
        SPARSE_FIELD: clean,
    }
    if row.get("lang"):
        body["lang"] = row["lang"]
    if row.get("date") is not None:
        body["date"] = _json_value(row["date"])
    if bm25_tokens is not None:
        body[BM25_FIELD] = " ".join(bm25_tokens)
    return body, report


# --------------------------------------------------------------------------------------------- bulk
@dataclass
class IndexReport:
    """What :func:`bulk_index` / :func:`index_corpus` did; nothing is dropped without a reason here."""

    index: str
    indexed: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)  # {"doc_id", "status", "reason"}
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    doc_count: int = 0  # documents in the index after the final refresh
    terms: SanitizeReport = field(default_factory=SanitizeReport)
    seconds: float = 0.0

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    @property
    def docs_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "indexed": self.indexed,
            "failed": len(self.failed),
            "failures": self.failed[:20],
            "skipped": dict(self.skipped),
            "doc_count": self.doc_count,
            "terms": self.terms.as_dict(),
            "seconds": round(self.seconds, 3),
            "docs_per_second": round(self.docs_per_second, 1),
        }

    def __str__(self) -> str:
        skipped = sum(self.skipped.values())
        text = (
            f"{self.index}: indexed {self.indexed}, failed {len(self.failed)}, skipped {skipped}, "
            f"{self.doc_count} documents in the index ({self.docs_per_second:.0f} docs/s)"
        )
        for f in self.failed[:5]:
            text += f"\n  failed {f['doc_id']}: {f['status']} {f['reason']}"
        for reason, n in sorted(self.skipped.items()):
            text += f"\n  skipped {n}: {reason}"
        return text


def _error_reason(error: Any) -> str:
    if isinstance(error, Mapping):
        reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, Mapping):
            reason += f" (caused by {cause.get('type')}: {cause.get('reason')})"
        return reason
    return str(error)


def bulk_index(
    client,
    index: str,
    docs: Iterable[Mapping[str, Any]],
    batch_size: int = 500,
    max_retries: int = 5,
    initial_backoff: float = 1.0,
    refresh: bool = True,
    report: IndexReport | None = None,
) -> IndexReport:
    """Index ``docs`` (bodies with a ``doc_id``) with ``_id = doc_id``, so re-running overwrites, never duplicates.

    Uses ``opensearchpy.helpers.streaming_bulk`` (429 answers retried ``max_retries`` times with exponential
    back-off from ``initial_backoff`` seconds; 5xx are retried by the client transport). Per-document errors
    (e.g. a mapping conflict) are collected in ``report.failed`` with OpenSearch's reason; bodies without a
    ``doc_id`` are skipped and counted. After a refresh, the index's document count is checked against the
    distinct ids indexed, and a shortfall raises.
    """
    from opensearchpy import helpers

    report = report or IndexReport(index=index)
    start = time.perf_counter()
    ids: set[str] = set()

    def actions() -> Iterator[dict[str, Any]]:
        for doc in docs:
            doc_id = doc.get("doc_id")
            if doc_id is None or str(doc_id) == "":
                report.skip("missing doc_id")
                continue
            if not isinstance(doc.get("text"), str) or not doc["text"].strip():
                report.skip("empty text")
                continue
            ids.add(str(doc_id))
            yield {"_op_type": "index", "_index": index, "_id": str(doc_id), "_source": doc}

    for ok, item in helpers.streaming_bulk(
        client,
        actions(),
        chunk_size=batch_size,
        max_retries=max_retries,
        initial_backoff=initial_backoff,
        raise_on_error=False,
        raise_on_exception=False,
    ):
        info = next(iter(item.values()))
        if ok:
            report.indexed += 1
        else:
            doc_id = str(info.get("_id"))
            ids.discard(doc_id)
            report.failed.append(
                {
                    "doc_id": doc_id,
                    "status": str(info.get("status")),
                    "reason": _error_reason(info.get("error", info.get("exception"))),
                }
            )
    if refresh:
        client.indices.refresh(index=index)
        report.doc_count = int(client.count(index=index)["count"])
        if report.doc_count < len(ids):
            raise OpenSearchError(
                f"index {index!r} holds {report.doc_count} documents after bulk indexing {len(ids)} distinct ids"
            )
    report.seconds += time.perf_counter() - start
    return report


def index_documents(
    client,
    index: str,
    rows: Iterable[Mapping[str, Any]],
    encoder: TermEncoder,
    bm25_analyzer: str | None = "bigram",
    batch_size: int = 64,
    bulk_batch_size: int = 500,
    max_retries: int = 5,
) -> IndexReport:
    """In-process indexing (no Ray): encode CORPUS-shaped rows in batches and bulk-index them."""
    from raysparse.analyzers import get_analyzer

    analyze = get_analyzer(bm25_analyzer) if bm25_analyzer else None
    report = IndexReport(index=index)

    def bodies() -> Iterator[dict[str, Any]]:
        batch: list[Mapping[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= batch_size:
                yield from _encode_batch(batch, encoder, analyze, report)
                batch = []
        if batch:
            yield from _encode_batch(batch, encoder, analyze, report)

    return bulk_index(client, index, bodies(), bulk_batch_size, max_retries, report=report)


def _encode_batch(batch, encoder, analyze, report: IndexReport) -> Iterator[dict[str, Any]]:
    texts = [_doc_text(r) for r in batch]
    weights = encoder(texts)
    tokens = analyze(texts) if analyze else [None] * len(texts)
    for row, w, t in zip(batch, weights, tokens, strict=True):
        body, terms = document_body(row, w, t)
        report.terms.merge(terms)
        yield body


def _doc_text(row: Mapping[str, Any]) -> str:
    """Title + text, as the encoder and the BM25 field see a document (matches raysparse's BM25 baseline)."""
    title = row.get("title") or ""
    return f"{title} {row['text']}".strip() if title else row["text"]


# --------------------------------------------------------------------------------------------- Ray Data
class _EncodeActor:
    """Ray Data actor: builds the encoder once (e.g. loads a SparseEncoder) and encodes batches of documents."""

    def __init__(self, encoder_factory: Callable[[], TermEncoder], bm25_analyzer: str | None) -> None:
        from raysparse.analyzers import get_analyzer

        self.encoder = encoder_factory()
        self.analyze = get_analyzer(bm25_analyzer) if bm25_analyzer else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        rows = [dict(zip(batch.keys(), values, strict=True)) for values in zip(*batch.values(), strict=True)]
        texts = [_doc_text(r) for r in rows]
        weights = self.encoder(texts)
        tokens = self.analyze(texts) if self.analyze else None
        return {
            "doc_id": [r["doc_id"] for r in rows],
            "terms": [json.dumps(w, ensure_ascii=False) for w in weights],
            "bm25": [" ".join(t) for t in tokens] if tokens is not None else [None] * len(rows),
        }


def _load_model_encoder(model_dir: str, top_k: int | None, max_length: int | None) -> TermEncoder:
    from raysparse.model import SparseEncoder

    model = SparseEncoder.from_pretrained(model_dir)
    model.eval()
    return partial(model.encode, is_query=False, top_k=top_k, max_length=max_length)


def model_encoder_factory(
    model_dir: str | Path, top_k: int | None = None, max_length: int | None = None
) -> Callable[[], TermEncoder]:
    """A picklable factory for Ray actors: loads ``SparseEncoder.from_pretrained(model_dir)`` once per actor.

    ``max_length`` should be the document length the model was trained and evaluated with
    (``model.max_doc_length``), so OpenSearch holds the same vectors as in-process evaluation.
    """
    return partial(_load_model_encoder, str(model_dir), top_k, max_length)


def lexical_encoder_factory(analyzer: str = "bigram") -> Callable[[], TermEncoder]:
    """Factory for :func:`lexical_term_weights` (tests, benchmarks, indexing before a model exists)."""
    return partial(partial, lexical_term_weights, analyzer=analyzer)


def index_corpus(
    data,
    encoder_factory: Callable[[], TermEncoder],
    os_cfg: OpenSearchConfig | None = None,
    *,
    client=None,
    index: str | None = None,
    bm25_analyzer: str | None = "bigram",
    bm25_mode: str = "whitespace",
    recreate: bool = False,
    batch_size: int = 64,
    num_actors: int = 1,
    num_cpus_per_actor: float = 0.5,
) -> IndexReport:
    """Encode ``data.corpus`` with a Ray Data actor pool and bulk-index it from the driver.

    The actors (``num_cpus_per_actor`` fractional CPUs each) hold the model; the driver streams their output into
    :func:`bulk_index`, so the OpenSearch client is never pickled and back-pressure is Ray Data's. The index is
    created with :func:`index_mapping` when missing (``recreate`` drops it first). Requires Ray initialised (or
    initialises a local one).
    """
    import ray

    os_cfg = os_cfg or OpenSearchConfig()
    client = client or make_client(os_cfg)
    index = index or os_cfg.index
    corpus = data.corpus
    with_date = corpus.column("date").null_count < corpus.num_rows if corpus.num_rows else False
    mode = bm25_mode if bm25_analyzer or bm25_mode != "whitespace" else "standard"
    create_index(client, index, index_mapping(with_date=with_date, bm25_mode=mode), recreate=recreate)
    if not ray.is_initialized():
        from raysparse.ray_utils import init_ray

        init_ray(None)

    analyzer_for_actor = bm25_analyzer if mode == "whitespace" else None
    encoded = ray.data.from_arrow(corpus.select(["doc_id", "title", "text"])).map_batches(
        _EncodeActor,
        fn_constructor_args=(encoder_factory, analyzer_for_actor),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus_per_actor,
    )
    rows_by_id = {r["doc_id"]: r for r in corpus.to_pylist()}
    report = IndexReport(index=index)

    def bodies() -> Iterator[dict[str, Any]]:
        for out in encoded.iter_rows():
            doc_id = str(out["doc_id"])
            tokens = out["bm25"].split(" ") if out.get("bm25") else None
            body, terms = document_body(rows_by_id[doc_id], json.loads(out["terms"]), tokens)
            if mode != "whitespace":
                body[BM25_FIELD] = _doc_text(rows_by_id[doc_id])
            report.terms.merge(terms)
            yield body

    return bulk_index(client, index, bodies(), os_cfg.bulk_batch_size, os_cfg.max_retries, report=report)


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


def hybrid_pipeline(bm25_weight: float = 0.3, technique: str = "min_max") -> dict[str, Any]:
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


def fuse_min_max(
    bm25: Mapping[str, float], sparse: Mapping[str, float], bm25_weight: float = 0.3
) -> dict[str, float]:
    """Client-side hybrid: min-max normalise each hit list to [0, 1], then weighted sum (missing hit = 0).

    A list whose scores are all equal normalises to 1.0 (it still ranks its hits above non-hits).
    """

    def norm(scores: Mapping[str, float]) -> dict[str, float]:
        if not scores:
            return {}
        lo, hi = min(scores.values()), max(scores.values())
        span = hi - lo
        return {d: (s - lo) / span if span > 0 else 1.0 for d, s in scores.items()}

    a, b = norm(bm25), norm(sparse)
    return {d: bm25_weight * a.get(d, 0.0) + (1.0 - bm25_weight) * b.get(d, 0.0) for d in set(a) | set(b)}


def fuse_rrf(runs: Sequence[Mapping[str, float]], k: int = 60) -> dict[str, float]:
    """Reciprocal rank fusion: sum over lists of 1 / (k + rank), rank 1-based, ties broken by doc id."""
    fused: dict[str, float] = {}
    for scores in runs:
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        for rank, (doc_id, _) in enumerate(ranked, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (k + rank)
    return fused


@dataclass
class Hit:
    doc_id: str
    score: float
    title: str = ""
    text: str = ""
    matched: dict[str, tuple[float, float]] = field(default_factory=dict)  # token -> (query w, doc w)


def _hits(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "error" in response:
        raise OpenSearchError(f"search failed: {_error_reason(response['error'])}")
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
    bm25_weight: float = 0.3,
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
    bm25_weight: float = 0.3,
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

    Returns ``(run, metrics)`` where ``metrics`` is :func:`raysparse.evaluate.compute_metrics`'s result.
    """
    from raysparse.evaluate import compute_metrics, qrels_from_table

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
    flops_value = (
        sum(query_rate[t] / num_queries * doc_rate.get(t, 0) / num_docs for t in query_rate)
        if num_queries and num_docs
        else 0.0
    )
    return {
        "avg_query_terms": sum(query_rate.values()) / num_queries if num_queries else 0.0,
        "avg_doc_terms": total_doc_terms / num_docs if num_docs else 0.0,
        "flops": float(flops_value),
    }


# --------------------------------------------------------------------------------------------- ml-commons
def register_sparse_tokenize_model(
    client, bundle_zip: str | Path, name: str = "raysparse-query-tokenizer", chunk_bytes: int = 10_000_000
) -> str:
    """Upload a SPARSE_TOKENIZE bundle (``raysparse.export`` writes it) to ml-commons and deploy it; returns model_id.

    Needs the ml-commons plugin (raises :class:`PluginUnavailable` otherwise — the loopback test node has only core
    modules, so this path is exercised on users' clusters, see docs/deployment.md). SPARSE_ENCODING bundles use the
    same calls with ``function_name`` SPARSE_ENCODING, but their deploy downloads libtorch (needs internet).
    """
    import hashlib

    if "opensearch-ml" not in installed_plugins(client):
        raise PluginUnavailable("ml-commons (opensearch-ml) is not installed on this cluster")
    payload = Path(bundle_zip).read_bytes()
    client.cluster.put_settings(
        body={
            "persistent": {
                "plugins.ml_commons.only_run_on_ml_node": False,
                "plugins.ml_commons.allow_registering_model_via_local_file": True,
            }
        }
    )
    chunks = [payload[i : i + chunk_bytes] for i in range(0, len(payload), chunk_bytes)]
    meta = {
        "name": name,
        "version": "1.0.0",
        "model_format": "TORCH_SCRIPT",
        "function_name": "SPARSE_TOKENIZE",
        "model_content_hash_value": hashlib.sha256(payload).hexdigest(),
        "model_content_size_in_bytes": len(payload),
        "total_chunks": len(chunks),
    }
    model_id = client.transport.perform_request("POST", "/_plugins/_ml/models/_register_meta", body=meta)[
        "model_id"
    ]
    for i, chunk in enumerate(chunks):
        client.transport.perform_request(
            "POST", f"/_plugins/_ml/models/{model_id}/upload_chunk/{i}", body=chunk
        )
    client.transport.perform_request("POST", f"/_plugins/_ml/models/{model_id}/_deploy")
    return model_id


def sparse_ingest_pipeline(model_id: str, source_field: str = "text") -> dict[str, Any]:
    """Ingest pipeline body: neural-search's ``sparse_encoding`` processor fills SPARSE_FIELD at index time."""
    return {
        "description": "raysparse: encode documents with an ml-commons sparse model",
        "processors": [
            {"sparse_encoding": {"model_id": model_id, "field_map": {source_field: SPARSE_FIELD}}}
        ],
    }
