"""Mining on a real 2-node Ray cluster (ray.cluster_utils.Cluster, 1 CPU each) gives the in-process bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from raysparse.config import MiningConfig
from raysparse.mining import Bm25Index, mine, read_triples, triples_files
from raysparse.schemas import RetrievalData


def klue_data(shared_data: Path) -> RetrievalData:
    """KLUE-MRC ODQA validation (240 questions, 235 passages); each question's own passage is its positive."""
    rows = [
        json.loads(line)
        for line in (shared_data / "klue-mrc-odqa" / "validation.jsonl").open(encoding="utf-8")
    ]
    docs: dict[str, tuple[str, str]] = {}
    for r in rows:
        docs.setdefault(r["context"], (f"klue-{len(docs)}", r["title"]))
    corpus = pa.table(
        {
            "doc_id": [v[0] for v in docs.values()],
            "title": [v[1] for v in docs.values()],
            "text": list(docs),
            "date": pa.nulls(len(docs), pa.timestamp("s")),
            "lang": ["ko"] * len(docs),
        }
    )
    queries = pa.table(
        {
            "query_id": [r["id"] for r in rows],
            "text": [r["question"] for r in rows],
            "lang": ["ko"] * len(rows),
        }
    )
    qrels = pa.table(
        {
            "query_id": [r["id"] for r in rows],
            "doc_id": [docs[r["context"]][0] for r in rows],
            "score": pa.array([1] * len(rows), pa.int32()),
        }
    )
    return RetrievalData(corpus, queries, qrels)


@pytest.mark.slow
def test_two_node_cluster_matches_in_process(shared_data, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2

        data = klue_data(shared_data)
        # 6 shards for 2 actors (one per node); no small-input shortcut
        cfg = MiningConfig(analyzer="bigram", batch_size=40, shard_rows=40, in_process_below=0)
        index = Bm25Index.build(data.corpus, cfg, show_progress=False)
        on_cluster = mine(data, cfg, tmp_path / "cluster", ray=True, index=index, show_progress=False)
        local = mine(data, cfg, tmp_path / "local", ray=False, index=index, show_progress=False)
        # a different batch size in-process must not change a byte either (RNG seeded per query, not per batch)
        mine(
            data,
            cfg.model_copy(update={"batch_size": 7}),
            tmp_path / "rebatched",
            ray=False,
            index=index,
            show_progress=False,
        )

        assert on_cluster.workers == 2 and on_cluster.queries_mined == local.queries_mined == 240
        expected = triples_files(tmp_path / "local")
        assert len(expected) == 6
        assert triples_files(tmp_path / "cluster") == expected
        assert triples_files(tmp_path / "rebatched") == expected
        table = read_triples(tmp_path / "cluster")
        assert table.num_rows == 240
        assert min(len(x) for x in table.column("negative_ids").to_pylist()) == 15
    finally:
        ray.shutdown()
        cluster.shutdown()
