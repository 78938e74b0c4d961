"""Training examples: mined triples and Korean-English pairs in, tokenised micro-batches out.

* :func:`load_triples` / :func:`load_pairs` read mining output (:data:`~raysparse.schemas.TRIPLES`) and the
  optional Korean-English term/sentence pairs, counting every skipped row in a :class:`ReadReport`.
* :func:`sample_rows` decides which rows a worker sees at a given micro-step. The order is a pure function of
  ``(seed, epoch, micro_step, rank)``, so a run resumed from a checkpoint at step ``s`` sees exactly the batches an
  uninterrupted run would have seen from ``s`` on (no data loader state to save).
* :class:`Collator` tokenises query / one positive / ``negatives_per_query`` negatives through the model's encoding
  spec and carries the BM25 scores of the chosen documents as teacher scores for distillation.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysparse.schemas import ReadReport

log = logging.getLogger(__name__)


TRIPLE_FIELDS = ("query", "positive_texts", "positive_scores", "negative_texts", "negative_scores")


@dataclass
class TrainingExamples:
    """Mining output in plain lists (one entry per query), ready for deterministic sampling."""

    queries: list[str]
    positives: list[list[str]]
    positive_scores: list[list[float]]
    negatives: list[list[str]]
    negative_scores: list[list[float]]
    report: ReadReport

    def __len__(self) -> int:
        return len(self.queries)

    def texts(self) -> list[str]:
        """Every query and document text (e.g. to train a local tokenizer on)."""
        out = list(self.queries)
        for docs in (*self.positives, *self.negatives):
            out.extend(docs)
        return out


def _read_table(source: str | Path | pa.Table, what: str) -> tuple[pa.Table, str]:
    if isinstance(source, pa.Table):
        return source, f"<{what} table>"
    path = Path(source) if "://" not in str(source) else source
    if isinstance(path, Path) and not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    # A directory is read as its *.parquet files: mining writes mining_report.json beside triples.parquet, and
    # `mine --out D` then `train --triples D` is the documented flow. Each file is read on its own so that an error
    # names the file.
    files = (
        sorted(
            f for f in path.rglob("*.parquet") if not f.name.startswith((".", "_"))
        )  # as pyarrow skips them
        if isinstance(path, Path) and path.is_dir()
        else [path]
    )
    if not files:
        raise ValueError(f"{what}: {path} holds no .parquet file")
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(str(f)))
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"{what}: {f} is not readable Parquet: {err}") from None
    if len(tables) == 1:
        return tables[0], str(path)
    try:
        return pa.concat_tables(tables, promote_options="default"), str(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"{what}: the Parquet files under {path} have incompatible schemas: {err}") from None


def load_triples(source: str | Path | pa.Table, negatives_per_query: int = 1) -> TrainingExamples:
    """Read mining output (a Parquet file, a directory of them, or a table in :data:`TRIPLES` shape).

    Rows that cannot train are skipped and counted (empty query, no positive, no negative when negatives are
    required); malformed rows (score lists that do not match their texts, null texts) raise an error naming the
    file, row and field, because they mean the producer is broken, not that the data is noisy.
    """
    table, name = _read_table(source, "triples")
    missing = [f for f in TRIPLE_FIELDS if f not in table.column_names]
    if missing:
        raise ValueError(
            f"triples {name}: missing field(s) {', '.join(missing)} (expected the schemas.TRIPLES columns)"
        )
    report = ReadReport(name)
    ex = TrainingExamples([], [], [], [], [], report)
    cols = {f: table.column(f).to_pylist() for f in TRIPLE_FIELDS}
    for row in range(table.num_rows):
        query = cols["query"][row]
        pos, pos_s = cols["positive_texts"][row] or [], cols["positive_scores"][row] or []
        neg, neg_s = cols["negative_texts"][row] or [], cols["negative_scores"][row] or []
        for fname, texts, scores in (("positive", pos, pos_s), ("negative", neg, neg_s)):
            if len(texts) != len(scores):
                raise ValueError(
                    f"triples {name}: row {row}, field {fname}_scores has {len(scores)} values "
                    f"for {len(texts)} {fname}_texts"
                )
            if any(t is None for t in texts):
                raise ValueError(f"triples {name}: row {row}, field {fname}_texts contains null")
        if not query or not query.strip():
            report.skip("empty query")
            continue
        if not pos:
            report.skip("no positive")
            continue
        if negatives_per_query > 0 and not neg:
            report.skip("no negative")
            continue
        report.read += 1
        ex.queries.append(query)
        ex.positives.append(list(pos))
        ex.positive_scores.append([float(s) if s is not None else 0.0 for s in pos_s])
        ex.negatives.append(list(neg))
        ex.negative_scores.append([float(s) if s is not None else 0.0 for s in neg_s])
    if not ex.queries:
        raise ValueError(f"triples {name}: no usable rows ({report})")
    return ex


def load_pairs(
    source: str | Path | pa.Table | None, what: str = "pairs"
) -> tuple[list[tuple[str, str]], ReadReport]:
    """Read a ``ko``/``en`` table (:data:`TERM_PAIRS` or :data:`SENTENCE_PAIRS`); empty sides are skipped and counted."""
    if source is None:
        return [], ReadReport(f"<no {what}>")
    table, name = _read_table(source, what)
    for f in ("ko", "en"):
        if f not in table.column_names:
            raise ValueError(f"{what} {name}: missing field {f!r} (expected columns ko, en)")
    report = ReadReport(name)
    pairs: list[tuple[str, str]] = []
    for ko, en in zip(table.column("ko").to_pylist(), table.column("en").to_pylist(), strict=True):
        if not ko or not en or not ko.strip() or not en.strip():
            report.skip("empty side")
            continue
        report.read += 1
        pairs.append((ko, en))
    return pairs, report


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def sample_rows(
    num_rows: int, batch_size: int, *, seed: int, micro_step: int, rank: int = 0, world_size: int = 1
) -> list[tuple[int, int]]:
    """``(row, epoch)`` pairs a worker trains on at ``micro_step``.

    The global stream is an endless sequence of epochs, each a seeded permutation of the rows; micro-step ``m``
    takes the global slice ``[m * B * W, (m + 1) * B * W)`` and rank ``r`` its ``r``-th block of ``B``. Deriving the
    order from the step (not from iterator state) is what makes resume exact.
    """
    start = (micro_step * world_size + rank) * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, offset = divmod(pos, num_rows)
        out.append((int(_epoch_permutation(num_rows, seed, epoch)[offset]), epoch))
    return out


@dataclass
class Collator:
    """Tokenise a micro-batch by the model's encoding spec (documents in windows, Kiwi pre-tokenisation when the
    spec says so), with dynamic padding (pad to the longest window in the batch, not the maximum)."""

    tokenizer: Any
    max_query_length: int
    max_doc_length: int
    negatives_per_query: int
    seed: int
    spec: Any = None  # raysparse.encoding.EncodingSpec; None: one from the lengths above

    def __post_init__(self) -> None:
        from raysparse.encoding import EncodingSpec

        if self.spec is None:
            self.spec = EncodingSpec(
                max_query_length=self.max_query_length,
                max_doc_length=self.max_doc_length,
                doc_stride=max(1, (self.max_doc_length - 2) * 3 // 4),
            )

    def _tokenize(self, texts: Sequence[str], *, is_query: bool) -> Any:
        from raysparse.encoding import tokenize_texts

        return tokenize_texts(self.tokenizer, texts, self.spec, is_query=is_query)

    def examples(self, ex: TrainingExamples, rows: Sequence[tuple[int, int]]) -> dict[str, Any]:
        """Query, one positive and ``negatives_per_query`` negatives per row, chosen by ``(seed, epoch, row)``."""
        import torch

        queries, positives, negatives, t_pos, t_neg = [], [], [], [], []
        k = self.negatives_per_query
        for row, epoch in rows:
            rng = np.random.default_rng([self.seed, epoch, row])
            p = int(rng.integers(len(ex.positives[row])))
            queries.append(ex.queries[row])
            positives.append(ex.positives[row][p])
            t_pos.append(ex.positive_scores[row][p])
            if k:
                n = len(ex.negatives[row])
                chosen = rng.choice(n, size=k, replace=n < k)
                negatives.extend(ex.negatives[row][int(i)] for i in chosen)
                t_neg.append([ex.negative_scores[row][int(i)] for i in chosen])
        batch: dict[str, Any] = {}
        batch["q"] = self._tokenize(queries, is_query=True)
        # positives first, then negatives row-major: one document forward per micro-step
        batch["d"] = self._tokenize(positives + negatives, is_query=False)
        batch["num_positives"] = len(positives)
        batch["teacher_pos"] = torch.tensor(t_pos, dtype=torch.float32)
        batch["teacher_neg"] = torch.tensor(t_neg, dtype=torch.float32) if k else None
        return batch

    def pairs(
        self,
        term_pairs: Sequence[tuple[str, str]],
        sentence_pairs: Sequence[tuple[str, str]],
        size: int,
        *,
        micro_step: int,
        rank: int,
    ) -> dict[str, Any] | None:
        """A batch of ``size`` ko/en pairs (half terms, half sentences when both exist), chosen by the step."""
        if not term_pairs and not sentence_pairs:
            return None
        rng = np.random.default_rng([self.seed, 7, micro_step, rank])
        chosen: list[tuple[str, str]] = []
        sources = [s for s in (term_pairs, sentence_pairs) if s]
        for i, src in enumerate(sources):
            n = size // len(sources) + (1 if i < size % len(sources) else 0)
            chosen.extend(src[int(j)] for j in rng.integers(len(src), size=n))
        return {
            "ko": self._tokenize([c[0] for c in chosen], is_query=False),
            "en": self._tokenize([c[1] for c in chosen], is_query=False),
        }
