"""The data readers on the real files in ../shared/data, on tiny files in every format, and on bad input."""

from __future__ import annotations

import json
import os
import pickle
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysparse.config import DataConfig
from raysparse.data import (
    DataFormatError,
    build_crosslingual_sets,
    load_source,
    read_beir,
    read_dated_jsonl,
    read_glossary_tsv,
    read_jsonl,
    read_line_corpus,
    read_msmarco,
    read_msmarco_pair,
    read_pairs,
    read_parallel_jsonl,
    read_parallel_text,
    read_parquet,
    read_prototype,
    read_prototype_synonyms,
    read_squad,
    read_synonym_json,
    read_tatoeba,
    safe_load_pickle,
    stable_id,
    write_beir,
)
from raysparse.schemas import CORPUS, QRELS, QUERIES, SENTENCE_PAIRS, TERM_PAIRS


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _qrels_resolve(data) -> None:
    """Every judgement points at a query and a document that exist (the BEIR invariant)."""
    doc_ids = set(data.corpus.column("doc_id").to_pylist())
    query_ids = set(data.queries.column("query_id").to_pylist())
    for row in data.qrels.to_pylist():
        assert row["doc_id"] in doc_ids and row["query_id"] in query_ids
    assert set(data.qrels.column("query_id").to_pylist()) == query_ids
    assert data.corpus.schema == CORPUS and data.queries.schema == QUERIES and data.qrels.schema == QRELS


# ------------------------------------------------------------------------------------------------ real shared data
def test_klue_mrc_jsonl_dedupes_contexts(shared_data):
    data = read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")
    # 240 questions over 235 distinct passages: repeated contexts collapse to one document.
    assert data.queries.num_rows == 240
    assert data.corpus.num_rows == 235
    assert data.qrels.num_rows == 240
    _qrels_resolve(data)
    assert set(data.corpus.column("lang").to_pylist()) == {"ko"}
    first = json.loads((shared_data / "klue-mrc-odqa" / "validation.jsonl").open(encoding="utf-8").readline())
    row = data.qrels.filter(pa.compute.equal(data.qrels["query_id"], first["id"])).to_pylist()[0]
    assert row["doc_id"] == stable_id(first["context"])


def test_msmarco_ko_en_detects_language_and_aligns(shared_data):
    root = shared_data / "msmarco-ko-en"
    ko = read_msmarco(root / "msmarco_kor.dev1000.json")
    en = read_msmarco(root / "msmarco_eng.dev1000.json")
    assert ko.queries.num_rows == en.queries.num_rows == 1000
    assert set(ko.queries.column("lang").to_pylist()) == {"ko"}
    assert set(en.queries.column("lang").to_pylist()) == {"en"}
    assert ko.queries.column("query_id")[0].as_py() == "ko-1"
    _qrels_resolve(ko)
    _qrels_resolve(en)
    pair = read_msmarco_pair(root / "msmarco_kor.dev1000.json", root / "msmarco_eng.dev1000.json")
    assert len(pair.ids) == 1000 and pair.report.num_skipped == 0
    assert pair.query_pairs().schema == SENTENCE_PAIRS


def test_crosslingual_sets_share_ids_across_languages(shared_data):
    sets = build_crosslingual_sets(
        shared_data / "msmarco-ko-en" / "msmarco_kor.dev1000.json",
        shared_data / "msmarco-ko-en" / "msmarco_eng.dev1000.json",
        id_range=(901, 950),
        distractors=20,
    )
    assert set(sets) == {"ko-en", "en-ko", "ko-ko", "en-en"}
    ko_en = sets["ko-en"]
    assert ko_en.queries.num_rows == 50
    assert set(ko_en.queries.column("lang").to_pylist()) == {"ko"}
    assert set(ko_en.corpus.column("lang").to_pylist()) == {"en"}
    # The Korean query 901 is judged against the English passage of 901.
    assert {r["doc_id"] for r in ko_en.qrels.to_pylist() if r["query_id"] == "ko-901"} == {"en-901-0"}
    # Distractors come from outside the range and are identical in every set with that passage language.
    distractor_docs = {
        d for d in ko_en.corpus.column("doc_id").to_pylist() if not 901 <= int(d.split("-")[1]) <= 950
    }
    assert len(distractor_docs) >= 20
    assert sets["en-en"].corpus.column("doc_id").to_pylist() == ko_en.corpus.column("doc_id").to_pylist()
    for data in sets.values():
        _qrels_resolve(data)
    # The directory form used by raysparse.evaluation gives the same sets.
    again = build_crosslingual_sets(shared_data / "msmarco-ko-en", first_id=901, last_id=950, distractors=20)
    assert again["ko-en"].qrels.equals(ko_en.qrels)


