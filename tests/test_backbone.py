"""Local backbone: tokenizer on real Korean+English text, small BERT, masked-LM warm start, HF layout on disk."""

from __future__ import annotations

import json
import unicodedata

import pytest
import torch

from raysparse.backbone import (
    backbone_texts_from_shared,
    build_local_backbone,
    build_small_bert,
    mlm_collate,
    mlm_warm_start,
    train_tokenizer,
)
from raysparse.config import ModelConfig
from raysparse.model import SparseEncoder

TINY = ModelConfig(
    vocab_size=2000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_doc_length=32
)


def has_jamo(text: str) -> bool:
    """Conjoining Hangul jamo (U+1100-U+11FF) appear only when syllables were decomposed (NFD)."""
    return any("\u1100" <= ch <= "\u11ff" for ch in text)


@pytest.fixture(scope="module")
def texts(shared_data):
    return backbone_texts_from_shared(shared_data, max_per_source=1000)


@pytest.fixture(scope="module")
def tokenizer(texts):
    return train_tokenizer(texts, vocab_size=TINY.vocab_size)


def test_shared_texts_are_korean_and_english(shared_data, texts):
    assert len(texts) > 5000
    hangul = sum(any("\uac00" <= ch <= "\ud7a3" for ch in t) for t in texts)
    latin = sum(
        any("a" <= ch.lower() <= "z" for ch in t) and not any("\uac00" <= ch <= "\ud7a3" for ch in t)
        for t in texts
    )
    assert hangul > 2000 and latin > 2000, (hangul, latin)
    assert len(backbone_texts_from_shared(shared_data)) > len(texts)  # max_per_source really caps


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_tokenizer_keeps_hangul_intact(texts, kind):
    # Unigram training is ~10x slower than WordPiece: a smaller sample keeps the test fast
    sample = texts if kind == "wordpiece" else texts[::4]
    tok = train_tokenizer(sample, vocab_size=TINY.vocab_size, kind=kind)
    for text in ["검색 모델을", "서울은 한국의 수도입니다", "세계 에서 가장 강력한"]:
        ids = tok(text)["input_ids"]
        tokens = tok.convert_ids_to_tokens(ids)
        assert tok.unk_token_id not in ids, tokens
        assert not any(has_jamo(t) for t in tokens), tokens
        assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == text.replace(" ", "")
    # English is lowercased, NFKC folds full-width letters
    assert (
        tok.decode(tok("Search ＭＯＤＥＬ")["input_ids"], skip_special_tokens=True).replace(" ", "")
        == "searchmodel"
    )
    assert [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id] == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_accent_stripping_would_destroy_hangul():
    """The check above can fail: BERT's default normaliser (strip_accents) turns syllables into jamo."""
    from tokenizers import normalizers

    bert_default = normalizers.BertNormalizer(lowercase=True)  # strip_accents follows lowercase
    ours = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    assert has_jamo(bert_default.normalize_str("검색 모델을"))
    assert ours.normalize_str("검색 모델을") == "검색 모델을"
    assert unicodedata.is_normalized("NFC", ours.normalize_str("검색"))


def test_tokenizer_errors():
    with pytest.raises(ValueError, match="kind"):
        train_tokenizer(["a"], kind="bpe")
    with pytest.raises(ValueError, match="distinct characters"):
        train_tokenizer(
            ["가나다라마바사아자차카타파하 abcdefghijklmnopqrstuvwxyz"], vocab_size=20, kind="unigram"
        )
    with pytest.raises(ValueError, match="no non-empty"):
        train_tokenizer(["", ""], vocab_size=100)


def test_small_bert_ties_embeddings(tokenizer):
    model = build_small_bert(tokenizer, TINY)
    assert model.config.vocab_size == len(tokenizer)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert torch.all(model.get_output_embeddings().bias == -0.25)
    with pytest.raises(ValueError, match="divisible"):
        build_small_bert(tokenizer, TINY.model_copy(update={"num_heads": 3}))


def test_mlm_collate_masks_only_real_tokens(tokenizer, texts):
    gen = torch.Generator().manual_seed(0)
    batch = mlm_collate(tokenizer, texts[:64], max_length=48, mlm_probability=0.15, generator=gen)
    labels, mask = batch["labels"], batch["attention_mask"]
    selected = labels != -100
    original = tokenizer(texts[:64], padding=True, truncation=True, max_length=48, return_tensors="pt")[
        "input_ids"
    ]
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    assert not (selected & special).any() and not (selected & (mask == 0)).any()
    assert torch.equal(labels[selected], original[selected])
    rate = selected.sum() / (mask.bool() & ~special).sum()
    assert 0.10 < rate < 0.20, rate
    masked = batch["input_ids"][selected] == tokenizer.mask_token_id
    assert 0.65 < masked.float().mean() < 0.95
    # unselected positions are untouched
    assert torch.equal(batch["input_ids"][~selected], original[~selected])


def test_mlm_warm_start_lowers_the_loss(tokenizer, texts):
    torch.manual_seed(0)
    model = build_small_bert(tokenizer, TINY)
    losses = mlm_warm_start(model, tokenizer, texts, steps=15, batch_size=8, lr=3e-3, max_length=24)
    assert len(losses) == 15 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < losses[0] - 0.5, (losses[0], losses[-4:])
    # a uniform output-bias shift is invisible to the masked-LM softmax: the warm start restores the mean
    assert model.get_output_embeddings().bias.mean().item() == pytest.approx(-0.25, abs=1e-5)


def test_build_local_backbone_loads_as_sparse_encoder(texts, tmp_path):
    cfg = TINY.model_copy(update={"mlm_warmup_steps": 3})
    out = build_local_backbone(texts[:3000], cfg, tmp_path / "bb")
    names = {p.name for p in (tmp_path / "bb").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "backbone.json"} <= names
    assert json.loads((tmp_path / "bb" / "backbone.json").read_text())["mlm_steps"] == 3
    enc = SparseEncoder.from_pretrained(out, lexical_prior=5.0)
    reps = enc.encode_documents(["검색 모델을 학습한다", "a sparse retrieval model"])
    assert reps.shape == (2, enc.vocab_size) and (reps > 0).any(dim=1).all()


def test_wordpiece_ids_are_canonical(shared_data):
    """Ids do not depend on the trainer's hash order: special tokens first, then the pieces sorted.

    (Which pieces are learned can still vary between processes when merge counts tie at the vocabulary cut-off;
    the pipeline caches the backbone stage so a run's tokenizer is fixed once built.)
    """
    lines = (
        (shared_data / "bilingual" / "tatoeba" / "kor.txt").read_text(encoding="utf-8").splitlines()[:2000]
    )
    texts = [t for line in lines for t in line.split("\t")[:2]]
    tokenizer = train_tokenizer(texts, vocab_size=1500)
    vocab = tokenizer.get_vocab()
    ordered = sorted(vocab, key=vocab.get)
    assert ordered[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert ordered[5:] == sorted(ordered[5:])
    assert sorted(vocab.values()) == list(range(len(vocab)))
