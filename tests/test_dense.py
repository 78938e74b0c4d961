"""The dense bi-encoder baseline: encoder (pooling, windows, normalisation), sentence-transformers layout, exact
inner-product index against brute force, its InfoNCE objective, and evaluation through raysparse.evaluation on real
Korean data (KLUE-MRC) next to BM25, including the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pytest
import torch
from small_models import TINY_BERT, save_tiny_backbone

from raysparse.cli import main
from raysparse.config import LossConfig, ModelConfig
from raysparse.data import read_squad, write_beir
from raysparse.dense import DenseEncoder, DenseIndex, build_dense_encoder, is_dense_dir
from raysparse.evaluation import document_texts, evaluate_model, evaluate_run
from raysparse.losses import DenseRetrievalLoss
from raysparse.schemas import RetrievalData


@pytest.fixture(scope="module")
def klue_small(shared_data) -> RetrievalData:
    """60 KLUE-MRC questions over their passages + 40 other passages (real Korean retrieval, CPU-sized)."""
    klue = read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")
    qrels = klue.qrels.slice(0, 60)
    judged = set(qrels.column("doc_id").to_pylist())
    others = [d for d in klue.corpus.column("doc_id").to_pylist() if d not in judged][:40]
    corpus = klue.corpus.filter(pa.compute.is_in(klue.corpus.column("doc_id"), pa.array([*judged, *others])))
    return RetrievalData(corpus, klue.queries.slice(0, 60), qrels, klue.reports)


@pytest.fixture(scope="module")
def backbone(klue_small, tmp_path_factory) -> str:
    """A small local masked-LM backbone (tokenizer trained on the set's text), as raysparse.backbone builds it."""
    texts = document_texts(klue_small) + klue_small.queries.column("text").to_pylist()
    return save_tiny_backbone(texts, tmp_path_factory.mktemp("backbone"))


def _cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"kind": "dense", **TINY_BERT, "max_doc_length": 24, "max_windows": 4, **kw})


def test_dense_encoder_pools_windows_and_normalises(backbone, tmp_path):
    path, info = build_dense_encoder(backbone, _cfg(), tmp_path / "dense")
    assert info == {"kind": "dense", "pooling": "mean", "normalize": True, "dim": 32} and is_dense_dir(path)
    enc = DenseEncoder.from_pretrained(path)
    long_doc = "대한민국의 수도는 서울이며 인구가 가장 많은 도시이다. " * 6
    vecs = enc.encode_documents([long_doc, "서울"])
    assert vecs.shape == (2, 32)
    assert torch.allclose(vecs.norm(dim=1), torch.ones(2), atol=1e-5)
    # by hand: every window mean-pooled over its real tokens, the windows averaged, then L2-normalised
    batch = enc.tokenize_texts([long_doc], is_query=False)
    assert batch.input_ids.shape[0] > 1  # the spec's windows are in use
    with torch.no_grad():
        hidden = enc.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        mask = batch.attention_mask.unsqueeze(-1).float()
        windows = (hidden * mask).sum(1) / mask.sum(1)
        manual = torch.nn.functional.normalize(windows.mean(0), dim=0)
    assert torch.allclose(vecs[0], manual, atol=1e-5)
    # CLS pooling, unnormalised: the first token's state of a one-window text
    cls = DenseEncoder.from_pretrained(path, pooling="cls", normalize=False)
    one = cls.tokenize_texts(["서울"], is_query=True)
    with torch.no_grad():
        first = cls.model(input_ids=one.input_ids, attention_mask=one.attention_mask).last_hidden_state[0, 0]
    assert torch.allclose(cls.encode_queries(["서울"])[0], first, atol=1e-5)
    with pytest.raises(ValueError, match=r"model\.pooling"):
        DenseEncoder(enc.model, enc.tokenizer, pooling="max")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_saved_layout_loads_in_sentence_transformers_with_the_same_vectors(backbone, tmp_path, pooling):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    path, _ = build_dense_encoder(backbone, _cfg(pooling=pooling), tmp_path / "dense")
    for name in (
        "modules.json",
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
        "raysparse.json",
    ):
        assert (tmp_path / "dense" / name).is_file(), name
    pooling_cfg = json.loads((tmp_path / "dense" / "1_Pooling" / "config.json").read_text())
    assert pooling_cfg["pooling_mode_mean_tokens"] is (pooling == "mean")
    assert pooling_cfg["pooling_mode_cls_token"] is (pooling == "cls")
    texts = [
        "서울은 대한민국의 수도이다",
        "한국어 검색 모델",
    ]  # one window each: both libraries see the same tokens
    ours = DenseEncoder.from_pretrained(path).encode_documents(texts)
    st = sentence_transformers.SentenceTransformer(path, device="cpu")
    theirs = st.encode(texts, convert_to_tensor=True).cpu()
    assert torch.allclose(ours, theirs, atol=1e-5)
    # and a sentence-transformers directory without raysparse.json reads back with the same pooling/normalisation
    (tmp_path / "dense" / "raysparse.json").unlink()
    assert is_dense_dir(path)
    again = DenseEncoder.from_pretrained(path)
    assert again.pooling == pooling and again.normalize
    assert torch.allclose(again.encode_documents(texts), ours, atol=1e-5)


