"""The mining stage: corpus analysis → index → mining → Parquet shards, in-process or on Ray Data.

Ray is a thin layer over the pure cores of :mod:`raysparse.mining.index` and :mod:`raysparse.mining.negatives`:

- **Analysis** runs as Ray Data tasks (``analyze_documents`` per batch, retried when a node is lost); one builder
  task on a worker consumes the analysed stream in corpus order (``preserve_order``) and builds the index, which
  it returns into the object store. The driver holds only object references — O(batch), never O(corpus).
  (Measured alternative: analysing on workers and building on the driver needs the whole posting list on the
  driver; shipping per-shard token ids to a worker costs the same transfer, so the builder runs there.)
- **Mining** runs in a Ray Data actor pool; every actor maps the shared index zero-copy, mines one shard of
  ``shard_rows`` queries per call (in sub-batches of ``batch_size``) and writes it itself as
  ``triples/part-NNNNN.parquet`` (atomic rename; a retried shard rewrites the same bytes). The driver receives one
  small statistics row per shard.
- **Small inputs** (fewer than ``in_process_below`` queries and documents) run in this process: same functions,
  same files, no Ray start-up.

Output files depend only on the data and the config, not on the mode, the workers or the nodes (tested).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raysparse.config import MiningConfig
from raysparse.mining.index import Bm25Index, IndexBuilder, analyze_documents
from raysparse.mining.negatives import mine_batch, triples_table
from raysparse.ray_utils import placement_args
from raysparse.schemas import TRIPLES, RetrievalData

log = logging.getLogger(__name__)

TRIPLES_DIR = "triples"
TRIPLES_FILE = TRIPLES_DIR  # kept for importers: the triples are a directory of shards under this name
REPORT_FILE = "mining_report.json"

SHARD_STATS = pa.schema(
    [
        ("shard", pa.int64()),
        ("rows", pa.int64()),
        ("hard", pa.int64()),
        ("random", pa.int64()),
        ("short_of_hard", pa.int64()),
        ("triples", pa.int64()),
    ]
)


def shard_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


# ------------------------------------------------------------------------------------------------ report


@dataclass
class MiningReport:
    """What :func:`mine` did; written next to the triples as ``mining_report.json``."""

    queries_in: int = 0
    queries_mined: int = 0
    triples: int = 0  # (query, positive, negative) combinations = sum over rows of |positives| * |negatives|
    hard_negatives: int = 0
    random_negatives: int = 0
    queries_short_of_hard: int = 0  # fewer than num_hard_negatives hard negatives (few BM25 matches)
    positives_not_in_corpus: int = 0  # judgements dropped because the doc id is not in the corpus
    skipped: dict[str, int] = field(default_factory=dict)  # queries skipped, by reason
    num_docs: int = 0
    analyzer: str = ""
    mode: str = "in-process"  # or "ray"
    workers: int = 1
    shards: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds: index_build, mining, total
    queries_per_second: float = 0.0  # mining phase only (tokenise queries + retrieve + select + write shards)
    steady_queries_per_second: float = 0.0  # the same after the first shard came back (start-up excluded)
    output: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items())) or "none"
        return (
            f"mined {self.queries_mined}/{self.queries_in} queries over {self.num_docs} documents "
            f"({self.hard_negatives} hard + {self.random_negatives} random negatives, {self.mode}, "
            f"{self.workers} worker(s), {self.queries_per_second:.0f} q/s); skipped: {skipped}"
        )


# ------------------------------------------------------------------------------------------------ queries


def prepare_queries(data: RetrievalData, index: Bm25Index, report: MiningReport) -> pa.Table:
    """Join queries with their positives (qrels score > 0) and resolve them to corpus rows (vectorised lookup).

    Skipped queries are counted in ``report.skipped`` by reason; nothing is dropped silently.
    Returns columns query_id, query, positive_ids, positive_rows (sorted by query_id).
    """
    qrels = data.qrels.filter(pc.greater(data.qrels.column("score"), 0))
    rows = index.rows_of(qrels.column("doc_id").combine_chunks())
    positives: dict[str, list[tuple[str, int]]] = {}
    for qid, did, row in zip(
        qrels.column("query_id").to_pylist(), qrels.column("doc_id").to_pylist(), rows.tolist(), strict=True
    ):
        lst = positives.setdefault(qid, [])
        if all(d != did for d, _ in lst):
            lst.append((did, row))
    out_ids: list[str] = []
    out_text: list[str] = []
    out_pos: list[list[str]] = []
    out_rows: list[list[int]] = []
    seen: set[str] = set()
    q_ids = data.queries.column("query_id").to_pylist()
    q_text = data.queries.column("text").to_pylist()
    report.queries_in = len(q_ids)
    for qid, text in zip(q_ids, q_text, strict=True):
        if qid in seen:
            report.skip("duplicate query_id")
            continue
        seen.add(qid)
        if not text or not text.strip():
            report.skip("empty query text")
            continue
        pids = positives.get(qid)
        if not pids:
            report.skip("no positive judgement in qrels")
            continue
        kept = [(p, r) for p, r in pids if r >= 0]
        report.positives_not_in_corpus += len(pids) - len(kept)
        if not kept:
            report.skip("no positive in corpus")
            continue
        out_ids.append(qid)
        out_text.append(text)
        out_pos.append([p for p, _ in kept])
        out_rows.append([r for _, r in kept])
    table = pa.table(
        {
            "query_id": pa.array(out_ids, pa.string()),
            "query": pa.array(out_text, pa.string()),
            "positive_ids": pa.array(out_pos, pa.list_(pa.string())),
            "positive_rows": pa.array(out_rows, pa.list_(pa.int64())),
        }
    )
    table = table.sort_by("query_id")
    return table.append_column("position", pa.array(np.arange(table.num_rows, dtype=np.int64)))


def _prepare_remote(
    index: Bm25Index, data: RetrievalData, report: MiningReport
) -> tuple[pa.Table, MiningReport, int]:
    return prepare_queries(data, index, report), report, index.num_docs


# ------------------------------------------------------------------------------------------------ shards


def mine_shard_table(index: Bm25Index, table: pa.Table, cfg: MiningConfig, threads: int = 1) -> pa.Table:
    """Mine one shard of prepared queries in sub-batches of ``batch_size`` → one TRIPLES table."""
    parts = [
        triples_table(mine_batch(index, table.slice(s, cfg.batch_size), cfg, threads))
        for s in range(0, table.num_rows, cfg.batch_size)
    ]
    return pa.concat_tables(parts).combine_chunks() if parts else TRIPLES.empty_table()


def write_shard(out: pa.Table, out_dir: str | Path, shard: int) -> Path:
    """Write a shard atomically as ``out_dir/triples/part-NNNNN.parquet`` (same rows → same bytes)."""
    import pyarrow.parquet as pq

    path = Path(out_dir) / TRIPLES_DIR / shard_name(shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(out.replace_schema_metadata(None), tmp, row_group_size=4096, compression="zstd")
    os.replace(tmp, path)  # a retried shard replaces the same bytes; readers never see half a file
    return path


def shard_stats(out: pa.Table, shard: int, cfg: MiningConfig) -> dict:
    """The shard's :data:`SHARD_STATS` row (what the report sums; computed with Arrow/numpy)."""
    kinds = pc.list_flatten(out.column("negative_kinds"))
    is_hard = pc.equal(kinds, "hard").to_numpy(zero_copy_only=False)
    neg_len = pc.list_value_length(out.column("negative_ids")).to_numpy(zero_copy_only=False)
    pos_len = pc.list_value_length(out.column("positive_ids")).to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(out.num_rows), neg_len)
    hard_per_row = np.bincount(owner[is_hard], minlength=out.num_rows)
    return {
        "shard": shard,
        "rows": out.num_rows,
        "hard": int(is_hard.sum()),
        "random": int(len(is_hard) - is_hard.sum()),
        "short_of_hard": int((hard_per_row < cfg.num_hard_negatives).sum()),
        "triples": int((pos_len * neg_len).sum()),
    }


