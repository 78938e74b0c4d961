"""The generation stage: documents → prompts → model replies → parsed queries, in resumable Parquet shards.

:func:`generate_for_batch` is the plain core (a batch of CORPUS rows in, :data:`RAW` columns out); it runs in this
process or inside ``Dataset.map_batches`` (one actor per in-flight request: ``generate.concurrency``). The driver
writes each finished batch as ``OUT/raw/part-*.parquet`` (temp file + rename, so a shard is whole or absent) as
soon as it arrives; a restarted run reads the shards and skips every document that already has a reply for the same
prompt version and model. Documents whose request failed get a row with ``error`` set and are tried again on the
next run; with ``generate.on_error=raise`` the driver stops at the first such row (after writing its shard) and
raises :class:`~raysparse.generate.clients.LLMRequestError` naming the document, URL and status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raysparse.generate.clients import LLMRequestError, make_client
from raysparse.generate.prompts import PromptTemplate, load_prompt, parse_queries

log = logging.getLogger(__name__)

# One row per (document, attempt that finished): everything the model returned, kept with the prompt version.
RAW = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
        pa.field("api", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),  # the model the server says answered (else requested)
        pa.field("requested_model", pa.string(), nullable=False),
        pa.field("reply", pa.string()),  # the raw reply text, null when the request failed
        pa.field("queries", pa.list_(pa.string()), nullable=False),  # parsed from the reply
        pa.field("parse_error", pa.string()),  # why no query could be parsed (null = parsed)
        pa.field("error", pa.string()),  # why the request failed for good (null = a reply came back)
        pa.field("error_kind", pa.string()),
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("latency_s", pa.float32()),
        pa.field("meta", pa.string()),  # JSON: finish/done reason, token counts, as the server reported them
        pa.field("generated_at", pa.timestamp("s", tz="UTC"), nullable=False),
    ]
)


def _col(batch: Any, name: str) -> list:
    values = batch.column(name) if isinstance(batch, pa.Table) else batch[name]
    return values.to_pylist() if hasattr(values, "to_pylist") else list(values)


def generate_for_batch(
    batch: Any, client: Any, cfg: Any, prompt: PromptTemplate | None = None, on_error: str | None = None
) -> dict[str, pa.Array]:
    """Prompt the model once per document of ``batch`` (columns doc_id, text, optional title).

    Returns :data:`RAW` columns. A request that fails for good becomes a row with ``error`` set
    (``on_error``, default ``cfg.on_error``, is ``"record"``) or raises :class:`LLMRequestError` naming the
    document (``"raise"``). The stage's workers always record, so a batch's finished replies are never lost; the
    driver raises instead (see :func:`run_generation`).
    """
    import json

    prompt = prompt or load_prompt(cfg.prompt)
    doc_ids = _col(batch, "doc_id")
    texts = _col(batch, "text")
    has_title = (isinstance(batch, pa.Table) and "title" in batch.column_names) or (
        not isinstance(batch, pa.Table) and "title" in batch
    )
    titles = _col(batch, "title") if has_title else [None] * len(doc_ids)
    rows: list[dict[str, Any]] = []
    for doc_id, title, text in zip(doc_ids, titles, texts, strict=True):
        rendered = prompt.render(title, (text or "")[: cfg.max_doc_chars], cfg.num_queries)
        now = int(time.time())
        try:
            completion = client.complete(rendered, doc_id=doc_id)
        except LLMRequestError as err:
            if (on_error or cfg.on_error) == "raise":
                raise
            log.warning("%s", err)
            rows.append(
                {
                    "doc_id": doc_id,
                    "prompt_version": prompt.version,
                    "api": client.api,
                    "model": client.model,
                    "requested_model": client.model,
                    "reply": None,
                    "queries": [],
                    "parse_error": None,
                    "error": str(err),
                    "error_kind": err.kind,
                    "attempts": err.attempts,
                    "latency_s": None,
                    "meta": json.dumps({"url": err.url, "status": err.status, "reason": err.reason}),
                    "generated_at": now,
                }
            )
            continue
        queries, parse_error = parse_queries(completion.text)
        rows.append(
            {
                "doc_id": doc_id,
                "prompt_version": prompt.version,
                "api": client.api,
                "model": completion.model,
                "requested_model": client.model,
                "reply": completion.text,
                "queries": queries,
                "parse_error": parse_error,
                "error": None,
                "error_kind": None,
                "attempts": completion.attempts,
                "latency_s": completion.latency_s,
                "meta": json.dumps(completion.meta, ensure_ascii=False, default=str),
                "generated_at": now,
            }
        )
    table = pa.Table.from_pylist(rows, schema=RAW)
    return {name: table.column(name).combine_chunks() for name in RAW.names}


# ------------------------------------------------------------------------------------------------------ shards
def write_shard(columns: dict[str, Any] | pa.Table, raw_dir: str | Path) -> Path | None:
    """Write one finished batch as a Parquet shard atomically (temp name, then rename)."""
    table = columns if isinstance(columns, pa.Table) else pa.Table.from_pydict(dict(columns), schema=RAW)
    if table.num_rows == 0:
        return None
    raw = Path(raw_dir)
    raw.mkdir(parents=True, exist_ok=True)
    name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = raw / f".{name}.tmp"
    pq.write_table(table.cast(RAW), tmp)
    os.replace(tmp, raw / name)
    return raw / name


def read_raw(raw_dir: str | Path) -> pa.Table:
    """Every shard under ``raw_dir`` (in write order); unfinished temp files are ignored."""
    raw = Path(raw_dir)
    shards = sorted(raw.glob("part-*.parquet")) if raw.is_dir() else []
    if not shards:
        return RAW.empty_table()
    return pa.concat_tables([pq.read_table(s).cast(RAW) for s in shards])


def done_doc_ids(raw: pa.Table, prompt_version: str, model: str) -> set[str]:
    """Documents that already have a reply (not an error) for this prompt version and requested model."""
    out = set()
    for doc_id, version, requested, error in zip(
        _col(raw, "doc_id"),
        _col(raw, "prompt_version"),
        _col(raw, "requested_model"),
        _col(raw, "error"),
        strict=True,
    ):
        if version == prompt_version and requested == model and error is None:
            out.add(doc_id)
    return out


def latest_rows(raw: pa.Table, prompt_version: str, model: str) -> pa.Table:
    """One row per document for this prompt version and model: its reply if any try succeeded, else its last
    error. Rows of other prompt versions/models stay in the shards but are not used."""
    errors = _col(raw, "error")
    chosen: dict[str, int] = {}
    for i, (doc_id, version, requested) in enumerate(
        zip(_col(raw, "doc_id"), _col(raw, "prompt_version"), _col(raw, "requested_model"), strict=True)
    ):
        if version != prompt_version or requested != model:
            continue
        prev = chosen.get(doc_id)
        if prev is None or errors[prev] is not None:  # a reply is never replaced; an error by any later row
            chosen[doc_id] = i
    ids = _col(raw, "doc_id")
    rows = sorted(chosen.values(), key=lambda i: ids[i])
    return raw.take(pa.array(rows, pa.int64())) if rows else RAW.empty_table()


def request_error_of(table: pa.Table) -> LLMRequestError:
    """The first failed request of a RAW table as the error the client raised (document, URL, status, reason)."""
    import json

    for row in table.to_pylist():
        if row["error"] is not None:
            meta = json.loads(row["meta"] or "{}")
            return LLMRequestError(
                row["doc_id"],
                meta.get("url", "?"),
                meta.get("status"),
                meta.get("reason", row["error"]),
                row["attempts"],
            )
    raise ValueError("no failed request in this table")


# -------------------------------------------------------------------------------------------------- execution
@dataclass
class GenerationRun:
    """What one call of :func:`run_generation` did."""

    docs_total: int = 0
    docs_skipped_done: int = 0  # already generated by an earlier run (resume)
    docs_requested: int = 0
    replies: int = 0
    request_errors: dict[str, int] = field(default_factory=dict)
    shards_written: int = 0
    mode: str = "in-process"
    concurrency: int = 1
    seconds: float = 0.0


class _GenerateActor:
    """Ray Data actor: one client (one request in flight at a time, one kept-alive connection) for its lifetime."""

    def __init__(self, cfg_dict: dict[str, Any], prompt: PromptTemplate) -> None:
        from raysparse.config import GenerateConfig

        self.cfg = GenerateConfig.model_validate(cfg_dict)
        # an API key and proxies come from this process's env (runtime_env on clusters)
        self.client = make_client(self.cfg, max_connections=1)
        self.prompt = prompt  # read by the driver: a user's template file need not exist on the worker nodes

    def __call__(self, batch: pa.Table) -> pa.Table:
        columns = generate_for_batch(batch, self.client, self.cfg, self.prompt, on_error="record")
        return pa.Table.from_pydict(columns, schema=RAW)


def _batches(todo: pa.Table, size: int) -> list[pa.Table]:
    return [todo.slice(s, size) for s in range(0, todo.num_rows, size)]


def _in_process(todo: pa.Table, cfg: Any, client: Any, prompt: PromptTemplate) -> Iterator[pa.Table]:
    """Threads bound the in-flight requests to ``cfg.concurrency``; shards come back as batches finish."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    batches = _batches(todo, cfg.batch_size)
    # one client shared by the threads: its keep-alive pool holds up to generate.concurrency connections
    shared = client if client is not None else make_client(cfg)
    with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:

        def work(batch: pa.Table) -> pa.Table:
            return pa.Table.from_pydict(
                generate_for_batch(batch, shared, cfg, prompt, on_error="record"), schema=RAW
            )

        pending = {pool.submit(work, b) for b in batches}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        finally:
            for fut in pending:
                fut.cancel()
            if client is None:
                pool.shutdown(wait=True)  # no thread may still be using the pool's connections
                shared.close()


