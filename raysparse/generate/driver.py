"""``generate_queries``: corpus → LLM replies (resumable) → filters → a BEIR directory mining and training read.

Outputs under ``out_dir``:

- ``raw/part-*.parquet`` — every reply as the model returned it (:data:`~raysparse.generate.stage.RAW`), the
  resumable state;
- ``generations.parquet`` — one row per document of this prompt version and model: the raw reply, the parsed queries
  and one verdict per query (``kept`` or the filter that dropped it);
- ``beir/`` — ``corpus.jsonl`` (the whole input corpus, so mining has its negatives), ``queries.jsonl`` (kept
  queries, ids ``<doc_id>::gq<N>``) and ``qrels/train.tsv`` plus an identical ``qrels/test.tsv`` (the split
  ``data.format=beir`` reads), so ``raysparse mine --beir OUT/beir`` and ``--set data.format=beir
  data.path=OUT/beir`` work without conversion;
- ``prompts/<version>.txt`` — the template body each version names; ``generate_report.json`` — the counts.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raysparse.generate.filters import KEPT, FilterReport, apply_filters
from raysparse.generate.prompts import load_prompt
from raysparse.generate.stage import RAW, GenerationRun, latest_rows, read_raw, run_generation
from raysparse.schemas import RetrievalData

log = logging.getLogger(__name__)

REPORT_FILE = "generate_report.json"
GENERATIONS_FILE = "generations.parquet"
GENERATIONS = RAW.append(pa.field("verdicts", pa.list_(pa.string()), nullable=False))


@dataclass
class GenerateReport:
    """What :func:`generate_queries` did; written as ``generate_report.json``."""

    prompt_version: str = ""
    model: str = ""
    api: str = ""
    docs_in: int = 0
    run: dict[str, Any] = field(default_factory=dict)  # this call's generation (resume skips, errors, time)
    docs_with_reply: int = 0
    docs_failed: dict[str, int] = field(default_factory=dict)  # documents with no reply yet, by error kind
    malformed_replies: dict[str, int] = field(default_factory=dict)  # replies with no query, by parse reason
    filters: dict[str, Any] = field(default_factory=dict)
    queries_kept: int = 0
    output: str = ""
    beir_dir: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        failed = ", ".join(f"{n} {k}" for k, n in sorted(self.docs_failed.items())) or "none"
        malformed = ", ".join(f"{n} {k}" for k, n in sorted(self.malformed_replies.items())) or "none"
        return (
            f"{self.docs_with_reply}/{self.docs_in} documents have a reply ({self.model}, {self.prompt_version}); "
            f"failed: {failed}; malformed replies: {malformed}; kept {self.queries_kept} of "
            f"{self.filters.get('generated', 0)} queries"
        )


def write_generated_beir(corpus: pa.Table, generations: pa.Table, out_dir: str | Path) -> Path:
    """The kept queries as a BEIR directory (whole corpus; qrels/train.tsv and the identical qrels/test.tsv)."""
    from raysparse.data import write_beir
    from raysparse.schemas import QRELS, QUERIES

    q_rows, r_rows = [], []
    for doc_id, queries, verdicts in zip(
        generations.column("doc_id").to_pylist(),
        generations.column("queries").to_pylist(),
        generations.column("verdicts").to_pylist(),
        strict=True,
    ):
        for n, (query, verdict) in enumerate(zip(queries, verdicts, strict=True)):
            if verdict != KEPT:
                continue
            qid = f"{doc_id}::gq{n}"
            q_rows.append({"query_id": qid, "text": query, "lang": "ko"})
            r_rows.append({"query_id": qid, "doc_id": doc_id, "score": 1})
    data = RetrievalData(
        corpus, pa.Table.from_pylist(q_rows, schema=QUERIES), pa.Table.from_pylist(r_rows, schema=QRELS)
    )
    root = write_beir(data, out_dir, split="train")
    shutil.copyfile(root / "qrels" / "train.tsv", root / "qrels" / "test.tsv")
    return root


def generate_queries(
    data: RetrievalData,
    cfg: Any,
    out_dir: str | Path,
    *,
    ray: bool = True,
    client: Any = None,
    show_progress: bool = True,
) -> GenerateReport:
    """Generate (resuming), filter and write every output for the corpus of ``data`` (its queries are ignored).

    ``cfg`` is a :class:`~raysparse.config.GenerateConfig`. ``ray`` and ``client`` as in
    :func:`~raysparse.generate.stage.run_generation`.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompt = load_prompt(cfg.prompt)
    (out / "prompts").mkdir(exist_ok=True)
    (out / "prompts" / f"{prompt.version.replace('@', '-')}.txt").write_text(prompt.body, encoding="utf-8")
    corpus = data.corpus
    if cfg.max_docs is not None and corpus.num_rows > cfg.max_docs:
        corpus = corpus.slice(0, cfg.max_docs)
    report = GenerateReport(
        prompt_version=prompt.version, model=cfg.model or "", api=cfg.api, docs_in=corpus.num_rows
    )

    run: GenerationRun = run_generation(corpus, cfg, out, ray=ray, client=client, show_progress=show_progress)
    report.run = asdict(run)
    report.timings["generate"] = run.seconds

    t0 = time.perf_counter()
    rows = latest_rows(read_raw(out / "raw"), prompt.version, cfg.model)
    in_corpus = set(corpus.column("doc_id").to_pylist())
    rows = rows.filter(pa.array([d in in_corpus for d in rows.column("doc_id").to_pylist()], pa.bool_()))
    ok_mask = [e is None for e in rows.column("error").to_pylist()]
    for kind, ok in zip(rows.column("error_kind").to_pylist(), ok_mask, strict=True):
        if not ok:
            report.docs_failed[kind] = report.docs_failed.get(kind, 0) + 1
    missing = corpus.num_rows - rows.num_rows
    if missing:  # only when a run stopped (on_error=raise, a crash) before every batch finished
        report.docs_failed["not generated (run interrupted)"] = missing
    report.docs_with_reply = sum(ok_mask)
    for reason in rows.column("parse_error").to_pylist():
        if reason is not None:
            report.malformed_replies[reason] = report.malformed_replies.get(reason, 0) + 1

    verdicts, freport = apply_filters(
        rows.column("doc_id").to_pylist(), rows.column("queries").to_pylist(), data.corpus, cfg
    )
    generations = rows.append_column(GENERATIONS.field("verdicts"), pa.array(verdicts, pa.list_(pa.string())))
    pq.write_table(generations, out / GENERATIONS_FILE)
    beir = write_generated_beir(data.corpus, generations, out / "beir")
    report.timings["filter_and_write"] = time.perf_counter() - t0
    report.filters = asdict(freport)
    report.queries_kept = freport.kept
    report.output = str(out / GENERATIONS_FILE)
    report.beir_dir = str(beir)
    report.timings["total"] = time.perf_counter() - t_start
    (out / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    log.info("%s", report)
    print(freport.table())
    return report


def filter_table(report: GenerateReport) -> str:
    """The per-filter table of a finished report (as printed by :func:`generate_queries`)."""
    freport = FilterReport(
        generated=report.filters.get("generated", 0),
        dropped=dict(report.filters.get("dropped", {})),
        kept=report.filters.get("kept", 0),
        docs_with_kept=report.filters.get("docs_with_kept", 0),
    )
    return freport.table()
