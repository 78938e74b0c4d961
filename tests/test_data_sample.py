"""The shipped sample: complete, self-consistent, small, and cross-lingual where it claims to be."""

from __future__ import annotations

from collections import Counter

from raysparse.analyzers import bigram_tokens
from raysparse.config import DataConfig
from raysparse.data import load_sample, load_source, read_beir, sample_bilingual, sample_dir, write_beir
from raysparse.schemas import SENTENCE_PAIRS, TERM_PAIRS


def test_sample_reads_cleanly_with_one_judgement_per_query():
    data = load_sample()
    assert data.reports[0].num_skipped == 0  # nothing in our own sample is malformed or unjudged
    assert 110 <= data.corpus.num_rows <= 140
    langs = Counter(data.queries["lang"].to_pylist())
    assert langs["ko"] >= 75 and langs["en"] >= 18
    per_query = Counter(data.qrels["query_id"].to_pylist())
    assert set(per_query.values()) == {1} and len(per_query) == data.queries.num_rows
    doc_langs = Counter(data.corpus["lang"].to_pylist())
    assert (
        doc_langs["ko"] > doc_langs["en"] > 0.2 * data.corpus.num_rows
    )  # mostly Korean, a real English share
    assert len(set(data.corpus["text"].to_pylist())) == data.corpus.num_rows


def test_default_config_loads_the_sample():
    assert load_source(DataConfig()).summary() == load_sample().summary()
    limited = load_source(DataConfig(max_records=10))
    assert limited.queries.num_rows == 10 and limited.qrels.num_rows == 10


def test_cross_lingual_queries_share_no_keywords_with_their_document():
    """Korean queries judged against English documents (and the reverse) exist and need term translation."""
    data = load_sample()
    docs = {r["doc_id"]: r for r in data.corpus.to_pylist()}
    queries = {r["query_id"]: r for r in data.queries.to_pylist()}
    cross = []
    for rel in data.qrels.to_pylist():
        q, d = queries[rel["query_id"]], docs[rel["doc_id"]]
        if q["lang"] != d["lang"]:
            cross.append((q["text"], d["text"]))
    assert len(cross) >= 25
    assert ("검색 엔진 성능 측정", True) in {(q, d.startswith("Search engine performance")) for q, d in cross}
    overlapping = [q for q, d in cross if set(bigram_tokens(q)) & set(bigram_tokens(d))]
    # A few share a Latin acronym (BM25, ONNX, SPLADE, S3); most share nothing a keyword engine could use.
    assert len(overlapping) <= len(cross) // 3, overlapping


def test_glossary_and_parallel_text_cover_the_sample():
    terms, sentences = sample_bilingual()
    assert terms.schema == TERM_PAIRS and sentences.schema == SENTENCE_PAIRS
    assert terms.num_rows >= 140 and sentences.num_rows >= 140
    pairs = set(zip(terms["ko"].to_pylist(), terms["en"].to_pylist(), strict=True))
    assert {
        ("검색", "search"),
        ("모델", "model"),
        ("데이터베이스", "database"),
        ("학습", "training"),
    } <= pairs
    text = " ".join(load_sample().corpus["text"].to_pylist() + load_sample().queries["text"].to_pylist())
    covered = sum(ko in text for ko in terms["ko"].to_pylist())
    assert covered >= 0.9 * terms.num_rows  # the glossary is about this sample's vocabulary
    assert all(s.strip() for s in sentences["ko"].to_pylist() + sentences["en"].to_pylist())


def test_sample_is_small_licensed_and_round_trips(tmp_path):
    root = sample_dir()
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 200_000
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "written by hand for raysparse" in readme and "licensed with the project" in readme
    data = load_sample()
    again = read_beir(write_beir(data, tmp_path / "copy"))
    assert (
        again.corpus.equals(data.corpus)
        and again.queries.equals(data.queries)
        and again.qrels.equals(data.qrels)
    )
