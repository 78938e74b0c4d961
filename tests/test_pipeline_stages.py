"""Resumable stages: a stage with an unchanged content hash is skipped, a changed one re-runs."""

from __future__ import annotations

import pyarrow as pa
import pytest

from raysparse.pipeline import file_digest, fingerprint, format_results, run_stage, split_queries
from raysparse.schemas import CORPUS, QRELS, QUERIES, RetrievalData


def _data(n: int = 40) -> RetrievalData:
    corpus = [{"doc_id": f"d{i}", "title": "", "text": f"문서 {i}"} for i in range(n)]
    queries = [{"query_id": f"q{i}", "text": f"질문 {i}"} for i in range(n)]
    qrels = [{"query_id": f"q{i}", "doc_id": f"d{i}", "score": 1} for i in range(n)]
    return RetrievalData(
        pa.Table.from_pylist(corpus, CORPUS),
        pa.Table.from_pylist(queries, QUERIES),
        pa.Table.from_pylist(qrels, QRELS),
    )


def test_stage_skips_when_key_unchanged(tmp_path):
    calls = []

    def work(d):
        calls.append(d)
        (d / "out.txt").write_text("x")
        return {"n": len(calls)}

    first = run_stage("s", {"a": 1}, tmp_path / "s", work)
    again = run_stage("s", {"a": 1}, tmp_path / "s", work)
    changed = run_stage("s", {"a": 2}, tmp_path / "s", work)
    forced = run_stage("s", {"a": 2}, tmp_path / "s", work, force=True)
    assert [first.skipped, again.skipped, changed.skipped, forced.skipped] == [False, True, False, False]
    assert again.info == {"n": 1} and changed.info == {"n": 2}
    assert len(calls) == 3


def test_failed_stage_is_not_marked_done(tmp_path):
    def boom(d):
        raise RuntimeError("crash mid-stage")

    with pytest.raises(RuntimeError, match="crash"):
        run_stage("s", {"a": 1}, tmp_path / "s", boom)
    assert not (tmp_path / "s" / "_stage.json").exists()


def test_split_is_deterministic_and_disjoint():
    data = _data()
    train, dev = split_queries(data, 0.25, seed=3)
    _, dev2 = split_queries(data, 0.25, seed=3)
    train_ids = set(train.queries.column("query_id").to_pylist())
    dev_ids = set(dev.queries.column("query_id").to_pylist())
    assert dev_ids == set(dev2.queries.column("query_id").to_pylist())
    assert train_ids.isdisjoint(dev_ids) and len(train_ids | dev_ids) == 40
    assert 3 <= len(dev_ids) <= 20
    assert set(dev.qrels.column("query_id").to_pylist()) == dev_ids
    assert dev.corpus.num_rows == train.corpus.num_rows == 40


def test_fingerprints(tmp_path):
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("1")
    before = file_digest(tmp_path / "d")
    (tmp_path / "d" / "x").write_text("2")
    assert file_digest(tmp_path / "d") != before


def test_results_table_has_ratio():
    table = format_results(
        {"ndcg@10": 0.5, "num_queries": 10}, {"ndcg@10": 0.25, "num_queries": 10}, "BM25-kiwi"
    )
    assert "| ndcg@10 | 0.5000 | 0.2500 | 2.00 |" in table
