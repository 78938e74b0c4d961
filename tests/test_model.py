"""SparseEncoder on a tiny local backbone trained on real Korean/English text from ../shared/data."""

from __future__ import annotations

import json

import pytest
import torch

from raysparse.backbone import backbone_texts_from_shared, build_small_bert, train_tokenizer
from raysparse.config import ModelConfig
from raysparse.model import SparseEncoder, idf_weights
from tests.conftest import parallel_pairs

TINY = ModelConfig(vocab_size=3000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def texts(shared_data):
    return backbone_texts_from_shared(shared_data, max_per_source=1500)


@pytest.fixture(scope="module")
def tokenizer(texts):
    return train_tokenizer(texts, vocab_size=TINY.vocab_size)


@pytest.fixture(scope="module")
def news_ko(shared_data):
    path = shared_data / "bilingual" / "news-parallel-dev" / "korean-english-park.dev.ko"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_encoder(tokenizer, lexical_prior: float = 0.0, seed: int = 0, **kwargs) -> SparseEncoder:
    torch.manual_seed(seed)
    return SparseEncoder(
        build_small_bert(tokenizer, TINY), tokenizer, lexical_prior=lexical_prior, **kwargs
    ).eval()


def reference_pooling(enc: SparseEncoder, input_ids, attention_mask) -> torch.Tensor:
    """SPLADE pooling written the slow, obvious way: per position log1p(relu(.)), then max over real tokens."""
    logits = enc.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = logits + enc.lexical_prior * torch.nn.functional.one_hot(input_ids, enc.vocab_size)
    weights = torch.log1p(torch.relu(logits))
    out = torch.zeros(input_ids.shape[0], enc.vocab_size)
    for b in range(input_ids.shape[0]):
        real = attention_mask[b].bool()
        out[b] = weights[b, real].max(dim=0).values
    out[:, enc.special_token_ids] = 0.0
    return out


def test_forward_matches_reference_pooling(tokenizer, news_ko):
    enc = make_encoder(tokenizer, lexical_prior=3.0)
    batch = enc.tokenize([news_ko[0][:20], news_ko[1]], max_length=48)  # different lengths -> padding
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        got = enc(batch["input_ids"], batch["attention_mask"])
        want = reference_pooling(enc, batch["input_ids"], batch["attention_mask"])
    assert got.shape == (2, enc.vocab_size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got >= 0).all()
    assert (got[:, enc.special_token_ids] == 0).all()
    for name in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"):
        assert tokenizer.convert_tokens_to_ids(name) in enc.special_token_ids

    # the in-place prior/masking and pool-before-log1p give the reference's gradients too
    weight = enc.mlm.get_output_embeddings().weight
    (enc(batch["input_ids"], batch["attention_mask"]) ** 2).sum().backward()
    got_grad, weight.grad = weight.grad.clone(), None
    (reference_pooling(enc, batch["input_ids"], batch["attention_mask"]) ** 2).sum().backward()
    torch.testing.assert_close(got_grad, weight.grad, atol=1e-5, rtol=1e-4)


def test_padding_does_not_change_a_document(tokenizer, news_ko):
    enc = make_encoder(tokenizer, lexical_prior=2.0)
    short, long = news_ko[2][:15], news_ko[3]
    alone = enc.encode_documents([short], max_length=64)
    padded = enc.encode_documents([short, long], max_length=64)
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)


