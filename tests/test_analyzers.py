"""Analyzers shared by mining, the BM25 baseline and OpenSearch's pre-analysed field."""

from __future__ import annotations

import pytest

from raysparse.analyzers import bigram_tokens, get_analyzer, hangul_ratio, kiwi_analyzer


def test_bigrams_keep_english_words_in_mixed_tokens():
    assert bigram_tokens("Actifed는 검색 모델을") == ["actifed", "는", "검색", "모델", "델을"]
    assert bigram_tokens("API를 써서 model_v2") == ["api", "를", "써서", "model_v2"]
    assert bigram_tokens("ＡＰＩ 서버") == ["api", "서버"]  # NFKC folds full-width Latin


def test_kiwi_keeps_content_morphemes():
    (tokens,) = kiwi_analyzer(["한국어 검색 모델을 학습했다"])
    assert {"한국어", "검색", "모델", "학습"} <= set(tokens)
    assert "을" not in tokens  # particles are not index terms


def test_analyzers_on_real_korean_text(shared_data):
    lines = (
        (shared_data / "bilingual" / "news-parallel-dev" / "korean-english-park.dev.ko")
        .read_text()
        .splitlines()[:50]
    )
    for name in ("bigram", "kiwi"):
        out = get_analyzer(name)(lines)
        assert len(out) == len(lines)
        assert sum(len(t) for t in out) > 10 * len(lines)
        assert out == get_analyzer(name)(lines)  # deterministic


def test_hangul_ratio_and_unknown_analyzer():
    assert hangul_ratio("검색 모델") == 1.0
    assert hangul_ratio("search 모델") == pytest.approx(2 / 8)
    with pytest.raises(ValueError, match="unknown analyzer"):
        get_analyzer("whitespace")
    with pytest.raises(ValueError, match="hf_tokenizer"):
        get_analyzer("hf")
