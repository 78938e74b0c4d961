"""BM25 hard-negative mining: real bm25s, real Kiwi/bigram analyzers, real Ray, real Korean data (KLUE-MRC)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from raysparse.config import MiningConfig
from raysparse.mining import (
    REPORT_FILE,
    Bm25Index,
    mine,
    mine_batch,
    normalize_for_dedup,
    read_triples,
    triples_files,
    triples_table,
)
from raysparse.schemas import TRIPLES, RetrievalData


def make_data(docs: list[tuple[str, str, str]], queries: list[tuple[str, str]], qrels: list[tuple[str, str]]):
    """RetrievalData from (doc_id, title, text), (query_id, text) and (query_id, doc_id) tuples."""
    corpus = pa.table(
        {
            "doc_id": [d[0] for d in docs],
            "title": [d[1] for d in docs],
            "text": [d[2] for d in docs],
            "date": pa.nulls(len(docs), pa.timestamp("s")),
            "lang": ["ko"] * len(docs),
        }
    )
    q = pa.table(
        {"query_id": [x[0] for x in queries], "text": [x[1] for x in queries], "lang": ["ko"] * len(queries)}
    )
    r = pa.table(
        {
            "query_id": [x[0] for x in qrels],
            "doc_id": [x[1] for x in qrels],
            "score": pa.array([1] * len(qrels), pa.int32()),
        }
    )
    return RetrievalData(corpus, q, r)


def klue_data(shared_data: Path, limit: int | None = None) -> RetrievalData:
    """KLUE-MRC ODQA validation: one passage per distinct context, the question's own context is its positive."""
    rows = [
        json.loads(line)
        for line in (shared_data / "klue-mrc-odqa" / "validation.jsonl").open(encoding="utf-8")
    ]
    rows = rows[:limit] if limit else rows
    docs: dict[str, tuple[str, str]] = {}
    for r in rows:
        docs.setdefault(r["context"], (f"klue-{len(docs)}", r["title"]))
    return make_data(
        [(doc_id, title, text) for text, (doc_id, title) in docs.items()],
        [(r["id"], r["question"]) for r in rows],
        [(r["id"], docs[r["context"]][0]) for r in rows],
    )


POS_TEXT = (
    "서울 지하철 2호선은 순환선으로 강남역과 잠실역을 지난다. 하루 이용객이 가장 많은 노선이며, "
    "출퇴근 시간에는 열차가 2분 간격으로 운행된다. 1980년에 일부 구간이 처음 개통되었고 1984년에 순환 구간이 완성되었다."
)
DOCS = [
    ("pos", "", POS_TEXT),
    (
        "dup",
        "",
        "  " + POS_TEXT.replace(" ", "  ").upper(),
    ),  # whitespace/case-only change: same normalised text
    ("near", "", POS_TEXT.replace("지난다", "지나간다")),  # one word changed: term-set Jaccard >= 0.9
    ("hard1", "", "지하철 2호선 강남역 근처 맛집을 소개합니다."),
    ("hard2", "", "서울 지하철 요금이 다음 달부터 인상된다."),
    ("hard3", "", "잠실역에서 열린 행사에 많은 시민이 참여했다."),
    *[(f"other{i}", "", f"전혀 관계없는 문서 {i}번: 제주도 감귤 농사와 날씨 이야기.") for i in range(20)],
]


def test_mine_batch_drops_positives_and_near_duplicates_and_matches_bm25s():
    import bm25s

    data = make_data(DOCS, [("q1", "서울 지하철 2호선 강남역 잠실역")], [("q1", "pos")])
    cfg = MiningConfig(analyzer="bigram", top_k=10, num_hard_negatives=3, num_random_negatives=4)
    index = Bm25Index.build(data.corpus, cfg, show_progress=False)
    # "dup" differs only in whitespace, "near" in one word: both must be recognised as duplicates of "pos".
    assert normalize_for_dedup(DOCS[0][2]) == normalize_for_dedup(DOCS[1][2])
    assert index.is_near_duplicate(0, 2, cfg.near_duplicate_threshold)
    assert not index.is_near_duplicate(0, 3, cfg.near_duplicate_threshold)

    cols = mine_batch(
        index,
        {"query_id": ["q1"], "query": ["서울 지하철 2호선 강남역 잠실역"], "positive_ids": [["pos"]]},
        cfg,
    )
    row = triples_table(cols).to_pylist()[0]
    assert row["positive_ids"] == ["pos"]
    assert set(row["negative_ids"]).isdisjoint({"pos", "dup", "near"})
    assert row["negative_kinds"] == ["hard"] * 3 + ["random"] * 4
    hard = row["negative_ids"][:3]
    assert set(hard) == {"hard1", "hard2", "hard3"}
    assert row["negative_scores"][:3] == sorted(row["negative_scores"][:3], reverse=True)
    assert len(set(row["negative_ids"])) == 7
    assert all(r == -1 or r > 0 for r in row["negative_ranks"][3:])

    # Scores agree with bm25s' own scorer on the same tokens (independent code path).
    reference = bm25s.BM25(k1=cfg.bm25_k1, b=cfg.bm25_b)
    from raysparse.analyzers import bigram_analyzer

    reference.index(bigram_analyzer([d[2] for d in DOCS]), show_progress=False)
    ref_scores = reference.get_scores(bigram_analyzer(["서울 지하철 2호선 강남역 잠실역"])[0])
    ids = [d[0] for d in DOCS]
    for doc_id, score in zip(
        row["negative_ids"] + row["positive_ids"],
        row["negative_scores"] + row["positive_scores"],
        strict=True,
    ):
        assert score == pytest.approx(float(ref_scores[ids.index(doc_id)]), rel=1e-5)
    # ranks are 1-based BM25 ranks over the whole corpus (positives and duplicates included)
    for doc_id, rank in zip(hard, row["negative_ranks"][:3], strict=True):
        assert rank == 1 + int((ref_scores > ref_scores[ids.index(doc_id)] + 1e-6).sum())


