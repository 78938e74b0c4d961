"""raysparse.opensearch against a real OpenSearch on 127.0.0.1 (scripts/opensearch.sh), on real Korean text.

The server comes from $RAYSPARSE_OPENSEARCH_URL (.ci/run exports it); when unset, the session fixture starts one
with scripts/opensearch.sh on a dedicated port and stops it at the end. Under CI=true a server that cannot start
fails the tests instead of skipping them.
"""

from __future__ import annotations

import math
import uuid

import pytest

from raysparse.analyzers import bigram_analyzer
from raysparse.fusion import fuse_min_max, fuse_rrf
from raysparse.opensearch import (
    BM25_FIELD,
    DOT_REPLACEMENT,
    MAX_WEIGHT,
    SPARSE_FIELD,
    bm25_query,
    bulk_index,
    create_index,
    document_body,
    dot_product,
    index_corpus,
    index_documents,
    index_mapping,
    index_meta,
    lexical_encoder_factory,
    lexical_term_weights,
    opensearch_run,
    prune_query,
    sanitize_terms,
    search,
    search_run,
    sparse_query,
)

pytestmark = pytest.mark.opensearch


@pytest.fixture(scope="session")
def klue(shared_data):
    from raysparse.data.readers import read_squad

    return read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")


# ------------------------------------------------------------------------------------------ no server
def test_sanitize_terms_maps_dots_drops_invalid_and_clips():
    clean, report = sanitize_terms(
        {
            "검색": 1.5,
            "##어": 0.5,  # WordPiece continuation: a legal feature name (verified on the server below)
            "3.14": 2.0,
            "": 1.0,
            "  ": 1.0,
            "영": 0.0,
            "음수": -1.0,
            "nan": float("nan"),
            "큰값": 1000.0,
            "inf": float("inf"),
        }
    )
    assert clean == {
        "검색": 1.5,
        "##어": 0.5,
        f"3{DOT_REPLACEMENT}14": 2.0,
        "큰값": MAX_WEIGHT,
        "inf": MAX_WEIGHT,
    }
    assert report.renamed == 1 and report.clipped == 2 and report.kept == 5
    assert report.dropped == {"empty token": 2, "non-positive weight": 2, "NaN weight": 1}


def test_sanitize_terms_merges_tokens_that_collide_after_mapping():
    clean, report = sanitize_terms({"a.b": 1.0, f"a{DOT_REPLACEMENT}b": 3.0})
    assert clean == {f"a{DOT_REPLACEMENT}b": 3.0} and report.merged == 1


def test_fusion_by_hand():
    bm25 = {"a": 10.0, "b": 5.0, "c": 0.0}
    sparse = {"b": 4.0, "d": 2.0}
    fused = fuse_min_max(bm25, sparse, bm25_weight=0.25)
    assert fused == pytest.approx({"a": 0.25, "b": 0.25 * 0.5 + 0.75, "c": 0.0, "d": 0.0})
    rrf = fuse_rrf([bm25, sparse], k=60)
    assert rrf["b"] == pytest.approx(1 / 62 + 1 / 61) and rrf["a"] == pytest.approx(1 / 61)
    assert prune_query({"x": 1.0, "y": 0.05, "z": 0.5}, max_ratio=0.1) == {"x": 1.0, "z": 0.5}


def test_sparse_query_forms():
    q = sparse_query({"a.b": 2.0, "c": 0.0})
    assert q == {
        "bool": {
            "should": [
                {"rank_feature": {"field": f"{SPARSE_FIELD}.a{DOT_REPLACEMENT}b", "linear": {}, "boost": 2.0}}
            ]
        }
    }
    assert sparse_query({"x": 1.0}, neural=True) == {
        "neural_sparse": {SPARSE_FIELD: {"query_tokens": {"x": 1.0}}}
    }


# ------------------------------------------------------------------------------------------ server
def test_mapping_on_server(client, index_name):
    assert create_index(client, index_name, index_mapping(with_date=True, bm25_mode="whitespace"))
    assert not create_index(client, index_name, index_mapping())  # kept, not recreated
    props = client.indices.get_mapping(index=index_name)[index_name]["mappings"]["properties"]
    assert props[SPARSE_FIELD]["type"] == "rank_features"
    assert props[BM25_FIELD]["analyzer"] == "whitespace"
    assert props["date"]["type"] == "date"
    assert index_meta(client, index_name)["bm25_mode"] == "whitespace"


