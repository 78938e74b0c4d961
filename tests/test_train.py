"""Small real-data inputs for the training tests: a tiny backbone, TRIPLES rows and a dev set from ../shared/data.

Shared by tests/test_train.py and tests/test_train_ray.py (imported by name: pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from raysparse.schemas import TRIPLES, RetrievalData


def msmarco_pairs(shared_data: Path, lang: str, limit: int) -> list[tuple[str, str]]:
    """(query, first positive) from the MS MARCO ko/en dev1000 files, in id order."""
    rows = json.loads((shared_data / "msmarco-ko-en" / f"msmarco_{lang}.dev1000.json").read_text("utf-8"))
    return [(r["query"], r["positive"][0]) for r in rows[:limit] if r.get("positive")]


def char_overlap(a: str, b: str) -> float:
    """A cheap lexical score standing in for BM25 (teacher scores only need to be real numbers per document)."""
    sa, sb = set(a.split()), set(b.split())
    return float(len(sa & sb))


def triples_table(pairs: list[tuple[str, str]], num_negatives: int = 3) -> pa.Table:
    """One TRIPLES row per query; negatives are the positives of the next rows (real, unrelated passages)."""
    n = len(pairs)
    rows = []
    for i, (query, positive) in enumerate(pairs):
        negs = [pairs[(i + j) % n][1] for j in range(1, num_negatives + 1)]
        rows.append(
            {
                "query_id": f"q{i}",
                "query": query,
                "positive_ids": [f"d{i}"],
                "positive_texts": [positive],
                "positive_scores": [char_overlap(query, positive)],
                "negative_ids": [f"d{(i + j) % n}" for j in range(1, num_negatives + 1)],
                "negative_texts": negs,
                "negative_scores": [char_overlap(query, t) for t in negs],
                "negative_ranks": list(range(1, num_negatives + 1)),
                "negative_kinds": ["hard"] * num_negatives,
            }
        )
    return pa.Table.from_pylist(rows, schema=TRIPLES)


def dev_collection(pairs: list[tuple[str, str]]) -> RetrievalData:
    corpus = pa.table(
        {
            "doc_id": [f"d{i}" for i in range(len(pairs))],
            "title": [None] * len(pairs),
            "text": [p for _, p in pairs],
            "date": pa.array([None] * len(pairs), pa.timestamp("s")),
            "lang": [None] * len(pairs),
        }
    )
    queries = pa.table(
        {
            "query_id": [f"q{i}" for i in range(len(pairs))],
            "text": [q for q, _ in pairs],
            "lang": [None] * len(pairs),
        }
    )
    qrels = pa.table(
        {
            "query_id": [f"q{i}" for i in range(len(pairs))],
            "doc_id": [f"d{i}" for i in range(len(pairs))],
            "score": pa.array([1] * len(pairs), pa.int32()),
        }
    )
    return RetrievalData(corpus, queries, qrels)


def tatoeba_pairs(shared_data: Path, limit: int) -> pa.Table:
    ko, en = [], []
    for line in (shared_data / "bilingual" / "tatoeba" / "kor.txt").read_text("utf-8").splitlines()[:limit]:
        parts = line.split("\t")
        if len(parts) >= 2:
            en.append(parts[0])
            ko.append(parts[1])
    return pa.table({"ko": ko, "en": en, "source": ["tatoeba"] * len(ko)})


def build_inputs(shared_data: Path, root: Path) -> dict[str, object]:
    """Everything a tiny training run needs, written under ``root`` (built once per test session)."""
    from raysparse.backbone import build_local_backbone
    from raysparse.config import ModelConfig

    ko = msmarco_pairs(shared_data, "kor", 300)
    en = msmarco_pairs(shared_data, "eng", 300)
    train_pairs = ko[:120] + en[:120]
    dev_pairs = ko[250:280]
    sentences = tatoeba_pairs(shared_data, 3000)
    texts = (
        [t for pair in ko + en for t in pair]
        + sentences.column("ko").to_pylist()
        + sentences.column("en").to_pylist()
    )
    model_cfg = ModelConfig(
        vocab_size=2000,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        max_query_length=16,
        max_doc_length=48,
    )
    backbone = build_local_backbone(texts, model_cfg, root / "backbone")
    triples_dir = root / "triples"
    triples_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(triples_table(train_pairs), triples_dir / "part-0.parquet")
    pq.write_table(sentences, root / "sentence_pairs.parquet")
    return {
        "backbone": backbone,
        "triples": str(triples_dir),
        "sentence_pairs": str(root / "sentence_pairs.parquet"),
        "dev": dev_collection(dev_pairs),
        "model_overrides": [
            "model.vocab_size=2000",
            "model.hidden_size=32",
            "model.num_layers=1",
            "model.num_heads=2",
            "model.intermediate_size=64",
            "model.max_query_length=16",
            "model.max_doc_length=48",
        ],
    }
