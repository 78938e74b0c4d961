"""ml-commons on a real node (scripts/opensearch.sh start --with-ml): every bundle `raysparse export --format
opensearch` writes deploys through `raysparse deploy`, and `_predict` equals in-process SparseEncoder encoding on
Korean, English, mixed and long texts; server-side query encoding gives the in-process search results.

All tests share one ml-enabled node: $RAYSPARSE_OPENSEARCH_ML_URL, else $RAYSPARSE_OPENSEARCH_URL when that node has
ml-commons (.ci/run starts it so), else one started here on port 9252 and stopped at the end.
"""

from __future__ import annotations

import functools
import json
import os
import re
import zipfile
from pathlib import Path

import pytest
from opensearch_node import opensearch_node

from raysparse.opensearch import (
    create_index,
    deploy_bundle,
    encoder_identity,
    index_documents,
    index_mapping,
    installed_plugins,
    make_client,
    predict_sparse,
    search_run,
    server_query_encoder,
)

pytestmark = pytest.mark.opensearch
REPO_ROOT = Path(__file__).resolve().parents[1]
ML_TEST_PORT = 9252
LOCAL_FILE_SETTING = "plugins.ml_commons.allow_registering_model_via_local_file"


@pytest.fixture(scope="session")
def ml_url():
    url = os.environ.get("RAYSPARSE_OPENSEARCH_ML_URL")
    main_url = os.environ.get("RAYSPARSE_OPENSEARCH_URL")
    if not url and main_url and "opensearch-ml" in installed_plugins(make_client(url=main_url)):
        url = main_url
    with opensearch_node(ML_TEST_PORT, "--with-ml", url=url) as url:
        yield url


@pytest.fixture(scope="module")
def ml_client(ml_url):
    return make_client(url=ml_url, timeout=120)


@pytest.fixture(scope="module")
def klue(shared_data):
    from raysparse.data.readers import read_squad

    return read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")