def test_glossaries_read_korean_column_whatever_the_order(shared_data):
    kengdic, report = read_glossary_tsv(shared_data / "bilingual" / "kengdic" / "ezcorean_6000.tsv")
    assert kengdic.schema == TERM_PAIRS
    assert kengdic.num_rows > 5000 and report.read == kengdic.num_rows
    assert ("호주", "Australia") in set(
        zip(kengdic["ko"].to_pylist(), kengdic["en"].to_pylist(), strict=True)
    )
    assert report.skipped.get("duplicate pair", 0) > 0  # kengdic repeats a few entries; counted, not hidden
    pydocs, _ = read_glossary_tsv(
        shared_data / "bilingual" / "python-docs-glossary" / "glossary_terms_en_ko.tsv"
    )
    pairs = dict(zip(pydocs["en"].to_pylist(), pydocs["ko"].to_pylist(), strict=True))
    assert pairs["argument"] == "인자"  # header "en<TAB>ko": columns swapped into ko/en


def test_parallel_resources(shared_data):
    bilingual = shared_data / "bilingual"
    news, report = read_parallel_text(
        bilingual / "news-parallel-dev" / "korean-english-park.dev.ko",
        bilingual / "news-parallel-dev" / "korean-english-park.dev.en",
    )
    assert news.schema == SENTENCE_PAIRS and news.num_rows + report.num_skipped == 1000
    assert "수퍼컴퓨터" in news["ko"][0].as_py() and "supercomputer" in news["en"][0].as_py()
    tatoeba, report = read_tatoeba(bilingual / "tatoeba" / "kor.txt")
    assert tatoeba.num_rows > 5000
    first = tatoeba.slice(0, 1).to_pylist()[0]
    assert (first["ko"], first["en"]) == ("가.", "Go.") and first["source"].startswith("tatoeba: CC-BY")
    docs, report = read_parallel_jsonl(bilingual / "python-docs-glossary" / "pairs_en_ko.jsonl")
    assert docs.num_rows > 30000 and report.skipped.get("duplicate pair", 0) > 0
    assert docs.num_rows + report.num_skipped == 31502


def test_dated_petitions_and_news(shared_data):
    petitions = read_dated_jsonl(shared_data / "corpora" / "petitions-dated" / "petitions_2017-08")
    assert petitions.corpus.schema.field("date").type == pa.timestamp("s")
    report = petitions.reports[0]
    assert report.read + report.num_skipped == 662  # every line is either read or counted
    assert petitions.corpus["date"].null_count == 0
    dates = petitions.corpus["date"].to_pylist()
    assert min(dates) >= datetime(2017, 8, 1) and max(dates) < datetime(2017, 10, 1)
    first = json.loads((shared_data / "corpora" / "petitions-dated" / "petitions_2017-08").open().readline())
    assert petitions.corpus.slice(0, 1).to_pylist()[0]["title"] == first["title"]
    by_idx = read_dated_jsonl(
        shared_data / "corpora" / "petitions-dated" / "petitions_2019-08", id_field="petition_idx"
    )
    assert by_idx.corpus["doc_id"][0].as_py().isdigit()

    news = read_line_corpus(
        shared_data / "corpora" / "soynlp-news-2016-10-20" / "doublespace_line_corpus_sample.txt"
    )
    assert news.corpus.num_rows == 482
    assert set(news.corpus["date"].to_pylist()) == {datetime(2016, 10, 20)}


@pytest.mark.slow
def test_dated_directory_counts_cross_file_duplicates(shared_data):
    every = read_dated_jsonl(shared_data / "corpora" / "petitions-dated")
    assert len(every.reports) == 6
    total_lines = sum(r.read + r.num_skipped for r in every.reports)
    assert total_lines == 3691
    assert every.corpus.num_rows == sum(r.read for r in every.reports)
    assert len(set(every.corpus["doc_id"].to_pylist())) == every.corpus.num_rows