def _with_ray(todo: pa.Table, cfg: Any, prompt: PromptTemplate) -> Iterator[pa.Table]:
    """A Ray Data actor pool of ``cfg.concurrency`` actors; blocks are yielded as they finish (streaming)."""
    import ray
    from ray.data import ActorPoolStrategy

    from raysparse.ray_utils import check_placement, init_ray, nodes_cpus, placement_args

    init_ray()
    # Requests wait on the server, not on our CPUs, but every actor needs some CPU share: cap the share so that the
    # whole pool fits the nodes it may use (a pool that cannot be placed would wait forever on a small machine).
    nodes = check_placement(cfg.resources, "generate.resources")
    total = nodes_cpus(nodes)
    cpus = min(cfg.cpus_per_worker, max(0.01, 0.9 * total / cfg.concurrency))
    ds = ray.data.from_arrow(_batches(todo, cfg.batch_size))
    out = ds.map_batches(
        _GenerateActor,
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=cfg.concurrency),
        fn_constructor_args=(cfg.model_dump(), prompt),
        num_cpus=cpus,
        **placement_args(cfg.resources),
    )
    # batch_size=None: each actor's output block as it is produced (streaming, not after the whole dataset)
    yield from out.iter_batches(batch_size=None, batch_format="pyarrow")