def test_search_matches_bm25s_retrieve_on_klue(shared_data):
    import bm25s

    from raysparse.analyzers import bigram_analyzer

    data = klue_data(shared_data)
    cfg = MiningConfig(analyzer="bigram")
    index = Bm25Index.build(data.corpus, cfg, show_progress=False)
    queries = data.queries.column("text").to_pylist()[:50]
    rows, scores = index.search(queries, k=10)

    texts = index.texts.to_pylist()
    reference = bm25s.BM25(k1=cfg.bm25_k1, b=cfg.bm25_b, backend="numpy")
    reference.index(bigram_analyzer(texts), show_progress=False)
    ref_rows, ref_scores = reference.retrieve(bigram_analyzer(queries), k=10, show_progress=False)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)
    # top-1 agrees wherever it is not tied
    untied = ref_scores[:, 0] > ref_scores[:, 1] + 1e-4
    assert untied.sum() > 40
    assert (rows[untied, 0] == ref_rows[untied, 0]).all()


def test_random_negatives_independent_of_batching_and_seeded():
    data = make_data(
        DOCS, [(f"q{i}", t) for i, t in enumerate(["강남역 맛집", "제주도 감귤", "지하철 요금"])], []
    )
    cfg = MiningConfig(analyzer="bigram", num_hard_negatives=2, num_random_negatives=5, seed=7)
    index = Bm25Index.build(data.corpus, cfg, show_progress=False)
    batch = {
        "query_id": ["q0", "q1", "q2"],
        "query": ["강남역 맛집", "제주도 감귤", "지하철 요금"],
        "positive_ids": [["hard1"], ["other3"], ["hard2"]],
    }
    whole = triples_table(mine_batch(index, batch, cfg))
    one_by_one = pa.concat_tables(
        triples_table(mine_batch(index, {k: v[i : i + 1] for k, v in batch.items()}, cfg)) for i in range(3)
    )
    assert whole.equals(one_by_one)
    other_seed = triples_table(mine_batch(index, batch, cfg.model_copy(update={"seed": 8})))
    assert other_seed.column("negative_ids") != whole.column("negative_ids")
    for row in whole.to_pylist():
        assert row["negative_kinds"].count("random") == 5
        assert set(row["negative_ids"]).isdisjoint(row["positive_ids"])


def test_mine_batch_rejects_unknown_positive_with_record_and_query_id():
    data = make_data(DOCS, [], [])
    index = Bm25Index.build(data.corpus, MiningConfig(), show_progress=False)
    batch = {"query_id": ["a", "b"], "query": ["지하철", "감귤"], "positive_ids": [["pos"], ["missing-doc"]]}
    with pytest.raises(ValueError, match=r"batch record 1 \(query_id 'b'\).*'missing-doc'"):
        mine_batch(index, batch, MiningConfig())


def test_duplicate_doc_id_is_an_error_naming_the_rows():
    data = make_data([("a", "", "하나"), ("b", "", "둘"), ("a", "", "셋")], [], [])
    with pytest.raises(ValueError, match=r"corpus row 2: doc_id 'a' duplicates row 0"):
        Bm25Index.build(data.corpus, MiningConfig(), show_progress=False)