# -------------------------------------------------------------------------------------------- tiny files, each format
@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    _write_jsonl(
        root / "corpus.jsonl",
        [
            {"_id": "d1", "title": "검색", "text": "검색 엔진은 문서를 찾는다."},
            {"_id": "d2", "title": "", "text": "Search engines rank documents."},
            {"_id": "d3", "title": "빈 문서", "text": "  "},
            {"_id": "d1", "title": "중복", "text": "같은 아이디"},
        ],
    )
    _write_jsonl(
        root / "queries.jsonl",
        [
            {"_id": "q1", "text": "검색 엔진"},
            {"_id": "q2", "text": "ranking"},
            {"_id": "q3", "text": "학습용 질의"},
        ],
    )
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq2\td3\t1\n")
    return root


def test_beir_reads_counts_skips_and_round_trips(tiny_beir: Path, tmp_path: Path):
    data = read_beir(tiny_beir)
    assert data.corpus["doc_id"].to_pylist() == ["d1", "d2"]
    assert data.corpus["lang"].to_pylist() == ["ko", "en"]
    assert data.queries["query_id"].to_pylist() == ["q1", "q2"]
    report = data.reports[0]
    assert report.skipped == {
        "empty document text": 1,
        "duplicate doc id": 1,
        "qrel doc not in corpus.jsonl": 1,
        "query not in qrels/test.tsv": 1,
    }
    data.corpus = data.corpus.set_column(
        3, "date", pa.array([datetime(2024, 1, 2, 3, 4, 5), None], pa.timestamp("s"))
    )
    again = read_beir(write_beir(data, tmp_path / "out"))
    assert again.corpus.equals(data.corpus)
    assert again.queries.equals(data.queries)
    assert again.qrels.equals(data.qrels)
    assert again.reports[0].num_skipped == 0


def test_squad_json_and_jsonl_agree(tmp_path: Path):
    context = "서울은 한국의 수도이다.  인구가 많다."
    squad = {
        "data": [
            {
                "title": "서울",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {"id": "a", "question": "한국의 수도는?"},
                            {"id": "b", "question": "서울 인구"},
                            {"id": "c", "question": "답 없는 질문", "is_impossible": True},
                        ],
                    },
                    {"context": "Busan is a port city.", "qas": [{"id": "d", "question": "port city"}]},
                ],
            }
        ]
    }
    (tmp_path / "squad.json").write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    from_json = read_squad(tmp_path / "squad.json")
    assert from_json.corpus.num_rows == 2 and from_json.queries.num_rows == 3
    assert from_json.reports[0].skipped == {"unanswerable question (is_impossible)": 1}
    rows = [
        {"id": "a", "title": "서울", "context": context, "question": "한국의 수도는?"},
        # same passage, different whitespace: still one document
        {"id": "b", "title": "서울", "context": context.replace("  ", " "), "question": "서울 인구"},
        {"id": "d", "title": "서울", "context": "Busan is a port city.", "question": "port city"},
        {"id": "a", "title": "서울", "context": context, "question": "한국의 수도는?"},
    ]
    from_jsonl = read_squad(_write_jsonl(tmp_path / "squad.jsonl", rows))
    assert from_jsonl.reports[0].skipped == {"duplicate question id": 1}
    assert from_jsonl.qrels.equals(from_json.qrels)
    assert from_jsonl.corpus["doc_id"].to_pylist() == from_json.corpus["doc_id"].to_pylist()