def test_dotted_tokens_need_the_mapping_to_be_queryable(client, index_name):
    """Why sanitize_terms exists: OpenSearch stores a raw "a.b" feature but can never query it."""
    create_index(client, index_name, index_mapping())
    raw_id, clean_id = "raw", "clean"
    client.index(
        index=index_name, id=raw_id, body={"doc_id": raw_id, "text": "x", SPARSE_FIELD: {"v.1": 2.0}}
    )
    body, _ = document_body({"doc_id": clean_id, "text": "x"}, {"v.1": 2.0, "##어": 1.0}, None)
    client.index(index=index_name, id=clean_id, body=body)
    client.indices.refresh(index=index_name)
    raw_query = {"rank_feature": {"field": f"{SPARSE_FIELD}.v.1", "linear": {}}}
    assert client.search(index=index_name, body={"query": raw_query})["hits"]["total"]["value"] == 0
    hits = client.search(index=index_name, body={"query": sparse_query({"v.1": 1.5, "##어": 1.0})})["hits"][
        "hits"
    ]
    assert [h["_id"] for h in hits] == [clean_id]
    assert hits[0]["_score"] == pytest.approx(1.5 * 2.0 + 1.0, rel=1e-2)


def test_reindex_is_idempotent_and_failures_are_reported(client, index_name, klue):
    rows = klue.corpus.slice(0, 40).to_pylist()
    create_index(client, index_name, index_mapping(with_date=True))
    encoder = lexical_encoder_factory("bigram")()
    first = index_documents(client, index_name, rows, encoder)
    assert first.indexed == 40 and not first.failed and first.doc_count == 40
    second = index_documents(client, index_name, rows, encoder)
    assert second.indexed == 40 and second.doc_count == 40  # same ids: overwritten, not duplicated

    good, _ = document_body(rows[0], encoder([rows[0]["text"]])[0], None)
    bad_date = {**good, "doc_id": "bad-date", "date": "not a date"}
    bad_field = {**good, "doc_id": "bad-field", "surprise": 1}  # mapping is dynamic: strict
    bad_weight = {**good, "doc_id": "bad-weight", SPARSE_FIELD: {"영": 0.0}}  # bypassed sanitize_terms
    no_id = {k: v for k, v in good.items() if k != "doc_id"}
    empty = {**good, "doc_id": "empty", "text": "  "}
    report = bulk_index(client, index_name, [bad_date, bad_field, bad_weight, no_id, empty])
    failed = {f["doc_id"]: f for f in report.failed}
    assert set(failed) == {"bad-date", "bad-field", "bad-weight"}
    assert "date" in failed["bad-date"]["reason"] and failed["bad-date"]["status"] == "400"
    assert "surprise" in failed["bad-field"]["reason"]
    assert "positive" in failed["bad-weight"]["reason"]
    assert report.skipped == {"missing doc_id": 1, "empty text": 1}
    assert report.indexed == 0 and report.doc_count == 40
    assert "failed 3" in str(report)


def test_rank_feature_ranking_matches_in_process_dot_product(client, index_name, klue):
    corpus = klue.corpus.to_pylist()
    encoder = lexical_encoder_factory("bigram")()
    create_index(client, index_name, index_mapping())
    report = index_documents(client, index_name, corpus, encoder, bm25_analyzer=None)
    assert report.indexed == len(corpus) == 235
    doc_vectors = {
        r["doc_id"]: sanitize_terms(w)[0]
        for r, w in zip(corpus, encoder([f"{r['title']} {r['text']}" for r in corpus]), strict=True)
    }
    queries = dict(
        zip(
            klue.queries.column("query_id").to_pylist()[:30],
            klue.queries.column("text").to_pylist()[:30],
            strict=True,
        )
    )
    run = search_run(client, index_name, queries, encoder, mode="sparse", size=10)
    for qid, text in queries.items():
        qv = sanitize_terms(encoder([text])[0])[0]
        expected = sorted(((dot_product(qv, dv), d) for d, dv in doc_vectors.items()), reverse=True)[:10]
        got = sorted(run[qid].values(), reverse=True)
        assert len(got) == 10
        # Lucene keeps ~9 significant bits of each stored feature: scores agree within 1 % relative, rank by rank.
        for (exp_score, _), got_score in zip(expected, got, strict=True):
            assert got_score == pytest.approx(exp_score, rel=0.01)
        # Top-k sets agree except where two in-process scores are within the quantisation error of each other.
        cutoff = expected[-1][0]
        sure = {d for s, d in expected if s > cutoff * 1.01}
        assert sure <= set(run[qid]), (qid, sure - set(run[qid]))


