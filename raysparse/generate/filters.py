"""Filters for generated queries; each is a plain function, applied in order, and every drop is counted.

Order (cheap first, the retrieval check last so it only sees survivors):

1. ``korean_ratio`` — Hangul share of the query's letters ≥ ``generate.min_korean_ratio`` (digits, punctuation
   and spaces are not letters, so "1987년 6월 항쟁은?" is 1.0 and "BTS의 노래" is 0.5);
2. ``length`` — ``min_chars ≤ len(stripped query) ≤ max_chars``;
3. ``duplicate_in_doc`` / ``duplicate_across_docs`` — the same normalised text (NFKC, lower case, collapsed
   spaces, trailing ``?!.`` removed) seen before in the same document / in another document (documents in
   doc_id order, so the first copy kept does not depend on the order replies arrived);
4. ``round_trip`` — BM25 over the whole corpus (or a trained sparse model) must rank the source document in the
   top ``round_trip_k`` for the query; queries too vague to find their document are dropped.

Each query gets one verdict: ``kept`` or the name of the first filter it failed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

FILTERS = ("korean_ratio", "length", "duplicate_in_doc", "duplicate_across_docs", "round_trip")
KEPT = "kept"

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_SPACES = re.compile(r"\s+")


def korean_ratio(text: str) -> float:
    """Share of Hangul among the letters of ``text`` (0.0 when it has no letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if _HANGUL.match(c)) / len(letters)


def passes_korean(text: str, min_ratio: float) -> bool:
    return korean_ratio(text) >= min_ratio


def passes_length(text: str, min_chars: int, max_chars: int) -> bool:
    return min_chars <= len(text.strip()) <= max_chars


def dedup_key(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip().rstrip("?!.？！。 ")


def round_trip_bm25(
    queries: Sequence[str], sources: Sequence[str], corpus: pa.Table, k: int, analyzer: str = "bigram"
) -> list[bool]:
    """For each query, is its source document among BM25's top ``k`` over ``corpus``? (mining's index)"""
    from raysparse.config import MiningConfig
    from raysparse.mining import Bm25Index

    if not queries:
        return []
    index = Bm25Index.build(corpus, MiningConfig(analyzer=analyzer), show_progress=False)
    rows, _ = index.search(list(queries), min(k, index.num_docs))
    out = []
    for i, source in enumerate(sources):
        row = index.row_of(source)
        out.append(row is not None and bool((rows[i] == row).any()))
    return out


def round_trip_model(
    queries: Sequence[str],
    sources: Sequence[str],
    corpus: pa.Table,
    k: int,
    model_dir: str,
    batch_size: int = 32,
) -> list[bool]:
    """The same check with a trained sparse encoder (exact top-k over the encoded corpus)."""
    from raysparse.evaluation.core import encode_sparse, load_encoder
    from raysparse.evaluation.index import SparseIndex
    from raysparse.mining import document_texts

    if not queries:
        return []
    model = load_encoder(model_dir)
    docs = encode_sparse(
        model.encode_documents, document_texts(corpus).to_pylist(), batch_size, desc="encode docs"
    )
    index = SparseIndex(corpus.column("doc_id").to_pylist(), docs)
    q = encode_sparse(model.encode_queries, list(queries), batch_size, desc="encode queries")
    hits = index.search(q, k)
    return [any(doc_id == source for doc_id, _ in hit) for hit, source in zip(hits, sources, strict=True)]


@dataclass
class FilterReport:
    """Counts per filter (queries dropped by each, in order) and what was kept."""

    generated: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    kept: int = 0
    docs_with_kept: int = 0

    def table(self) -> str:
        """A printable table: one line per filter with the queries it saw and dropped."""
        lines = [f"{'filter':<24}{'in':>8}{'dropped':>9}{'left':>8}", "-" * 49]
        left = self.generated
        for name in FILTERS:
            dropped = self.dropped.get(name, 0)
            lines.append(f"{name:<24}{left:>8}{dropped:>9}{left - dropped:>8}")
            left -= dropped
        lines.append(f"{'kept':<24}{'':>8}{'':>9}{self.kept:>8}")
        return "\n".join(lines)


def apply_filters(
    doc_ids: Sequence[str],
    queries: Sequence[Sequence[str]],
    corpus: pa.Table,
    cfg: Any,
) -> tuple[list[list[str]], FilterReport]:
    """Verdicts for ``queries[i]`` (the queries generated for ``doc_ids[i]``), in the same nesting, and counts."""
    report = FilterReport()
    verdicts: list[list[str]] = [[""] * len(qs) for qs in queries]
    order = sorted(range(len(doc_ids)), key=lambda i: doc_ids[i])
    seen_in: dict[str, str] = {}  # dedup key -> doc_id of its first kept copy
    pending: list[tuple[int, int]] = []
    for i in order:
        seen_here: set[str] = set()
        for j, q in enumerate(queries[i]):
            report.generated += 1
            verdict = KEPT
            key = dedup_key(q)
            if not passes_korean(q, cfg.min_korean_ratio):
                verdict = "korean_ratio"
            elif not passes_length(q, cfg.min_chars, cfg.max_chars):
                verdict = "length"
            elif cfg.dedup and key in seen_here:
                verdict = "duplicate_in_doc"
            elif cfg.dedup and key in seen_in and seen_in[key] != doc_ids[i]:
                verdict = "duplicate_across_docs"
            if verdict == KEPT:
                seen_here.add(key)
                seen_in.setdefault(key, doc_ids[i])
                pending.append((i, j))
            verdicts[i][j] = verdict
    if cfg.round_trip != "none" and pending:
        texts = [queries[i][j] for i, j in pending]
        sources = [doc_ids[i] for i, _ in pending]
        if cfg.round_trip == "bm25":
            ok = round_trip_bm25(texts, sources, corpus, cfg.round_trip_k, cfg.round_trip_analyzer)
        else:
            ok = round_trip_model(texts, sources, corpus, cfg.round_trip_k, cfg.round_trip_model)
        for (i, j), passed in zip(pending, ok, strict=True):
            if not passed:
                verdicts[i][j] = "round_trip"
    for i, vs in enumerate(verdicts):
        for v in vs:
            if v == KEPT:
                report.kept += 1
            else:
                report.dropped[v] += 1
        report.docs_with_kept += any(v == KEPT for v in verdicts[i])
    return verdicts, report