def test_jsonl_parquet_corpus_and_pairs(tmp_path: Path):
    rows = [
        {"pid": "p1", "body": "클라우드 비용 절감", "head": "비용", "when": "2024-03-01"},
        {"pid": "p2", "body": "", "head": None, "when": "2024-03-02"},
        {"pid": "p3", "body": "Autoscaling adds servers.", "head": "scale", "when": "2024-03-03T10:00:00"},
    ]
    fields = {"id_field": "pid", "text_field": "body", "title_field": "head", "date_field": "when"}
    jl = read_jsonl(_write_jsonl(tmp_path / "c.jsonl", rows), **fields)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    pqt = read_parquet(tmp_path / "c.parquet", **fields)
    assert jl.corpus.equals(pqt.corpus)
    assert jl.corpus["doc_id"].to_pylist() == ["p1", "p3"]
    assert jl.corpus["date"].to_pylist() == [datetime(2024, 3, 1), datetime(2024, 3, 3, 10)]
    assert jl.reports[0].skipped == {"empty document text": 1}
    hashed = read_jsonl(tmp_path / "c.jsonl", id_field=None, text_field="body")
    assert hashed.corpus["doc_id"][0].as_py() == stable_id("클라우드 비용 절감")

    pairs = read_pairs(
        _write_jsonl(
            tmp_path / "pairs.jsonl",
            [
                {"query": "비용 절감", "positive": "클라우드 비용 절감"},
                {"query": "scale out", "positive": ["Autoscaling adds servers.", "클라우드 비용 절감"]},
                {"query": "비용 절감", "positive": "클라우드 비용 절감"},
            ],
        )
    )
    assert pairs.corpus.num_rows == 2 and pairs.queries.num_rows == 2 and pairs.qrels.num_rows == 3
    assert pairs.reports[0].skipped == {"duplicate query-document pair": 1}
    _qrels_resolve(pairs)
    by_id = read_pairs(
        _write_jsonl(tmp_path / "by_id.jsonl", [{"query": "q", "pos": "p1"}, {"query": "r", "pos": "nope"}]),
        positive_field=None,
        positive_id_field="pos",
        corpus=jl,
    )
    assert by_id.qrels.to_pylist() == [{"query_id": stable_id("q", "q"), "doc_id": "p1", "score": 1}]
    assert by_id.reports[-1].skipped == {"positive id not in corpus": 1}


def test_load_source_dispatches_on_config(tiny_beir: Path, tmp_path: Path):
    assert load_source(DataConfig(format="beir", path=str(tiny_beir))).queries.num_rows == 2
    _write_jsonl(tmp_path / "c.jsonl", [{"id": str(i), "text": f"문서 {i}"} for i in range(5)])
    limited = load_source(DataConfig(format="jsonl", path=str(tmp_path / "c.jsonl"), max_records=3))
    assert limited.corpus.num_rows == 3 and limited.reports[0].skipped == {"over data.max_records": 2}
    _write_jsonl(tmp_path / "p.jsonl", [{"question": "질문", "answer_text": "답 문서"}])
    pairs = load_source(
        DataConfig(
            format="jsonl", path=str(tmp_path / "p.jsonl"), query_field="question", text_field="answer_text"
        )
    )
    assert pairs.qrels.num_rows == 1
    with pytest.raises(ValueError, match=r"data\.path is required"):
        load_source(DataConfig(format="squad"))


