"""Synonym discovery on real parallel text with a small locally built encoder (translation prior from tatoeba/news).

The encoder is untrained apart from its priors, so what discovery can find is exactly what the parallel text says;
kengdic (the held-aside glossary) is never shown to it, so its precision@k is an honest check that can fail.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from raysparse.augment import BilingualDictionary
from raysparse.config import ModelConfig, SynonymsConfig, load_config
from raysparse.data.errors import DataFormatError
from raysparse.synonyms import (
    Candidate,
    TermList,
    activation_pairs,
    coactivation_pairs,
    combine,
    discover,
    embedding_neighbours,
    english_words,
    load_sentence_pairs,
    loop_table,
    paired_permutation_test,
    precision_at_k,
    read_candidates,
    write_dictionary,
)

TINY = ModelConfig(vocab_size=6000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
CFG = SynonymsConfig(max_terms=1200, min_term_count=3, batch_size=128)


def _parallel_files(shared_data):
    bilingual = shared_data / "bilingual"
    return [bilingual / "tatoeba" / "kor.txt", bilingual / "news-parallel-dev" / "korean-english-park.dev.ko"]


@pytest.fixture(scope="module")
def pairs(shared_data):
    pairs, reports = load_sentence_pairs(_parallel_files(shared_data), max_pairs_per_file=2500)
    # the cap is reported, not silent: tatoeba has 5,749 pairs
    assert reports[0].skipped.get("over synonyms.max_pairs_per_file") == 5749 - 2500
    return pairs


@pytest.fixture(scope="module")
def encoder(pairs, tmp_path_factory):
    """A tiny random BERT + lexical prior + translation prior learned from the same parallel text (no glossary)."""
    from raysparse.alignment import learn_translation_table
    from raysparse.backbone import build_small_bert, train_tokenizer
    from raysparse.model import SparseEncoder

    tokenizer = train_tokenizer([t for p in pairs for t in p], vocab_size=TINY.vocab_size)
    mlm = build_small_bert(tokenizer, TINY, output_bias=-1.0)
    table = learn_translation_table(tokenizer, pairs, top_k=4, min_score=0.05)
    model = SparseEncoder(mlm, tokenizer, lexical_prior=5.0, translation_prior=5.0, translation_table=table)
    model_dir = tmp_path_factory.mktemp("syn-model") / "model"
    model.save_pretrained(model_dir)
    return model, table, model_dir


@pytest.fixture(scope="module")
def result(encoder, pairs):
    model, _, _ = encoder
    return discover(model, pairs, CFG)


@pytest.fixture(scope="module")
def kengdic(shared_data):
    return BilingualDictionary.from_sources([shared_data / "bilingual" / "kengdic" / "ezcorean_6000.tsv"])


def test_english_words_drop_function_words_and_possessives():
    assert english_words("The government's plan, and Obama's talks!") == [
        "government",
        "plan",
        "obama",
        "talks",
    ]


@pytest.mark.slow  # shares the module's encoder + discovery fixtures (~60 s once)
def test_terms_are_words_not_pieces(result):
    assert len(result.ko_terms) > 300 and len(result.en_terms) > 300
    assert not any(t.startswith("##") for t in result.ko_terms.terms + result.en_terms.terms)
    assert all(any("\uac00" <= ch <= "\ud7a3" for ch in t) for t in result.ko_terms.terms)
    assert all(t.isascii() for t in result.en_terms.terms)


@pytest.mark.slow  # shares the module's encoder + discovery fixtures (~60 s once)
def test_discovery_recovers_pairs_in_the_prior(encoder, result):
    """Korean terms whose single word piece translates (in the prior) to a whole English term: discovery finds it."""
    model, table, _ = encoder
    tok = model.tokenizer
    en_index = {t: i for i, t in enumerate(result.en_terms.terms)}
    checked = found = 0
    top = {}
    for c in result.ranked["activation"]:
        top.setdefault(c.korean, []).append(c.english)
    for term, pieces in zip(result.ko_terms.terms, result.ko_terms.pieces, strict=True):
        if len(pieces) != 1:
            continue
        best = table.translations(pieces[0])
        if not best:
            continue
        target = tok.convert_ids_to_tokens(best[0][0])
        if target not in en_index:
            continue
        checked += 1
        found += target in top.get(term, [])[:3]
    assert checked >= 50
    assert found / checked >= 0.9, (found, checked)


@pytest.mark.slow  # shares the module's encoder + discovery fixtures (~60 s once)
def test_precision_against_held_aside_glossary_beats_shuffled(result, kengdic):
    combined = precision_at_k(result.ranked["combined"], kengdic, 10)
    assert combined["evaluated"] >= 100
    assert combined["precision"] >= 0.15, combined
    # the same candidates with English terms shuffled across Korean terms: what chance gives
    rng = random.Random(0)
    english = [c.english for c in result.ranked["combined"]]
    rng.shuffle(english)
    shuffled = [
        Candidate(c.korean, e, c.score) for c, e in zip(result.ranked["combined"], english, strict=True)
    ]
    assert precision_at_k(shuffled, kengdic, 10)["precision"] < combined["precision"] / 3


@pytest.mark.slow  # shares the module's encoder + discovery fixtures (~60 s once)
def test_known_pairs(result):
    by_ko = {}
    for c in result.candidates:
        by_ko.setdefault(c.korean, []).append(c.english)
    assert "school" in by_ko.get("학교", []), by_ko.get("학교")
    assert "iraq" in by_ko.get("이라크", []), by_ko.get("이라크")


@pytest.mark.slow  # shares the module's encoder + discovery fixtures (~60 s once)
def test_threshold_and_cap(result):
    assert result.candidates
    assert all(c.score >= CFG.threshold for c in result.candidates)
    for side in ("korean", "english"):
        counts = {}
        for c in result.candidates:
            counts[getattr(c, side)] = counts.get(getattr(c, side), 0) + 1
        assert max(counts.values()) <= CFG.cap_per_term
    assert set(result.candidates[0].signals) == {"activation", "coactivation", "embedding"}


@pytest.mark.slow  # shares the module's encoder + discovery fixtures (~60 s once)
def test_signal_shapes_and_ranges(encoder, pairs):
    model, _, _ = encoder
    ko = TermList(
        ["학교", "물"],
        [1, 1],
        [model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("학교", "물")],
    )
    en = TermList(
        ["school", "water", "tree"],
        [1, 1, 1],
        [model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("school", "water", "tree")],
    )
    act = activation_pairs(model, ko, en)
    co = coactivation_pairs(model, pairs[:2000], ko, en, min_count=2)
    emb = embedding_neighbours(model, ko, en)
    for m in (act, co, emb):
        assert m.shape == (2, 3) and m.dtype == np.float32
        assert np.all((m >= 0) & (m <= 1 + 1e-6))
    assert act[0].argmax() == 0 and act[1].argmax() == 1  # 학교 -> school, 물 -> water
    assert co[0].argmax() == 0 and co[1].argmax() == 1


def test_combine_hand_made():
    ko = TermList(["가", "나"], [1, 1], [[1], [2]])
    en = TermList(["a", "b", "c"], [1, 1, 1], [[3], [4], [5]])
    sig = {"activation": np.array([[0.9, 0.8, 0.1], [0.7, 0.0, 0.0]], dtype=np.float32)}
    out = combine(sig, ko, en, weights={"activation": 1.0}, threshold=0.5, cap_per_term=1)
    # 가-a (0.9) wins a; 나-a (0.7) is capped on the English side; 가-b is capped on the Korean side
    assert [(c.korean, c.english) for c in out] == [("가", "a")]
    out = combine(sig, ko, en, weights={"activation": 1.0}, threshold=0.5, cap_per_term=2)
    assert [(c.korean, c.english, round(c.score, 2)) for c in out] == [
        ("가", "a", 0.9),
        ("가", "b", 0.8),
        ("나", "a", 0.7),
    ]
    with pytest.raises(ValueError, match="no signal with a positive weight"):
        combine(sig, ko, en, weights={"embedding": 1.0})


def test_precision_at_k_hand_made():
    glossary = {"학교": {"school"}, "물": {"water"}, "나무": {"tree", "wood"}}
    cands = [
        Candidate("학교", "school", 0.9),
        Candidate("학교", "class", 0.5),
        Candidate("물", "drink", 0.8),
        Candidate("물", "water", 0.7),
        Candidate("나무", "forest", 0.9),
        Candidate("없는말", "nothing", 0.9),  # not in the glossary: not evaluated
    ]
    p1 = precision_at_k(cands, glossary, 1)
    assert p1 == {"k": 1, "evaluated": 3, "precision": 1 / 3, "pair_precision": 1 / 3}
    p2 = precision_at_k(cands, glossary, 2)
    assert p2["precision"] == pytest.approx(2 / 3)
    assert p2["pair_precision"] == pytest.approx(2 / 5)  # school, class | drink, water | forest
    with pytest.raises(ValueError):
        precision_at_k(cands, glossary, 0)


@pytest.mark.slow  # shares the module's encoder + discovery fixtures (~60 s once)
def test_dictionary_round_trips_through_the_augmentation_readers(result, tmp_path):
    from raysparse.data.bilingual import read_synonym_json

    path = write_dictionary(result.candidates, tmp_path / "candidates.json", source="test-model")
    dictionary = BilingualDictionary.from_sources([path])
    assert dictionary.reports[-1].read == len(result.candidates)
    missing = [
        (c.korean, c.english) for c in result.candidates if c.english not in dictionary.lookup_ko(c.korean)
    ]
    assert not missing, missing[:5]
    table, report = read_synonym_json(path)
    assert table.num_rows == len(result.candidates) and not report.skipped
    # scores, signals and provenance survive in the file
    back = read_candidates(path)
    assert [(c.korean, c.english) for c in back] == [(c.korean, c.english) for c in result.candidates]
    assert back[0].score == pytest.approx(result.candidates[0].score, abs=1e-4)
    assert json.loads(path.read_text())[0]["source"] == "test-model"


def test_read_candidates_names_record_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"korean": "학교", "english": "school"}, {"korean": "물"}]))
    with pytest.raises(DataFormatError, match=r"bad.json: record 1: field 'english'"):
        read_candidates(bad)


@pytest.mark.slow  # shares the module's encoder + discovery fixtures (~60 s once)
def test_cli_discover_and_evaluate(encoder, shared_data, tmp_path, capsys):
    from raysparse.cli import main

    _, _, model_dir = encoder
    kengdic = shared_data / "bilingual" / "kengdic" / "ezcorean_6000.tsv"
    out = tmp_path / "disc"
    files = _parallel_files(shared_data)
    rc = main(
        ["synonyms", "discover", "--model", str(model_dir), "--out", str(out), "--glossary", str(kengdic)]
        + [arg for f in files for arg in ("--parallel", str(f))]
        + ["--set", "synonyms.max_pairs_per_file=800", "--set", "synonyms.max_terms=400", "--cap", "2"]
    )
    assert rc == 0
    report = json.loads((out / "discovery_report.json").read_text())
    assert report["config"]["cap_per_term"] == 2 and report["sentence_pairs"] == 1600
    assert set(report["precision"][str(kengdic)]["by_signal"]) == {
        "activation",
        "coactivation",
        "embedding",
        "combined",
    }
    capsys.readouterr()
    assert (
        main(
            [
                "synonyms",
                "evaluate",
                "--candidates",
                str(out / "candidates.json"),
                "--glossary",
                str(kengdic),
                "-k",
                "3",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    expected = precision_at_k(
        read_candidates(out / "candidates.json"), BilingualDictionary.from_sources([kengdic]), 3
    )
    assert printed[str(kengdic)]["p@3"] == pytest.approx(expected)


def test_config_section_validates():
    cfg = load_config(None, ["synonyms.cap_per_term=5", "synonyms.weights={activation: 1.0}"])
    assert cfg.synonyms.cap_per_term == 5 and cfg.synonyms.weights == {"activation": 1.0}
    from raysparse.config import ConfigError

    with pytest.raises(ConfigError, match=r"synonyms\.threshold"):
        load_config(None, ["synonyms.threshold=2"])


def test_cli_help(capsys):
    from raysparse.cli import main

    for action in ("discover", "evaluate", "loop"):
        with pytest.raises(SystemExit) as exit_info:
            main(["synonyms", action, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: raysparse synonyms {action}" in capsys.readouterr().out
    assert main(["synonyms"]) == 2
    assert "discover" in capsys.readouterr().out
    # no sentence pairs anywhere: one clear line, exit 2 (not a traceback)
    assert main(["synonyms", "discover", "--model", "unused", "--out", "unused"]) == 2
    assert "--parallel" in capsys.readouterr().err


def test_paired_permutation_test_hand_made():
    same = [0.1, 0.5, 0.3, 0.9]
    assert paired_permutation_test(same, same) == 1.0
    # 30 queries all improved by 0.2: every sign flip lowers |mean|, p is ~1/(samples+1)
    a = [0.1 * (i % 5) for i in range(30)]
    b = [x + 0.2 for x in a]
    assert paired_permutation_test(a, b, samples=2000) < 0.001
    # symmetric +-0.2 changes: no evidence of a difference
    c = [x + (0.2 if i % 2 else -0.2) for i, x in enumerate(a)]
    assert paired_permutation_test(a, c, samples=2000) == 1.0
    with pytest.raises(ValueError):
        paired_permutation_test([], [])


def test_loop_table_rows():
    table = {
        "msmarco-en-ko": {
            "baseline": {"ndcg@10": 0.30, "mrr@10": 0.2, "recall@100": 0.7},
            "discovered": {"ndcg@10": 0.35, "mrr@10": 0.25, "recall@100": 0.75},
            "baseline prior": {"ndcg@10": 0.20, "mrr@10": 0.1, "recall@100": 0.6},
            "discovered prior": {"ndcg@10": 0.10, "mrr@10": 0.1, "recall@100": 0.6},
        }
    }
    paired = {"msmarco-en-ko": {"trained": {"p_value": 0.04}, "prior": {"p_value": 0.5}}}
    rows = loop_table(table, paired).splitlines()
    assert len(rows) == 4
    assert rows[2].startswith("| msmarco-en-ko | trained |") and rows[2].endswith("| +0.0500 | 0.040 |")
    assert rows[3].endswith("| -0.1000 | 0.500 |")