def mine_shard(
    index: Bm25Index, table: pa.Table, cfg: MiningConfig, out_dir: str | Path, shard: int, threads: int = 1
) -> dict:
    """Mine, write and summarise one shard (what each Ray actor call does)."""
    out = mine_shard_table(index, table, cfg, threads)
    write_shard(out, out_dir, shard)
    return shard_stats(out, shard, cfg)


def _shards_of(batch: pa.Table, cfg: MiningConfig, total: int) -> list[tuple[int, pa.Table]]:
    """Split a batch by shard number (position // shard_rows); every shard must be whole (else its file would be
    written from two places with different contents)."""
    pos = batch.column("position").to_numpy()
    shard_of = pos // cfg.shard_rows
    out = []
    for shard in np.unique(shard_of):
        rows = batch.filter(pa.array(shard_of == shard))
        expected = min(cfg.shard_rows, total - int(shard) * cfg.shard_rows)
        if rows.num_rows != expected:
            raise RuntimeError(
                f"mining shard {int(shard)} arrived split ({rows.num_rows} of {expected} rows in one batch); "
                "batches must hold whole shards"
            )
        out.append((int(shard), rows))
    return out


class _MinerActor:
    """Ray Data actor: resolves the shared index once (zero-copy for its arrays), mines and writes whole shards."""

    def __init__(self, index_ref_holder: list, cfg_dict: dict[str, Any], out_dir: str, total: int):
        import ray

        self.index: Bm25Index = ray.get(index_ref_holder[0])
        self.cfg = MiningConfig.model_validate(cfg_dict)
        self.out_dir = out_dir
        self.total = total
        self.index.analyze(["warm up"])  # load Kiwi / the tokenizer before the first batch
        self.index.vocab  # noqa: B018  (build the term dict before the first batch)

    def __call__(self, batch: pa.Table) -> pa.Table:
        stats = [
            mine_shard(self.index, rows, self.cfg, self.out_dir, shard)
            for shard, rows in _shards_of(batch, self.cfg, self.total)
        ]
        return pa.Table.from_pylist(stats, schema=SHARD_STATS)