def test_prototype_folder(tmp_path: Path):
    base = tmp_path / "dataset" / "base_model"
    llm = tmp_path / "dataset" / "llm_generated"
    base.mkdir(parents=True)
    llm.mkdir(parents=True)
    (base / "documents.json").write_text(
        json.dumps(
            [
                {"id": "w1", "title": "검색", "text": "검색 엔진은 문서를 찾는다."},
                {"title": "모델", "content": "희소 모델은 단어 가중치를 예측한다."},
                {"id": "w3", "text": ""},
            ],
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    with (base / "qd_pairs_base.pkl").open("wb") as fh:
        pickle.dump([("검색 엔진", "검색 엔진은  문서를 찾는다."), ("새 질의", "새 문서")], fh)
    with (llm / "synthetic_qd_pairs.pkl").open("wb") as fh:
        pickle.dump(
            [{"query": "희소 모델", "positive": "희소 모델은 단어 가중치를 예측한다.", "score": 0.9}], fh
        )
    (base / "bilingual_synonyms.json").write_text(
        json.dumps({"검색": ["search", "retrieval"], "모델": "model"})
    )
    (llm / "enhanced_synonyms.json").write_text(json.dumps([{"korean": "학습", "english": "training"}]))

    data = read_prototype(tmp_path / "dataset")
    assert data.corpus.num_rows == 3  # w1, the hashed second document, and "새 문서"
    assert data.reports[0].skipped == {"empty document text": 1}
    qrels = {(r["query_id"], r["doc_id"]) for r in data.qrels.to_pylist()}
    assert (
        stable_id("검색 엔진", "q"),
        "w1",
    ) in qrels  # pair text matched documents.json despite the spacing
    _qrels_resolve(data)
    terms, reports = read_prototype_synonyms(tmp_path / "dataset")
    assert sorted(zip(terms["ko"].to_pylist(), terms["en"].to_pylist(), strict=True)) == [
        ("검색", "retrieval"),
        ("검색", "search"),
        ("모델", "model"),
        ("학습", "training"),
    ]
    assert len(reports) == 2 and data.corpus.schema == CORPUS
    assert load_source(DataConfig(format="prototype", path=str(tmp_path / "dataset"))).qrels.num_rows == 3


def test_plain_pickles_of_allowed_containers_load(tmp_path: Path):
    value = [
        ("질의", "문서"),
        {"query": "q", "positive": ["a", "b"]},
        {1, 2},
        frozenset({3}),
        b"x",
        1.5,
        None,
    ]
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"ok{protocol}.pkl"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        assert safe_load_pickle(path) == value


# ------------------------------------------------------------------------------------------------------ bad input
class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path: Path, protocol: int):
    marker = tmp_path / "pwned"
    payload = pickle.dumps([("검색", "문서"), _Exploit(marker)], protocol=protocol)
    # Sanity: this payload really runs code under plain pickle (so the test can fail).
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    (tmp_path / "proto").mkdir()
    (tmp_path / "proto" / "qd_pairs_base.pkl").write_bytes(payload)
    with pytest.raises(DataFormatError) as err:
        read_prototype(tmp_path / "proto")
    message = str(err.value)
    assert "qd_pairs_base.pkl" in message
    assert "system" in message and "refuses non-plain pickles for safety" in message
    assert not marker.exists()


def test_pickled_class_instance_is_refused(tmp_path: Path):
    path = tmp_path / "frame.pkl"
    path.write_bytes(pickle.dumps(datetime(2024, 1, 1)))
    with pytest.raises(DataFormatError, match=r"datetime\.datetime"):
        safe_load_pickle(path)
    path.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DataFormatError, match=r"frame\.pkl"):
        safe_load_pickle(path)


def test_truncated_json_names_file_and_position(tmp_path: Path):
    path = tmp_path / "msmarco.json"
    path.write_text(json.dumps([{"id": 1, "query": "q", "positive": ["p"]}] * 3)[:-25])
    with pytest.raises(
        DataFormatError, match=r"msmarco\.json: invalid or truncated JSON at line 1 column \d+"
    ):
        read_msmarco(path)
    docs = tmp_path / "documents.json"
    docs.write_text('[{"id": "a", "text": "검색"},\n {"id": "b", "te')
    with pytest.raises(DataFormatError, match=r"documents\.json: invalid or truncated JSON at line 2"):
        read_prototype(tmp_path)


