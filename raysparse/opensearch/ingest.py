"""Documents and bulk indexing: in-process, and from a Ray Data actor pool."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from raysparse.config import OpenSearchConfig
from raysparse.opensearch.client import AccessDenied, OpenSearchError, error_reason, make_client
from raysparse.opensearch.mapping import (
    BM25_FIELD,
    SPARSE_FIELD,
    SanitizeReport,
    TermEncoder,
    check_encoder,
    create_index,
    index_mapping,
    lexical_term_weights,
    sanitize_terms,
)
from raysparse.ray_utils import placement_args


# --------------------------------------------------------------------------------------------- documents
def _date_value(value: Any) -> str | None:
    """A document's date as ISO 8601, or None when it has none. Ray Data's numpy batches carry dates as
    ``numpy.datetime64`` and a missing one as NaT (not None): NaT reached the JSON serializer and failed the
    worker's whole bulk request on corpora where only some documents are dated."""
    if value is None:
        return None
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            return None
        return value.astype("datetime64[us]").item().isoformat()
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


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
    dated = _date_value(row.get("date"))
    if dated is not None:
        body["date"] = dated
    if bm25_tokens is not None:
        body[BM25_FIELD] = " ".join(bm25_tokens)
    return body, report


# --------------------------------------------------------------------------------------------- bulk
class IndexInterrupted(OpenSearchError):
    """A bulk request failed as a whole; ``report`` counts what was written before it."""

    def __init__(self, message: str, report: IndexReport) -> None:
        super().__init__(message)
        self.report = report


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def prepare_index(
    client,
    index: str,
    mapping: Mapping[str, Any],
    encoder: Mapping[str, Any] | None = None,
    *,
    recreate: bool = False,
    force: bool = False,
) -> list[str]:
    """Create ``index`` (``mapping`` should carry ``encoder`` in its ``_meta``) or check the recorded encoder.

    Returns the encoder differences ``force`` overrode (empty normally); raises :class:`EncoderMismatch`.
    """
    created = create_index(client, index, mapping, recreate=recreate)
    if created or encoder is None:
        return []
    return check_encoder(client, index, encoder, force=force)


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
    forced: list[str] = field(default_factory=list)  # encoder differences overridden with force=True
    writers: int = (
        0  # distinct worker processes that bulk-wrote (index_corpus_on_workers); 0 = the driver wrote
    )

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
            "forced": list(self.forced),
            "writers": self.writers,
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
        for diff in self.forced:
            text += f"\n  forced despite another encoder: {diff}"
        return text


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
        elif info.get("exception") is not None:
            # The whole request failed (server gone, 5xx after the transport's retries, 413): every later batch
            # would fail the same way after its own retries, so stop here and say how far we got.
            report.seconds += time.perf_counter() - start
            exc = info["exception"]
            raise IndexInterrupted(
                f"index {index!r}: bulk request failed ({type(exc).__name__}: {_short(exc)}); stopped at the first "
                f"failed batch with {report.indexed} documents written",
                report,
            ) from exc
        else:
            doc_id = str(info.get("_id"))
            ids.discard(doc_id)
            report.failed.append(
                {
                    "doc_id": doc_id,
                    "status": str(info.get("status")),
                    "reason": error_reason(info.get("error", info.get("exception"))),
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
    encoder: Mapping[str, Any] | None = None,
    force: bool = False,
    batch_size: int = 64,
    num_actors: int = 1,
    num_cpus_per_actor: float = 0.5,
    resources: dict[str, float] | None = None,
) -> IndexReport:
    """Encode ``data.corpus`` with a Ray Data actor pool and bulk-index it from the driver.

    The actors (``num_cpus_per_actor`` fractional CPUs each) hold the model; the driver streams their output into
    :func:`bulk_index`, so the OpenSearch client is never pickled and back-pressure is Ray Data's. The index is
    created with :func:`index_mapping` when missing (``recreate`` drops it first). Requires Ray initialised (or
    initialises a local one). ``resources`` (``mining.resources``, e.g. ``{cpu_pool: 1}``) places the actors on
    that node pool.
    """
    import ray

    os_cfg = os_cfg or OpenSearchConfig()
    client = client or make_client(os_cfg)
    index = index or os_cfg.index
    corpus = data.corpus
    with_date = corpus.column("date").null_count < corpus.num_rows if corpus.num_rows else False
    mode = bm25_mode if bm25_analyzer or bm25_mode != "whitespace" else "standard"
    mapping = index_mapping(with_date=with_date, bm25_mode=mode, encoder=encoder)
    forced = prepare_index(client, index, mapping, encoder, recreate=recreate, force=force)
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
        **placement_args(resources),
    )
    rows_by_id = {r["doc_id"]: r for r in corpus.to_pylist()}
    report = IndexReport(index=index, forced=forced)

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


