"""Scale-out failure modes on real Ray clusters (``ray.cluster_utils.Cluster``: several raylets on this machine).

- Placement: ``mining.resources={cpu_pool: 1}`` puts every mining actor on the node that carries ``cpu_pool``; a
  placement no node can satisfy fails at once naming ``mining.resources`` / ``train.resources`` instead of hanging;
  ``train.resources={gpu_pool: 1}`` puts every Ray Train worker on the node that carries ``gpu_pool``.
- Node loss: a worker node is killed while mining runs; the job finishes and its triples are byte-identical to a
  run without failure (nothing lost, nothing duplicated).
- Corrupt shards: a directory of shards with one corrupt file fails the mining job (``jobs/mine.py``) and the
  Ray Data read path (``ray.data.read_parquet`` of triples shards) with the shard's file name, not a hang.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysparse.augment import BilingualDictionary, augment_triples_file
from raysparse.config import AugmentConfig, MiningConfig
from raysparse.mining import TRIPLES_DIR, Bm25Index, build_index_ray, mine, read_triples, triples_files
from raysparse.schemas import TRIPLES, RetrievalData

ROOT = Path(__file__).resolve().parents[1]
# a node offering cpu_pool and a plain one: placement tests check that work asking for the pool ran on the first only
CPU_POOL_AND_PLAIN_NODES = [{"num_cpus": 2, "resources": {"cpu_pool": 2}}, {"num_cpus": 2}]
MINER_CLASS = "MapWorker"  # Ray Data names its actor-pool actors _MapWorker / MapWorker(MapBatches(...))


def msmarco_data(
    shared_data: Path, langs: tuple[str, ...] = ("kor",), limit: int | None = None
) -> RetrievalData:
    """MS MARCO dev queries (Korean and/or English) with their positive passages as the corpus."""
    from raysparse.data import read_msmarco
    from raysparse.data.readers import concat_data

    parts = [read_msmarco(shared_data / "msmarco-ko-en" / f"msmarco_{lang}.dev1000.json") for lang in langs]
    data = concat_data(parts) if len(parts) > 1 else parts[0]
    if limit is not None:
        queries = data.queries.slice(0, limit)
        keep = pa.compute.is_in(data.qrels["query_id"], queries["query_id"])
        data = RetrievalData(data.corpus, queries, data.qrels.filter(keep), data.reports)
    return data


def start_cluster(head_cpus: float, workers: list[dict]) -> tuple[object, list[object]]:
    """A fresh multi-node Cluster and a driver connected to it; returns (cluster, worker node handles)."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False}
    )
    nodes = [cluster.add_node(**w) for w in workers]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster, nodes


def stop_cluster(cluster: object) -> None:
    import ray

    ray.shutdown()
    cluster.shutdown()


def miner_actors() -> list[dict]:
    """Ray Data's actor-pool actors (mining, augmentation) of this driver's job, from the GCS actor table (dead ones
    included)."""
    import ray
    from ray._private.state import actors

    job = ray.get_runtime_context().get_job_id()
    return [a for a in actors().values() if MINER_CLASS in a["ActorClassName"] and a["JobID"] == job]


def task_nodes(name_part: str, deadline_s: float = 60.0) -> set[str]:
    """Nodes that ran this job's tasks whose name contains ``name_part`` (e.g. Ray Data's map tasks of
    ``analyze_documents``), from the GCS task events (the state API needs the dashboard, which these clusters do not
    start). Events reach the GCS in batches, so poll until every such task seen has reported its node."""
    import ray
    from ray._private.state import state

    job = ray.get_runtime_context().get_job_id()
    end = time.monotonic() + deadline_s
    while True:
        names: dict[bytes, str] = {}
        nodes: dict[bytes, str] = {}
        for event in state._get_all_task_events():
            if event.job_id.hex() != job:
                continue
            if event.task_info.name:
                names[event.task_id] = event.task_info.name
            if event.state_updates.node_id:
                nodes[event.task_id] = event.state_updates.node_id.hex()
        matching = [t for t, name in names.items() if name_part in name]
        if (matching and all(t in nodes for t in matching)) or time.monotonic() > end:
            return {nodes.get(t, "unreported") for t in matching}
        time.sleep(0.5)


