"""The main job: data -> backbone -> mining -> augmentation -> training -> evaluation, with resumable stages.

Each stage writes into its own folder under ``cfg.output_dir`` together with a ``_stage.json`` holding a content
hash of everything that determines its output (its config section, the hashes of the stages it reads, the input
files). Re-running the pipeline skips a stage whose hash matches, so a crash in training does not redo mining, and
changing ``train.lr`` re-runs only training and evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from raysparse.config import RaySparseConfig, dump_config
from raysparse.schemas import RetrievalData

log = logging.getLogger(__name__)

STAGES = ("data", "backbone", "mine", "augment", "train", "evaluate")


@dataclass
class StageResult:
    name: str
    key: str
    out_dir: Path
    skipped: bool
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineResult:
    stages: list[StageResult]
    model_metrics: dict[str, float] | None
    bm25_metrics: dict[str, float] | None
    results_path: Path | None
    model_dir: Path | None = None  # the model that was evaluated (train/model, or its time-weighted copy)


def fingerprint(obj: Any) -> str:
    """A stable content hash of a JSON-able object (config sections, upstream keys, file digests)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """sha256 of a file, or of every file under a directory (names and contents)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def run_stage(
    name: str, key_obj: Any, out_dir: Path, fn: Callable[[Path], dict[str, Any]], force: bool = False
) -> StageResult:
    """Run ``fn(out_dir)`` unless ``out_dir/_stage.json`` records the same key (then reuse its info)."""
    key = fingerprint(key_obj)
    marker = out_dir / "_stage.json"
    if not force and marker.is_file():
        recorded = json.loads(marker.read_text())
        if recorded.get("key") == key:
            log.info("stage %s: up to date (%s), skipped", name, key)
            return StageResult(name, key, out_dir, True, 0.0, recorded.get("info", {}))
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    info = fn(out_dir) or {}
    seconds = time.perf_counter() - start
    marker.write_text(
        json.dumps({"key": key, "seconds": round(seconds, 2), "info": info}, indent=2, default=str)
    )
    return StageResult(name, key, out_dir, False, seconds, info)


def _query_groups(data: RetrievalData) -> dict[str, str]:
    """query id -> group key: queries that share a relevant document (a Korean query and its English twin judged
    on the same passages) form one group, so a split never puts one in training and the other in validation."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    qids = data.queries.column("query_id").to_pylist()
    for qid in qids:
        find("q:" + qid)
    rel = data.qrels
    scores = rel.column("score").to_pylist() if "score" in rel.column_names else [1] * rel.num_rows
    for qid, did, score in zip(
        rel.column("query_id").to_pylist(), rel.column("doc_id").to_pylist(), scores, strict=True
    ):
        if score is None or score > 0:
            a, b = find("q:" + str(qid)), find("d:" + str(did))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {qid: find("q:" + qid) for qid in qids}


def _hash_fraction(seed: int, key: str) -> float:
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _subset(data: RetrievalData, query_ids: set[str], keep: bool) -> RetrievalData:
    value_set = pa.array(sorted(query_ids), pa.string())

    def pick(table: pa.Table) -> pa.Table:
        mask = pc.is_in(table.column("query_id"), value_set=value_set)
        return table.filter(mask if keep else pc.invert(mask))

    return RetrievalData(data.corpus, pick(data.queries), pick(data.qrels), data.reports)


def split_queries(data: RetrievalData, dev_fraction: float, seed: int) -> tuple[RetrievalData, RetrievalData]:
    """Hold out a deterministic fraction of the queries for validation; the corpus is shared.

    The unit is a group of queries sharing a relevant document (:func:`_query_groups`), chosen by a hash of the
    group, so no twin of a held-out query (same positives, other language) is trained on.
    """
    groups = _query_groups(data)
    dev_ids = {qid for qid, group in groups.items() if _hash_fraction(seed, group) < dev_fraction}
    if not dev_ids and groups and dev_fraction > 0:
        first = sorted(groups)[0]
        dev_ids = {q for q, g in groups.items() if g == groups[first]}
    return _subset(data, dev_ids, False), _subset(data, dev_ids, True)