def _ray_pool(cfg: MiningConfig) -> tuple[int, float]:
    """Pool size and per-actor CPUs: one actor per CPU of the nodes that satisfy ``mining.resources`` by default,
    with fractional CPUs so that actors plus Ray Data's own bookkeeping never ask for more than those nodes have
    (the documented 2-CPU hang). A fixed-size pool larger than what the eligible nodes can host would never start."""
    from raysparse.ray_utils import check_placement, nodes_cpus

    nodes = check_placement(cfg.resources, "mining.resources")
    total = nodes_cpus(nodes)
    slots = 0
    for n in nodes:
        res = n.get("Resources", {})
        per_node = int(res.get("CPU", 0.0))
        for k, v in cfg.resources.items():
            per_node = min(per_node, int(res.get(k, 0.0) // v)) if v > 0 else per_node
        slots += per_node
    workers = cfg.num_workers or max(1, slots)
    cpus = min(cfg.cpus_per_worker, max(0.1, 0.9 * total / workers))
    return workers, cpus


def mine_dataset(
    queries: Any,
    index_ref: Any,
    cfg: MiningConfig,
    workers: int,
    cpus_per_worker: float,
    out_dir: str,
    total: int,
) -> Any:
    """Ray Data building block: prepared queries (blocks of whole shards) → Dataset of :data:`SHARD_STATS` rows,
    the shards themselves written by the actors under ``out_dir/triples/``.

    Actors ask for ``mining.resources`` on top of their CPUs (placement: e.g. ``{cpu_pool: 1}`` keeps them on the
    CPU node type of cluster.yaml). They restart without limit and their batches are retried when a node is lost:
    the index they read is owned by the driver, and shards are pure functions of their rows written by atomic
    rename, so a re-run shard yields the same file and nothing is lost or duplicated. ``out_dir`` must be visible
    to every node (shared storage) on a multi-machine cluster.
    """
    from ray.data import ActorPoolStrategy

    remote_args: dict[str, Any] = {
        "max_restarts": -1,
        "max_task_retries": -1,
        **placement_args(cfg.resources),
    }
    return queries.map_batches(
        _MinerActor,
        batch_size=cfg.shard_rows,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=workers),
        fn_constructor_args=([index_ref], cfg.model_dump(), str(out_dir), total),
        num_cpus=cpus_per_worker,
        zero_copy_batch=True,
        **remote_args,
    )


# ------------------------------------------------------------------------------------------------ analysis on Ray


def analysis_dataset(corpus: Any, cfg: MiningConfig) -> Any:
    """Ray Data building block: a Dataset of CORPUS rows → Dataset of :data:`~raysparse.mining.index.ANALYSED`
    rows (tasks, one per ``analysis_batch_size`` documents, retried on node loss; Kiwi loads once per worker).

    The tasks ask for ``mining.resources`` like the mining actors (:func:`raysparse.ray_utils.placement_args`).
    """
    return corpus.map_batches(
        analyze_documents,
        fn_kwargs={"analyzer": cfg.analyzer, "hf_tokenizer": cfg.hf_tokenizer},
        batch_size=cfg.analysis_batch_size,
        batch_format="pyarrow",
        zero_copy_batch=True,
        num_cpus=1,
        max_retries=-1,
        **placement_args(cfg.resources),
    )


def _build_from_dataset(ds: Any, cfg_dict: dict[str, Any]) -> Bm25Index:
    ds.context.execution_options.preserve_order = True  # corpus order = row order, whatever finished first
    builder = IndexBuilder()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
        builder.add(batch)
    return builder.build(MiningConfig.model_validate(cfg_dict))


def build_index_ray(corpus: Any, cfg: MiningConfig, builder_cpus: float = 0.0) -> Any:
    """Analyse ``corpus`` (a Ray Dataset of CORPUS rows, e.g. ``ray.data.read_parquet``, or an Arrow table) on Ray
    Data workers and build the index in one builder task; returns an ObjectRef to the :class:`Bm25Index`.

    The builder holds the index (postings + texts); the driver holds the reference only.
    """
    import ray

    if isinstance(corpus, pa.Table):
        step = cfg.analysis_batch_size
        corpus = ray.data.from_arrow(
            [corpus.slice(s, step) for s in range(0, corpus.num_rows, step)] or [corpus]
        )
    analysed = analysis_dataset(corpus, cfg)
    task = ray.remote(num_cpus=builder_cpus, max_retries=-1)(_build_from_dataset)
    return task.remote(analysed, cfg.model_dump())


# ------------------------------------------------------------------------------------------------ drivers


def _collect_stats(tables: list[pa.Table], report: MiningReport, workers: int) -> None:
    stats = pa.concat_tables(tables) if tables else SHARD_STATS.empty_table()
    report.shards = stats.num_rows
    report.queries_mined = int(pc.sum(stats.column("rows")).as_py() or 0)
    report.hard_negatives = int(pc.sum(stats.column("hard")).as_py() or 0)
    report.random_negatives = int(pc.sum(stats.column("random")).as_py() or 0)
    report.queries_short_of_hard = int(pc.sum(stats.column("short_of_hard")).as_py() or 0)
    report.triples = int(pc.sum(stats.column("triples")).as_py() or 0)
    report.workers = workers


def _mine_in_process(
    index: Bm25Index,
    queries: pa.Table,
    cfg: MiningConfig,
    out_dir: Path,
    report: MiningReport,
    show_progress: bool,
) -> None:
    """The top-k kernel on ``mining.threads`` numba threads, and each shard's Parquet write (compression, outside
    the GIL) overlapped with mining the next one."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    threads = cfg.threads or (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    stats = []
    t0 = time.perf_counter()
    first_at, first_rows = None, 0
    with (
        ThreadPoolExecutor(max_workers=1) as writer,
        tqdm(total=queries.num_rows, desc="mine", unit="q", disable=not show_progress) as bar,
    ):
        pending = []
        for shard, start in enumerate(range(0, queries.num_rows, cfg.shard_rows)):
            out = mine_shard_table(index, queries.slice(start, cfg.shard_rows), cfg, threads)
            pending.append(writer.submit(write_shard, out, out_dir, shard))
            stats.append(shard_stats(out, shard, cfg))
            if first_at is None:
                first_at, first_rows = time.perf_counter(), out.num_rows
            bar.update(out.num_rows)
        for f in pending:
            f.result()
    _steady(report, queries.num_rows, t0, first_at, first_rows)
    _collect_stats([pa.Table.from_pylist(stats, schema=SHARD_STATS)], report, 1)


def _steady(report: MiningReport, n: int, t0: float, first_at: float | None, first_rows: int) -> None:
    end = time.perf_counter()
    report.queries_per_second = n / (end - t0) if end > t0 else 0.0
    if first_at is not None and n > first_rows and end > first_at:
        report.steady_queries_per_second = (n - first_rows) / (end - first_at)
    else:
        report.steady_queries_per_second = report.queries_per_second


def _mine_with_ray(
    index_ref: Any, queries: pa.Table, cfg: MiningConfig, out_dir: Path, report: MiningReport
) -> None:
    import ray

    workers, cpus = _ray_pool(cfg)
    # Blocks of whole shards so that the pool gets work right away and a shard never straddles two batches.
    blocks = [queries.slice(s, cfg.shard_rows) for s in range(0, queries.num_rows, cfg.shard_rows)]
    ds = ray.data.from_arrow(blocks or [queries])
    out = mine_dataset(ds, index_ref, cfg, workers, cpus, str(out_dir), queries.num_rows)
    tables = []
    t0 = time.perf_counter()
    first_at, first_rows = None, 0
    for batch in out.iter_batches(batch_size=None, batch_format="pyarrow"):
        tables.append(batch)
        if first_at is None and batch.num_rows:
            first_at, first_rows = time.perf_counter(), int(pc.sum(batch.column("rows")).as_py())
    _steady(report, queries.num_rows, t0, first_at, first_rows)
    _collect_stats(tables, report, workers)


def read_triples(path: str | Path) -> pa.Table:
    """Read mined triples: a :func:`mine` output directory, its ``triples/`` shard directory, or one Parquet file."""
    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_dir() and (p / TRIPLES_DIR).is_dir():
        p = p / TRIPLES_DIR
    if p.is_dir():
        files = sorted(p.glob("part-*.parquet"))
        if not files:
            raise FileNotFoundError(f"{p}: no triples shards (part-*.parquet)")
        return pa.concat_tables([pq.read_table(f, schema=TRIPLES) for f in files])
    return pq.read_table(p, schema=TRIPLES)


def triples_files(out_dir: str | Path) -> dict[str, bytes]:
    """``{shard name: file bytes}`` of a :func:`mine` output (what the byte-identity guarantee compares)."""
    d = Path(out_dir) / TRIPLES_DIR
    return {f.name: f.read_bytes() for f in sorted(d.glob("part-*.parquet"))}


def use_ray(cfg: MiningConfig, num_queries: int, num_docs: int) -> bool:
    """False when the input is small enough that Ray's start-up would cost more than it saves."""
    return not (num_queries < cfg.in_process_below and num_docs < cfg.in_process_below)


def mine(
    data: RetrievalData,
    cfg: MiningConfig,
    out_dir: str | Path,
    ray: bool = True,
    index: Bm25Index | Any | None = None,
    show_progress: bool = True,
) -> MiningReport:
    """Mine TRIPLES for ``data`` into ``out_dir/triples/part-NNNNN.parquet`` and ``out_dir/mining_report.json``.

    ``ray=True`` analyses the corpus and mines on Ray Data (joining the cluster from ``RAY_ADDRESS`` or starting a
    local one) unless the input is below ``mining.in_process_below``; ``ray=False`` runs the same functions in
    this process. Both give identical files. Pass a prebuilt ``index`` (a :class:`Bm25Index` or an ObjectRef to
    one) to reuse it across calls.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    existing = out_dir / TRIPLES_DIR
    if existing.is_dir():  # stale shards from an earlier, larger run would be read back as ours
        for f in existing.glob("part-*.parquet"):
            f.unlink()
    is_ref = index is not None and not isinstance(index, Bm25Index)
    ray = ray and (is_ref or use_ray(cfg, data.queries.num_rows, data.corpus.num_rows))
    report = MiningReport(analyzer=cfg.analyzer, mode="ray" if ray else "in-process", config=cfg.model_dump())
    if ray:
        import ray as ray_module

        from raysparse.ray_utils import init_ray

        init_ray()
        _ray_pool(cfg)  # placement errors before any work starts
        t0 = time.perf_counter()
        index_ref = (
            index
            if is_ref
            else ray_module.put(index)
            if index is not None
            else build_index_ray(data.corpus, cfg)
        )
        if index is None:
            ray_module.wait([index_ref], num_returns=1)
        report.timings["index_build"] = time.perf_counter() - t0 if index is None else 0.0
        # positives are resolved where the index lives (a worker), not on the driver; the corpus stays behind
        no_corpus = RetrievalData(data.corpus.slice(0, 0), data.queries, data.qrels)
        prepare = ray_module.remote(num_cpus=0)(_prepare_remote)
        queries, report, report.num_docs = ray_module.get(prepare.remote(index_ref, no_corpus, report))
        t0 = time.perf_counter()
        if queries.num_rows:
            _mine_with_ray(index_ref, queries, cfg, out_dir, report)
        report.timings["mining"] = time.perf_counter() - t0
        del index_ref
    else:
        t0 = time.perf_counter()
        if index is None:
            index = Bm25Index.build(data.corpus, cfg, show_progress=show_progress)
            report.timings["index_build"] = time.perf_counter() - t0
        else:
            report.timings["index_build"] = 0.0
        report.num_docs = index.num_docs
        queries = prepare_queries(data, index, report)
        t0 = time.perf_counter()
        if queries.num_rows:
            _mine_in_process(index, queries, cfg, out_dir, report, show_progress)
        report.timings["mining"] = time.perf_counter() - t0
    if not queries.num_rows:  # an empty, readable result rather than no file
        mine_shard_empty(out_dir)
    report.output = str(out_dir / TRIPLES_DIR)
    report.timings["total"] = time.perf_counter() - t_start
    out_dir.mkdir(parents=True, exist_ok=True)
    from raysparse.outputs import atomic_write_text  # a killed run never leaves a half report

    atomic_write_text(
        out_dir / REPORT_FILE, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    )
    log.info("%s", report)
    return report


def mine_shard_empty(out_dir: Path) -> None:
    import pyarrow.parquet as pq

    path = out_dir / TRIPLES_DIR / shard_name(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(TRIPLES.empty_table(), path, compression="zstd")
