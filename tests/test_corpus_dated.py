"""Dated corpora on the real petitions archive and soynlp news: time splits, windows, the ``corpus dated`` CLI."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from raysparse.corpus.dated import read_dated_source, split_by_time, time_windows, window_labels
from raysparse.data import read_dated_jsonl, read_line_corpus
from raysparse.data.errors import DataFormatError
from raysparse.schemas import RetrievalData


@pytest.fixture(scope="module")
def petitions(shared_data: Path) -> RetrievalData:
    return read_dated_jsonl(shared_data / "corpora" / "petitions-dated")


def test_split_at_cutoff_partitions_dated_documents(petitions):
    older, newer = split_by_time(petitions, "2019-06-01")
    cutoff = datetime(2019, 6, 1)
    assert older.corpus.num_rows + newer.corpus.num_rows == petitions.corpus.num_rows
    assert older.corpus.num_rows > 1000 and newer.corpus.num_rows > 1000
    assert max(older.corpus["date"].to_pylist()) < cutoff <= min(newer.corpus["date"].to_pylist())
    assert set(older.corpus["doc_id"].to_pylist()).isdisjoint(newer.corpus["doc_id"].to_pylist())
    # a datetime cutoff is the same split; the dates stay typed
    again_old, _ = split_by_time(petitions, cutoff)
    assert again_old.corpus.equals(older.corpus)
    assert older.corpus.schema.field("date").type == pa.timestamp("s")
    with pytest.raises(DataFormatError, match="cutoff"):
        split_by_time(petitions, "first of June")


def test_queries_follow_documents_and_undated_are_counted(petitions):
    rows = petitions.corpus.to_pylist()
    old = [r for r in rows if r["date"] < datetime(2019, 6, 1)][:15]
    new = [r for r in rows if r["date"] >= datetime(2019, 6, 1)][:15]
    undated = [{**r, "date": None, "doc_id": r["doc_id"] + "-u"} for r in rows[-3:]]
    docs = old + new + undated
    queries = [
        {"query_id": f"q-{r['doc_id']}", "text": r["title"] or r["text"][:30], "lang": "ko"} for r in docs
    ]
    qrels = [{"query_id": f"q-{r['doc_id']}", "doc_id": r["doc_id"], "score": 1} for r in docs]
    # one query judged against an older and a newer petition
    queries.append({"query_id": "q-both", "text": "청원 두 시기", "lang": "ko"})
    qrels += [
        {"query_id": "q-both", "doc_id": old[0]["doc_id"], "score": 1},
        {"query_id": "q-both", "doc_id": new[0]["doc_id"], "score": 1},
    ]
    data = RetrievalData(
        pa.Table.from_pylist(docs), pa.Table.from_pylist(queries), pa.Table.from_pylist(qrels)
    )
    older, newer = split_by_time(data, "2019-06-01")
    for side, expected in ((older, old), (newer, new)):
        ids = set(side.corpus["doc_id"].to_pylist())
        assert ids == {r["doc_id"] for r in expected}
        assert set(side.qrels["doc_id"].to_pylist()) <= ids
        assert set(side.queries["query_id"].to_pylist()) == {f"q-{i}" for i in ids} | {"q-both"}
        assert side.reports[-1].skipped == {
            "undated document": 3,
            "query without a dated judged document": 3,
        }
        assert side.reports[-1].read == len(expected)
    both_old = older.qrels.filter(pc.equal(older.qrels["query_id"], "q-both"))["doc_id"].to_pylist()
    assert both_old == [old[0]["doc_id"]]


def test_time_windows_month_week_year_day(petitions, shared_data):
    months = time_windows(petitions.corpus, "month")
    files = sorted(
        p.name.split("_")[1] for p in (shared_data / "corpora" / "petitions-dated").glob("petitions_*")
    )
    assert [label for label, _ in months] == files
    assert sum(t.num_rows for _, t in months) == petitions.corpus.num_rows
    for label, table in months:
        assert {d.strftime("%Y-%m") for d in table["date"].to_pylist()} == {label}
    weeks = time_windows(petitions.corpus, "week")
    assert weeks[0][0] == "2017-W34" and all(lab[4:6] == "-W" for lab, _ in weeks)
    assert [lab for lab, _ in weeks] == sorted(lab for lab, _ in weeks)
    assert [lab for lab, _ in time_windows(petitions.corpus, "year")] == ["2017", "2019"]

    news = read_line_corpus(
        shared_data / "corpora" / "soynlp-news-2016-10-20" / "doublespace_line_corpus_sample.txt"
    )
    days = time_windows(news.corpus, "day")
    assert [(lab, t.num_rows) for lab, t in days] == [("2016-10-20", news.corpus.num_rows)]

    with_undated = pa.concat_tables(
        [
            petitions.corpus.slice(0, 5),
            news.corpus.slice(0, 2).set_column(3, "date", pa.nulls(2, pa.timestamp("s"))),
        ]
    )
    assert sum(t.num_rows for _, t in time_windows(with_undated, "month")) == 5
    assert window_labels(with_undated["date"], "year")[-1] is None
    with pytest.raises(ValueError, match="period"):
        time_windows(petitions.corpus, "decade")  # type: ignore[arg-type]


def test_cli_dated_writes_split_parquet_and_summary(petitions, shared_data, tmp_path, capsys):
    from raysparse.cli import main

    src = shared_data / "corpora" / "petitions-dated"
    assert (
        main(["corpus", "dated", "--path", str(src), "--split-at", "2019-06-01", "--out", str(tmp_path)]) == 0
    )
    older, newer = split_by_time(petitions, "2019-06-01")
    back_old = read_dated_source(tmp_path / "older.parquet")
    back_new = read_dated_source(tmp_path / "newer.parquet")
    assert (
        back_old.corpus.num_rows == older.corpus.num_rows
        and back_new.corpus.num_rows == newer.corpus.num_rows
    )
    assert back_old.corpus["date"].to_pylist() == older.corpus["date"].to_pylist()
    summary = (tmp_path / "summary.md").read_text()
    for label, table in time_windows(petitions.corpus, "month"):
        side = "older" if label < "2019-06" else "newer"
        assert f"| {label} | {table.num_rows} |" in summary and summary.count(f"| {label} |") == 1
        assert summary.split(f"| {label} |")[1].split("\n")[0].rstrip().endswith(f"| {side} |")
    assert pq.read_schema(tmp_path / "older.parquet").names[:5] == ["doc_id", "title", "text", "date", "lang"]

    missing = tmp_path / "nope"
    assert (
        main(["corpus", "dated", "--path", str(missing), "--out", str(tmp_path / "x")]) == 2
    )  # a user error: one line, exit 2
    assert "nope" in capsys.readouterr().err
