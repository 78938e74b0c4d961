"""The encoding spec, the BM25 lexical part, windows, the leak-free splits and the translated-BM25 baseline, on real
Korean text from ../shared/data (KLUE-MRC passages are long: most exceed one 64-token window)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow as pa
import pytest
import torch

from raysparse.backbone import build_small_bert, train_tokenizer
from raysparse.config import ModelConfig
from raysparse.encoding import EncodingSpec, kiwi_segment_with_tags, pretokenize, tokenize_texts
from raysparse.model import SparseEncoder, fit_lexical_prior

TINY = ModelConfig(vocab_size=3000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
SPEC = EncodingSpec(max_query_length=32, max_doc_length=64, doc_stride=48, pretokenize="kiwi")


@pytest.fixture(scope="module")
def klue(shared_data):
    rows = [
        json.loads(line)
        for line in (shared_data / "klue-mrc-odqa" / "validation.jsonl")
        .read_text(encoding="utf-8")
        .splitlines()
        if line.strip()
    ]
    docs = list(dict.fromkeys(r["context"] for r in rows))[:80]
    questions = [r["question"] for r in rows if r["context"] in docs][:30]
    return docs, questions


@pytest.fixture(scope="module")
def bm25_encoder(klue):
    docs, _ = klue
    segmented, content, function = kiwi_segment_with_tags(docs)
    tokenizer = train_tokenizer(segmented, vocab_size=TINY.vocab_size)
    lexical = fit_lexical_prior(tokenizer, segmented, function_counts=function, content_counts=content)
    torch.manual_seed(0)
    mlm = build_small_bert(tokenizer, TINY)
    # neural_weight 0: the untrained encoder is its lexical part alone
    return SparseEncoder(mlm, tokenizer, lexical=lexical, neural_weight=0.0, spec=SPEC).eval()


def test_untrained_lexical_encoder_equals_bm25_over_its_pieces(bm25_encoder, klue):
    """q . d of the lexical part is BM25 (Lucene IDF, k1, b, avgdl) over the encoder's pieces, whole documents
    included: checked against bm25s, an independent implementation, on the same piece lists."""
    import bm25s

    docs, questions = klue
    enc = bm25_encoder

    def pieces(texts: list[str], limit: int | None = None) -> list[list[str]]:
        # the term stream (which tokens count) is LexicalPrior.term_ids, tested below; the BM25 arithmetic on it is
        # bm25s's
        ids = enc.tokenizer(pretokenize(texts, "kiwi"), add_special_tokens=False)["input_ids"]
        return [[str(i) for i in enc.lexical.term_ids(row)][:limit] for row in ids]

    doc_pieces = pieces(docs)
    assert max(len(p) for p in doc_pieces) > 3 * SPEC.max_doc_length  # whole documents, not one window
    retriever = bm25s.BM25(k1=enc.lexical.k1, b=enc.lexical.b, method="lucene")
    retriever.index(doc_pieces, show_progress=False)
    # queries stay within max_query_length, so their counts are the whole query
    expected = np.stack([retriever.get_scores(q) for q in pieces(questions)])
    got = (enc.encode_queries(questions) @ enc.encode_documents(docs).T).numpy()
    assert expected.max() > 5
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_function_morphemes_and_specials_are_not_terms(bm25_encoder):
    vocab = bm25_encoder.tokenizer.get_vocab()
    mask = bm25_encoder.lexical.piece_mask
    for particle in ("을", "는", "에서"):
        if particle in vocab:
            assert mask[vocab[particle]] == 0, particle
    assert mask[vocab["[CLS]"]] == 0 and mask[vocab["[PAD]"]] == 0
    # a particle piece alone is no term, but it counts when it begins a longer word (이 ##순 ##신)
    lex = bm25_encoder.lexical
    particle = next(t for t in ("이", "는", "을") if t in vocab and lex.word_start[vocab[t]] > 0)
    cont = next(
        t
        for t, i in vocab.items()
        if t.startswith("##") and lex.continuation[i] > 0 and lex.piece_mask[i] > 0
    )
    p, c = vocab[particle], vocab[cont]
    assert lex.term_ids([p]) == [] and lex.term_ids([p, c]) == [p, c] and lex.term_ids([c, p]) == [c]
    weights = bm25_encoder.encode(["검색 모델을 학습했다"], is_query=False)[0]
    assert weights and not any(t in weights for t in ("을", "[CLS]", "[SEP]"))


def test_windows_reach_an_answer_past_the_first_window(bm25_encoder, klue):
    """A term that appears only after the first window: the transformer part max-pooled over windows has it, the
    first window alone does not; the BM25 part counts the whole text either way."""
    docs, _ = klue
    tok = bm25_encoder.tokenizer
    torch.manual_seed(1)
    # a bag-of-words transformer part (+5 on each position's own logit), no lexical part: windows decide
    logit_model = SparseEncoder(
        build_small_bert(tok, TINY, output_bias=-1.0), tok, lexical_prior=5.0, spec=SPEC
    )
    doc = docs[0][:250] + " 엘리베이터"  # a few windows (max_windows caps long texts)
    batch = tokenize_texts(tok, [doc], SPEC, is_query=False)
    assert batch.input_ids.shape[0] > 1  # several windows
    target = tok.convert_tokens_to_ids("엘리베이터") if "엘리베이터" in tok.get_vocab() else None
    ids = tok(pretokenize(["엘리베이터"], "kiwi"), add_special_tokens=False)["input_ids"][0]
    target = ids[0] if target is None else target
    first_window_ids = batch.input_ids[0].tolist()
    assert target not in first_window_ids
    windowed = logit_model.encode_documents([doc])[0]
    logit_model.spec = SPEC.replace("test", max_windows=1)
    truncated = logit_model.encode_documents([doc])[0]
    assert windowed[target] > 1.0 and truncated[target] == 0
    assert bm25_encoder.encode_documents([doc])[0][target] > 0


def test_spec_is_saved_with_the_model_and_overrides_are_logged(bm25_encoder, tmp_path, caplog):
    bm25_encoder.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "raysparse.json").read_text())
    assert meta["encoding"] == SPEC.to_dict() and meta["lexical"]["avgdl"] == bm25_encoder.lexical.avgdl
    loaded = SparseEncoder.from_pretrained(tmp_path / "m")
    assert loaded.spec == SPEC
    text = ["서울의 인구는 얼마인가?"]
    assert torch.equal(loaded.encode_documents(text), bm25_encoder.encode_documents(text))
    with caplog.at_level(logging.INFO, logger="raysparse.encoding"):
        loaded.encode_documents(text, max_length=32)
    assert "max_doc_length 64 -> 32" in caplog.text


def test_pruning_keeps_the_strongest_terms(bm25_encoder, klue):
    docs, _ = klue
    full = bm25_encoder.encode_documents(docs[:5])
    bm25_encoder.spec = SPEC.replace("test", doc_top_k=10)
    try:
        pruned = bm25_encoder.encode_documents(docs[:5])
    finally:
        bm25_encoder.spec = SPEC
    assert ((pruned > 0).sum(1) == 10).all()
    for row_full, row_pruned in zip(full, pruned, strict=True):
        kept = row_pruned > 0
        assert row_full[kept].min() >= row_full[~kept].max()


def test_kiwi_pretokenisation_keeps_english_words_whole():
    assert pretokenize(["the school models."], "kiwi") == ["the school models."]
    assert pretokenize(["검색 모델을 학습했다"], "kiwi") == ["검색 모델 을 학습 하 었 다"]


def _corpus(doc_ids: list[str], texts: list[str]) -> pa.Table:
    from raysparse.schemas import CORPUS

    n = len(doc_ids)
    return pa.table(
        {"doc_id": doc_ids, "title": [""] * n, "text": texts, "date": [None] * n, "lang": [None] * n},
        schema=CORPUS,
    )


def test_validation_split_keeps_twin_queries_together():
    """ko-<i> and en-<i> share their positives: a split by query alone leaks one into training."""
    from raysparse.pipeline import split_queries, split_validation_test
    from raysparse.schemas import RetrievalData

    n = 200
    corpus = _corpus([f"d{i}" for i in range(n)], ["x"] * n)
    qids = [f"{lang}-{i}" for i in range(n) for lang in ("ko", "en")]
    queries = pa.table({"query_id": qids, "text": ["q"] * len(qids), "lang": [None] * len(qids)})
    qrels = pa.table(
        {"query_id": qids, "doc_id": [f"d{q.split('-')[1]}" for q in qids], "score": [1] * len(qids)}
    )
    data = RetrievalData(corpus, queries, qrels)
    train, held = split_queries(data, 0.2, seed=13)
    val, test = split_validation_test(held, seed=13)

    def ids(d: RetrievalData) -> set[str]:
        return {q.split("-")[1] for q in d.queries.column("query_id").to_pylist()}

    assert ids(train).isdisjoint(ids(held)) and ids(val).isdisjoint(ids(test))
    assert len(val.queries) and len(test.queries) and len(held.queries) % 2 == 0


def test_translated_bm25_baseline_beats_plain_bm25_across_languages(shared_data):
    """BM25-Kiwi over dictionary-translated English queries finds Korean passages plain BM25 cannot."""
    from raysparse.data import read_tatoeba
    from raysparse.evaluation import evaluate_bm25
    from raysparse.evaluation.translated import learn_word_translator
    from raysparse.schemas import RetrievalData

    pairs_table, _ = read_tatoeba(shared_data / "bilingual" / "tatoeba" / "kor.txt")
    pairs = list(zip(pairs_table.column("ko").to_pylist(), pairs_table.column("en").to_pylist(), strict=True))
    held_out, train = pairs[:150], pairs[150:]
    translator = learn_word_translator(train)
    assert any(t == "학교" for t, _ in translator.table.get("school", []))
    n = len(held_out)
    data = RetrievalData(
        _corpus([f"d{i}" for i in range(n)], [k for k, _ in held_out]),
        pa.table(
            {"query_id": [f"q{i}" for i in range(n)], "text": [e for _, e in held_out], "lang": [None] * n}
        ),
        pa.table(
            {"query_id": [f"q{i}" for i in range(n)], "doc_id": [f"d{i}" for i in range(n)], "score": [1] * n}
        ),
    )
    plain = evaluate_bm25(data, "kiwi", show_progress=False).metrics["ndcg@10"]
    translated = evaluate_bm25(data, "kiwi", translate=translator.translate_all, show_progress=False)
    assert translated.system == "bm25-kiwi"  # named by the caller; the CLI calls it bm25-kiwi-translated
    assert translated.metrics["ndcg@10"] > plain + 0.1
