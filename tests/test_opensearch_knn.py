"""The dense rows of the OpenSearch benchmark on a real node with the k-NN plugin (scripts/opensearch.sh start
--with-knn): a small dense model's vectors in a ``knn_vector`` field (Lucene HNSW, inner product) give the same
ranking quality as the same vectors searched exactly in process, and the BM25 + dense hybrid is measured beside them.

The node: $RAYSPARSE_OPENSEARCH_KNN_URL, else one started here on $RAYSPARSE_OPENSEARCH_KNN_PORT (default 9256) and
stopped when this module is done. Under CI=true a node that cannot start fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from opensearch_node import opensearch_node
from small_models import TINY_BERT, save_tiny_backbone

from raysparse.config import ModelConfig

pytestmark = [pytest.mark.opensearch, pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[1]
PORT = int(os.environ.get("RAYSPARSE_OPENSEARCH_KNN_PORT", "9256"))


@pytest.fixture(scope="module")
def knn_url():
    with opensearch_node(PORT, "--with-knn", url=os.environ.get("RAYSPARSE_OPENSEARCH_KNN_URL")) as url:
        yield url


@pytest.fixture(scope="module")
def dense_model(shared_data, tmp_path_factory) -> Path:
    """A small dense bi-encoder over a local backbone whose tokenizer is trained on KLUE text."""
    from raysparse.data.readers import read_squad
    from raysparse.dense import build_dense_encoder
    from raysparse.evaluation import document_texts

    klue = read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")
    texts = document_texts(klue) + klue.queries.column("text").to_pylist()
    backbone = save_tiny_backbone(texts, tmp_path_factory.mktemp("knn-backbone"))
    model_cfg = ModelConfig(kind="dense", **TINY_BERT, max_doc_length=64)
    path, _ = build_dense_encoder(backbone, model_cfg, tmp_path_factory.mktemp("knn-dense") / "dense")
    return Path(path)


def _benchmark(url: str, dense: Path, shared: Path, out: Path, petitions: int, latency_queries: int) -> str:
    """benchmarks/opensearch.py with model-free sparse rows and ``--dense``; returns the table it wrote."""
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / "opensearch.py"), "--url", url, "--shared", str(shared),
           "--petitions", str(petitions), "--latency-queries", str(latency_queries), "--dense", str(dense),
           "--index", f"rs-knn-test-{petitions}", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out.read_text(encoding="utf-8")


def test_benchmark_dense_rows_match_exact_search(knn_url, dense_model, shared_data, tmp_path):
    table = _benchmark(knn_url, dense_model, shared_data, tmp_path / "opensearch.md", 50, 8)
    assert "--dense OUT/dense/model" in table
    row = re.search(r"^\| dense \(knn_vector, Lucene HNSW\) \| ([0-9.]+) \|", table, re.M)
    hybrid = re.search(r"^\| hybrid 0\.3·BM25 \+ 0\.7·dense \| ([0-9.]+) \|", table, re.M)
    exact = re.search(r"searched exactly in process \(DenseIndex\): nDCG@10 ([0-9]+\.[0-9]+)", table)
    assert row and hybrid and exact, table
    hnsw, exact_ndcg = float(row.group(1)), float(exact.group(1))
    # an untrained small encoder ranks poorly, but HNSW over ~800 vectors must find what exact search finds
    assert exact_ndcg > 0.0
    assert abs(hnsw - exact_ndcg) <= 0.02, (hnsw, exact_ndcg)
    overlap = re.search(r"HNSW's top 10 holds ([0-9.]+) of exact search's top 10", table)
    assert overlap and 0.0 < float(overlap.group(1)) <= 1.0, table
    index_row = re.search(r"^\| dense \(knn_vector.*?\| (\d+) \| 32 \|", table, re.M)
    assert index_row, table  # every document indexed, 32 dimensions


def test_benchmark_says_why_there_is_no_dense_row_without_the_plugin(
    os_url, dense_model, shared_data, tmp_path
):
    """On the plain node (no k-NN plugin) the table says the dense rows were not measured, and why."""
    table = _benchmark(os_url, dense_model, shared_data, tmp_path / "opensearch.md", 10, 3)
    assert "Dense rows: not measured: the k-NN plugin is not loaded" in table
    assert "| dense (knn_vector" not in table