@pytest.mark.slow
def test_mine_in_process_and_ray_give_identical_files_and_report_skips(shared_data, ray_local, tmp_path):
    data = klue_data(shared_data, limit=120)
    extra = make_data(
        [],
        [
            ("x-no-qrels", "아무 판정 없는 질문"),
            ("x-missing", "없는 문서를 가리키는 질문"),
            ("x-empty", "  "),
        ],
        [("x-missing", "no-such-doc"), ("x-empty", "klue-0")],
    )
    data = RetrievalData(
        data.corpus,
        pa.concat_tables([data.queries, extra.queries]),
        pa.concat_tables([data.qrels, extra.qrels]),
    )
    # several shards (written by different actors) and no small-input shortcut: this is the Ray path under test
    cfg = MiningConfig(analyzer="bigram", batch_size=32, shard_rows=40, in_process_below=0)
    local = mine(data, cfg, tmp_path / "local", ray=False, show_progress=False)
    distributed = mine(data, cfg, tmp_path / "ray", ray=True, show_progress=False)

    assert triples_files(tmp_path / "local") == triples_files(tmp_path / "ray")
    assert sorted(triples_files(tmp_path / "ray")) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert local.skipped == {
        "no positive judgement in qrels": 1,
        "no positive in corpus": 1,
        "empty query text": 1,
    }
    assert local.positives_not_in_corpus == 1
    assert local.queries_mined == distributed.queries_mined == 120
    assert distributed.mode == "ray" and distributed.workers == 2

    table = read_triples(tmp_path / "ray")
    assert table.schema.equals(TRIPLES)
    assert table.column("query_id").to_pylist() == sorted(table.column("query_id").to_pylist())
    rows = table.to_pylist()
    for row in rows:
        assert len(row["positive_ids"]) >= 1
        assert row["negative_kinds"].count("random") == cfg.num_random_negatives
        assert set(row["negative_ids"]).isdisjoint(row["positive_ids"])
        hard_ranks = [
            r for r, k in zip(row["negative_ranks"], row["negative_kinds"], strict=True) if k == "hard"
        ]
        assert hard_ranks == sorted(hard_ranks) and all(1 <= r <= cfg.top_k for r in hard_ranks)
    # KLUE questions are answerable lexically: the positive outscores the best hard negative almost always.
    wins = sum(1 for r in rows if r["positive_scores"][0] > max([0.0, *r["negative_scores"][:1]]))
    assert wins / len(rows) > 0.8

    saved = json.loads((tmp_path / "ray" / REPORT_FILE).read_text())
    assert saved["queries_mined"] == 120 and saved["skipped"]["empty query text"] == 1
    assert saved["hard_negatives"] + saved["random_negatives"] == sum(len(r["negative_ids"]) for r in rows)
    assert {"index_build", "mining", "total"} <= set(saved["timings"])


def test_kiwi_analyzer_mining_on_korean(shared_data, tmp_path):
    data = klue_data(shared_data, limit=30)
    cfg = MiningConfig(analyzer="kiwi", num_hard_negatives=5, num_random_negatives=2)
    report = mine(data, cfg, tmp_path, ray=False, show_progress=False)
    assert report.queries_mined == 30 and report.analyzer == "kiwi"
    rows = read_triples(tmp_path).to_pylist()
    assert sum(r["negative_kinds"].count("hard") for r in rows) >= 0.8 * 30 * 5


@pytest.mark.parametrize("k", [1, 7, 100])
def test_topk_kernel_equals_brute_force_on_both_paths_with_ties(k):
    """The retrieval kernel against dense numpy scoring: queries of rare terms (the touched-rows path) and of common
    terms (the scan-every-row path), weights quantised so that many scores tie (ties go to the lower row)."""
    import scipy.sparse as sp

    from raysparse.mining.retrieve import topk_batch

    rng = np.random.default_rng(0)
    num_docs, vocab = 3000, 400
    density = np.where(np.arange(vocab) < 20, 0.6, 0.004)  # 20 common terms, the rest rare
    mask = rng.random((num_docs, vocab)) < density
    weights = np.where(mask, rng.integers(1, 4, size=mask.shape) * 0.5, 0.0).astype(np.float32)
    csc = sp.csc_matrix(weights)
    queries = [list(rng.integers(20, vocab, size=3)) for _ in range(30)]  # rare terms only
    queries += [[*rng.integers(0, 20, size=4), int(rng.integers(20, vocab))] for _ in range(30)]
    queries += [[5, 5, 300]]  # a repeated term counts twice, as in bm25s
    q_ids = np.array([t for q in queries for t in q], dtype=np.int64)
    q_ptr = np.cumsum([0] + [len(q) for q in queries]).astype(np.int64)
    rows, scores = topk_batch(
        q_ids, q_ptr, csc.data, csc.indices.astype(np.int32), csc.indptr.astype(np.int64), num_docs, k
    )
    for i, q in enumerate(queries):
        dense = np.zeros(num_docs, dtype=np.float32)
        for t in q:
            dense += weights[:, t]
        positive = np.flatnonzero(dense > 0)
        expected = positive[np.lexsort((positive, -dense[positive]))][:k]
        got = rows[i][rows[i] >= 0]
        assert got.tolist() == expected.tolist(), i
        np.testing.assert_array_equal(scores[i][: len(got)], dense[expected])
