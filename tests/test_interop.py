"""sentence-transformers interop with the real library: raysparse models out, sentence-transformers / OpenSearch
sparse model directories in. Small local BERTs (tokenizer trained on ../shared/data), no downloads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers")

from raysparse.config import ModelConfig  # noqa: E402

TINY = {"vocab_size": 1000, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
KO = ["서울의 날씨는 오늘 맑고 따뜻하다", "검색 모델은 한국어 문서를 찾는다", "학교에서 영어를 배웠다"]
EN = ["the weather in seoul is clear today", "a search model finds korean documents", "she studied at school"]
MIXED = ["서울 weather 오늘", "한국어 search model 검색", "school 학교 english 영어"]


@pytest.fixture(scope="module")
def base(shared_data: Path, tmp_path_factory) -> dict:
    """A tokenizer, a small BERT masked LM saved as a plain HF directory, and the texts both were built from."""
    from raysparse.backbone import backbone_texts_from_shared, build_small_bert, train_tokenizer

    texts = backbone_texts_from_shared(shared_data, max_per_source=200)
    tokenizer = train_tokenizer(texts, vocab_size=1000)
    torch.manual_seed(0)
    mlm = build_small_bert(tokenizer, ModelConfig(**TINY))
    # logits of a random head are noise around the -0.25 bias: lift them so vectors have many active terms
    with torch.no_grad():
        mlm.get_output_embeddings().bias.normal_(0.3, 0.5)
    root = tmp_path_factory.mktemp("interop")
    mlm.save_pretrained(root / "mlm")
    tokenizer.save_pretrained(root / "mlm")
    return {"texts": texts, "tokenizer": tokenizer, "mlm_dir": root / "mlm", "root": root}


def _encoder(base: dict, **kwargs):
    from transformers import AutoModelForMaskedLM

    from raysparse.model import SparseEncoder

    mlm = AutoModelForMaskedLM.from_pretrained(str(base["mlm_dir"]))
    return SparseEncoder(mlm, base["tokenizer"], **kwargs).eval()


def _export(encoder, base: dict, name: str) -> tuple[Path, dict]:
    from raysparse.export import parity_batches, words_from_tokenizer
    from raysparse.interop import export_sentence_transformers

    words = words_from_tokenizer(base["tokenizer"])
    out = base["root"] / name
    entry = export_sentence_transformers(
        encoder,
        out,
        model_dir=Path(name),
        example=parity_batches(base["tokenizer"], words)[-1],
        queries=KO + EN + MIXED,
        documents=KO + EN + MIXED,
    )
    return out, entry


def _modes(base: dict) -> dict[str, dict]:
    from raysparse.model import fit_lexical_prior, idf_weights

    idf = idf_weights(base["tokenizer"], base["texts"])
    lexical = fit_lexical_prior(base["tokenizer"], base["texts"])
    return {
        "plain-encoder": {},
        "plain-inference-free": {"query_mode": "inference_free", "query_weights": idf},
        "logit-prior": {"lexical_prior": 5.0},
        "bm25-encoder": {"lexical": lexical, "neural_weight": 0.5},
        "bm25-inference-free": {"lexical": lexical, "query_mode": "inference_free", "query_weights": idf},
        "pruned": {"spec": {"doc_top_k": 6, "query_top_k": 3}},  # per-side pruning: traced into the module
    }


@pytest.mark.parametrize(
    "mode",
    ["plain-encoder", "plain-inference-free", "logit-prior", "bm25-encoder", "bm25-inference-free", "pruned"],
)
def test_sentence_transformers_loads_the_export_and_gets_raysparse_vectors(base, mode):
    """Korean, English and mixed texts (one window) encode to raysparse's vectors through SparseEncoder(path);
    remote code only for the priors."""
    from sentence_transformers import SparseEncoder as STSparseEncoder

    encoder = _encoder(base, **_modes(base)[mode])
    out, entry = _export(encoder, base, mode)
    needs_code = not mode.startswith("plain")
    assert bool(entry["remote_code"]) is needs_code
    assert (out / "raysparse_st.py").is_file() is needs_code
    if not needs_code:  # the standard layout loads without trusting any code
        modules = json.loads((out / "modules.json").read_text())
        assert all(m["type"].startswith("sentence_transformers.") for m in modules)
    model = STSparseEncoder(str(out), trust_remote_code=needs_code, device="cpu")
    for texts in (KO, EN, MIXED):
        for is_query in (True, False):
            ours = encoder.encode_queries(texts) if is_query else encoder.encode_documents(texts)
            encode = model.encode_query if is_query else model.encode_document
            theirs = encode(texts, convert_to_tensor=True).to_dense().float()
            assert (ours > 0).sum(1).min() >= 2, "vectors must not be (nearly) empty"
            if mode == "pruned":
                assert int((ours > 0).sum(1).max()) == (3 if is_query else 6)
            torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
            # same terms in the same order through the library's decoding
            top = model.decode(theirs[0], top_k=5)
            assert [tok for tok, _ in top] == list(encoder.to_term_weights(ours[:1], top_k=5)[0])
    assert entry["parity_max_abs_diff"] <= 1e-5


def test_standard_export_masks_special_tokens(base):
    """raysparse gives [CLS]/[SEP] weight 0; without the exported bias the library would give them weight."""
    from sentence_transformers import SparseEncoder as STSparseEncoder

    encoder = _encoder(base)
    out, _ = _export(encoder, base, "special-check")
    model = STSparseEncoder(str(out), device="cpu")
    reps = model.encode_document(KO, convert_to_tensor=True).to_dense()
    assert float(reps[:, encoder.special_token_ids].abs().max()) == 0.0
    plain = STSparseEncoder(str(base["mlm_dir"]), device="cpu")  # the bare MLM: SPLADE without the mask
    bare = plain.encode_document(KO, convert_to_tensor=True).to_dense()
    assert float(bare[:, encoder.special_token_ids].max()) > 0.0


def test_kiwi_model_is_refused_and_long_documents_are_named(base):
    from raysparse.errors import InputError
    from raysparse.interop import parity_warnings

    encoder = _encoder(base, spec={"pretokenize": "kiwi"})
    with pytest.raises(InputError, match="pretokenize is 'kiwi'"):
        parity_warnings(encoder, Path("m"))
    notes = parity_warnings(_encoder(base, spec={"max_windows": 4}), Path("m"))
    assert len(notes) == 1 and "first window only" in notes[0]


# ------------------------------------------------------------------------------------------------ sparse models in
def _st_modules(base: dict):
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    return [Transformer(str(base["mlm_dir"]), transformer_task="fill-mask"), SpladePooling("max")]


@pytest.fixture(scope="module")
def layouts(base) -> dict[str, tuple[Path, torch.Tensor | None]]:
    """Sparse model directories written by sentence-transformers itself, plus the older / OpenSearch variants."""
    from sentence_transformers import SparseEncoder as STSparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, Router, SparseStaticEmbedding

    from raysparse.model import idf_weights

    root = base["root"] / "layouts"
    tokenizer = base["tokenizer"]
    weights = (
        idf_weights(tokenizer, base["texts"]) + 0.125
    )  # nonzero everywhere (specials too): easy to compare
    out: dict[str, tuple[Path, torch.Tensor | None]] = {}
    STSparseEncoder(modules=_st_modules(base)).save(str(root / "splade"))
    out["splade"] = (root / "splade", None)
    legacy = [MLMTransformer(str(base["mlm_dir"])), _st_modules(base)[1]]
    STSparseEncoder(modules=legacy).save(str(root / "splade-mlmtransformer"))
    out["splade-mlmtransformer"] = (root / "splade-mlmtransformer", None)
    router = Router.for_query_document(
        query_modules=[SparseStaticEmbedding(tokenizer, weight=weights.clone(), frozen=True)],
        document_modules=_st_modules(base),
    )
    STSparseEncoder(modules=[router]).save(str(root / "router"))
    out["router"] = (root / "router", weights)
    # the older inference-free layout: query route "query_0_IDF" holding idf.json ({token: weight})
    old = root / "router-idf"
    shutil.copytree(root / "router", old)
    config = json.loads((old / "router_config.json").read_text())
    (query_name,) = config["structure"]["query"]
    (old / query_name).rename(old / "query_0_IDF")
    (old / "query_0_IDF" / "model.safetensors").unlink()
    vocab = tokenizer.get_vocab()
    idf = {tok: float(weights[i]) for tok, i in vocab.items()}
    (old / "query_0_IDF" / "idf.json").write_text(json.dumps(idf, ensure_ascii=False))
    text = (old / "router_config.json").read_text().replace(query_name, "query_0_IDF")
    (old / "router_config.json").write_text(text)
    out["router-idf"] = (old, weights)
    # OpenSearch's pretrained layout: the masked-LM directory with idf.json beside it
    opensearch = root / "opensearch"
    shutil.copytree(base["mlm_dir"], opensearch)
    (opensearch / "idf.json").write_text(json.dumps(idf, ensure_ascii=False))
    out["opensearch"] = (opensearch, weights)
    return out


@pytest.mark.parametrize("name", ["splade", "splade-mlmtransformer", "router", "router-idf", "opensearch"])
def test_backbone_reads_sentence_transformers_and_opensearch_layouts(base, layouts, name, tmp_path):
    """model.backbone = such a directory: raysparse's encoder over its MLM gives the library's document vectors
    (special tokens aside), and inference-free query weights come from its idf.json / static embedding."""
    from sentence_transformers import SparseEncoder as STSparseEncoder

    from raysparse.backbone import build_encoder
    from raysparse.model import SparseEncoder

    path, weights = layouts[name]
    free = weights is not None
    cfg = ModelConfig(
        **TINY,
        lexical_prior=0.0,
        translation_prior=0.0,
        query_mode="inference_free" if free else "encoder",
    )
    out, info = build_encoder(str(path), cfg, tmp_path / "model")
    assert info["backbone_layout"].startswith(
        "opensearch" if name == "opensearch" else "sentence-transformers"
    )
    encoder = SparseEncoder.from_pretrained(out).eval()
    keep = encoder.keep_mask.bool()
    texts = KO + EN + MIXED
    ours = encoder.encode_documents(texts)
    # the hand-made older layouts are compared with the library's load of the layout they were made from
    reference = {"router-idf": layouts["router"][0], "opensearch": layouts["splade"][0]}.get(name, path)
    reference_model = STSparseEncoder(str(reference), device="cpu")
    theirs = reference_model.encode_document(texts, convert_to_tensor=True)
    torch.testing.assert_close(ours[:, keep], theirs.to_dense()[:, keep], atol=1e-5, rtol=1e-5)
    assert (ours > 0).sum() > 0
    if free:
        assert info["query_weights_from"].endswith("idf.json" if name != "router" else "model.safetensors")
        torch.testing.assert_close(encoder.query_weights.detach(), weights)
        queries = encoder.encode_queries(KO)
        if name != "opensearch":
            ref = reference_model.encode_query(KO, convert_to_tensor=True).to_dense()
            torch.testing.assert_close(queries[:, keep], ref[:, keep])
    else:
        assert encoder.query_weights is None


def test_training_continues_from_a_router_model(base, layouts, tmp_path):
    """One optimisation step from the built backbone moves the MLM and the idf.json query weights."""
    from raysparse.backbone import build_encoder
    from raysparse.model import SparseEncoder

    path, weights = layouts["router-idf"]
    cfg = ModelConfig(**TINY, lexical_prior=0.0, translation_prior=0.0, query_mode="inference_free")
    out, _ = build_encoder(str(path), cfg, tmp_path / "model")
    encoder = SparseEncoder.from_pretrained(out).train()
    before = encoder.mlm.get_output_embeddings().weight.detach().clone()
    opt = torch.optim.SGD(encoder.parameters(), lr=0.5)
    q = encoder.encode_batch(encoder.tokenize_texts(KO, is_query=True), is_query=True)
    d = encoder.encode_batch(encoder.tokenize_texts(KO, is_query=False), is_query=False)
    scores = q @ d.T
    loss = torch.nn.functional.cross_entropy(scores, torch.arange(len(KO)))
    loss.backward()
    opt.step()
    assert not torch.equal(before, encoder.mlm.get_output_embeddings().weight.detach())
    assert not torch.equal(weights, encoder.query_weights.detach())


def test_bad_idf_json_is_one_clear_error(base, layouts, tmp_path):
    from raysparse.errors import InputError
    from raysparse.interop import read_sparse_model

    path = tmp_path / "broken"
    shutil.copytree(layouts["opensearch"][0], path)
    (path / "idf.json").write_text('{"서울": "high"}')
    with pytest.raises(InputError, match=r"idf.json: token '서울': weight must be a number"):
        read_sparse_model(path)


# ------------------------------------------------------------------------------------------------ evaluation
@pytest.mark.slow
def test_evaluate_reports_the_sentence_transformers_evaluator_and_they_agree(
    shared_data, base, tmp_path, capsys
):
    """`raysparse evaluate --st-evaluator` on KLUE-MRC subset: SparseInformationRetrievalEvaluator's nDCG@10 /
    MRR@10 / recall@100 equal ours within 1e-6 (binary qrels; one window per passage on both sides)."""
    import pyarrow as pa

    from raysparse.cli import main
    from raysparse.data import read_squad, write_beir
    from raysparse.schemas import RetrievalData

    klue = read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")
    qrels = klue.qrels.slice(0, 80)
    judged = set(qrels.column("doc_id").to_pylist())
    others = [d for d in klue.corpus.column("doc_id").to_pylist() if d not in judged][:40]
    corpus = klue.corpus.filter(pa.compute.is_in(klue.corpus.column("doc_id"), pa.array([*judged, *others])))
    beir = write_beir(
        RetrievalData(corpus, klue.queries.slice(0, 80), qrels, klue.reports), tmp_path / "klue"
    )
    # a logit-prior model (remote-code export) reading one window per passage, as sentence-transformers does
    encoder = _encoder(base, lexical_prior=5.0, spec={"max_windows": 1})
    encoder.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    argv = [
        "evaluate",
        "--model",
        str(tmp_path / "model"),
        "--beir",
        str(beir),
        "--no-baseline",
        "--out",
        str(out),
    ]
    assert main([*argv, "--st-evaluator"]) == 0
    printed = capsys.readouterr().out
    assert "sentence-transformers" in printed and "ndcg@10" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    theirs = metrics["sentence_transformers"]["metrics"]
    assert metrics["sentence_transformers"]["queries"] == metrics["num_queries"] == 80
    assert 0.2 < metrics["ndcg@10"] < 1.0  # a real ranking task, not a trivial one
    for name in ("ndcg@10", "mrr@10", "recall@100"):
        assert theirs[name] == pytest.approx(metrics[name], abs=1e-6), name
    assert (out / "model" / "st_evaluator.json").is_file()
    assert (
        main(
            [
                "evaluate",
                "--bm25",
                "bigram",
                "--beir",
                str(beir),
                "--out",
                str(tmp_path / "o2"),
                "--st-evaluator",
            ]
        )
        == 2
    )


@pytest.mark.slow
def test_cli_export_sentence_transformers_and_kiwi_refusal(base, tmp_path, capsys):
    """`raysparse export --format sentence-transformers`: manifest entry with parity; a Kiwi model: exit 2, one line."""
    from sentence_transformers import SparseEncoder as STSparseEncoder

    from raysparse.cli import main

    encoder = _encoder(base, lexical_prior=5.0)
    encoder.save_pretrained(tmp_path / "m")
    out = tmp_path / "out"
    argv = ["export", "--model", str(tmp_path / "m"), "--out", str(out), "--format", "sentence-transformers"]
    assert main(argv) == 0
    (entry,) = json.loads((out / "manifest.json").read_text())["files"]
    assert entry["path"] == "sentence-transformers" and entry["remote_code"] == ["lexical logit prior"]
    assert entry["parity_max_abs_diff"] <= 1e-5 and entry["parity"]["query_texts"] > 0
    model = STSparseEncoder(str(out / "sentence-transformers"), trust_remote_code=True, device="cpu")
    assert model.encode_query(KO, convert_to_tensor=True).shape == (3, encoder.vocab_size)
    capsys.readouterr()
    _encoder(base, lexical_prior=5.0, spec={"pretokenize": "kiwi"}).save_pretrained(tmp_path / "kiwi")
    argv = [
        "export",
        "--model",
        str(tmp_path / "kiwi"),
        "--out",
        str(tmp_path / "o2"),
        "--format",
        "sentence-transformers",
    ]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "pretokenize" in line]
    assert len(err) == 1 and "kiwi" in err[0]


@pytest.mark.slow
def test_training_runs_from_a_sentence_transformers_router_backbone(shared_data, base, layouts, tmp_path):
    """model.backbone = a sentence-transformers inference-free Router directory: the training loop (one process,
    DDP fallback) builds the encoder from its MLM, starts the query weights from its idf.json and moves both."""
    import pyarrow.parquet as pq
    from test_train import msmarco_pairs, triples_table
    from transformers import AutoModelForMaskedLM

    from raysparse.config import load_config
    from raysparse.model import SparseEncoder
    from raysparse.training import train_single_process

    path, weights = layouts["router-idf"]
    pq.write_table(triples_table(msmarco_pairs(shared_data, "kor", 24)), tmp_path / "triples.parquet")
    overrides = [f"model.{k}={v}" for k, v in TINY.items()]
    cfg = load_config(
        None,
        [
            *overrides,
            f"model.backbone={path}",
            "model.query_mode=inference_free",
            "model.lexical_prior=0",
            "model.translation_prior=0",
            "train.deepspeed.enabled=false",
            "train.batch_size=4",
            "train.negatives_per_query=1",
            "train.max_steps=3",
            "loss.beta=0",
        ],
    )
    result = train_single_process(cfg, tmp_path / "triples.parquet", None, tmp_path / "run")
    start = SparseEncoder.from_pretrained(tmp_path / "run" / "backbone")
    torch.testing.assert_close(start.query_weights.detach(), weights)  # idf.json, not IDF of the triples
    trained = SparseEncoder.from_pretrained(result.model_dir)
    assert not torch.equal(trained.query_weights.detach(), weights)
    source = AutoModelForMaskedLM.from_pretrained(str(path / "document_0_Transformer"))
    assert torch.equal(start.mlm.get_output_embeddings().weight, source.get_output_embeddings().weight)
    assert not torch.equal(trained.mlm.get_output_embeddings().weight, source.get_output_embeddings().weight)


def test_train_backbone_flag_routes_sparse_model_directories_through_the_build(layouts, tmp_path):
    """--backbone DIR of train/tune: a sentence-transformers / OpenSearch directory becomes model.backbone (built
    with the priors and its idf.json); a plain HF directory is used as given."""
    from raysparse.cli import backbone_from_args

    for name in ("router", "opensearch"):
        path = str(layouts[name][0])
        assert backbone_from_args(path) == ([f"model.backbone={path}"], None)
    plain = str(tmp_path)
    assert backbone_from_args(plain) == ([], plain)
