"""Evaluation: metrics on hand-computed rankings, the sparse index against brute force, BM25 on real KLUE-MRC
Korean data, the cross-lingual MS MARCO sets, and the CLI round trip (BM25 and a real tiny SparseEncoder)."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pytest
import scipy.sparse as sp

from raysparse.analyzers import bigram_tokens, hangul_ratio
from raysparse.cli import main
from raysparse.data import read_beir, read_squad, write_beir
from raysparse.evaluation import (
    SparseIndex,
    compute_metrics,
    crosslingual_dev_sets,
    dictionary_pairs,
    evaluate_bm25,
    evaluate_model,
    evaluate_run,
    flops,
    rank_documents,
)
from raysparse.schemas import QRELS, RetrievalData

REQUIRED_KEYS = {
    "ndcg@10",
    "mrr@10",
    "recall@100",
    "precision@10",
    "avg_query_terms",
    "avg_doc_terms",
    "flops",
    "num_queries",
}


# ------------------------------------------------------------------------------------------------ metrics
def test_metrics_match_hand_computed_graded_ranking():
    qrels = {"q1": {"d1": 2, "d2": 1, "d3": 0}}
    # d1 and d2 tie at 2.0: doc_id ascending puts d1 (grade 2) first. Ranking: d4, d1, d2, d5, d3.
    run = {"q1": {"d4": 3.0, "d2": 2.0, "d1": 2.0, "d5": 1.0, "d3": 0.5}}
    assert rank_documents(run["q1"]) == ["d4", "d1", "d2", "d5", "d3"]
    m = compute_metrics(run, qrels, ks=(1, 3, 10)).metrics
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@1"] == 0.0
    assert m["ndcg@3"] == pytest.approx((2 / math.log2(3) + 1 / math.log2(4)) / idcg, abs=1e-12)
    assert m["ndcg@3"] == pytest.approx(0.669672, abs=1e-6)  # the same number, worked out on paper
    assert m["mrr@1"] == 0.0 and m["mrr@3"] == 0.5 and m["mrr@10"] == 0.5
    assert m["recall@1"] == 0.0 and m["recall@3"] == 1.0
    assert m["precision@3"] == pytest.approx(2 / 3) and m["precision@10"] == pytest.approx(2 / 10)


def test_ties_break_by_doc_id_ascending_and_missing_queries_score_zero():
    qrels = {"qa": {"b": 1}, "qb": {"a": 1}, "qmiss": {"x": 1}, "qneg": {"y": 0}}
    run = {"qa": {"a": 1.0, "b": 1.0}, "qb": {"a": 1.0, "b": 1.0}, "unjudged": {"z": 1.0}}
    result = compute_metrics(run, qrels, ks=(1, 10))
    assert result.per_query["qa"]["mrr@10"] == 0.5  # b ranks after a on the tie
    assert result.per_query["qb"]["mrr@10"] == 1.0
    assert result.per_query["qmiss"] == {k: 0.0 for k in result.per_query["qmiss"]}
    assert "qneg" not in result.per_query  # no relevant document: not evaluable
    assert result.num_queries == 3 and result.queries_without_results == ["qmiss"]
    assert result.run_queries_without_qrels == 1
    assert result.metrics["mrr@10"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # The same run through the public seam (what OpenSearch evaluation will call) gives the same numbers.
    qrels_table = pa.Table.from_pylist(
        [{"query_id": q, "doc_id": d, "score": g} for q, docs in qrels.items() for d, g in docs.items()],
        schema=QRELS,
    )
    seam = evaluate_run(run, qrels_table, system="opensearch", stats={"flops": 1.5}, ks=(1, 10))
    assert seam.metrics["mrr@10"] == result.metrics["mrr@10"] and seam.metrics["flops"] == 1.5
    assert seam.metrics["num_queries"] == 3


# ------------------------------------------------------------------------------------------------ index
def test_sparse_index_matches_brute_force_dense_dot_product():
    rng = np.random.default_rng(0)
    num_docs, vocab, k = 300, 400, 15
    # Small integer weights on few terms: many exact score ties, which exercises the tie rule at the cut-off.
    docs = sp.random(
        num_docs, vocab, density=0.03, random_state=1, data_rvs=lambda n: rng.integers(1, 4, n)
    ).tocsr()
    queries = sp.random(
        40, vocab, density=0.02, random_state=2, data_rvs=lambda n: rng.integers(1, 3, n)
    ).tocsr()
    doc_ids = [f"doc{i:04d}" for i in rng.permutation(num_docs)]  # ids not in row order
    index = SparseIndex(doc_ids, docs)
    hits = index.search(queries, k=k, batch_size=7)
    dense = queries.toarray() @ docs.toarray().T
    ids = np.array(doc_ids)
    for row, got in enumerate(hits):
        scores = dense[row]
        positive = np.flatnonzero(scores > 0)
        order = sorted(positive, key=lambda i: (-scores[i], ids[i]))[:k]
        assert [d for d, _ in got] == [ids[i] for i in order]
        assert [s for _, s in got] == pytest.approx([scores[i] for i in order])
    # FLOPS = expected number of shared active terms of a random (query, document) pair.
    q_bin, d_bin = (queries > 0).astype(float), (docs > 0).astype(float)
    expected = (q_bin @ d_bin.T).toarray().mean()
    assert flops(queries, docs) == pytest.approx(expected)
    stats = index.stats(queries)
    assert stats["flops"] == pytest.approx(expected)
    assert stats["avg_doc_terms"] == pytest.approx(docs.getnnz(axis=1).mean())
    assert stats["avg_query_terms"] == pytest.approx(queries.getnnz(axis=1).mean())


def test_sparse_index_rejects_duplicate_doc_ids_and_negative_weights():
    with pytest.raises(ValueError, match=r"document 2: doc_id 'a' duplicates document 0"):
        SparseIndex(["a", "b", "a"], sp.identity(3, format="csr"))
    with pytest.raises(ValueError, match="non-negative"):
        SparseIndex(["a"], np.array([[1.0, -1.0]]))


# ------------------------------------------------------------------------------------------------ BM25 on real data
@pytest.fixture(scope="module")
def klue(shared_data) -> RetrievalData:
    return read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")


def test_bm25_bigram_on_klue_mrc_agrees_with_bm25s_and_solves_it(klue):
    import bm25s

    assert klue.queries.num_rows == 240 and klue.corpus.num_rows == 235
    result = evaluate_bm25(klue, "bigram", show_progress=False)
    assert set(result.metrics) >= REQUIRED_KEYS
    assert result.metrics["ndcg@10"] > 0.95  # the data README: BM25 top-10 ~ 1.0 on this set
    assert result.metrics["num_queries"] == 240
    # Our index over bm25s' weight matrix must rank exactly like bm25s' own retrieval.
    from raysparse.evaluation import document_texts

    retriever = bm25s.BM25(k1=1.2, b=0.75, backend="numpy")
    retriever.index([bigram_tokens(t) for t in document_texts(klue)], show_progress=False)
    doc_ids = klue.corpus.column("doc_id").to_pylist()
    texts = klue.queries.column("text").to_pylist()
    qids = klue.queries.column("query_id").to_pylist()
    for qid, text in list(zip(qids, texts, strict=True))[:40]:
        rows, scores = retriever.retrieve([bigram_tokens(text)], k=1, show_progress=False)
        ours = rank_documents(result.run[qid])[0]
        assert result.run[qid][ours] == pytest.approx(float(scores[0, 0]), rel=1e-5)
        if result.run[qid][ours] > sorted(result.run[qid].values())[-2] + 1e-4:  # no near-tie at the top
            assert ours == doc_ids[int(rows[0, 0])]


@pytest.mark.slow
def test_bm25_kiwi_on_klue_mrc(klue):
    result = evaluate_bm25(klue, "kiwi", show_progress=False)
    assert result.metrics["ndcg@10"] > 0.9
    assert 0 < result.metrics["avg_query_terms"] < result.metrics["avg_doc_terms"]
    assert result.info["analyzer"] == "kiwi" and result.info["k1"] == 1.2


class HashedBigramEncoder:
    """A tiny stand-in sparse encoder: character bigrams hashed into 2,048 dimensions, weight log(1 + count)."""

    vocab_size = 2048

    def _encode(self, texts, batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.vocab_size), dtype=np.float32)
        for row, text in enumerate(texts):
            for tok in bigram_tokens(text):
                out[row, zlib.crc32(tok.encode()) % self.vocab_size] += 1.0
        return np.log1p(out)

    encode_queries = _encode
    encode_documents = _encode


def test_evaluate_model_with_a_plain_encoder_on_klue(klue):
    from raysparse.evaluation import document_texts

    encoder = HashedBigramEncoder()
    result = evaluate_model(encoder, klue)
    assert set(result.metrics) >= REQUIRED_KEYS
    assert result.metrics["ndcg@10"] > 0.6  # tf-only bigrams, no IDF: measured 0.768 (BM25-bigram: 0.987)
    # The run is the exact dense dot-product ranking of the encoder's vectors.
    docs = encoder.encode_documents(document_texts(klue))
    queries = encoder.encode_queries(klue.queries.column("text").to_pylist()[:30])
    doc_ids = np.array(klue.corpus.column("doc_id").to_pylist())
    for qid, scores in zip(klue.queries.column("query_id").to_pylist(), queries @ docs.T, strict=False):
        best = sorted(np.flatnonzero(scores > 0), key=lambda i: (-scores[i], doc_ids[i]))[:10]
        ours = rank_documents(result.run[qid])[:10]
        # Float32 sums in another order differ in the last bit, which can swap equal-looking scores: compare scores.
        assert [result.run[qid][d] for d in ours] == pytest.approx(list(scores[best]), rel=1e-5)
        assert ours[0] == doc_ids[best[0]] or scores[best[0]] - scores[best[1]] < 1e-4
    assert result.metrics["avg_doc_terms"] > result.metrics["avg_query_terms"] > 1
    some_query = next(iter(result.query_terms.values()))
    assert some_query and all(w > 0 for w in some_query.values())


# ------------------------------------------------------------------------------------------------ cross-lingual sets
def test_crosslingual_sets_are_aligned_and_hard_for_bm25(shared_data):
    sets = crosslingual_dev_sets(shared_data / "msmarco-ko-en", 801, 1000, distractors=50)
    assert set(sets) == {"ko-en", "en-ko", "ko-ko"}
    ko_en = sets["ko-en"]
    qids = ko_en.queries.column("query_id").to_pylist()
    assert len(qids) == 200 and all(801 <= int(q.split("-")[1]) <= 1000 for q in qids)
    for row in ko_en.qrels.to_pylist():  # ko query i -> en passage of the same id i
        assert row["doc_id"].split("-")[1] == row["query_id"].split("-")[1]
    assert all(hangul_ratio(t) > 0.5 for t in ko_en.queries.column("text").to_pylist()[:20])
    assert all(hangul_ratio(t) < 0.05 for t in ko_en.corpus.column("text").to_pylist()[:20])
    judged = set(ko_en.qrels.column("doc_id").to_pylist())
    assert ko_en.corpus.num_rows - len(judged) >= 50  # the distractors
    mono = evaluate_bm25(sets["ko-ko"], "bigram", show_progress=False).metrics["ndcg@10"]
    cross = evaluate_bm25(sets["ko-en"], "bigram", show_progress=False).metrics["ndcg@10"]
    assert mono > 0.8 and cross < 0.3  # README: BM25 fails cross-lingually -- where the model must win


# ------------------------------------------------------------------------------------------------ files and CLI
def test_beir_round_trip_and_cli_bm25(klue, tmp_path):
    beir = write_beir(klue, tmp_path / "klue")
    back = read_beir(beir)
    assert back.corpus.num_rows == klue.corpus.num_rows and back.qrels.num_rows == klue.qrels.num_rows
    assert main(["evaluate", "--bm25", "bigram", "--beir", str(beir), "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics) >= REQUIRED_KEYS and metrics["system"] == "bm25-bigram"
    direct = evaluate_bm25(klue, "bigram", show_progress=False).metrics
    assert metrics["ndcg@10"] == pytest.approx(direct["ndcg@10"])
    run_lines = (tmp_path / "out" / "bm25-bigram" / "run.trec").read_text(encoding="utf-8").splitlines()
    assert run_lines and len(run_lines[0].split()) == 6


def test_bad_beir_qrels_and_dictionary_are_reported(tmp_path, klue):
    beir = write_beir(klue, tmp_path / "bad")
    qrels = beir / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text(encoding="utf-8") + "q\td\tabc\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"test\.tsv line 242: field 'score' is not a number"):
        read_beir(beir)
    assert main(["evaluate", "--bm25", "bigram", "--beir", str(beir), "--out", str(tmp_path / "o")]) == 2
    swapped = tmp_path / "swapped.tsv"
    swapped.write_text("model\t모델\nsearch\t검색\n", encoding="utf-8")
    pairs, report = dictionary_pairs(swapped)
    # one glossary reader (raysparse.data.read_term_file) detects an en<TAB>ko file without a header
    assert pairs == [("모델", "model"), ("검색", "search")] and report.num_skipped == 0


@pytest.mark.slow
def test_cli_model_report_round_trip(shared_data, klue, tmp_path):
    """A real (untrained, lexical-prior) SparseEncoder saved to disk, evaluated with a BM25 baseline and a report."""
    import torch

    from raysparse.backbone import build_small_bert, train_tokenizer
    from raysparse.config import ModelConfig
    from raysparse.evaluation import document_texts
    from raysparse.model import SparseEncoder

    # 60 queries over their passages plus 40 others: small enough for CPU encoding, still a real ranking task.
    qrels = klue.qrels.slice(0, 60)
    judged = set(qrels.column("doc_id").to_pylist())
    others = [d for d in klue.corpus.column("doc_id").to_pylist() if d not in judged][:40]
    corpus = klue.corpus.filter(pa.compute.is_in(klue.corpus.column("doc_id"), pa.array([*judged, *others])))
    small = RetrievalData(corpus, klue.queries.slice(0, 60), qrels, klue.reports)
    texts = document_texts(small) + small.queries.column("text").to_pylist()
    glossary = shared_data / "bilingual" / "python-docs-glossary" / "glossary_terms_en_ko.tsv"
    rows = [
        line.split("\t") for line in glossary.read_text(encoding="utf-8").splitlines()[1:] if "\t" in line
    ]
    dictionary = tmp_path / "ko_en.tsv"
    dictionary.write_text("".join(f"{ko.strip()}\t{en.strip()}\n" for en, ko in rows[:60]), encoding="utf-8")
    tokenizer = train_tokenizer([*texts, *(r[0] for r in rows), *(r[1] for r in rows)], vocab_size=2000)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=2000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    encoder = SparseEncoder(build_small_bert(tokenizer, cfg), tokenizer, lexical_prior=5.0)
    encoder.save_pretrained(tmp_path / "model")
    beir = write_beir(small, tmp_path / "beir")
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(tmp_path / "model"), "--beir", str(beir), "--out", str(out)]
    assert (
        main([*argv, "--bm25", "bigram", "--dictionary", str(dictionary), "--set", "eval.batch_size=16"]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics) >= REQUIRED_KEYS and metrics["system"] == "model"
    assert metrics["baseline"]["system"] == "bm25-bigram" and metrics["num_queries"] == 60
    # The lexical prior alone makes the untrained model a bag-of-word-pieces retriever: far above the same
    # weights without the prior (tokenizer training is not bit-reproducible, so compare, don't pin a value).
    without_prior = SparseEncoder(encoder.mlm, tokenizer, lexical_prior=0.0)
    plain = evaluate_model(without_prior, small, max_query_length=32, max_doc_length=128)
    assert metrics["ndcg@10"] > 0.4 and metrics["ndcg@10"] > plain.metrics["ndcg@10"] + 0.2
    report = (out / "report.md").read_text(encoding="utf-8")
    for section in (
        "Per-query wins and losses",
        "Top activated terms",
        "Failure cases",
        "synonym similarity",
    ):
        assert section in report
    for png in ("delta_ndcg.png", "synonyms.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*argv, "--no-baseline", "--out", str(tmp_path / "nb")]) == 0
    assert not (tmp_path / "nb" / "report.md").exists()


def test_cli_crosslingual_writes_one_dir_per_set_and_a_summary(shared_data, tmp_path):
    argv = [
        "evaluate",
        "--bm25",
        "bigram",
        "--crosslingual",
        "--msmarco-dir",
        str(shared_data / "msmarco-ko-en"),
    ]
    out = tmp_path / "xl"
    assert (
        main([*argv, "--first-id", "801", "--last-id", "850", "--sets", "ko-en", "ko-ko", "--out", str(out)])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert set(summary) == {"ko-en", "ko-ko"}
    assert summary["ko-en"]["bm25-bigram"]["num_queries"] == 50
    assert summary["ko-ko"]["bm25-bigram"]["ndcg@10"] > summary["ko-en"]["bm25-bigram"]["ndcg@10"]
    assert set(json.loads((out / "ko-en" / "metrics.json").read_text(encoding="utf-8"))) >= REQUIRED_KEYS
    neither = ["evaluate", "--crosslingual", "--msmarco-dir", str(shared_data / "msmarco-ko-en")]
    assert main([*neither, "--out", str(tmp_path / "x")]) == 2  # neither --model nor --bm25: a clear error
