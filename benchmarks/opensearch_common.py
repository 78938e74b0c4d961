"""What the OpenSearch benchmarks share: the corpus, the common options, the machine line of a results table.

Used by benchmarks/opensearch.py (search: size, latency, nDCG) and benchmarks/opensearch_bulk.py (indexing paths).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def load_corpus(shared: Path, petitions: int):
    """The 235 KLUE-MRC ODQA passages pooled with distractors (soynlp news lines, the first ``petitions`` dated
    petitions) from ../shared/data; queries and qrels: the 240 KLUE questions -> their passage."""
    from raysparse.data.readers import read_dated_jsonl, read_line_corpus, read_squad
    from raysparse.schemas import RetrievalData

    klue = read_squad(shared / "klue-mrc-odqa" / "validation.jsonl")
    news = read_line_corpus(
        shared / "corpora" / "soynlp-news-2016-10-20" / "doublespace_line_corpus_sample.txt"
    )
    pet = read_dated_jsonl(shared / "corpora" / "petitions-dated")
    tables = [
        klue.corpus.cast(klue.corpus.schema),
        news.corpus.cast(klue.corpus.schema),
        pet.corpus.slice(0, petitions).cast(klue.corpus.schema),
    ]
    corpus = pa.concat_tables(tables)
    # distinct ids only: a doc id repeated across sources would be one OpenSearch document
    seen, keep = set(), []
    for i, d in enumerate(corpus.column("doc_id").to_pylist()):
        if d not in seen:
            seen.add(d)
            keep.append(i)
    corpus = corpus.take(keep)
    return RetrievalData(corpus, klue.queries, klue.qrels)


def add_common_args(ap: argparse.ArgumentParser, petitions: int, out_name: str) -> None:
    """--url, --shared, --petitions, --out: the options every OpenSearch benchmark takes."""
    ap.add_argument(
        "--url", default="http://127.0.0.1:9200", help="OpenSearch URL (scripts/opensearch.sh start)"
    )
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"), help="../shared/data")
    ap.add_argument(
        "--petitions", type=int, default=petitions, help="petitions added to the corpus as distractors"
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / out_name), help="results table")


def server_version(client) -> str:
    return str(client.info()["version"]["number"])


def machine_line(version: str, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    """Server and machine of a results table, with the load average around the run (the VM is shared)."""
    return (
        f"Server: OpenSearch {version}, one node on 127.0.0.1 (scripts/opensearch.sh, heap 1 GB). "
        f"Machine: {platform.machine()} {mp.cpu_count()}-core CPU VM shared with other agents' jobs "
        f"(load average {load_before[0]:.1f} before, {load_after[0]:.1f} after): absolute numbers are noisy, "
        "ratios are from this one run."
    )


def load_average() -> tuple[float, ...]:
    return tuple(os.getloadavg())
