"""Arrow schemas shared by every stage: the contract between readers, mining, training, evaluation and indexing.

A retrieval collection is three tables in the BEIR shape (corpus, queries, qrels). Readers of every input format
produce a :class:`RetrievalData`; mining produces :data:`TRIPLES` rows; augmentation produces :data:`TERM_PAIRS`
and :data:`SENTENCE_PAIRS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

CORPUS = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("date", pa.timestamp("s")),  # null when the corpus is not dated
        pa.field("lang", pa.string()),  # "ko", "en" or null when unknown
    ]
)

QUERIES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("lang", pa.string()),
    ]
)

QRELS = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("score", pa.int32(), nullable=False),
    ]
)

# One row per query: its positives and mined negatives, with BM25 ranks/scores kept for analysis and distillation.
TRIPLES = pa.schema(
    [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("positive_ids", pa.list_(pa.string()), nullable=False),
        pa.field("positive_texts", pa.list_(pa.string()), nullable=False),
        pa.field("positive_scores", pa.list_(pa.float32()), nullable=False),  # BM25 score of each positive
        pa.field("negative_ids", pa.list_(pa.string()), nullable=False),
        pa.field("negative_texts", pa.list_(pa.string()), nullable=False),
        pa.field(
            "negative_scores", pa.list_(pa.float32()), nullable=False
        ),  # BM25 score (random: its score too)
        pa.field(
            "negative_ranks", pa.list_(pa.int32()), nullable=False
        ),  # 1-based BM25 rank, -1 if not retrieved
        pa.field("negative_kinds", pa.list_(pa.string()), nullable=False),  # "hard" or "random"
    ]
)

TERM_PAIRS = pa.schema(
    [
        pa.field("ko", pa.string(), nullable=False),
        pa.field("en", pa.string(), nullable=False),
        pa.field("source", pa.string()),  # provenance: file or method
        pa.field("score", pa.float32()),
    ]
)

SENTENCE_PAIRS = pa.schema(
    [
        pa.field("ko", pa.string(), nullable=False),
        pa.field("en", pa.string(), nullable=False),
        pa.field("source", pa.string()),
    ]
)


@dataclass
class ReadReport:
    """What a reader did: every skipped record is counted with its reason, never dropped silently."""

    source: str
    read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def merge(self, other: ReadReport) -> ReadReport:
        out = ReadReport(self.source if self.source == other.source else f"{self.source}+{other.source}")
        out.read = self.read + other.read
        for reason, n in [*self.skipped.items(), *other.skipped.items()]:
            out.skip(reason, n)
        return out

    def __str__(self) -> str:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"{self.source}: read {self.read}, skipped {self.num_skipped}" + (
            f" ({detail})" if detail else ""
        )


@dataclass
class RetrievalData:
    """A retrieval collection in BEIR shape; ``reports`` says what each reader read and skipped."""

    corpus: pa.Table
    queries: pa.Table
    qrels: pa.Table
    reports: list[ReadReport] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.corpus = self.corpus.cast(CORPUS) if self.corpus.schema != CORPUS else self.corpus
        self.queries = self.queries.cast(QUERIES) if self.queries.schema != QUERIES else self.queries
        self.qrels = self.qrels.cast(QRELS) if self.qrels.schema != QRELS else self.qrels

    def summary(self) -> str:
        return f"{self.corpus.num_rows} documents, {self.queries.num_rows} queries, {self.qrels.num_rows} judgements"