def run_generation(
    corpus: pa.Table,
    cfg: Any,
    out_dir: str | Path,
    *,
    ray: bool = True,
    client: Any = None,
    show_progress: bool = True,
) -> GenerationRun:
    """Generate for every document of ``corpus`` (CORPUS schema) that has no reply yet under ``out_dir/raw``.

    ``ray=True`` runs :func:`generate_for_batch` in a Ray Data actor pool; ``ray=False`` in threads of this process
    (with ``client`` if given, e.g. one with a custom ``sleep``). Each finished batch is a shard on disk before the
    next one is awaited, so an interrupted run loses at most the batches in flight.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    prompt = load_prompt(cfg.prompt)
    if not cfg.model:
        raise ValueError("generate.model is not set: name the model the server should run (--model)")
    raw_dir = Path(out_dir) / "raw"
    done = done_doc_ids(read_raw(raw_dir), prompt.version, cfg.model)
    doc_ids = corpus.column("doc_id").to_pylist()
    keep = [i for i, d in enumerate(doc_ids) if d not in done]
    run = GenerationRun(
        docs_total=corpus.num_rows,
        docs_skipped_done=corpus.num_rows - len(keep),
        docs_requested=len(keep),
        mode="ray" if ray else "in-process",
        concurrency=cfg.concurrency,
    )
    if keep:
        cols = [c for c in ("doc_id", "title", "text") if c in corpus.column_names]
        todo = corpus.select(cols).take(pa.array(keep, pa.int64()))
        stream = _with_ray(todo, cfg, prompt) if ray else _in_process(todo, cfg, client, prompt)
        # closing(): when this loop stops early (on_error=raise, Ctrl-C) the producer stops now (pending batches
        # cancelled, the one in flight awaited, Ray Data's executor shut down), not whenever it is garbage-collected
        with (
            contextlib.closing(stream),
            tqdm(total=todo.num_rows, desc="generate", unit="doc", disable=not show_progress) as bar,
        ):
            for table in stream:
                if write_shard(table, raw_dir) is not None:
                    run.shards_written += 1
                errors = table.column("error_kind").to_pylist()
                run.replies += sum(1 for e in errors if e is None)
                for e in errors:
                    if e is not None:
                        run.request_errors[e] = run.request_errors.get(e, 0) + 1
                bar.update(table.num_rows)
                if cfg.on_error == "raise" and any(e is not None for e in errors):
                    raise request_error_of(table)
    run.seconds = time.perf_counter() - t0
    return run
