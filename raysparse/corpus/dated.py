"""Dated corpora: typed dates, time-based splits (train on older, evaluate on newer) and time windows.

Drift is measured by training on documents before a cutoff and evaluating on documents after it; both sides must
stay consistent collections, so queries and judgements follow their documents. Documents without a date cannot be
placed on either side: they are left out of both and counted (``ReadReport.skipped["undated document"]``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from raysparse.data.common import parse_date
from raysparse.schemas import ReadReport, RetrievalData

log = logging.getLogger("raysparse.corpus")

Period = Literal["day", "week", "month", "year"]

# Labels sort chronologically as strings; ISO weeks (%G-W%V) so that a week never straddles two labels.
_PERIOD_FORMATS: dict[str, str] = {"day": "%Y-%m-%d", "week": "%G-W%V", "month": "%Y-%m", "year": "%Y"}


def as_cutoff(cutoff: datetime | str) -> datetime:
    """``2019-06-01`` / ISO text / datetime -> naive UTC datetime (the unit of the corpus ``date`` column)."""
    parsed = parse_date(cutoff, "cutoff", "cutoff")
    if parsed is None:
        raise ValueError("cutoff is empty: give a date such as 2019-06-01")
    return parsed


def _side(
    data: RetrievalData, mask: pa.Array, label: str, undated: int, straddling: int, no_doc: int
) -> RetrievalData:
    corpus = data.corpus.filter(mask)
    qrels = data.qrels.filter(pc.is_in(data.qrels["doc_id"], value_set=corpus["doc_id"]))
    queries = data.queries.filter(pc.is_in(data.queries["query_id"], value_set=qrels["query_id"]))
    report = ReadReport(label, read=corpus.num_rows)
    if undated:
        report.skip("undated document", undated)
    if no_doc:
        report.skip("query without a dated judged document", no_doc)
    if straddling:
        # Not a skip: such a query is on both sides, each with the judgements of that side.
        log.info("%s: %d queries have judged documents on both sides of the cutoff", label, straddling)
    return RetrievalData(corpus, queries, qrels, [*data.reports, report])


def split_by_time(data: RetrievalData, cutoff: datetime | str) -> tuple[RetrievalData, RetrievalData]:
    """``(older, newer)``: documents with ``date < cutoff`` and with ``date >= cutoff``.

    Judgements go with their document and a query goes to each side where it has a judged document (a query with
    judged documents on both sides appears in both, each with that side's judgements). Undated documents go to
    neither side; each side's last report counts them (``"undated document"``), as it counts queries whose judged
    documents are all undated (``"query without a dated judged document"``).
    """
    when = as_cutoff(cutoff)
    dates = data.corpus["date"]
    undated = dates.null_count
    if undated:
        log.warning(
            "split_by_time: %d of %d documents have no date and go to neither side",
            undated,
            data.corpus.num_rows,
        )
    scalar = pa.scalar(when, type=dates.type)
    older_mask = pc.fill_null(pc.less(dates, scalar), False)
    newer_mask = pc.fill_null(pc.greater_equal(dates, scalar), False)

    # Queries on both sides / on neither, for the reports.
    side_of = [
        "old" if o else "new" if n else None
        for o, n in zip(older_mask.to_pylist(), newer_mask.to_pylist(), strict=True)
    ]
    doc_side = dict(zip(data.corpus["doc_id"].to_pylist(), side_of, strict=True))
    sides: dict[str, set[str | None]] = defaultdict(set)
    for qid, did in zip(data.qrels["query_id"].to_pylist(), data.qrels["doc_id"].to_pylist(), strict=True):
        sides[qid].add(doc_side.get(did))
    straddling = sum(1 for s in sides.values() if {"old", "new"} <= s)
    no_doc = sum(1 for q in data.queries["query_id"].to_pylist() if not (sides.get(q, set()) - {None}))

    label = f"split_by_time(<{when:%Y-%m-%d %H:%M:%S})"
    older = _side(data, older_mask, f"{label} older", undated, straddling, no_doc)
    newer = _side(data, newer_mask, f"{label} newer", undated, straddling, no_doc)
    return older, newer


def window_labels(dates: pa.Array | pa.ChunkedArray, period: Period) -> list[str | None]:
    """One label per date (``2019-04`` for months, ``2019-W14`` ISO weeks, ``2019-04-01``, ``2019``); None if null."""
    if period not in _PERIOD_FORMATS:
        raise ValueError(f"period must be one of {sorted(_PERIOD_FORMATS)}, got {period!r}")
    fmt = _PERIOD_FORMATS[period]
    return [d.strftime(fmt) if d is not None else None for d in dates.to_pylist()]


def time_windows(corpus: pa.Table, period: Period) -> list[tuple[str, pa.Table]]:
    """The corpus cut into consecutive calendar windows, oldest first: ``[("2019-04", table), ...]``.

    Only windows that hold documents are listed. Undated documents belong to no window; their number is logged as
    a warning (use :func:`count_undated` to report it).
    """
    labels = window_labels(corpus["date"], period)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        if lab is not None:
            groups[lab].append(i)
    undated = len(labels) - sum(len(v) for v in groups.values())
    if undated:
        log.warning(
            "time_windows: %d of %d documents have no date and are in no window", undated, len(labels)
        )
    return [(lab, corpus.take(pa.array(groups[lab], type=pa.int64()))) for lab in sorted(groups)]


def count_undated(corpus: pa.Table) -> int:
    """Documents with a null ``date``."""
    return corpus["date"].null_count


def read_dated_source(
    path: str | Path,
    fmt: Literal["auto", "jsonl", "lines", "parquet"] = "auto",
    date_field: str = "begin",
    text_field: str = "content",
    title_field: str | None = "title",
    id_field: str | None = None,
    date: str | None = None,
) -> RetrievalData:
    """Read a dated corpus: dated JSON lines (file or directory), one-document-per-line text, or corpus Parquet.

    ``auto``: ``.parquet`` -> Parquet written by raysparse (``doc_id``/``date`` columns), ``.txt`` -> line corpus
    (date from ``date`` or a ``YYYY-MM-DD`` in the path), anything else -> dated JSON lines.
    """
    from raysparse.data.readers import read_dated_jsonl, read_line_corpus, read_parquet

    p = Path(path)
    if fmt == "auto":
        fmt = "parquet" if p.suffix in (".parquet", ".pq") else "lines" if p.suffix == ".txt" else "jsonl"
    if fmt == "parquet":
        return read_parquet(p, id_field or "doc_id", "text", "title", "date")
    if fmt == "lines":
        return read_line_corpus(p, date)
    return read_dated_jsonl(p, date_field, text_field, title_field, id_field)


def window_summary(corpus: pa.Table, period: Period) -> list[dict[str, Any]]:
    """Rows ``{"window", "documents", "first", "last"}`` for a Markdown or JSON summary."""
    out = []
    for label, table in time_windows(corpus, period):
        dates = table["date"]
        out.append(
            {
                "window": label,
                "documents": table.num_rows,
                "first": pc.min(dates).as_py(),
                "last": pc.max(dates).as_py(),
            }
        )
    return out