@pytest.fixture(scope="module")
def exported(shared_data, tmp_path_factory):
    """A tiny inference-free SparseEncoder (tokenizer trained on ../shared/data) and its OpenSearch export."""
    import torch

    from raysparse.backbone import backbone_texts_from_shared, build_small_bert, train_tokenizer
    from raysparse.config import ExportConfig, ModelConfig
    from raysparse.export import export_model
    from raysparse.model import SparseEncoder, idf_weights

    texts = backbone_texts_from_shared(shared_data, max_per_source=200)
    tokenizer = train_tokenizer(texts, vocab_size=1000)
    cfg = ModelConfig(vocab_size=1000, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    root = tmp_path_factory.mktemp("ml")
    torch.manual_seed(3)
    model = SparseEncoder(
        build_small_bert(tokenizer, cfg),
        tokenizer,
        lexical_prior=5.0,
        query_mode="inference_free",
        query_weights=idf_weights(tokenizer, texts),
    )
    model.save_pretrained(root / "model")
    manifest = export_model(root / "model", root / "out", ["opensearch"], ExportConfig(), name="ko-en-test")
    bundles = {
        f["function_name"]: root / "out" / f["path"] for f in manifest["files"] if "function_name" in f
    }
    return root / "model", bundles


def _tokens(model_dir: Path, text: str) -> int:
    return len(_tokenizer(model_dir)(text)["input_ids"])


@functools.cache
def _tokenizer(model_dir: Path):
    from raysparse.model import SparseEncoder

    return SparseEncoder.from_pretrained(model_dir).tokenizer


def _longest_fitting(klue, model_dir: Path, window: int) -> str:
    """The longest real KLUE text that fits one window (special tokens included): a whole passage, or a passage's
    leading sentences — at the encoding spec's 128-token window no KLUE passage fits whole on the test vocabulary."""
    best, best_len = "", 0
    for passage in klue.corpus.column("text").to_pylist()[:300]:
        prefix = ""
        for sentence in re.split(r"(?<=[.!?])\s+", passage.strip()):
            candidate = f"{prefix} {sentence}".strip()
            if _tokens(model_dir, candidate) > window:
                break
            prefix = candidate
        if prefix and (n := _tokens(model_dir, prefix)) > best_len:
            best, best_len = prefix, n
    return best


def _texts(klue, model_dir: Path, window: int) -> list[str]:
    """Korean, English, mixed, and the longest KLUE text that still fits one window of the bundle."""
    return [
        "대한민국의 수도는 어디인가요?",
        "How do sparse retrieval models expand a query?",
        "서울 지하철 2호선의 total length는 몇 km인가?",
        "BTS 방탄소년단 Dynamite 빌보드 Hot 100 1위 (2020년)",
        _longest_fitting(klue, model_dir, window),
    ]


def _compare(function_name: str, texts, server, local) -> None:
    for text, s, e in zip(texts, server, local, strict=True):
        s = {t: w for t, w in s.items() if w > 0}
        assert set(s) == set(e), (function_name, text[:40], sorted(set(s) ^ set(e))[:10])
        diff = max(abs(s[t] - e[t]) for t in e)
        assert diff < 1e-5, (function_name, text[:40], diff)


def _truncation(zip_path: Path) -> int:
    with zipfile.ZipFile(zip_path) as zf:
        return int(json.loads(zf.read("tokenizer.json"))["truncation"]["max_length"])


def _in_process(
    model_dir: Path, texts: list[str], is_query: bool, max_length: int | None
) -> list[dict[str, float]]:
    from raysparse.model import SparseEncoder

    model = SparseEncoder.from_pretrained(model_dir).eval()
    return [
        {t: w for t, w in row.items() if w > 0}
        for row in model.encode(texts, is_query=is_query, max_length=max_length)
    ]


def _deploy_cli(url: str, bundle: Path, capsys, *extra: str) -> tuple[int, str, str]:
    from raysparse.cli import main

    code = main(["deploy", "--url", url, "--bundle", str(bundle), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_every_exported_bundle_deploys_and_predicts_like_in_process(
    ml_url, ml_client, exported, klue, capsys
):
    model_dir, bundles = exported
    assert set(bundles) == {"SPARSE_ENCODING", "SPARSE_TOKENIZE"}  # what the exporter writes for this model
    for function_name, bundle in bundles.items():
        window = _truncation(bundle)
        texts = _texts(klue, model_dir, window)
        assert _tokens(model_dir, texts[-1]) > window // 2  # a long document, not another short one
        code, out, err = _deploy_cli(ml_url, bundle, capsys)
        assert code == 0, err
        model_id = out.strip().splitlines()[-1]
        got = ml_client.transport.perform_request("GET", f"/_plugins/_ml/models/{model_id}")
        assert got["model_state"] == "DEPLOYED" and got["algorithm"] == function_name

        # idempotent: the same bundle again finds the registered model instead of registering a duplicate
        code, out, err = _deploy_cli(ml_url, bundle, capsys)
        assert code == 0 and out.strip().splitlines()[-1] == model_id and "reused" in err

        server = predict_sparse(ml_client, model_id, texts)
        is_query = function_name == "SPARSE_TOKENIZE"
        _compare(function_name, texts, server, _in_process(model_dir, texts, is_query, window))


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known gap: a SPARSE_ENCODING bundle encodes a document's first window only, SparseEncoder reads it whole "
    "in windows (raysparse/export.py, docs/encoding.md); strict: passes -> remove this mark",
)
def test_documents_longer_than_one_window_match_in_process(ml_client, exported, klue):
    model_dir, bundles = exported
    bundle = bundles["SPARSE_ENCODING"]
    window = _truncation(bundle)
    text = max(klue.corpus.column("text").to_pylist(), key=len)
    assert _tokens(model_dir, text) > window
    deployed = deploy_bundle(ml_client, bundle)
    server = predict_sparse(ml_client, deployed.model_id, [text])
    local = _in_process(model_dir, [text], False, None)
    _compare("SPARSE_ENCODING", [text], server, local)


@pytest.mark.slow
def test_server_encoded_queries_give_the_in_process_results(ml_url, ml_client, exported, klue, capsys):
    from raysparse.cli import main
    from raysparse.model import SparseEncoder

    model_dir, bundles = exported
    deployed = deploy_bundle(ml_client, bundles["SPARSE_TOKENIZE"])
    assert deployed.state == "DEPLOYED"
    length = _truncation(bundles["SPARSE_TOKENIZE"])
    model = SparseEncoder.from_pretrained(model_dir).eval()
    index = "raysparse-ml-search"
    ml_client.indices.delete(index=index, ignore_unavailable=True)
    try:
        identity = encoder_identity(model_dir, max_query_length=length, max_doc_length=length)
        create_index(ml_client, index, index_mapping(encoder=identity))
        report = index_documents(
            ml_client,
            index,
            klue.corpus.slice(0, 60).to_pylist(),
            lambda t: model.encode(t, is_query=False, max_length=length),
        )
        assert report.indexed == 60
        queries = dict(
            zip(
                klue.queries.column("query_id").to_pylist()[:20],
                klue.queries.column("text").to_pylist()[:20],
                strict=True,
            )
        )
        remote = search_run(
            ml_client, index, queries, server_query_encoder(ml_client, deployed.model_id), size=10
        )
        local = search_run(
            ml_client, index, queries, lambda t: model.encode(t, is_query=True, max_length=length), size=10
        )
        assert sum(len(v) for v in remote.values()) > 0
        for qid in queries:
            assert remote[qid].keys() == local[qid].keys(), qid
            for doc_id, score in local[qid].items():
                assert remote[qid][doc_id] == pytest.approx(score, rel=1e-4)

        code = main(
            [
                *("search", queries[next(iter(queries))], "--url", ml_url, "--index", index, "--json"),
                *("--server-encode", deployed.model_id, "-k", "3"),
            ]
        )
        lines = capsys.readouterr().out.strip().splitlines()
        assert code == 0 and 1 <= len(lines) <= 3 and json.loads(lines[0])["rank"] == 1
    finally:
        ml_client.indices.delete(index=index, ignore_unavailable=True)


def test_deploy_changes_cluster_settings_only_when_asked(ml_url, ml_client, exported, capsys):
    _, bundles = exported
    ml_client.cluster.put_settings(body={"persistent": {LOCAL_FILE_SETTING: False}})
    try:
        code, out, err = _deploy_cli(ml_url, bundles["SPARSE_TOKENIZE"], capsys)
        assert code == 1 and out == ""
        assert LOCAL_FILE_SETTING in err and "--apply-settings" in err
        assert (
            ml_client.cluster.get_settings()["persistent"]["plugins"]["ml_commons"][
                "allow_registering_model_via_local_file"
            ]
            == "false"
        )  # untouched
        code, out, err = _deploy_cli(ml_url, bundles["SPARSE_TOKENIZE"], capsys, "--apply-settings")
        assert code == 0 and f"changed cluster setting {LOCAL_FILE_SETTING}=true" in err
    finally:
        ml_client.cluster.put_settings(body={"persistent": {LOCAL_FILE_SETTING: None}})


def test_deploy_bad_bundle_is_one_line(tmp_path, capsys):
    from raysparse.cli import main

    bad = tmp_path / "model.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("model.pt", b"x")  # no tokenizer.json
    assert main(["deploy", "--url", "http://127.0.0.1:9", "--bundle", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "tokenizer.json" in err[0]
