"""Translation tables learned from real parallel text find 함수<->function and 검색<->search."""

from __future__ import annotations

import numpy as np
import pytest

from raysparse.alignment import TranslationTable, describe, learn_translation_table


def _real_pairs(shared_data):
    bilingual = shared_data / "bilingual"
    pairs = []
    for line in (bilingual / "tatoeba" / "kor.txt").read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) >= 2:
            pairs.append((cols[1], cols[0]))
    news = bilingual / "news-parallel-dev"
    for stem in ("korean-english-park.dev", "jhe-koen-dev"):
        ko = (news / f"{stem}.ko").read_text(encoding="utf-8").splitlines()
        en = (news / f"{stem}.en").read_text(encoding="utf-8").splitlines()
        pairs += list(zip(ko, en, strict=True))
    import json

    docs = (bilingual / "python-docs-glossary" / "pairs_en_ko.jsonl").read_text(encoding="utf-8").splitlines()
    for line in docs[:12000]:
        record = json.loads(line)
        pairs.append((record["ko"], record["en"]))
    glossary = []
    for line in (
        (bilingual / "python-docs-glossary" / "glossary_terms_en_ko.tsv").read_text().splitlines()[1:]
    ):
        en, ko = line.split("\t")[:2]
        glossary.append((ko, en))
    return pairs, glossary


@pytest.fixture(scope="module")
def tokenizer_and_pairs(shared_data):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    pairs, glossary = _real_pairs(shared_data)
    texts = [t for p in pairs for t in p] + [t for g in glossary for t in g]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        texts,
        trainers.WordPieceTrainer(
            vocab_size=8000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        ),
    )
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    return hf, pairs, glossary


def test_learns_known_translations(tokenizer_and_pairs):
    tokenizer, pairs, glossary = tokenizer_and_pairs
    table = learn_translation_table(tokenizer, pairs, glossary, top_k=4)
    found = describe(table, tokenizer, ["함수", "검색", "search", "school"])
    assert {"function", "functions"} & {t for t, _ in found["함수"]}
    assert "search" in [t for t, _ in found["검색"]]
    assert "검색" in [t for t, _ in found["search"]]
    assert any("학교" in t for t, _ in found["school"])
    # every kept score is a Dice coefficient in (0, 1] and special tokens never translate
    assert np.all((table.weights >= 0) & (table.weights <= 1))
    for special in tokenizer.all_special_ids:
        assert table.weights[special].sum() == 0


def test_directions_stay_cross_lingual(tokenizer_and_pairs):
    tokenizer, pairs, glossary = tokenizer_and_pairs
    table = learn_translation_table(tokenizer, pairs[:3000], glossary, top_k=3)
    from raysparse.analyzers import is_hangul

    for src in range(len(tokenizer)):
        targets = table.translations(src)
        if not targets:
            continue
        src_ko = is_hangul(tokenizer.convert_ids_to_tokens(src))
        for tgt, _ in targets:
            assert is_hangul(tokenizer.convert_ids_to_tokens(tgt)) != src_ko


def test_save_load_and_empty_input(tmp_path, tokenizer_and_pairs):
    tokenizer, pairs, glossary = tokenizer_and_pairs
    table = learn_translation_table(tokenizer, pairs[:500], glossary, top_k=2)
    table.save(str(tmp_path / "t.npz"))
    again = TranslationTable.load(str(tmp_path / "t.npz"))
    assert np.array_equal(again.ids, table.ids) and np.array_equal(again.weights, table.weights)
    with pytest.raises(ValueError, match="at least one"):
        learn_translation_table(tokenizer, [], [])