def test_lexical_prior_makes_untrained_model_a_bag_of_words(tokenizer, news_ko):
    """Query = first words of a sentence; with the prior the right sentence ranks first far more often."""
    docs = news_ko[:60]
    queries = [" ".join(d.split()[:3]) for d in docs]

    def top1_accuracy(prior: float) -> float:
        enc = make_encoder(tokenizer, lexical_prior=prior, seed=1)
        scores = enc.encode_queries(queries) @ enc.encode_documents(docs, max_length=96).T
        return (scores.argmax(dim=1) == torch.arange(len(docs))).float().mean().item()

    with_prior, without = top1_accuracy(5.0), top1_accuracy(0.0)
    assert with_prior >= 0.8, with_prior
    assert with_prior > without + 0.3, (with_prior, without)

    # and pairwise: a document containing the query's tokens beats one that does not
    enc = make_encoder(tokenizer, lexical_prior=5.0, seed=2)
    q = enc.encode_queries(["수퍼컴퓨터 핵무기"])
    d = enc.encode_documents([news_ko[1], news_ko[10]])
    assert "수퍼컴퓨터" in news_ko[1] and "수퍼컴퓨터" not in news_ko[10]
    s = (q @ d.T)[0]
    assert s[0] > s[1]


def test_save_load_round_trip(tokenizer, news_ko, tmp_path):
    idf = idf_weights(tokenizer, news_ko[:200])
    enc = make_encoder(tokenizer, lexical_prior=4.0, query_weights=idf)
    enc.save_pretrained(tmp_path / "m")
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "raysparse.json",
        "query_weights.safetensors",
    } <= names
    meta = json.loads((tmp_path / "m" / "raysparse.json").read_text())
    assert meta["lexical_prior"] == 4.0 and meta["query_mode"] == "encoder"
    assert meta["special_token_ids"] == enc.special_token_ids

    loaded = SparseEncoder.from_pretrained(str(tmp_path / "m")).eval()
    assert loaded.lexical_prior == 4.0 and loaded.vocab_size == enc.vocab_size
    torch.testing.assert_close(loaded.query_weights.detach(), idf)
    sample = news_ko[5:9]
    torch.testing.assert_close(loaded.encode_documents(sample), enc.encode_documents(sample))

    switched = SparseEncoder.from_pretrained(
        str(tmp_path / "m"), query_mode="inference_free", lexical_prior=1.0
    )
    assert switched.query_mode == "inference_free" and switched.lexical_prior == 1.0
    with pytest.raises(TypeError, match="unknown"):
        SparseEncoder.from_pretrained(str(tmp_path / "m"), lexical_priors=1.0)


def test_roberta_style_backbone_takes_the_same_path(tokenizer, tmp_path, news_ko):
    """xlm-roberta-base loads through AutoModelForMaskedLM like BERT; a tiny XLM-R config proves the path offline."""
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    cfg = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=130,
    )
    XLMRobertaForMaskedLM(cfg).save_pretrained(tmp_path / "xlmr")
    tokenizer.save_pretrained(tmp_path / "xlmr")
    enc = SparseEncoder.from_pretrained(str(tmp_path / "xlmr"), lexical_prior=5.0)
    assert enc.lexical_prior == 5.0 and enc.query_mode == "encoder"
    reps = enc.encode_documents(news_ko[:3], max_length=64)
    assert reps.shape == (3, len(tokenizer)) and (reps >= 0).all()


def test_inference_free_queries_use_only_token_weights(tokenizer, news_ko):
    idf = idf_weights(tokenizer, news_ko)
    assert idf.shape == (len(tokenizer),)
    assert (idf[[tokenizer.pad_token_id, tokenizer.cls_token_id]] == 0).all()
    (common,) = tokenizer("이", add_special_tokens=False)["input_ids"]  # in most news sentences
    rare = tokenizer("수퍼컴퓨터", add_special_tokens=False)["input_ids"][0]  # in a handful
    assert tokenizer.unk_token_id not in (common, rare)
    assert 0 < idf[common] < idf[rare]

    enc = make_encoder(tokenizer, lexical_prior=5.0, query_mode="inference_free", query_weights=idf)
    query = "핵무기 핵무기 실험"
    reps = enc.encode_queries([query])[0]
    ids = set(tokenizer(query, add_special_tokens=False)["input_ids"])
    nonzero = set(reps.nonzero().flatten().tolist())
    assert nonzero == {i for i in ids if idf[i] > 0}
    for i in ids:
        assert reps[i].item() == pytest.approx(idf[i].item())  # presence, not counts
    # no transformer: corrupting the backbone's weights does not change queries (but does change documents)
    docs_before = enc.encode_documents([news_ko[0]])
    with torch.no_grad():
        for p in enc.mlm.parameters():
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(enc.encode_queries([query])[0], reps)
    assert not torch.allclose(enc.encode_documents([news_ko[0]]), docs_before)

    uniform = make_encoder(tokenizer, query_mode="inference_free")  # learned from a uniform start
    assert uniform.query_weights.requires_grad
    assert any(p is uniform.query_weights for p in uniform.parameters())
    assert set(uniform.encode_queries([query])[0].unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="query_mode"):
        make_encoder(tokenizer, query_mode="dense")
    with pytest.raises(ValueError, match="shape"):
        make_encoder(tokenizer, query_mode="inference_free", query_weights=torch.ones(5))