def test_missing_and_wrong_fields_name_file_line_and_field(tiny_beir: Path, tmp_path: Path):
    lines = (tiny_beir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    lines.insert(2, json.dumps({"id": "d9", "text": "아이디 필드 이름이 틀림"}))
    (tiny_beir / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl line 3: field '_id' is missing"):
        read_beir(tiny_beir)

    (tmp_path / "bad.jsonl").write_text('{"id": "1", "text": "a"}\n{"id": "2", "text": \n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl line 2: invalid JSON"):
        read_jsonl(tmp_path / "bad.jsonl")

    _write_jsonl(tmp_path / "c.jsonl", [{"id": "1", "text": "a"}, {"id": "2", "body": "b"}])
    with pytest.raises(
        DataFormatError, match=r"c\.jsonl line 2: field 'text' is missing \(set data.text_field"
    ):
        read_jsonl(tmp_path / "c.jsonl")
    _write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": ["not", "a", "string"]}])
    with pytest.raises(DataFormatError, match=r"d\.jsonl line 1: field 'text' must be a string"):
        read_jsonl(tmp_path / "d.jsonl")
    _write_jsonl(tmp_path / "e.jsonl", [{"begin": "어제", "content": "본문"}])
    with pytest.raises(DataFormatError, match=r"e\.jsonl line 1: field 'begin' is not a date"):
        read_dated_jsonl(tmp_path / "e.jsonl")

    (tmp_path / "m.json").write_text(
        json.dumps([{"id": 1, "query": "q", "positive": ["p"]}, {"id": 2, "query": "r"}])
    )
    with pytest.raises(DataFormatError, match=r"m\.json record 1: field 'positive' is missing"):
        read_msmarco(tmp_path / "m.json")
    (tiny_beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    (tiny_beir / "corpus.jsonl").write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"test\.tsv line 2: field 'score' is not a number"):
        read_beir(tiny_beir)
    (tmp_path / "squad.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}))
    with pytest.raises(
        DataFormatError, match=r"squad\.json data\[0\]\.paragraphs\[0\]: field 'context' is missing"
    ):
        read_squad(tmp_path / "squad.json")


def test_bilingual_bad_input(tmp_path: Path):
    (tmp_path / "a.ko").write_text("하나\n둘\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("one\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"a\.ko has 2 lines but .*a\.en has 1"):
        read_parallel_text(tmp_path / "a.ko", tmp_path / "a.en")
    (tmp_path / "g.tsv").write_text("검색\tsearch\nmodel\t모델\n모델\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"g\.tsv line 3: .*field en is missing"):
        read_glossary_tsv(tmp_path / "g.tsv")
    (tmp_path / "g.tsv").write_text("검색\tsearch\nmodel\t모델\n\t빈칸\n검색\tsearch\n", encoding="utf-8")
    table, report = read_glossary_tsv(tmp_path / "g.tsv")
    assert table.num_rows == 1
    assert report.skipped == {"ko side has no Hangul": 1, "empty ko or en side": 1, "duplicate pair": 1}
    (tmp_path / "s.json").write_text(json.dumps([{"korean": "검색"}]), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"s\.json record 0: field 'english' is missing"):
        read_synonym_json(tmp_path / "s.json")
    _write_jsonl(tmp_path / "p.jsonl", [{"en": "x", "ko": "엑스"}, {"en": "y"}])
    with pytest.raises(DataFormatError, match=r"p\.jsonl line 2: field 'ko' is missing"):
        read_parallel_jsonl(tmp_path / "p.jsonl")


def test_bom_line_separators_and_timezones(tmp_path: Path):
    # A BOM-marked JSONL (Windows editors) reads like any other.
    (tmp_path / "bom.jsonl").write_text(
        '\ufeff{"id": "1", "text": "검색", "t": "2024-03-01T09:00:00+09:00"}\n', "utf-8"
    )
    data = read_jsonl(tmp_path / "bom.jsonl", date_field="t")
    assert data.corpus["doc_id"].to_pylist() == ["1"]
    assert data.corpus["date"].to_pylist() == [datetime(2024, 3, 1, 0, 0)]  # stored as UTC
    # U+2028 inside a sentence must not split it (str.splitlines would, and shift the pairs).
    (tmp_path / "x.ko").write_text("첫 문장\u2028계속\n둘째 문장\n", encoding="utf-8")
    (tmp_path / "x.en").write_text("first sentence, continued\r\nsecond sentence\r\n", encoding="utf-8")
    pairs, report = read_parallel_text(tmp_path / "x.ko", tmp_path / "x.en")
    assert pairs["en"].to_pylist() == ["first sentence, continued", "second sentence"]
    assert report.read == 2
    with pytest.raises(FileNotFoundError, match="prototype directory"):
        read_prototype(tmp_path / "missing")


def test_parquet_in_corpus_schema_reads_doc_id_without_setting_id_field(tmp_path: Path):
    # What the corpus builders and dated splits write: CORPUS columns, ids under doc_id, not the default "id".
    path = tmp_path / "passages.parquet"
    pq.write_table(
        pa.table(
            {"doc_id": ["p1-0", "p1-1"], "title": ["검색", "검색"], "text": ["검색 모델", "search model"]}
        ),
        path,
    )
    data = read_parquet(path)
    assert data.corpus.column("doc_id").to_pylist() == ["p1-0", "p1-1"]
    # An explicitly named id column that is missing is still an error naming the field.
    with pytest.raises(DataFormatError, match="'pid'"):
        read_parquet(path, id_field="pid")
