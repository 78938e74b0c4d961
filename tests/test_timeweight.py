"""raysparse.timeweight: formulas on hand-computable inputs, save/load, and rising terms on the real petitions."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest

from raysparse.timeweight import (
    TimeWeightTable,
    decay_factors,
    recency_idf,
    rising_terms,
    term_document_frequencies,
)

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _split(texts):
    return [t.split() for t in texts]


@pytest.fixture
def tiny():
    # 2019-01: 2 docs (a b, a), 2019-02: 1 doc (b c); one undated doc
    texts = ["a b", "a", "b c", "a"]
    dates = ["2019-01-01", "2019-01-03", "2019-02-02", None]
    return term_document_frequencies(texts, dates, _split, "month")


def test_term_document_frequencies_counts_per_window(tiny):
    assert tiny.windows == ["2019-01", "2019-02"]
    assert tiny.docs.tolist() == [2, 1]
    assert tiny.undated == 1
    assert tiny.window_counts("a") == {"2019-01": 2, "2019-02": 0}
    assert tiny.window_counts("b") == {"2019-01": 1, "2019-02": 1}
    assert tiny.window_counts("c") == {"2019-01": 0, "2019-02": 1}
    assert tiny.centres[0] == datetime(2019, 1, 2)  # mean date of the window's documents


def test_recency_idf_matches_the_decay_formula(tiny):
    # reference 2019-02-02 = centre of 2019-02; 2019-01's centre is 31 days older; h = 31 -> decay 0.5
    table = recency_idf(tiny, 31.0, "2019-02-02")
    assert decay_factors(tiny, 31.0, "2019-02-02") == pytest.approx([0.5, 1.0])
    n_eff = 0.5 * 2 + 1.0 * 1
    assert table.n_eff == pytest.approx(n_eff)
    expect = {"a": 0.5 * 2, "b": 0.5 * 1 + 1.0, "c": 1.0}
    for term, df_eff in expect.items():
        assert table.weight(term) == pytest.approx(math.log(1 + (n_eff - df_eff + 0.5) / (df_eff + 0.5)))
    # plain IDF: 3 dated docs
    i = tiny.terms.index("a")
    assert table.plain_idf[i] == pytest.approx(math.log(1 + (3 - 2 + 0.5) / (2 + 0.5)))
    # no decay = plain IDF; an unseen term gets df = 0
    flat = recency_idf(tiny, None)
    assert flat.idf == pytest.approx(flat.plain_idf)
    assert flat.weight("zzz") == pytest.approx(math.log(1 + 3.5 / 0.5))
    # recently frequent "c" gains weight share vs "a", which is old
    assert table.weight("a") > flat.weight("a")
    assert table.weight("c") < flat.weight("c")


def test_rising_terms_formula_and_filters():
    texts = ["x y"] * 10 + ["x"] * 10 + ["y z"] * 8 + ["x"] * 2
    dates = ["2019-01-05"] * 20 + ["2019-02-05"] * 10
    stats = term_document_frequencies(texts, dates, _split, "month")
    rows = rising_terms(stats, min_count=3, min_z=0.0)
    got = {r["term"]: r for r in rows}
    assert "x" not in got  # its share fell (20/20 -> 2/10)
    assert set(got) == {"y", "z"}
    a, big_a, b, big_b = 8, 10, 10, 20
    y = got["y"]
    assert (y["recent_df"], y["past_df"], y["recent_docs"], y["past_docs"]) == (a, b, big_a, big_b)
    assert y["score"] == pytest.approx(math.log((a + 0.5) / (big_a + 1)) - math.log((b + 0.5) / (big_b + 1)))
    p = (a + b) / (big_a + big_b)
    assert y["z"] == pytest.approx((a / big_a - b / big_b) / math.sqrt(p * (1 - p) * (1 / big_a + 1 / big_b)))
    assert got["z"]["counts"] == {"2019-01": 0, "2019-02": 8}
    assert rows[0]["z"] >= rows[-1]["z"]
    # min_count filters
    assert rising_terms(stats, min_count=9, min_z=0.0) == []
    with pytest.raises(ValueError, match="unknown windows"):
        rising_terms(stats, recent="2020-01")


def test_bad_dates_are_named():
    with pytest.raises(ValueError, match=r"dates\[1\].*not an ISO date"):
        term_document_frequencies(["a", "b"], ["2019-01-01", "yesterday"], _split)
    with pytest.raises(ValueError, match="2 texts but 1 dates"):
        term_document_frequencies(["a", "b"], ["2019-01-01"], _split)


def test_table_save_load_roundtrip(tiny, tmp_path):
    table = recency_idf(tiny, 31.0, "2019-02-02")
    table.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    back = TimeWeightTable.load(tmp_path)
    assert back.terms == table.terms
    np.testing.assert_allclose(back.idf, table.idf)
    assert back.n_eff == pytest.approx(table.n_eff)
    assert back.meta["half_life_days"] == 31.0
    (tmp_path / "time_weights.json").write_text("{}")
    with pytest.raises(ValueError, match="n_eff"):
        TimeWeightTable.load(tmp_path)


@pytest.fixture(scope="module")
def petitions(shared_data):
    from raysparse.corpus.dated import read_dated_source

    data = read_dated_source(shared_data / "corpora" / "petitions-dated")
    c = data.corpus
    months = [d.strftime("%Y-%m") for d in c["date"].to_pylist()]
    keep = [i for i, m in enumerate(months) if m in ("2019-04", "2019-08")]
    return [c["text"][i].as_py() for i in keep], [c["date"][i].as_py() for i in keep]


def test_rising_terms_on_real_petitions_really_rise(petitions):
    texts, dates = petitions
    stats = term_document_frequencies(texts, dates, "bigram", "month")
    assert stats.windows == ["2019-04", "2019-08"]
    rows = rising_terms(stats, recent="2019-08", past="2019-04", min_count=10, min_z=3.0, top_k=20)
    assert len(rows) >= 5
    n_recent, n_past = stats.docs[1], stats.docs[0]
    # verified from the raw texts, independently of the DF matrix
    analyzed = __import__("raysparse.analyzers", fromlist=["x"]).bigram_analyzer(texts)
    months = [d.strftime("%Y-%m") for d in dates]
    for r in rows:
        recent = sum(
            1 for terms, m in zip(analyzed, months, strict=True) if m == "2019-08" and r["term"] in terms
        )
        past = sum(
            1 for terms, m in zip(analyzed, months, strict=True) if m == "2019-04" and r["term"] in terms
        )
        assert (recent, past) == (r["recent_df"], r["past_df"])
        assert recent >= 10
        assert recent / n_recent > past / n_past
    # and a term whose share fell is never reported
    fell = {
        t for t, (a, b) in zip(stats.terms, stats.df.T.toarray(), strict=True) if b / n_recent < a / n_past
    }
    assert not fell & {r["term"] for r in rows}


def test_recency_query_weights_for_token_ids(petitions, tmp_path):
    from raysparse.backbone import train_tokenizer
    from raysparse.model import idf_weights
    from raysparse.timeweight import recency_query_weights

    texts, dates = petitions
    texts, dates = texts[:200] + texts[-200:], dates[:200] + dates[-200:]
    tok = train_tokenizer(texts, 2000)
    flat = recency_query_weights(tok, texts, dates, None)
    # without decay the recency IDF is exactly the model's BM25-style IDF
    np.testing.assert_allclose(flat.numpy(), idf_weights(tok, texts).numpy(), rtol=1e-5)
    decayed = recency_query_weights(tok, texts, dates, 30.0)
    assert decayed.shape == flat.shape
    assert not np.allclose(decayed.numpy(), flat.numpy())


def test_cli_writes_table_and_rising_terms(shared_data, tmp_path):
    out = tmp_path / "tw"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "jobs" / "time_weights.py"),
            "--corpus",
            str(shared_data / "corpora" / "petitions-dated" / "petitions_2019-07"),
            "--corpus",
            str(shared_data / "corpora" / "petitions-dated" / "petitions_2019-08"),
            "--out",
            str(out),
            "--half-life",
            "30",
            "--top-k",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = TimeWeightTable.load(out)
    assert table.meta["half_life_days"] == 30.0
    assert (out / "rising_terms.json").is_file()
    assert "2019-08" in proc.stdout


def test_pipeline_attaches_recency_query_weights(petitions, tmp_path, shared_data):
    """time.use_for_query_weights / use_as_training_prior: the saved encoder's inference-free query weights are the
    recency IDF of the dated corpus (time.corpus), and inference-free queries are weighted by them."""
    import torch

    from raysparse.backbone import build_small_bert, train_tokenizer
    from raysparse.config import ModelConfig, RaySparseConfig
    from raysparse.model import SparseEncoder
    from raysparse.pipeline import _attach_recency_query_weights
    from raysparse.timeweight import recency_query_weights

    texts, _ = petitions
    tok = train_tokenizer(texts[:300], 2000)
    tiny = ModelConfig(vocab_size=2000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    SparseEncoder(build_small_bert(tok, tiny), tok, lexical_prior=1.0).save_pretrained(tmp_path / "base")
    corpus = shared_data / "corpora" / "petitions-dated" / "petitions_2019-08"
    cfg = RaySparseConfig()
    cfg.time.enabled, cfg.time.use_for_query_weights, cfg.time.corpus = True, True, str(corpus)
    cfg.time.half_life_days = 10.0
    out = _attach_recency_query_weights(str(tmp_path / "base"), cfg, None, tmp_path / "timed")
    model = SparseEncoder.from_pretrained(out)
    assert model.query_mode == "inference_free"
    from raysparse.corpus.dated import read_dated_source

    c = read_dated_source(corpus).corpus
    expect = recency_query_weights(
        tok, c["text"].to_pylist(), c["date"].to_pylist(), 10.0, vocab_size=len(tok)
    )
    np.testing.assert_allclose(model.query_weights.detach().numpy(), expect.numpy(), rtol=1e-6)
    enc = model.encode(["일본 불매 운동"], is_query=True)[0]
    ids = tok("일본 불매 운동", add_special_tokens=False)["input_ids"]
    token = tok.convert_ids_to_tokens(ids[0])
    assert enc[token] == pytest.approx(float(expect[ids[0]]), rel=1e-5)