def test_sentence_transformers_prompts_and_bad_pooling_are_read(backbone, tmp_path):
    path, _ = build_dense_encoder(backbone, _cfg(), tmp_path / "e5")
    (tmp_path / "e5" / "raysparse.json").unlink()
    (tmp_path / "e5" / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}})
    )
    enc = DenseEncoder.from_pretrained(path)
    assert enc.query_prefix == "query: " and enc.document_prefix == "passage: "
    plain = DenseEncoder.from_pretrained(path, query_prefix="")
    assert not torch.allclose(enc.encode_queries(["서울"]), plain.encode_queries(["서울"]))
    pool_file = tmp_path / "e5" / "1_Pooling" / "config.json"
    cfg = json.loads(pool_file.read_text())
    pool_file.write_text(
        json.dumps({**cfg, "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True})
    )
    with pytest.raises(ValueError, match=r"1_Pooling/config.json: pooling \['pooling_mode_max_tokens'\]"):
        DenseEncoder.from_pretrained(path)


def test_dense_index_matches_brute_force_with_doc_id_ties():
    rng = np.random.default_rng(3)
    docs = rng.normal(size=(300, 16)).astype(np.float32)
    docs[7] = docs[5]  # an exact tie: the smaller doc_id wins
    ids = [f"d{i:03d}" for i in range(300)][::-1]  # stored out of order on purpose
    index = DenseIndex(ids, docs)
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    queries[0] = docs[5]
    hits = index.search(queries, k=10, batch_size=7)
    for qi, row in enumerate(hits):
        scores = docs @ queries[qi]
        expected = sorted(range(300), key=lambda i: (-scores[i], ids[i]))[:10]
        assert [d for d, _ in row] == [ids[i] for i in expected]
        assert [s for _, s in row] == pytest.approx([float(scores[i]) for i in expected], rel=1e-5)
    assert [d for d, _ in hits[0][:2]] == sorted([ids[5], ids[7]])
    assert index.bytes_per_document() == 16 * 4
    assert len(index.search(queries[:1], k=1000)[0]) == 300  # k beyond the corpus: every document
    with pytest.raises(ValueError, match="duplicates"):
        DenseIndex(["a", "a"], docs[:2])
    with pytest.raises(ValueError, match=r"queries must be \(M, 16\)"):
        index.search(np.zeros((1, 8), np.float32), k=1)


def test_dense_retrieval_loss_is_infonce_at_the_dense_temperature():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    pos = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    neg = torch.nn.functional.normalize(torch.randn(4, 2, 8), dim=1)
    cfg = LossConfig(dense_temperature=0.05, alpha=1.0, beta=0.5)
    out = DenseRetrievalLoss(cfg)(q, pos, neg, step=3)
    docs = torch.cat([pos, neg.reshape(-1, 8)])
    logits = (q @ docs.T) / 0.05
    by_hand = -torch.stack([logits[i, i] - torch.logsumexp(logits[i], 0) for i in range(4)]).mean()
    assert out["ranking"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(by_hand.item(), rel=1e-5)  # no parallel batch: no β term
    out["loss"].backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    ko, en = torch.randn(3, 8), torch.randn(3, 8)
    both = DenseRetrievalLoss(cfg)(q.detach(), pos, neg, ko=ko, en=en)
    cos = torch.nn.functional.cosine_similarity(ko, en).neg().add(1).mean()
    assert both["cross_lingual"].item() == pytest.approx(cos.item(), rel=1e-5)
    assert both["loss"].item() == pytest.approx(by_hand.item() + 0.5 * cos.item(), rel=1e-5)
    with pytest.raises(ValueError, match="distillation"):
        DenseRetrievalLoss(LossConfig(delta=1.0))


def test_evaluate_dense_model_on_klue_through_the_evaluation_code(backbone, klue_small, tmp_path):
    from raysparse.config import EvalConfig

    path, _ = build_dense_encoder(backbone, _cfg(max_doc_length=64), tmp_path / "dense")
    eval_cfg = EvalConfig(batch_size=16, latency_queries=5)
    result = evaluate_model(path, klue_small, eval_cfg)  # a directory: load_encoder finds it is dense
    m = result.metrics
    assert result.info["kind"] == "dense" and m["num_queries"] == 60
    assert m["index_bytes_per_doc"] == 32 * 4 and m["dim"] == 32
    assert 0 < m["latency_p50_ms"] <= m["latency_p99_ms"] and result.info["latency"]["latency_queries"] == 5
    # the same numbers from a brute-force run over the encoder's vectors through the metrics seam
    enc = DenseEncoder.from_pretrained(path)
    docs = enc.encode_documents(document_texts(klue_small), batch_size=16).numpy()
    queries = enc.encode_queries(klue_small.queries.column("text").to_pylist()).numpy()
    doc_ids = klue_small.corpus.column("doc_id").to_pylist()
    run = {}
    for qid, qv in zip(klue_small.queries.column("query_id").to_pylist(), queries, strict=True):
        scores = docs @ qv
        run[qid] = {doc_ids[i]: float(scores[i]) for i in np.argsort(-scores)[:100]}
    brute = evaluate_run(run, klue_small).metrics
    for key in ("ndcg@10", "mrr@10", "recall@100"):
        assert m[key] == pytest.approx(brute[key], abs=1e-6), key
    # an untrained random encoder is far from perfect but a real ranking: recall@100 covers the 100-doc corpus
    assert m["recall@100"] == pytest.approx(1.0) and m["ndcg@10"] < 0.9
    assert not math.isnan(m["ndcg@10"])


def test_cli_evaluates_a_dense_model_beside_bm25(backbone, klue_small, tmp_path):
    path, _ = build_dense_encoder(backbone, _cfg(), tmp_path / "dense")
    beir = write_beir(klue_small, tmp_path / "beir")
    out = tmp_path / "out"
    argv = ["evaluate", "--model", path, "--beir", str(beir), "--bm25", "bigram", "--out", str(out)]
    assert main([*argv, "--set", "eval.batch_size=16", "--set", "eval.latency_queries=3"]) == 0
    model = json.loads((out / "model" / "metrics.json").read_text(encoding="utf-8"))
    bm25 = json.loads((out / "bm25-bigram" / "metrics.json").read_text(encoding="utf-8"))
    assert model["info"]["kind"] == "dense" and model["index_bytes_per_doc"] == 128.0
    assert bm25["index_bytes_per_doc"] > 0 and bm25["latency_p50_ms"] > 0
    assert bm25["ndcg@10"] > model["ndcg@10"]  # BM25 solves KLUE; an untrained dense model does not
    assert (out / "model" / "run.trec").read_text(encoding="utf-8").count("\n") == 60 * 100


def test_hybrid_weight_is_chosen_on_validation_queries_and_reported_on_the_others(
    klue_small, backbone, tmp_path
):
    from raysparse.evaluation import evaluate_bm25
    from raysparse.evaluation.hybrid import (
        WEIGHT_GRID,
        choose_weight,
        evaluate_hybrid,
        metrics_on_test_half,
        validation_test_qrels,
    )
    from raysparse.fusion import fuse_runs

    bm25 = evaluate_bm25(klue_small, "bigram", show_progress=False).run
    path, _ = build_dense_encoder(backbone, _cfg(max_doc_length=64), tmp_path / "dense")
    dense = evaluate_model(path, klue_small).run
    validation, test = validation_test_qrels(klue_small)
    assert validation and test and not set(validation) & set(test)
    assert len(validation) + len(test) == 60
    result = evaluate_hybrid(bm25, dense, klue_small)
    assert (result.validation_queries, result.test_queries) == (len(validation), len(test))
    # the weight is the validation curve's best, the curve computed by hand with the one fusion function
    by_hand = {}
    for w in WEIGHT_GRID:
        fused = fuse_runs({q: bm25[q] for q in validation}, {q: dense[q] for q in validation}, bm25_weight=w)
        by_hand[w] = evaluate_run(fused, validation).metrics["ndcg@10"]
    assert result.validation == pytest.approx(by_hand)
    assert by_hand[result.weight] == max(by_hand.values())
    fused_test = fuse_runs({q: bm25[q] for q in test}, {q: dense[q] for q in test}, bm25_weight=result.weight)
    assert result.test_metrics["ndcg@10"] == pytest.approx(evaluate_run(fused_test, test).metrics["ndcg@10"])
    assert result.test_metrics["num_queries"] == len(test)
    # test queries take no part in the choice: scrambling their runs changes the test numbers, not the weight
    scrambled = {q: ({d: -s for d, s in docs.items()} if q in test else docs) for q, docs in dense.items()}
    assert choose_weight(bm25, scrambled, validation)[0] == result.weight
    assert (
        metrics_on_test_half(scrambled, klue_small)["ndcg@10"]
        != metrics_on_test_half(dense, klue_small)["ndcg@10"]
    )
    # BM25 solves KLUE and the untrained dense model does not: the chosen weight leans on BM25
    assert result.weight >= 0.5
    assert result.test_metrics["ndcg@10"] >= metrics_on_test_half(dense, klue_small)["ndcg@10"]


def test_sparse_and_plain_directories_are_not_taken_for_dense(tmp_path):
    (tmp_path / "plain").mkdir()
    assert not is_dense_dir(tmp_path / "plain")
    splade = tmp_path / "st-sparse"
    splade.mkdir()
    (splade / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.sparse_encoder.models.MLMTransformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_SpladePooling",
                    "type": "sentence_transformers.sparse_encoder.models.SpladePooling",
                },
            ]
        )
    )
    assert not is_dense_dir(splade)
    (tmp_path / "sparse").mkdir()
    (tmp_path / "sparse" / "raysparse.json").write_text(
        json.dumps({"format_version": 2, "query_mode": "encoder"})
    )
    assert not is_dense_dir(tmp_path / "sparse")
    (splade / "modules.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"modules\.json: expected a JSON list"):
        is_dense_dir(splade)


def test_quality_systems_table_has_bm25_sparse_dense_and_both_hybrids(klue_small, backbone, tmp_path):
    """benchmarks/quality/systems.py on an OUT laid out as run.sh + dense.sh leave it (real evaluations)."""
    import sys
    from pathlib import Path

    from raysparse.evaluation import evaluate_bm25, write_metrics, write_run
    from raysparse.model import SparseEncoder

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "quality"))
    import systems

    out = tmp_path / "OUT"
    write_beir(klue_small, out / "data" / "dev" / "klue-small")
    from raysparse.config import EvalConfig

    eval_cfg = EvalConfig(batch_size=16, latency_queries=5)
    sparse = SparseEncoder.from_pretrained(backbone, lexical_prior=5.0)  # untrained, bag of word pieces
    dense_dir, _ = build_dense_encoder(backbone, _cfg(max_doc_length=64), tmp_path / "dense")
    for where, result in (
        (
            out / "eval" / "klue-small" / "bm25-kiwi",
            evaluate_bm25(klue_small, "kiwi", eval_cfg, show_progress=False),
        ),
        (out / "eval" / "klue-small" / "model", evaluate_model(sparse, klue_small, eval_cfg)),
        (out / "dense" / "eval" / "klue-small" / "model", evaluate_model(dense_dir, klue_small, eval_cfg)),
    ):
        write_metrics(result, where / "metrics.json")
        write_run(result, where / "run.trec")
    text, numbers = systems.section(out)
    rows = numbers["klue-small"]
    assert list(rows) == ["BM25-Kiwi", "sparse", "dense", "BM25 + sparse", "BM25 + dense"]
    for name in rows:
        assert f"| {name} |" in text
    assert rows["dense"]["index_bytes_per_doc"] == 128.0
    assert rows["BM25 + dense"]["index_bytes_per_doc"] == rows["BM25-Kiwi"]["index_bytes_per_doc"] + 128.0
    assert rows["BM25 + dense"]["latency_p50_ms"] > rows["dense"]["latency_p50_ms"]
    assert 0.0 <= rows["BM25 + sparse"]["weight"] <= 1.0
    assert rows["BM25-Kiwi"]["test_queries"] + rows["BM25-Kiwi"]["validation_queries"] == 60


def test_a_directory_that_is_not_a_model_is_one_line(tmp_path, capsys):
    from raysparse.errors import InputError

    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "modules.json").write_text(
        json.dumps([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}])
    )
    with pytest.raises(InputError, match="not a model directory"):
        DenseEncoder.from_pretrained(tmp_path / "st")
