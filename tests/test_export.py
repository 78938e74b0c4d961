"""Export: TorchScript / ONNX parity on real Korean/English words, OpenSearch bundle layout, manifest, CLI round trip.

One tiny model (hidden 32, one layer, tokenizer trained on ../shared/data) is built per session and exported once;
the tests read that export. Parity sentences are drawn fresh from real Tatoeba/news words, never from training text.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from raysparse.cli import main  # noqa: E402
from raysparse.config import ExportConfig, ModelConfig  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4


def _real_words(shared: Path) -> list[str]:
    """Korean and English words from Tatoeba pairs and the news parallel set (not the tokenizer's training slice)."""
    from raysparse.export import words_from_texts

    texts = []
    for line in (
        (shared / "bilingual" / "tatoeba" / "kor.txt").read_text(encoding="utf-8").splitlines()[-1500:]
    ):
        en, ko = line.split("\t")[:2]
        texts += [en, ko]
    news = shared / "bilingual" / "news-parallel-dev"
    for name in ("korean-english-park.dev.ko", "korean-english-park.dev.en"):
        texts += (news / name).read_text(encoding="utf-8").splitlines()[-200:]
    return words_from_texts(texts)


@pytest.fixture(scope="session")
def words(shared_data: Path) -> list[str]:
    words = _real_words(shared_data)
    assert any("\uac00" <= ch <= "\ud7a3" for w in words[:500] for ch in w), "expected Korean words"
    return words


@pytest.fixture(scope="session")
def tiny_models(shared_data: Path, tmp_path_factory) -> dict[str, Path]:
    """Two tiny saved SparseEncoders: encoder query mode and inference-free (IDF query weights)."""
    from raysparse.backbone import backbone_texts_from_shared, build_small_bert, train_tokenizer
    from raysparse.model import SparseEncoder, idf_weights

    texts = backbone_texts_from_shared(shared_data, max_per_source=200)
    tokenizer = train_tokenizer(texts, vocab_size=1000)
    cfg = ModelConfig(vocab_size=1000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    enc = SparseEncoder(build_small_bert(tokenizer, cfg), tokenizer, lexical_prior=5.0)
    enc.save_pretrained(root / "encoder-mode")
    torch.manual_seed(1)
    free = SparseEncoder(
        build_small_bert(tokenizer, cfg),
        tokenizer,
        lexical_prior=5.0,
        query_mode="inference_free",
        query_weights=idf_weights(tokenizer, texts),
    )
    free.save_pretrained(root / "ko-en-free")
    (root / "ko-en-free" / "metrics.json").write_text(
        json.dumps({"klue": {"ndcg@10": 0.4321, "mrr@10": 0.5}})
    )
    (root / "ko-en-free" / "config.yaml").write_text("train:\n  lr: 0.0003\n")
    return {"encoder": root / "encoder-mode", "free": root / "ko-en-free"}


@pytest.fixture(scope="session")
def exported(tiny_models, words, tmp_path_factory) -> tuple[Path, dict]:
    """The inference-free model exported in every format (parity texts: real words)."""
    from raysparse.export import export_model

    out = tmp_path_factory.mktemp("export") / "out"
    manifest = export_model(
        tiny_models["free"],
        out,
        ["torchscript", "onnx", "opensearch", "hf"],
        ExportConfig(),
        parity_texts=[" ".join(words)],
        name="ko-en-free",
    )
    return out, manifest


def _eager(model_dir: Path):
    from raysparse.model import SparseEncoder

    return SparseEncoder.from_pretrained(model_dir).eval()


def _batch(tokenizer, texts):
    enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_manifest_names_every_file_with_parity(exported):
    out, manifest = exported
    on_disk = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(manifest))
    assert {
        "name",
        "version",
        "vocab_size",
        "query_mode",
        "parity",
        "files",
        "sparsity",
        "model_card",
    } <= set(manifest)
    by_format = {f["format"]: f for f in manifest["files"]}
    assert set(by_format) == {
        "torchscript",
        "onnx",
        "opensearch-sparse-encoding",
        "opensearch-sparse-tokenize",
        "hf",
    }
    for fmt in ("torchscript", "onnx", "opensearch-sparse-encoding", "hf"):
        entry = by_format[fmt]
        assert (out / entry["path"]).exists(), entry
        assert {"inputs", "outputs", "parity_max_abs_diff"} <= set(entry)
        assert 0.0 <= entry["parity_max_abs_diff"] <= TOL, entry
    assert list(by_format["onnx"]["inputs"]) == ["input_ids", "attention_mask"]
    assert list(by_format["onnx"]["outputs"]) == ["sparse_vector"]
    assert manifest["parity"]["batches"][0][0] == 1 and max(b[0] for b in manifest["parity"]["batches"]) == 8
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "0.4321" in card and "ndcg@10" in card  # metrics.json beside the model
    assert "lr: 0.0003" in card  # the training config beside the model
    assert "query_terms_mean" in card


@pytest.mark.parametrize("sizes", [(1, 4), (3, 30), (5, 60)])
def test_torchscript_and_onnx_match_eager_on_fresh_korean_english_batches(
    exported, tiny_models, words, sizes
):
    """Dynamic axes: batch sizes and lengths never seen at trace time, with padding; and a batch without padding."""
    from raysparse.export import onnx_session, random_sentences

    out, _ = exported
    eager = _eager(tiny_models["free"])
    scripted = torch.jit.load(str(out / "model.pt"))
    session = onnx_session(out / "model.onnx")
    batch_size, max_words = sizes
    texts = random_sentences(words, batch_size, 1, max_words, seed=1000 + batch_size)
    batches = [
        _batch(eager.tokenizer, texts),
        _batch(eager.tokenizer, [texts[0]] * batch_size),
    ]  # 2nd: no padding
    assert (batches[0][1] == 0).any() or batch_size == 1
    assert (batches[1][1] == 1).all()
    for ids, mask in batches:
        with torch.no_grad():
            ref = eager(ids, mask).numpy()
            ts = scripted(ids, mask).numpy()
        (onnx_out,) = session.run(
            ["sparse_vector"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        )
        assert ref.shape == ts.shape == onnx_out.shape == (batch_size, eager.vocab_size)
        assert np.abs(ts - ref).max() <= TOL
        assert np.abs(onnx_out - ref).max() <= TOL
        assert (ref > 0).any() and (ref[:, eager.special_token_ids] == 0).all()


def test_parity_check_detects_a_diverged_graph(tiny_models, words, tmp_path):
    """The parity machinery can fail: an ONNX graph of the original weights vs an encoder whose weights moved."""
    from raysparse.export import ExportParityError, _check, export_onnx, onnx_parity, parity_batches

    eager = _eager(tiny_models["encoder"])
    batches = parity_batches(eager.tokenizer, words, seed=3)
    path = export_onnx(eager, batches[-1], tmp_path / "m.onnx")
    assert onnx_parity(eager, path, batches) <= TOL
    with torch.no_grad():
        weight = eager.mlm.get_output_embeddings().weight  # (a constant shift would cancel in LayerNorm)
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    diff = onnx_parity(eager, path, batches)
    with pytest.raises(ExportParityError, match=r"m\.onnx.*exceeds parity_tolerance"):
        _check(str(path), diff, TOL)


def test_sparse_encoding_zip_layout_and_register_body(exported, tiny_models, words):
    import hashlib

    out, manifest = exported
    entry = next(f for f in manifest["files"] if f["format"] == "opensearch-sparse-encoding")
    zip_path = out / entry["path"]
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert sorted(names) == [
            "ko-en-free.pt",
            "tokenizer.json",
        ]  # one .pt, tokenizer.json, both at the root
        tok = json.loads(zf.read("tokenizer.json"))
        pt_bytes = zf.read("ko-en-free.pt")
    assert tok["truncation"]["max_length"] == manifest["max_length"] > 0
    body = json.loads((out / entry["register_body"]).read_text())
    assert body["function_name"] == "SPARSE_ENCODING" and body["model_format"] == "TORCH_SCRIPT"
    assert body["model_content_size_in_bytes"] == zip_path.stat().st_size
    assert body["model_content_hash_value"] == hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert {"name", "version"} <= set(body)

    # the ml-commons call shape: one dict argument (input_ids, attention_mask) -> {"output": (B, V)}
    import io

    module = torch.jit.load(io.BytesIO(pt_bytes))
    eager = _eager(tiny_models["free"])
    from raysparse.export import random_sentences

    ids, mask = _batch(eager.tokenizer, random_sentences(words, 1, 3, 10, seed=5))
    with torch.no_grad():
        got = module({"input_ids": ids, "attention_mask": mask})
        assert set(got) == {"output"}
        assert np.abs(got["output"].numpy() - eager(ids, mask).numpy()).max() <= TOL


def test_sparse_tokenize_zip_idf_matches_query_weights(exported, tiny_models):
    out, manifest = exported
    entry = next(f for f in manifest["files"] if f["format"] == "opensearch-sparse-tokenize")
    zip_path = out / entry["path"]
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == ["idf.json", "tokenizer.json"]
        idf = json.loads(zf.read("idf.json"))
    eager = _eager(tiny_models["free"])
    weights = eager.query_weights.detach()
    # every non-special token present (ml-commons would give a missing one 1.0); specials absent
    assert len(idf) == entry["idf_tokens"] >= len(eager.tokenizer) - len(eager.special_token_ids) - 5
    assert "[CLS]" not in idf and "[PAD]" not in idf
    for token in ["검", "##색", "the"]:
        token_id = eager.tokenizer.convert_tokens_to_ids(token)
        if token_id != eager.tokenizer.unk_token_id:
            assert idf[eager.tokenizer.decode([token_id])] == pytest.approx(
                float(weights[token_id]), rel=1e-6
            )
    body = json.loads((out / entry["register_body"]).read_text())
    assert body["function_name"] == "SPARSE_TOKENIZE"
    assert body["model_content_size_in_bytes"] == zip_path.stat().st_size


def test_hf_copy_loads_back(exported, tiny_models, words):
    from raysparse.export import random_sentences
    from raysparse.model import SparseEncoder

    out, _ = exported
    reloaded = SparseEncoder.from_pretrained(out / "hf")
    eager = _eager(tiny_models["free"])
    texts = random_sentences(words, 4, 2, 20, seed=9)
    assert reloaded.query_mode == "inference_free"
    assert torch.equal(reloaded.encode_documents(texts), eager.encode_documents(texts))
    assert torch.equal(reloaded.encode_queries(texts), eager.encode_queries(texts))


def test_every_format_gives_the_same_terms(exported, tiny_models):
    """TermEncoder over pytorch / torchscript / onnx, documents and inference-free queries."""
    from raysparse.export import load_term_encoder

    out, _ = exported
    eager = _eager(tiny_models["free"])
    texts = ["한국어 검색 모델", "neural sparse search for Korean documents"]
    want_docs = eager.encode_documents(texts).numpy()
    want_queries = eager.encode_queries(texts).numpy()
    for path, fmt in [(tiny_models["free"], "pytorch"), (out / "model.pt", None), (out / "model.onnx", None)]:
        runner = load_term_encoder(path, fmt)
        assert np.abs(runner.reps(texts) - want_docs).max() <= TOL, runner.format
        assert np.abs(runner.reps(texts, is_query=True) - want_queries).max() <= 1e-6, runner.format


def test_encoder_mode_model_has_no_tokenize_bundle(tiny_models, words, tmp_path):
    from raysparse.export import export_model

    manifest = export_model(
        tiny_models["encoder"],
        tmp_path / "o",
        ["opensearch"],
        ExportConfig(),
        parity_texts=[" ".join(words[:300])],
    )
    assert [f["format"] for f in manifest["files"]] == ["opensearch-sparse-encoding"]
    assert manifest["query_mode"] == "encoder"
    assert "No metrics.json" in (tmp_path / "o" / "MODEL_CARD.md").read_text()


def test_cli_export_then_encode_round_trip(tiny_models, tmp_path, capsys):
    out = tmp_path / "cli-out"
    rc = main(
        ["export", "--model", str(tiny_models["encoder"]), "--out", str(out), "--format", "onnx,torchscript"]
    )
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["format"] for f in manifest["files"]] == ["onnx", "torchscript"]
    capsys.readouterr()

    from transformers import AutoTokenizer

    text = "검색 모델"
    expected = set(AutoTokenizer.from_pretrained(str(tiny_models["encoder"])).tokenize(text))
    assert expected
    for args in (["--model", str(out / "model.onnx")], ["--model", str(out), "--format", "torchscript"]):
        rc = main(["encode", text, "--top-k", str(len(expected)), "--json", *args])
        assert rc == 0
        line = json.loads(capsys.readouterr().out.strip())
        # untrained encoder + lexical prior 5: the text's own word pieces are its strongest terms
        assert set(line["terms"]) == expected, line
    rc = main(["encode", text, "--model", str(tiny_models["encoder"]), "--top-k", "3"])
    printed = capsys.readouterr().out
    assert rc == 0 and printed.startswith("# 검색 모델") and len(printed.strip().splitlines()) == 4


def test_cli_errors_name_the_problem(tiny_models, tmp_path, capsys):
    # user errors: one line, exit 2 (raysparse.errors)
    assert main(["encode", "x", "--model", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "export",
                "--model",
                str(tiny_models["encoder"]),
                "--out",
                str(tmp_path / "o"),
                "--format",
                "tflite",
            ]
        )
    assert "tflite" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.onnx").write_bytes(b"")
    assert main(["encode", "x", "--model", str(bare / "model.onnx")]) == 2
    assert "tokenizer" in capsys.readouterr().err


def test_cli_export_never_writes_into_the_model_and_never_mixes_exports(tiny_models, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_models["encoder"], model)
    before = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    # --out equal to --model: refused before anything is written (it used to rewrite tokenizer.json, then crash)
    assert main(["export", "--model", str(model), "--out", str(model), "--format", "onnx"]) == 2
    assert "is the --model directory" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()} == before

    out = tmp_path / "bundle"
    assert main(["export", "--model", str(model), "--out", str(out), "--format", "onnx"]) == 0
    assert (out / "model.onnx").is_file()
    capsys.readouterr()
    # another format into the same directory: refused, the earlier export untouched
    assert main(["export", "--model", str(model), "--out", str(out), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert "holds the results of an earlier run" in err and "--overwrite" in err
    assert (out / "model.onnx").is_file() and not (out / "model.pt").exists()
    # --overwrite: the earlier bundles are removed, the manifest lists exactly what is there
    assert (
        main(["export", "--model", str(model), "--out", str(out), "--format", "torchscript", "--overwrite"])
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["format"] for f in manifest["files"]] == ["torchscript"]
    assert not (out / "model.onnx").exists() and (out / "model.pt").is_file()


def test_jobs_export_entry_point_help():
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "jobs" / "export.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--format" in proc.stdout and "opensearch" in proc.stdout