def _assert_exports_match_eager(enc: SparseEncoder, example: dict, other: dict, tmp_path) -> None:
    """torch.jit.trace and ONNX (run in onnxruntime) agree with eager on a batch shaped unlike the traced one."""
    with torch.no_grad():
        traced = torch.jit.trace(enc, (example["input_ids"], example["attention_mask"]), strict=False)
        eager = enc(other["input_ids"], other["attention_mask"])
        torch.testing.assert_close(
            traced(other["input_ids"], other["attention_mask"]), eager, atol=1e-5, rtol=1e-5
        )

    import onnxruntime as ort

    path = tmp_path / "enc.onnx"
    with torch.no_grad():
        torch.onnx.export(
            enc,
            (example["input_ids"], example["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["weights"],
            dynamic_axes={
                "input_ids": {0: "b", 1: "l"},
                "attention_mask": {0: "b", 1: "l"},
                "weights": {0: "b"},
            },
            opset_version=17,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {k: v.numpy() for k, v in other.items()})
    torch.testing.assert_close(torch.from_numpy(onnx_out), eager, atol=1e-4, rtol=1e-4)


def test_jit_trace_and_onnx_match_eager(tokenizer, news_ko, tmp_path):
    enc = make_encoder(tokenizer, lexical_prior=5.0)
    example = enc.tokenize(news_ko[:2], max_length=32)
    other = enc.tokenize(news_ko[10:13], max_length=64)  # a different batch size and length than traced
    _assert_exports_match_eager(enc, example, other, tmp_path)


def test_translation_prior_matches_across_languages(shared_data, tmp_path):
    """A table learned from real parallel text makes the untrained encoder put English translations on Korean text."""
    from raysparse.alignment import learn_translation_table

    news = shared_data / "bilingual" / "news-parallel-dev"
    ko = (news / "korean-english-park.dev.ko").read_text(encoding="utf-8").splitlines()
    en = (news / "korean-english-park.dev.en").read_text(encoding="utf-8").splitlines()
    pairs = parallel_pairs(shared_data)
    # The shared tiny tokenizer is nearly all single characters; translation needs word pieces in both languages.
    tokenizer = train_tokenizer([t for pair in pairs for t in pair], vocab_size=8000)
    table = learn_translation_table(tokenizer, pairs, top_k=3, min_score=0.1)
    assert table.num_entries > 500
    plain = make_encoder(tokenizer, lexical_prior=5.0)
    enc = make_encoder(tokenizer, lexical_prior=5.0, translation_prior=5.0, translation_table=table)
    source, slot = divmod(int(table.weights.argmax()), table.weights.shape[1])  # the strongest learned pair
    target = int(table.ids[source, slot])
    batch = {
        "input_ids": torch.tensor([[tokenizer.cls_token_id, source, tokenizer.sep_token_id]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
    }
    with torch.no_grad():
        assert enc(**batch)[0, target] > plain(**batch)[0, target] + 0.5
    # Korean sentence -> English sentence: the prior raises the true pair's score above the untranslated model's
    q = enc.tokenize(ko[:20], max_length=48)
    d = enc.tokenize(en[:20], max_length=48)
    with torch.no_grad():
        gain = (enc(**q) * enc(**d)).sum(1) - (plain(**q) * plain(**d)).sum(1)
    assert (gain > 0).float().mean() >= 0.9

    enc.save_pretrained(tmp_path / "m")
    again = SparseEncoder.from_pretrained(tmp_path / "m").eval()
    assert again.translation_prior == 5.0
    with torch.no_grad():
        torch.testing.assert_close(again(**q), enc(**q))
    _assert_exports_match_eager(enc, enc.tokenize(ko[:2], 32), enc.tokenize(ko[5:8], 64), tmp_path)


def test_bf16_autocast_and_gradients(tokenizer, news_ko):
    enc = make_encoder(tokenizer, lexical_prior=5.0).train()
    batch = enc.tokenize(news_ko[:4], max_length=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reps = enc(batch["input_ids"], batch["attention_mask"])
    assert reps.dtype == torch.bfloat16 and (reps >= 0).all()
    reps.float().sum().backward()
    grad = enc.mlm.get_output_embeddings().weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        fp32 = enc(batch["input_ids"], batch["attention_mask"])
    # bf16 keeps ~3 significant digits: near-zero terms may flip, the bulk must agree
    diff = (reps.float() - fp32).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.5, (diff.mean(), diff.max())


def test_to_term_weights_prunes_and_names_tokens(tokenizer):
    enc = make_encoder(tokenizer)
    reps = torch.zeros(2, enc.vocab_size)
    ids = tokenizer.convert_tokens_to_ids(["검", "##색", "모델"])
    reps[0, ids] = torch.tensor([0.5, 2.0, 0.05])
    out = enc.to_term_weights(reps, threshold=0.1)
    assert out[0] == {"##색": 2.0, "검": 0.5} and list(out[0]) == ["##색", "검"]
    assert out[1] == {}
    assert enc.to_term_weights(reps, top_k=1)[0] == {"##색": 2.0}
    with pytest.raises(ValueError, match="reps must be"):
        enc.to_term_weights(torch.zeros(2, 7))


def test_encode_returns_term_dicts(tokenizer, news_ko):
    enc = make_encoder(tokenizer, lexical_prior=5.0)
    (terms,) = enc.encode(["수퍼컴퓨터 핵무기"], is_query=True, top_k=20)
    assert 0 < len(terms) <= 20
    query_tokens = tokenizer.tokenize("수퍼컴퓨터 핵무기")
    assert set(query_tokens) <= set(terms)  # the lexical prior puts every query token in its own vector
    assert enc.encode_documents([]).shape == (0, enc.vocab_size)
    with pytest.raises(TypeError, match="list"):
        enc.encode_documents("a single string")


def test_encoder_and_combined_loss_learn_on_parallel_pairs(tokenizer, shared_data):
    """A few optimiser steps on Korean->English Tatoeba pairs lower the in-batch ranking loss on those pairs."""
    from raysparse.config import LossConfig
    from raysparse.losses import SparseRetrievalLoss

    lines = (shared_data / "bilingual" / "tatoeba" / "kor.txt").read_text(encoding="utf-8").splitlines()
    pairs = [line.split("\t")[:2] for line in lines[3000:3008]]
    en, ko = [p[0] for p in pairs], [p[1] for p in pairs]
    enc = make_encoder(tokenizer, lexical_prior=5.0, seed=3).train()
    loss_fn = SparseRetrievalLoss(LossConfig(beta=0.0), total_steps=8)
    optimizer = torch.optim.AdamW(enc.parameters(), lr=3e-3)
    q_batch, d_batch = enc.tokenize(ko, 16), enc.tokenize(en, 16)
    history = []
    for step in range(8):
        q = enc.query_forward(q_batch["input_ids"], q_batch["attention_mask"])
        d = enc(d_batch["input_ids"], d_batch["attention_mask"])
        out = loss_fn(q, d, step=step)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        history.append(out["ranking"].item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < history[0] - 0.3, history