def test_bm25_field_and_hybrid_on_korean_questions(client, index_name, klue):
    corpus = klue.corpus.to_pylist()
    encoder = lexical_encoder_factory("bigram")()
    create_index(client, index_name, index_mapping(bm25_mode="whitespace"))
    index_documents(client, index_name, corpus, encoder, bm25_analyzer="bigram")
    q_ids = klue.queries.column("query_id").to_pylist()[:60]
    q_texts = klue.queries.column("text").to_pylist()[:60]
    queries = dict(zip(q_ids, q_texts, strict=True))
    qrels: dict[str, set[str]] = {}
    for row in klue.qrels.to_pylist():
        qrels.setdefault(row["query_id"], set()).add(row["doc_id"])

    bm25 = search_run(client, index_name, queries, mode="bm25", size=10)
    hit_rate = sum(bool(set(bm25[q]) & qrels[q]) for q in queries) / len(queries)
    assert hit_rate >= 0.8, hit_rate  # char-bigram BM25 solves KLUE-MRC ODQA (shared/data/README.md)
    # the BM25 query really is pre-analysed into bigrams on the whitespace field
    assert bm25_query("한국어 검색", "bigram") == {
        "match": {BM25_FIELD: {"query": "한국 국어 검색", "operator": "or"}}
    }

    sparse = search_run(client, index_name, queries, encoder, mode="sparse", size=10)
    hybrid = search_run(client, index_name, queries, encoder, mode="hybrid", size=10, bm25_weight=0.4)
    for q in queries:
        assert hybrid[q] == pytest.approx(fuse_min_max(bm25[q], sparse[q], 0.4))
    rrf = search_run(client, index_name, queries, encoder, mode="hybrid", size=10, fusion="rrf")
    assert all(set(rrf[q]) == set(bm25[q]) | set(sparse[q]) for q in queries)

    hits = search(client, index_name, q_texts[0], encoder, mode="sparse", size=3)
    assert hits and hits[0].matched
    query_weights = sanitize_terms(encoder([q_texts[0]])[0])[0]
    assert all(qw == query_weights[t] and dw > 0 for t, (qw, dw) in hits[0].matched.items())
    assert hits[0].score == pytest.approx(sum(qw * dw for qw, dw in hits[0].matched.values()), rel=0.01)


def test_opensearch_run_feeds_compute_metrics(os_url, client, index_name, klue):
    encoder = lexical_encoder_factory("bigram")()
    create_index(client, index_name, index_mapping())
    index_documents(client, index_name, klue.corpus.to_pylist(), encoder)
    run, metrics = opensearch_run(os_url, index_name, klue, mode="bm25", size=10)
    assert len(run) == klue.queries.num_rows
    assert 0.7 <= metrics.metrics["ndcg@10"] <= 1.0, metrics.metrics


@pytest.mark.slow
def test_index_corpus_with_ray_data_actor_pool(client, index_name, klue, ray_local):
    data = klue
    from raysparse.schemas import RetrievalData

    small = RetrievalData(data.corpus.slice(0, 50), data.queries, data.qrels)
    report = index_corpus(
        small, lexical_encoder_factory("bigram"), client=client, index=index_name, batch_size=16, num_actors=1
    )
    assert report.indexed == 50 and report.doc_count == 50 and not report.failed
    row = small.corpus.slice(3, 1).to_pylist()[0]
    stored = client.get(index=index_name, id=row["doc_id"])["_source"]
    expected = sanitize_terms(lexical_term_weights([f"{row['title']} {row['text']}"])[0])[0]
    assert stored[SPARSE_FIELD] == pytest.approx(expected)
    assert stored[BM25_FIELD] == " ".join(bigram_analyzer([f"{row['title']} {row['text']}"])[0])
    assert all(math.isfinite(v) and 0 < v <= MAX_WEIGHT for v in stored[SPARSE_FIELD].values())


@pytest.mark.slow
def test_cli_index_then_evaluate_from_opensearch_matches_in_process(os_url, client, klue, tmp_path):
    """`raysparse index` + `raysparse evaluate --opensearch` give the in-process metrics (up to Lucene quantisation)."""
    import json

    import torch

    from raysparse.backbone import build_small_bert, train_tokenizer
    from raysparse.cli import main
    from raysparse.config import ModelConfig
    from raysparse.data import write_beir
    from raysparse.model import SparseEncoder

    texts = klue.corpus.column("text").to_pylist() + klue.queries.column("text").to_pylist()
    tokenizer = train_tokenizer(texts, vocab_size=4000)
    torch.manual_seed(0)
    mlm = build_small_bert(
        tokenizer, ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    )
    SparseEncoder(mlm, tokenizer, lexical_prior=5.0).save_pretrained(tmp_path / "model")
    beir = write_beir(klue, tmp_path / "beir")
    index = f"raysparse-cli-{uuid.uuid4().hex[:8]}"
    try:
        common = ["--model", str(tmp_path / "model"), "--beir", str(beir)]
        assert main(["index", "--url", os_url, "--index", index, *common, "--no-ray"]) == 0
        assert main(["evaluate", *common, "--no-baseline", "--out", str(tmp_path / "local")]) == 0
        assert (
            main(
                ["evaluate", *common, "--opensearch", os_url, "--index", index, "--out", str(tmp_path / "os")]
            )
            == 0
        )
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)
    local = json.loads((tmp_path / "local" / "metrics.json").read_text())
    remote = json.loads((tmp_path / "os" / "metrics.json").read_text())
    for key in (
        "ndcg@10",
        "mrr@10",
        "recall@100",
        "precision@10",
        "avg_query_terms",
        "avg_doc_terms",
        "flops",
    ):
        assert key in remote, key
    assert remote["num_queries"] == local["num_queries"] == klue.queries.num_rows
    assert abs(remote["ndcg@10"] - local["ndcg@10"]) <= 0.03, (remote["ndcg@10"], local["ndcg@10"])
    assert remote["avg_query_terms"] == pytest.approx(local["avg_query_terms"], rel=0.05)