def split_validation_test(dev: RetrievalData, seed: int) -> tuple[RetrievalData, RetrievalData]:
    """Split held-out queries in two by group: validation (checkpoint selection) and test (the reported metrics), so
    a model is never reported on the queries it was selected on."""
    groups = _query_groups(dev)
    test_ids = {qid for qid, group in groups.items() if _hash_fraction(seed + 1, group) < 0.5}
    if groups and (
        not test_ids or len(test_ids) == len(groups)
    ):  # tiny sets: split the sorted groups in half
        keys = sorted(set(groups.values()))
        chosen = set(keys[len(keys) // 2 :])
        test_ids = {q for q, g in groups.items() if g in chosen}
    return _subset(dev, test_ids, False), _subset(dev, test_ids, True)


def format_results(model: dict[str, float], bm25: dict[str, float], bm25_name: str) -> str:
    """A Markdown table of the model next to BM25 on the same dev set, with their ratio."""
    from raysparse.evaluation.report import SUMMARY_KEYS

    def fmt(key: str, value: float | None) -> str:
        if value is None:
            return "–"
        return str(int(value)) if key == "num_queries" else f"{value:.4f}"

    lines = [f"| metric | raysparse | {bm25_name} | ratio |", "|---|---|---|---|"]
    for key in SUMMARY_KEYS:
        m, b = model.get(key), bm25.get(key)
        if m is None and b is None:
            continue
        ratio = f"{m / b:.2f}" if m is not None and b else "–"
        lines.append(f"| {key} | {fmt(key, m)} | {fmt(key, b)} | {ratio} |")
    return "\n".join(lines)


def run_pipeline(cfg: RaySparseConfig, force: bool = False) -> PipelineResult:
    """Run the whole main job described by ``cfg`` and return per-stage results and the final metrics."""
    from raysparse.augment import BilingualDictionary, augment_triples_file, sentence_pairs_table
    from raysparse.backbone import build_encoder, build_local_backbone
    from raysparse.data import load_source, sample_bilingual
    from raysparse.evaluation import evaluate_bm25, evaluate_model, write_metrics
    from raysparse.mining import mine
    from raysparse.training import run_training

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = cfg.model_copy(deep=True)
    storage = cfg.ray.storage_path
    if "://" not in storage and not Path(storage).is_absolute():
        # Ray Train's run folders live with the job's other outputs, not in whatever directory it was started from.
        cfg.ray.storage_path = str((out / storage).resolve())
    dump_config(cfg, out / "config.yaml")
    results: list[StageResult] = []

    # Data: read once (cheap) and fingerprint its tables so later stages re-run when the data changes.
    data = load_source(cfg.data)
    for report in data.reports:
        log.info("%s", report)
    train_data, held_out = split_queries(data, cfg.data.dev_fraction, cfg.data.seed)
    # validation picks the checkpoint, test is what the results report: never the same queries
    dev_data, test_data = split_validation_test(held_out, cfg.data.seed)
    data_key = fingerprint([cfg.data.model_dump(), data.summary(), [str(r) for r in data.reports]])
    log.info(
        "data: %s (train %d / validation %d / test %d queries)",
        data.summary(),
        train_data.queries.num_rows,
        dev_data.queries.num_rows,
        test_data.queries.num_rows,
    )

    # Bilingual resources: user dictionaries (+ the shipped sample's glossary/parallel text for the sample data).
    bilingual_files = [*cfg.augment.dictionaries, *cfg.augment.parallel_text]
    bilingual_key = fingerprint(
        [cfg.augment.model_dump(), [file_digest(f) for f in bilingual_files], cfg.data.format]
    )

    def load_bilingual() -> tuple[Any, pa.Table]:
        dictionary = BilingualDictionary.from_sources(
            cfg.augment.dictionaries, use_shared=cfg.augment.use_shared_glossaries
        )
        sentences = sentence_pairs_table(cfg.augment.parallel_text)
        if cfg.data.format == "sample":
            sample_terms, sample_sentences = sample_bilingual()
            dictionary.add_table(sample_terms)
            sentences = pa.concat_tables([sentences, sample_sentences.cast(sentences.schema)])
        return dictionary, sentences

    dictionary, sentences = load_bilingual()

    # Backbone: a tokenizer + small BERT built from this data when offline, else a name or path as given; then the
    # Korean<->English translation prior learned in that tokenizer's vocabulary from the parallel text + dictionary.
    def build_backbone(stage_dir: Path) -> dict[str, Any]:
        info: dict[str, Any] = {}
        path = cfg.model.backbone
        # Text the tokenizer and the lexical statistics are learned from: the corpus, the *training* queries (never
        # the held-out ones) and the bilingual text.
        terms = dictionary.to_table()
        texts = data.corpus.column("text").to_pylist() + train_data.queries.column("text").to_pylist()
        texts += sentences.column("ko").to_pylist() + sentences.column("en").to_pylist()
        texts += terms.column("ko").to_pylist() + terms.column("en").to_pylist()
        if path == "local-small":
            path = build_local_backbone(texts, cfg.model, str(stage_dir / "mlm"))
            info["num_tokenizer_texts"] = len(texts)
        path, encoder_info = build_encoder(
            path,
            cfg.model,
            stage_dir / "model",
            background_texts=texts,
            documents=data.corpus.column("text").to_pylist(),
            sentence_pairs=list(
                zip(sentences.column("ko").to_pylist(), sentences.column("en").to_pylist(), strict=True)
            ),
            glossary_pairs=list(
                zip(terms.column("ko").to_pylist(), terms.column("en").to_pylist(), strict=True)
            ),
        )
        info.update(encoder_info)
        if time_prior:
            # time.use_as_training_prior: inference-free query weights start from the recency IDF (train.py keeps
            # query weights a backbone brings instead of computing plain IDF over the training documents)
            path = _attach_recency_query_weights(path, cfg, data, stage_dir / "time_prior")
            info["query_weights"] = "recency_idf"
        return {"backbone_dir": str(path), **info}

    time_prior = (
        cfg.time.enabled and cfg.time.use_as_training_prior and cfg.model.query_mode == "inference_free"
    )
    backbone_key = [data_key, bilingual_key, cfg.model.model_dump()]
    if time_prior:
        backbone_key.append(cfg.time.model_dump())  # only then: existing backbone caches stay valid
    r = run_stage("backbone", backbone_key, out / "backbone", build_backbone, force)
    backbone_dir = r.info["backbone_dir"]
    results.append(r)

    # Mining: BM25 hard negatives for the training queries.
    mine_key = [data_key, cfg.mining.model_dump()]
    r = run_stage("mine", mine_key, out / "mined", lambda d: _as_info(mine(train_data, cfg.mining, d)), force)
    results.append(r)

    # Augmentation: code-switched query variants + term/sentence pairs for the cross-lingual loss.
    def augment(stage_dir: Path) -> dict[str, Any]:
        report = augment_triples_file(
            out / "mined", dictionary, cfg.augment, stage_dir / "triples", resources=cfg.mining.resources
        )
        dictionary.to_table().to_pandas().to_parquet(stage_dir / "term_pairs.parquet")
        sentences.to_pandas().to_parquet(stage_dir / "sentence_pairs.parquet")
        return _as_info(report)

    augment_key = [r.key, bilingual_key]
    r = run_stage("augment", augment_key, out / "augmented", augment, force)
    results.append(r)

    # Training on Ray Train + DeepSpeed. The Ray Train run is named after the stage key: re-running the same
    # configuration after a crash resumes from its last checkpoint, a changed configuration starts a fresh run.
    train_key = [r.key, results[0].key, cfg.model.model_dump(), cfg.loss.model_dump(), cfg.train.model_dump()]

    def train(stage_dir: Path) -> dict[str, Any]:
        import pyarrow.parquet as pq

        run_cfg = cfg.model_copy(update={"name": f"{cfg.name}-{fingerprint(train_key)}"})
        result = run_training(
            run_cfg,
            triples_path=str(out / "augmented" / "triples"),
            dev=dev_data,
            out_dir=str(stage_dir),
            term_pairs=pq.read_table(out / "augmented" / "term_pairs.parquet"),
            sentence_pairs=pq.read_table(out / "augmented" / "sentence_pairs.parquet"),
            backbone_dir=backbone_dir,
        )
        return {"model_dir": str(result.model_dir), "best_metrics": result.best_metrics}

    r = run_stage("train", train_key, out / "train", train, force)
    results.append(r)
    model_dir = r.info["model_dir"]
    if cfg.time.enabled and cfg.time.use_for_query_weights and cfg.model.query_mode == "inference_free":
        # time.use_for_query_weights: the trained model's query weights are replaced by the recency IDF (a copy
        # of the model; the trained one stays as it is) and evaluated with them
        model_dir = _attach_recency_query_weights(model_dir, cfg, data, out / "train" / "time_query_weights")

    # Evaluation of the model next to BM25 on the held-out queries.
    def evaluate(stage_dir: Path) -> dict[str, Any]:
        model_metrics = evaluate_model(model_dir, test_data, cfg.eval)  # the model's saved encoding spec
        bm25_metrics = evaluate_bm25(test_data, cfg.eval.bm25_analyzer)
        write_metrics(model_metrics, stage_dir / "model" / "metrics.json")
        write_metrics(bm25_metrics, stage_dir / f"bm25-{cfg.eval.bm25_analyzer}" / "metrics.json")
        return {"model": _metrics_only(model_metrics), "bm25": _metrics_only(bm25_metrics)}

    eval_key = [r.key, cfg.eval.model_dump()]
    if cfg.time.enabled and cfg.time.use_for_query_weights:
        eval_key.append(cfg.time.model_dump())  # other query weights: evaluate again
    r = run_stage("evaluate", eval_key, out / "evaluate", evaluate, force)
    results.append(r)
    table = format_results(r.info["model"], r.info["bm25"], f"BM25-{cfg.eval.bm25_analyzer}")
    results_path = out / "results.md"
    results_path.write_text(
        f"# {cfg.name}: test results ({test_data.queries.num_rows} held-out test queries, {data.corpus.num_rows} "
        f"documents; the checkpoint was selected on {dev_data.queries.num_rows} other validation queries)\n\n"
        f"{table}\n\nStages: "
        + ", ".join(f"{s.name} {'cached' if s.skipped else f'{s.seconds:.0f}s'}" for s in results)
        + "\n"
    )
    return PipelineResult(results, r.info["model"], r.info["bm25"], results_path, Path(model_dir))


def _attach_recency_query_weights(model_path: str, cfg: RaySparseConfig, data: Any, out_dir: Path) -> str:
    """Save ``model_path``'s encoder to ``out_dir`` with inference-free query weights = recency IDF per token
    (raysparse.timeweight) of the dated corpus ``time.corpus``, or of the training corpus when it is dated."""
    from raysparse.model import SparseEncoder
    from raysparse.timeweight import recency_query_weights

    tc = cfg.time
    if tc.corpus:
        from raysparse.corpus.dated import read_dated_source

        corpus = read_dated_source(tc.corpus, date_field=tc.date_field, text_field=tc.text_field).corpus
    else:
        corpus = data.corpus
    if "date" not in corpus.column_names or corpus["date"].null_count == corpus.num_rows:
        raise ValueError(
            "time-aware query weights need dated documents: set time.corpus to a dated corpus or give the "
            "training data a date field (data.date_field)"
        )
    encoder = SparseEncoder.from_pretrained(model_path, query_mode="inference_free")
    weights = recency_query_weights(
        encoder.tokenizer,
        corpus["text"].to_pylist(),
        corpus["date"].to_pylist(),
        tc.half_life_days,
        tc.reference_date,
        tc.period,
        vocab_size=encoder.vocab_size,
    )
    encoder = SparseEncoder.from_pretrained(model_path, query_mode="inference_free", query_weights=weights)
    encoder.save_pretrained(out_dir)
    log.info(
        "recency IDF query weights (half-life %s d) from %d documents -> %s",
        tc.half_life_days,
        corpus.num_rows,
        out_dir,
    )
    return str(out_dir)


def _metrics_only(metrics: Any) -> dict[str, float]:
    if hasattr(metrics, "metrics"):
        metrics = metrics.metrics
    return {k: v for k, v in dict(metrics).items() if isinstance(v, int | float)}


def _as_info(report: Any) -> dict[str, Any]:
    """Stage reports (dataclasses or dicts) as JSON-able info for ``_stage.json``."""
    if report is None:
        return {}
    if isinstance(report, dict):
        return report
    if hasattr(report, "to_dict"):
        return report.to_dict()
    if hasattr(report, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(report)
    return {"report": str(report)}