# --------------------------------------------------------------------------------------------- bulk from workers
#: index settings for a bulk load: no periodic refresh, no replicas to copy to, translog fsync in the background.
BULK_LOAD_SETTINGS = {"refresh_interval": "-1", "number_of_replicas": 0, "translog.durability": "async"}


@contextmanager
def bulk_load_settings(client, index: str, enabled: bool = True) -> Iterator[dict[str, Any]]:
    """Apply :data:`BULK_LOAD_SETTINGS` to ``index`` for the duration of a load and restore the previous values
    afterwards, also when the load fails (yields the previous values)."""
    if not enabled:
        yield {}
        return
    current = client.indices.get_settings(index=index, include_defaults=True, flat_settings=True)[index]
    previous = {
        key: current.get("settings", {}).get(f"index.{key}", current.get("defaults", {}).get(f"index.{key}"))
        for key in BULK_LOAD_SETTINGS
    }
    client.indices.put_settings(index=index, body={"index": BULK_LOAD_SETTINGS})
    try:
        yield previous
    finally:
        client.indices.put_settings(index=index, body={"index": previous})


class _EncodeIndexActor:
    """Ray Data actor: encodes a batch of documents and bulk-writes it to OpenSearch itself (no driver hop).

    Each actor owns an OpenSearch client; ``streaming_bulk`` retries 429 (the server's back-pressure) with
    exponential back-off; a batch whose bulk request fails as a whole raises, which fails the dataset (the driver
    reports how much was written). Output: one row per document with its outcome, so the driver can count.
    """

    def __init__(
        self,
        encoder_factory: Callable[[], TermEncoder],
        bm25_analyzer: str | None,
        raw_bm25: bool,
        os_cfg: OpenSearchConfig,
        url: str,
        index: str,
        bulk_batch_size: int,
        max_retries: int,
    ) -> None:
        from raysparse.analyzers import get_analyzer

        self.encoder = encoder_factory()
        self.analyze = get_analyzer(bm25_analyzer) if bm25_analyzer else None
        self.raw_bm25 = raw_bm25
        self.client = make_client(os_cfg, url=url)
        self.index = index
        self.bulk_batch_size = bulk_batch_size
        self.max_retries = max_retries

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        rows = [dict(zip(batch.keys(), values, strict=True)) for values in zip(*batch.values(), strict=True)]
        outcome: dict[int, str] = {}
        valid = []
        for i, row in enumerate(rows):
            if row.get("doc_id") is None or str(row["doc_id"]) == "":
                outcome[i] = "skip:missing doc_id"
            elif not isinstance(row.get("text"), str) or not row["text"].strip():
                outcome[i] = "skip:empty text"
            else:
                valid.append(i)
        report = IndexReport(index=self.index)
        chosen = [rows[i] for i in valid]
        bodies = list(_encode_batch(chosen, self.encoder, self.analyze, report))
        if self.raw_bm25:
            for row, body in zip(chosen, bodies, strict=True):
                body[BM25_FIELD] = _doc_text(row)
        bulk_index(
            self.client,
            self.index,
            bodies,
            self.bulk_batch_size,
            self.max_retries,
            refresh=False,
            report=report,
        )
        failed = {f["doc_id"]: f for f in report.failed}
        for i in valid:
            doc_id = str(rows[i]["doc_id"])
            outcome[i] = "fail:" + json.dumps(failed[doc_id]) if doc_id in failed else "ok"
        return {
            "doc_id": [str(r.get("doc_id")) for r in rows],
            "outcome": [outcome[i] for i in range(len(rows))],
            "terms": [json.dumps(report.terms.as_dict())] + [""] * (len(rows) - 1),
            "writer": [os.getpid()] * len(rows),
        }


WRITER_START_TIMEOUT_S = 600