def kill_an_actor_node_mid_run(
    cluster: object,
    workers: list[object],
    work: Callable[[], object],
    actor_class: str,
    what: str,
    join_s: float,
) -> tuple[object, object, float]:
    """Run ``work()`` in a thread and, as soon as an actor of this job whose class name contains ``actor_class`` is
    alive on one of ``workers``, SIGKILL that node (whichever it is: Ray may place every actor on one node, so a
    victim fixed in advance may never get one). Returns (what ``work`` returned, the killed node, the monotonic time
    of the kill); raises what ``work`` raised, and fails when no fault could be injected or ``work`` hangs."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as err:
            outcome["error"] = err

    job = threading.Thread(target=run, daemon=True)
    job.start()
    deadline = time.monotonic() + 180
    victim = None
    while victim is None and time.monotonic() < deadline and job.is_alive():
        alive = {
            a["Address"]["NodeID"]
            for a in miner_actors()
            if actor_class in a["ActorClassName"] and a["State"] == "ALIVE"
        }
        victim = next((n for n in workers if n.node_id in alive), None)
        time.sleep(0.1)
    assert job.is_alive(), f"{what} finished before an actor was alive: no fault was injected"
    assert victim is not None, f"no {what} actor was ever alive on a worker node"
    killed_at = time.monotonic()
    cluster.remove_node(victim, allow_graceful=False)
    job.join(timeout=join_s)
    assert not job.is_alive(), f"{what} hung after the node was lost"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"], victim, killed_at


# ---------------------------------------------------------------------------------------------------- placement


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mining_actors_run_only_on_the_cpu_pool_node(shared_data, tmp_path):
    import ray

    from raysparse.config import load_config
    from raysparse.mining import _ray_pool

    data = msmarco_data(shared_data, limit=200)
    cfg = MiningConfig(
        analyzer="bigram", batch_size=25, shard_rows=25, resources={"cpu_pool": 1}, in_process_below=0
    )
    index = Bm25Index.build(data.corpus, cfg, show_progress=False)
    cluster, (pool_node, plain_node) = start_cluster(1, CPU_POOL_AND_PLAIN_NODES)
    try:
        # pool size comes from the eligible node only: 2 actors (its CPUs and its cpu_pool), not 5 (all CPUs)
        assert _ray_pool(cfg) == (2, 0.9)
        report = mine(data, cfg, tmp_path / "placed", ray=True, index=index, show_progress=False)
        placed = miner_actors()
        assert len(placed) == report.workers == 2
        nodes = {a["Address"]["NodeID"] for a in placed}
        assert nodes == {pool_node.node_id}, (nodes, pool_node.node_id, plain_node.node_id)

        # the corpus analysis asks for the pool too: its tasks run on the pool node only (a plain {CPU: 1} demand
        # let an autoscaler launch a GPU node for it), and the index it builds mines the same triples
        index_on_ray = ray.get(build_index_ray(data.corpus, cfg))
        analysis_nodes = task_nodes("analyze_documents")
        assert analysis_nodes == {pool_node.node_id}, (analysis_nodes, pool_node.node_id)
        mine(data, cfg, tmp_path / "ray_index", ray=False, index=index_on_ray, show_progress=False)

        # augmentation with the same pool (the pipeline passes mining.resources): reads, actors and writes there
        dictionary = BilingualDictionary.from_sources([], use_shared=True, shared_dir=shared_data)
        augment_cfg = AugmentConfig(max_variants_per_query=2, seed=11)
        placed_aug = augment_triples_file(
            tmp_path / "placed", dictionary, augment_cfg, tmp_path / "aug_ray", resources=cfg.resources
        )
        augment_actors = [a for a in miner_actors() if "_AugmentBatches" in a["ActorClassName"]]
        assert augment_actors, "no augmentation actor in the GCS actor table"
        assert {a["Address"]["NodeID"] for a in augment_actors} == {pool_node.node_id}
        for stage in ("ReadParquet", "Write"):
            assert task_nodes(stage) <= {pool_node.node_id}, stage

        # no node has gpu_pool: a clear error naming the key, at once (Ray itself would queue the actors forever)
        t0 = time.monotonic()
        bad = cfg.model_copy(update={"resources": {"gpu_pool": 1}})
        with pytest.raises(ValueError, match=r"mining\.resources=\{'gpu_pool': 1(\.0)?\}.*no alive Ray node"):
            mine(data, bad, tmp_path / "impossible", ray=True, index=index, show_progress=False)
        # the same check guards Ray Train's workers (before any worker is started)
        from raysparse.ray_utils import check_placement

        train_cfg = load_config(None, ["train.resources={gpu_pool: 1}"])
        with pytest.raises(ValueError, match=r"train\.resources"):
            check_placement(train_cfg.train.resources, "train.resources")
        assert time.monotonic() - t0 < 60  # failed, not queued (generous: this is a hang check, not a timing)
        assert not (tmp_path / "impossible" / TRIPLES_DIR).exists()
    finally:
        stop_cluster(cluster)
    local = mine(data, cfg, tmp_path / "local", ray=False, index=index, show_progress=False)
    assert triples_files(tmp_path / "placed") == triples_files(tmp_path / "local")
    assert triples_files(tmp_path / "ray_index") == triples_files(tmp_path / "local")
    local_aug = augment_triples_file(
        tmp_path / "local", dictionary, augment_cfg, tmp_path / "aug_local", use_ray=False
    )
    counts = [{k: v for k, v in r.to_dict().items() if k != "sources"} for r in (placed_aug, local_aug)]
    assert counts[0] == counts[1] and local_aug.variants_out > 0
    rows = {
        p: pq.read_table(tmp_path / p).cast(TRIPLES).sort_by("query_id").to_pylist()
        for p in ("aug_ray", "aug_local")
    }
    assert rows["aug_ray"] == rows["aug_local"]
    assert local.queries_mined == 200


# ---------------------------------------------------------------------------------------------------- node loss


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_mining_survives_losing_a_worker_node(shared_data, tmp_path):
    """Kill the node of a mining actor mid-run: its actors restart on the surviving node, their batches are re-run,
    and the triples equal a run without failure byte for byte."""
    data = msmarco_data(shared_data, langs=("kor", "eng"))
    cfg = MiningConfig(analyzer="kiwi", batch_size=20, shard_rows=20, num_workers=2, in_process_below=0)
    index = Bm25Index.build(data.corpus, cfg, show_progress=False)
    expected = mine(data, cfg, tmp_path / "local", ray=False, index=index, show_progress=False)

    # head: 0 CPUs (it keeps the driver's index object); two 2-CPU workers, so both 1-CPU actors fit on either one.
    # The victim is whichever node an actor is seen on: Ray may place both actors on one node (a fixed victim then
    # never got one, and the test failed with no fault injected)
    cluster, workers = start_cluster(0, [{"num_cpus": 2}, {"num_cpus": 2}])
    try:
        report, victim, killed_at = kill_an_actor_node_mid_run(
            cluster,
            workers,
            lambda: mine(data, cfg, tmp_path / "cluster", ray=True, index=index, show_progress=False),
            "_MinerActor",
            "mining",
            join_s=240,
        )
        survivor = next(n for n in workers if n is not victim)
        print(
            f"mining on 2 nodes, one killed: {report.timings['mining']:.1f} s, "
            f"{time.monotonic() - killed_at:.1f} s after the kill"
        )
        actors = miner_actors()
        assert any(a["Address"]["NodeID"] == survivor.node_id for a in actors)
    finally:
        stop_cluster(cluster)

    got = read_triples(tmp_path / "cluster")
    assert got.num_rows == expected.queries_mined == report.queries_mined
    ids = got.column("query_id").to_pylist()
    assert len(set(ids)) == len(ids), "duplicated queries after the retry"
    assert triples_files(tmp_path / "cluster") == triples_files(tmp_path / "local")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_augmentation_survives_losing_a_worker_node(shared_data, tmp_path):
    """Kill the node of an augmentation actor mid-run: Ray Data restarts the actor on the other node and retries its
    batches, and the augmented rows equal the in-process run (nothing lost, nothing duplicated)."""
    data = msmarco_data(shared_data, langs=("kor", "eng"))
    mining_cfg = MiningConfig(analyzer="bigram", batch_size=100, shard_rows=100, in_process_below=0)
    index = Bm25Index.build(data.corpus, mining_cfg, show_progress=False)
    mine(data, mining_cfg, tmp_path / "mined", ray=False, index=index, show_progress=False)
    # 5 copies of the 2000 mined queries under their own ids, one file each: enough batches that the node is lost
    # while the actors work (one copy takes ~0.6 s in-process once Kiwi is loaded)
    mined = read_triples(tmp_path / "mined")
    triples = tmp_path / "triples"
    triples.mkdir()
    ids = mined.column("query_id").to_pylist()
    for copy in range(5):
        column = mined.schema.get_field_index("query_id")
        renamed = mined.set_column(column, "query_id", pa.array([f"{q}#{copy}" for q in ids], pa.string()))
        pq.write_table(renamed.cast(TRIPLES), triples / f"part-{copy:05d}.parquet")
    dictionary = BilingualDictionary.from_sources([], use_shared=True, shared_dir=shared_data)
    augment_cfg = AugmentConfig(max_variants_per_query=2, seed=11)
    local = augment_triples_file(triples, dictionary, augment_cfg, tmp_path / "aug_local", use_ray=False)

    # head: 0 CPUs; two 4-CPU workers, so the survivor fits a restarted actor beside the read and write tasks
    cluster, workers = start_cluster(0, [{"num_cpus": 4}, {"num_cpus": 4}])
    try:
        report, victim, _ = kill_an_actor_node_mid_run(
            cluster,
            workers,
            lambda: augment_triples_file(
                triples, dictionary, augment_cfg, tmp_path / "aug_ray", num_actors=2, batch_size=10
            ),
            "_AugmentBatches",
            "augmentation",
            join_s=300,
        )
        actors = [a for a in miner_actors() if "_AugmentBatches" in a["ActorClassName"]]
        survivor = next(n for n in workers if n is not victim)
        assert any(a["Address"]["NodeID"] == survivor.node_id for a in actors)
    finally:
        stop_cluster(cluster)

    counts = [{k: v for k, v in r.to_dict().items() if k != "sources"} for r in (report, local)]
    assert counts[0] == counts[1] and local.queries_in == 10000, counts
    rows = {
        p: pq.read_table(tmp_path / p).cast(TRIPLES).sort_by("query_id").to_pylist()
        for p in ("aug_ray", "aug_local")
    }
    assert rows["aug_ray"] == rows["aug_local"]


# ---------------------------------------------------------------------------------------------------- corrupt shards


def _shard_msmarco(shared_data: Path, out: Path, shards: int = 4) -> list[Path]:
    records = json.loads(
        (shared_data / "msmarco-ko-en" / "msmarco_kor.dev1000.json").read_text(encoding="utf-8")
    )
    records = records[:200]
    size = len(records) // shards
    paths = []
    for i in range(shards):
        p = out / f"part-{i:03d}.json"
        p.write_text(json.dumps(records[i * size : (i + 1) * size], ensure_ascii=False), encoding="utf-8")
        paths.append(p)
    return paths


@pytest.mark.timeout(180)
def test_mining_job_names_the_corrupt_shard(shared_data, tmp_path):
    """``python jobs/mine.py`` over a directory of MS MARCO shards: one truncated shard fails the job, naming it."""
    shards = tmp_path / "shards"
    shards.mkdir()
    paths = _shard_msmarco(shared_data, shards)
    good = [
        "--data-format", "msmarco", "--data-path", str(shards), "--analyzer", "bigram", "--no-ray",
        "--out", str(tmp_path / "ok"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "jobs/mine.py", *good], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=150)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert read_triples(tmp_path / "ok").num_rows == 200  # all four shards were read

    corrupt = paths[2]
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])  # a shard cut off mid-record
    bad = [*good[:-1], str(tmp_path / "bad")]
    res = subprocess.run([sys.executable, "jobs/mine.py", *bad], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=150)  # fmt: skip
    assert res.returncode != 0
    # one line naming the file and line (the error policy), not a traceback
    last = res.stderr.strip().splitlines()[-1]
    assert "part-002.json line 1" in last and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "bad" / TRIPLES_DIR).exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ray_data_read_names_the_corrupt_shard(shared_data, tmp_path, ray_local):
    """Triples shards read with Ray Data (the path augmentation uses): a corrupt shard's name is in the error."""
    from raysparse.augment import BilingualDictionary, augment_triples_file

    data = msmarco_data(shared_data, limit=60)
    cfg = MiningConfig(analyzer="bigram")
    mine(data, cfg, tmp_path / "mined", ray=False, show_progress=False)
    table = read_triples(tmp_path / "mined")
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        pq.write_table(table.slice(i * 20, 20), shards / f"part-{i:03d}.parquet")
    dictionary = BilingualDictionary.from_sources([], use_shared=False)
    report = augment_triples_file(shards, dictionary, out_dir=tmp_path / "aug-ok", num_actors=1)
    assert len(report.sources) == 3

    # keep the footer (so the schema still reads) and overwrite the data pages: the failure comes from the read
    # tasks on Ray Data, not from the driver's schema check
    victim = shards / "part-001.parquet"
    raw = bytearray(victim.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little") + 8
    raw[4 : len(raw) - footer] = b"\xff" * (len(raw) - footer - 4)
    victim.write_bytes(bytes(raw))
    t0 = time.monotonic()
    with pytest.raises(Exception) as err:
        augment_triples_file(shards, dictionary, out_dir=tmp_path / "aug-bad", num_actors=1)
    assert "part-001.parquet" in str(err.value), str(err.value)[-2000:]
    assert time.monotonic() - t0 < 150


@pytest.mark.timeout(120)
def test_triples_directory_with_a_non_parquet_shard_names_it(shared_data, tmp_path):
    from raysparse.augment import find_triples_files

    data = msmarco_data(shared_data, limit=20)
    mine(data, MiningConfig(analyzer="bigram"), tmp_path / "mined", ray=False, show_progress=False)
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(read_triples(tmp_path / "mined"), shards / "part-000.parquet")
    (shards / "part-001.parquet").write_bytes(b"not parquet at all\n")
    with pytest.raises(Exception, match=r"part-001\.parquet"):
        find_triples_files(shards)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_training_workers_run_only_on_the_gpu_pool_node(shared_data, tmp_path_factory, tmp_path):
    """``train.resources={gpu_pool: 1}`` reaches Ray Train's ScalingConfig: both workers land on the node that
    carries gpu_pool (CPU-only here: the pool is a custom resource, like cluster.yaml's gpu_worker advertises)."""
    import ray
    from ray._private.state import actors
    from test_train import session_inputs

    from raysparse.config import load_config
    from raysparse.training import run_training

    inputs = session_inputs(shared_data, tmp_path_factory)
    cfg = load_config(
        None,
        [
            *inputs["model_overrides"],
            "name=placed-training",
            f"ray.storage_path={tmp_path / 'storage'}",
            "train.num_workers=2",
            "train.cpus_per_worker=0.5",
            "train.deepspeed.enabled=false",
            "train.max_steps=1",
            "train.checkpoint_every=1",
            "train.batch_size=4",
            "train.negatives_per_query=1",
            "train.resources={gpu_pool: 1}",
        ],
    )
    # the head (where the driver runs) has room for both workers too: only train.resources keeps them off it
    cluster, (pool_node, plain_node) = start_cluster(
        2, [{"num_cpus": 1, "resources": {"gpu_pool": 2}}, {"num_cpus": 2}]
    )
    try:
        result = run_training(
            cfg,
            inputs["triples"],
            None,
            tmp_path / "out",
            sentence_pairs=inputs["sentence_pairs"],
            backbone_dir=inputs["backbone"],
        )
        job = ray.get_runtime_context().get_job_id()
        workers = [
            a for a in actors().values() if "RayTrainWorker" in a["ActorClassName"] and a["JobID"] == job
        ]
        assert len(workers) == 2, [a["ActorClassName"] for a in actors().values()]
        assert {a["Address"]["NodeID"] for a in workers} == {pool_node.node_id}, plain_node.node_id
        assert [h["step"] for h in result.history] == [1]
    finally:
        stop_cluster(cluster)
