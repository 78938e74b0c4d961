"""Corpus analysis and index construction on Ray workers: node loss mid-analysis, and a driver that stays flat.

- A worker node of a real multi-node ``ray.cluster_utils.Cluster`` is removed while the corpus is being analysed
  (Kiwi, small batches, so the analysis lasts); the index built after the retries equals the in-process one
  array for array: no document lost, none duplicated, same order.
- ``benchmarks/scale.py`` runs the Ray pipeline (read → analyse → index → mine) at two corpus sizes in fresh
  processes; the driver's peak RSS must not grow with the corpus (it holds object references and one statistics
  row per shard, not the corpus).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysparse.config import MiningConfig
from raysparse.mining import Bm25Index, build_index_ray

ROOT = Path(__file__).resolve().parents[1]


def klue_corpus(shared_data: Path) -> pa.Table:
    import json

    seen: dict[str, str] = {}
    for line in (shared_data / "klue-mrc-odqa" / "validation.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        seen.setdefault(r["context"], r["title"])
    texts = list(seen)
    return pa.table(
        {
            "doc_id": [f"klue-{i:04d}" for i in range(len(texts))],
            "title": [seen[t] for t in texts],
            "text": texts,
        }
    )


def assert_same_index(got: Bm25Index, want: Bm25Index) -> None:
    assert got.num_docs == want.num_docs
    assert got.doc_ids.equals(want.doc_ids), "documents lost, duplicated or reordered"
    assert got.texts.equals(want.texts) and got.vocab_terms.equals(want.vocab_terms)
    for name in ("data", "indices", "indptr", "terms", "term_ptr", "text_hash"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_index_from_any_batching_equals_in_process(shared_data):
    """The builder's vocabulary is sorted and weights use global statistics: batch size changes nothing."""
    corpus = klue_corpus(shared_data)
    cfg = MiningConfig(analyzer="bigram")
    whole = Bm25Index.build(corpus, cfg, show_progress=False, tokenize_batch=10_000)
    small = Bm25Index.build(corpus, cfg, show_progress=False, tokenize_batch=17)
    assert_same_index(small, whole)


def _wait_for_running_task(node_id: str, ref, timeout: float = 120.0) -> bool:
    """True once ``node_id`` has its CPU taken (only analysis tasks ask for one: the builder takes 0 CPUs);
    False if ``ref`` finished first. Reads the GCS's per-node resources: the state API would need the dashboard."""
    import time

    import ray
    from ray._private.state import state

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ray.wait([ref], timeout=0)[0]:
            return False
        free = state.available_resources_per_node().get(node_id)
        if free is not None and free.get("CPU", 0.0) < 1.0:  # the key is absent once all of it is taken
            return True
        time.sleep(0.05)
    raise AssertionError(f"no analysis task ran on node {node_id} within {timeout:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_analysis_survives_losing_a_worker_node(shared_data):
    import ray
    from ray.cluster_utils import Cluster

    corpus = klue_corpus(shared_data)
    cfg = MiningConfig(analyzer="kiwi", analysis_batch_size=8)  # ~30 Kiwi tasks: the analysis lasts
    expected = Bm25Index.build(corpus, cfg, show_progress=False)

    ray.shutdown()
    # head: 0 CPUs (driver + the 0-CPU builder task); two 1-CPU workers run the analysis tasks
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        victim = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        ref = build_index_ray(corpus, cfg)
        # Remove the victim the moment it is running an analysis task (seen through Ray's state API), so the fault
        # lands mid-analysis however fast the machine is, instead of after a fixed sleep.
        assert _wait_for_running_task(victim.node_id, ref), (
            "the analysis finished before a node could be removed"
        )
        cluster.remove_node(victim, allow_graceful=False)
        got = ray.get(ref, timeout=480)
        assert_same_index(got, expected)
    finally:
        ray.shutdown()
        cluster.shutdown()


def _scale_run(tmp_path: Path, passages: int) -> tuple[float, int]:
    out = tmp_path / f"scale-{passages}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "benchmarks/scale.py", "--passages", str(passages), "--queries", "2000",
         "--out", str(out), "--no-baselines"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    print("\n".join(line for line in res.stdout.splitlines() if "RSS" in line))
    last = res.stdout.strip().splitlines()[-2:]
    assert last[0].startswith("mining ray/bm25s steady: "), last
    m = re.fullmatch(r"driver peak RSS MB: (\d+)", last[1])
    assert m, last
    text_bytes = sum(
        pq.read_table(p, columns=["text"]).column("text").nbytes for p in (out / "corpus").glob("*.parquet")
    )
    mined = pq.read_table(out / "mined" / "triples")
    assert mined.num_rows == 2000
    return float(m.group(1)), text_bytes


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_driver_memory_does_not_grow_with_the_corpus(tmp_path):
    small_mb, small_bytes = _scale_run(tmp_path, 4_000)
    big_mb, big_bytes = _scale_run(tmp_path, 80_000)
    corpus_mb = (big_bytes - small_bytes) / 2**20
    print(
        f"driver peak RSS: {small_mb:.0f} MB at 4k passages, {big_mb:.0f} MB at 80k (+{corpus_mb:.0f} MB of text)"
    )
    assert corpus_mb > 20  # the larger corpus really is larger than the noise (CI's 80k passages: 33 MB)
    # A driver holding the corpus would grow by at least its text (in practice several times that, with tokens).
    assert big_mb - small_mb < 0.4 * corpus_mb, (small_mb, big_mb, corpus_mb)