def index_corpus_on_workers(
    data,
    encoder_factory: Callable[[], TermEncoder],
    os_cfg: OpenSearchConfig | None = None,
    *,
    client=None,
    index: str | None = None,
    bm25_analyzer: str | None = "bigram",
    bm25_mode: str = "whitespace",
    recreate: bool = False,
    encoder: Mapping[str, Any] | None = None,
    force: bool = False,
    batch_size: int = 64,
    num_actors: int = 2,
    num_cpus_per_actor: float = 0.5,
    bulk_settings: bool = True,
    url: str | None = None,
    resources: dict[str, float] | None = None,
) -> IndexReport:
    """Encode and bulk-index from Ray Data workers straight into OpenSearch (parallel bulk writers).

    ``data`` is a RetrievalData (its corpus table) or a ``ray.data.Dataset`` with ``doc_id``/``title``/``text``
    columns that workers read themselves (e.g. ``ray.data.read_parquet``), so documents never pass through the
    driver. ``num_actors`` writers run concurrently, each retrying 429s with back-off. ``bulk_settings`` applies
    :data:`BULK_LOAD_SETTINGS` during the load and restores them. After a refresh the index's count is checked
    against the distinct ids written; a shortfall raises. A failed bulk request raises :class:`IndexInterrupted`
    with the count of documents from the batches that had finished. ``resources`` (``mining.resources``) places
    the writers on that node pool.
    """
    import ray

    os_cfg = os_cfg or OpenSearchConfig()
    client = client or make_client(os_cfg)
    index = index or os_cfg.index
    mode = bm25_mode if bm25_analyzer or bm25_mode != "whitespace" else "standard"
    if isinstance(data, ray.data.Dataset):
        dataset = data
        with_date = "date" in dataset.schema().names
    else:
        corpus = data.corpus
        with_date = corpus.column("date").null_count < corpus.num_rows if corpus.num_rows else False
        columns = ["doc_id", "title", "text"] + (["date"] if with_date else [])
        # one table is one block, and one block feeds one actor: slice it so every writer gets work
        table = corpus.select(columns)
        blocks = max(1, min(table.num_rows, 4 * num_actors))
        step = -(-table.num_rows // blocks) if table.num_rows else 1
        dataset = ray.data.from_arrow([table.slice(i, step) for i in range(0, max(table.num_rows, 1), step)])
    mapping = index_mapping(with_date=with_date, bm25_mode=mode, encoder=encoder)
    forced = prepare_index(client, index, mapping, encoder, recreate=recreate, force=force)
    report = IndexReport(index=index, forced=forced)
    start = time.perf_counter()
    written = dataset.map_batches(
        _EncodeIndexActor,
        fn_constructor_args=(
            encoder_factory,
            bm25_analyzer if mode == "whitespace" else None,
            mode != "whitespace",
            os_cfg,
            url or os_cfg.url,
            index,
            os_cfg.bulk_batch_size,
            os_cfg.max_retries,
        ),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus_per_actor,
        **placement_args(resources),
    )
    # every writer is up before the first block is handed out; else, on a busy node, the first actor to finish its
    # start-up takes every block and the others never write (Ray Data's default is not to wait). A cluster that
    # cannot place the pool fails after this long instead of waiting forever.
    written.context.wait_for_min_actors_s = WRITER_START_TIMEOUT_S
    ids: set[str] = set()
    writers: set[int] = set()
    with bulk_load_settings(client, index, enabled=bulk_settings):
        try:
            for row in written.iter_rows():
                writers.add(int(row["writer"]))
                status = str(row["outcome"])
                if status == "ok":
                    ids.add(str(row["doc_id"]))
                elif status.startswith("fail:"):
                    report.failed.append(json.loads(status[5:]))
                else:
                    report.skip(status[5:])
                if row["terms"]:
                    terms = json.loads(row["terms"])
                    report.terms.merge(SanitizeReport(**terms))
        except Exception as exc:  # a worker's bulk request failed as a whole (server gone, 5xx after retries)
            cause = getattr(exc, "cause", None)  # Ray's task error wraps the worker's exception
            if isinstance(
                cause, AccessDenied
            ):  # a refusal is the same for every batch: say it, no count dance
                raise AccessDenied(str(cause)) from exc
            report.indexed = len(ids)
            report.seconds = time.perf_counter() - start
            raise IndexInterrupted(
                f"index {index!r}: a worker's bulk request failed ({_short(exc)}); stopped with "
                f"{report.indexed} documents written by the batches that had finished",
                report,
            ) from exc
    report.indexed = len(ids)
    report.writers = len(writers)
    client.indices.refresh(index=index)
    report.doc_count = int(client.count(index=index)["count"])
    report.seconds = time.perf_counter() - start
    if report.doc_count < report.indexed:
        raise OpenSearchError(
            f"index {index!r} holds {report.doc_count} documents after workers wrote {report.indexed} distinct ids"
        )
    return report
