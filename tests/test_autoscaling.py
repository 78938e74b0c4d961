"""raysparse stages on a real Ray autoscaler: cluster.yaml's node types, scaled to this machine, start at zero workers
and the autoscaler (Ray's own monitor, with the fake multi-node provider whose nodes are local raylets) adds and
removes them while jobs submitted with ``ray job submit --working-dir <repo>`` run. See tests/autoscaling_harness.py.

Every test starts its own head on free ports with a private temp dir and stops it (head, autoscaler, the raylets it
launched) in a ``finally``/context manager, so a failing test leaves no Ray processes behind.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from autoscaling_harness import (
    CLUSTER_YAML,
    FAKE_HEAD_TYPE,
    FakeAutoscalingHead,
    fake_autoscaling_config,
    placement_wait_from_cluster_yaml,
)

from raysparse.mining import triples_files

MINER_CLASS = "MapWorker"  # Ray Data's actor-pool actors (see tests/test_failures.py)
IDLE_TIMEOUT_MIN = 0.25  # the harness default: 15 s instead of cluster.yaml's 10 minutes
# Tests that do not check scale-down keep their nodes for the whole job (fewer node churns while it runs).
JOB_LONG_IDLE_TIMEOUT_MIN = 30.0


def _write_beir(shared_data: Path, out: Path, limit: int | None, langs: tuple[str, ...] = ("kor",)) -> Path:
    from test_failures import msmarco_data

    from raysparse.data import write_beir

    write_beir(msmarco_data(shared_data, langs=langs, limit=limit), out)
    return out


def _mine_locally(beir: Path, out: Path, *overrides: str) -> dict[str, bytes]:
    """The single-process reference: the same CLI with --no-ray; its triples shards by name."""
    from raysparse.cli import main

    sets = [x for o in overrides for x in ("--set", o)]
    assert main(["mine", "--beir", str(beir), "--out", str(out), "--no-ray", *sets]) == 0
    return triples_files(out)


def _new_nodes(head: FakeAutoscalingHead, before: set[str], resource: str) -> list[dict]:
    return [
        n for n in head.nodes() if n["node_id"] not in before and resource in (n.get("resources_total") or {})
    ]


# ---------------------------------------------------------------------------------------------------- config


def test_fake_cluster_has_cluster_yaml_node_types():
    """The harness's autoscaling config is cluster.yaml's: same worker type names, pools, min/max workers and
    cluster-wide settings; CPUs scaled (a pool of one unit per CPU scales with them); the placement wait as the
    head's start command exports it."""
    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    fake = fake_autoscaling_config(gcs_address="127.0.0.1:1", idle_timeout_minutes=None)
    types = fake["available_node_types"]
    aws = cfg["available_node_types"]
    workers = {k for k in aws if k != cfg["head_node_type"]}
    assert set(types) == workers | {FAKE_HEAD_TYPE}
    assert types[FAKE_HEAD_TYPE]["resources"] == aws[cfg["head_node_type"]]["resources"]  # CPU: 0
    for name in workers:
        assert types[name]["min_workers"] == aws[name]["min_workers"] == 0
        assert types[name]["max_workers"] == aws[name]["max_workers"]
        custom = {k for k in aws[name]["resources"] if k != "CPU"}
        assert custom and custom <= set(types[name]["resources"])
    # c6i.4xlarge: 16 vCPUs and cpu_pool 16 -> 2 and 2; g5.2xlarge: 8 vCPUs -> 1, gpu_pool 1 kept
    assert types["cpu_worker"]["resources"]["CPU"] == types["cpu_worker"]["resources"]["cpu_pool"] == 2
    assert types["gpu_worker"]["resources"]["CPU"] == 1 and types["gpu_worker"]["resources"]["gpu_pool"] == 1
    assert "GPU" not in types["gpu_worker"]["resources"]  # no GPU here: gpu_pool stands in for it
    for key in ("max_workers", "upscaling_speed", "idle_timeout_minutes"):
        assert fake[key] == cfg[key], key
    # Ray's fake_multinode provider, one runtime-env directory per node
    assert fake["provider"]["type"] == "external"
    assert fake["provider"]["module"].endswith("PerNodeRuntimeEnvFakeProvider")
    assert float(placement_wait_from_cluster_yaml(cfg)) > 0
    capped = fake_autoscaling_config(gcs_address="127.0.0.1:1", max_workers_cap=2)
    assert capped["available_node_types"]["cpu_worker"]["max_workers"] == 2
    assert capped["max_workers"] == 4 and capped["idle_timeout_minutes"] == IDLE_TIMEOUT_MIN


# ---------------------------------------------------------------------------------------------------- mining


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mining_job_scales_a_cpu_pool_node_up_and_down(shared_data, tmp_path):
    """From zero workers: the job waits for the autoscaler, which adds one cpu_worker; every mining actor runs on it;
    the triples equal the single-process run byte for byte; the node is released after the idle timeout."""
    import ray

    ray.shutdown()
    beir = _write_beir(shared_data, tmp_path / "beir", limit=300)
    overrides = ["mining.analyzer=bigram", "mining.batch_size=25", "mining.shard_rows=25",
                 "mining.resources={cpu_pool: 1}", "mining.in_process_below=0"]  # fmt: skip
    expected = _mine_locally(beir, tmp_path / "local", *overrides)
    out = tmp_path / "mined"
    with FakeAutoscalingHead(idle_timeout_minutes=IDLE_TIMEOUT_MIN) as head:
        assert not head.alive_nodes("cpu_pool") and not head.alive_nodes("gpu_pool")  # min_workers: 0
        before = {n["node_id"] for n in head.nodes()}
        sets = [x for o in overrides for x in ("--set", o)]
        job = head.submit(["python", "jobs/mine.py", "--beir", str(beir), "--out", str(out), *sets])
        t_node = head.wait_until(
            lambda: any(n["state"] == "ALIVE" for n in _new_nodes(head, before, "cpu_pool")),
            300,
            what="a cpu_pool node",
        )
        status, log = job.wait(600)
        assert status == "SUCCEEDED", job.driver_output(log)
        assert "no node offers these yet; asking the autoscaler" in log, job.driver_output(
            log
        )  # waited, did not fail
        assert "mined 300/300 queries" in log, job.driver_output(log)

        new = _new_nodes(head, before, "cpu_pool")
        assert new and all(n["resources_total"]["cpu_pool"] == 2 for n in new), new
        assert not _new_nodes(head, before, "gpu_pool"), "nothing asked for gpu_pool"
        actors = head.actors(MINER_CLASS, head.job_id(job.submission_id))
        assert actors, "no mining actor in the GCS actor table"
        # every mining actor ran on a node the autoscaler added for this job (the head offers no CPU and no pool)
        assert {a["node_id"] for a in actors} <= {n["node_id"] for n in new}, (actors, new)
        print(f"cpu_worker nodes launched: {len(new)}; mining actors: {len(actors)}")
        # the job's working_dir was unpacked on the new node's own disk, not over the head's copy
        assert {f"runtime_resources_{n['node_id']}" for n in new} <= head.runtime_env_dirs()
        job_end = head.job_info(job.submission_id).end_time / 1000

        t_down = head.wait_until(
            lambda: not head.alive_nodes("cpu_pool"), IDLE_TIMEOUT_MIN * 60 + 240, what="scale-down"
        )
        print(
            f"cpu_worker up {t_node - job.submitted_at:.1f} s after submit; "
            f"released {t_down - job_end:.1f} s after the job ended (idle timeout {IDLE_TIMEOUT_MIN * 60:.0f} s)"
        )
        # released by the autoscaler (idle), not lost: the node left cleanly and the pool is empty again
        assert not head.alive_nodes("cpu_pool")
    assert triples_files(out) == expected
    report = json.loads((out / "mining_report.json").read_text())
    assert report["mode"] == "ray" and report["queries_mined"] == 300


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mining_job_finishes_when_its_node_is_lost(shared_data, tmp_path):
    """The cpu_worker running the mining actors is killed (SIGKILL of its raylet and workers: a spot instance taken
    away) while the job runs: the autoscaler replaces it, the actors restart there, and the triples equal the
    single-process run byte for byte (no lost or duplicated rows)."""
    import ray

    ray.shutdown()
    # 2000 Korean and English queries in batches of 5: hundreds of batches, so the stage is still running when the
    # node goes (bigram analysis: Kiwi's index build alone takes minutes on the loaded 2-core machine)
    beir = _write_beir(shared_data, tmp_path / "beir", limit=None, langs=("kor", "eng"))
    overrides = ["mining.analyzer=bigram", "mining.batch_size=5", "mining.shard_rows=5",
                 "mining.resources={cpu_pool: 1}", "mining.in_process_below=0"]  # fmt: skip
    expected = _mine_locally(beir, tmp_path / "local", *overrides)
    out = tmp_path / "mined"
    with FakeAutoscalingHead(idle_timeout_minutes=IDLE_TIMEOUT_MIN, max_workers_cap=2) as head:
        before = {n["node_id"] for n in head.nodes()}
        sets = [x for o in overrides for x in ("--set", o)]
        job = head.submit(["python", "jobs/mine.py", "--beir", str(beir), "--out", str(out), *sets])
        job_id = None
        victim: dict = {}

        def actor_alive_on_new_node() -> bool:
            nonlocal job_id
            status = job.status()
            assert status in {"PENDING", "RUNNING"}, f"job {status} before the fault:\n{job.driver_output()}"
            job_id = job_id or head.job_id(job.submission_id)
            new = {n["node_id"] for n in _new_nodes(head, before, "cpu_pool") if n["state"] == "ALIVE"}
            for a in head.actors(MINER_CLASS, job_id):
                if a["state"] == "ALIVE" and a["node_id"] in new:
                    victim["node_id"] = a["node_id"]
                    return True
            return False

        head.wait_until(actor_alive_on_new_node, 400, 0.5, "a mining actor on an autoscaled node")
        assert job.status() == "RUNNING", "the job ended before the fault: this test would prove nothing"
        killed_at = time.time()
        assert head.kill_node(victim["node_id"]) >= 1
        t_replaced = head.wait_until(
            lambda: any(
                n["state"] == "ALIVE" and n["node_id"] != victim["node_id"]
                for n in _new_nodes(head, before, "cpu_pool")
            ),
            300,
            what="a replacement cpu_pool node",
        )
        status, log = job.wait(600)
        assert status == "SUCCEEDED", job.driver_output(log)
        assert "mined 2000/2000 queries" in log, job.driver_output(log)
        nodes = {n["node_id"]: n for n in head.nodes()}
        assert nodes[victim["node_id"]]["state"] == "DEAD"
        actors = head.actors(MINER_CLASS, job_id)
        assert any(a["node_id"] != victim["node_id"] for a in actors), "no actor ran after the kill"
        others = [n for n in _new_nodes(head, before, "cpu_pool") if n["node_id"] != victim["node_id"]]
        launched_after = [n for n in others if n["start_time_ms"] / 1000 >= killed_at]
        print(
            f"node killed; another cpu_pool node alive {t_replaced - killed_at:.1f} s later "
            f"({len(others)} other node(s), {len(launched_after)} launched after the kill)"
        )
    assert triples_files(out) == expected


# ---------------------------------------------------------------------------------------------------- training


def _train_job_args(inputs: dict, tmp_path: Path, name: str, *overrides: str) -> tuple[list[str], Path]:
    from raysparse.data import write_beir

    dev = tmp_path / "dev-beir"
    if not dev.exists():
        write_beir(inputs["dev"], dev)
    storage = tmp_path / "storage"  # stands for the shared mount / bucket every node sees
    sets = [
        *inputs["model_overrides"],
        "model.lexical_prior=5",
        f"name={name}",
        f"ray.storage_path={storage}",
        "train.num_workers=1",
        "train.cpus_per_worker=0.5",  # a scaled gpu_worker has 1 CPU
        "train.deepspeed.zero_stage=1",
        "train.deepspeed.precision=bf16",
        "train.batch_size=4",
        "train.negatives_per_query=1",
        "train.resources={gpu_pool: 1}",
        *overrides,
    ]
    args = [
        "--triples", str(inputs["triples"]), "--dev-beir", str(dev), "--backbone", str(inputs["backbone"]),
        "--sentence-pairs", str(inputs["sentence_pairs"]), *[x for o in sets for x in ("--set", o)],
    ]  # fmt: skip
    return args, storage


def _job_env() -> dict[str, str]:
    import os

    return {
        "DS_ACCELERATOR": "cpu",
        "TOKENIZERS_PARALLELISM": "false",
        "TORCH_EXTENSIONS_DIR": os.environ["TORCH_EXTENSIONS_DIR"],
        # a worker group waiting for the autoscaler to replace a node must not give up after Train's default 60 s
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
        "RAYSPARSE_DEBUG": "1",  # a failing job's log then carries the traceback
    }


def _registered_checkpoint_step(storage: Path) -> int:
    """The highest step among the checkpoints Ray Train has registered (its run's checkpoint_manager_snapshot.json).
    A checkpoint directory appears in storage before the controller registers it; a worker lost in between restarts
    from step 0 (measured: the kill landed there when the test waited for the directory only)."""
    best = 0
    for snapshot in storage.glob("as-train-*/checkpoint_manager_snapshot.json"):
        try:
            results = json.loads(snapshot.read_text()).get("checkpoint_results", [])
        except (OSError, ValueError):  # being rewritten while we read it
            continue
        best = max([best, *(int(r.get("metrics", {}).get("step", 0)) for r in results)])
    return best


def _steps(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_training_job_waits_for_a_gpu_pool_node_checkpoints_and_resumes_after_losing_it(
    shared_data, tmp_path_factory, tmp_path
):
    """``train.resources={gpu_pool: 1}`` with no gpu_worker yet: the job waits for the autoscaler instead of failing,
    the Train worker runs on the added node and checkpoints to ``ray.storage_path``; that node is then killed after
    a checkpoint, and training resumes from the checkpoint on a replacement node and finishes."""
    import ray
    from test_train import session_inputs

    ray.shutdown()
    inputs = session_inputs(shared_data, tmp_path_factory)
    # enough steps that the fault lands mid-training on an idle machine too (6 steps took 2.4 s there: the kill came
    # after the last step, so there was nothing to resume)
    max_steps, every = 60, 5
    args, storage = _train_job_args(
        inputs,
        tmp_path,
        "as-train",
        f"train.max_steps={max_steps}",
        f"train.checkpoint_every={every}",
        "train.eval_every=100",
        "train.max_failures=2",
    )
    out = tmp_path / "out"
    with FakeAutoscalingHead(idle_timeout_minutes=JOB_LONG_IDLE_TIMEOUT_MIN, max_workers_cap=2) as head:
        assert not head.alive_nodes("gpu_pool")
        before = {n["node_id"] for n in head.nodes()}
        job = head.submit(
            ["python", "-m", "raysparse", "train", "--out", str(out), *args],
            env_vars=_job_env(),
        )
        progress = out / "progress" / "rank0.jsonl"
        head.wait_until(
            lambda: progress.is_file() and _registered_checkpoint_step(storage) >= every,
            600,
            0.2,
            what="a checkpoint registered by Ray Train",
        )
        workers = head.actors("RayTrainWorker", head.job_id(job.submission_id))
        gpu_nodes = {n["node_id"] for n in _new_nodes(head, before, "gpu_pool")}
        assert workers and {w["node_id"] for w in workers} <= gpu_nodes, (workers, gpu_nodes)
        victim = next(w["node_id"] for w in workers if w["state"] == "ALIVE")
        assert job.status() == "RUNNING", "training ended before the fault: this test would prove nothing"
        assert max(r["step"] for r in _steps(progress)) < max_steps, "every step ran before the fault"
        trainer_pids = {int(w["pid"]) for w in workers if w["node_id"] == victim and w.get("pid")}
        killed = head.kill_node(victim, extra_pids=trainer_pids)
        print(f"killed {killed} processes of node {victim[:8]} (Train worker pids {sorted(trainer_pids)})")
        assert killed >= 1
        killed_at = time.time()

        status, log = job.wait(900)
        assert status == "SUCCEEDED", job.driver_output(log)
        assert "no node offers these yet; asking the autoscaler" in log, job.driver_output(log)
        replaced = [n for n in _new_nodes(head, before, "gpu_pool") if n["node_id"] != victim]
        assert replaced, "no replacement gpu_worker was launched"
        up = min(n["start_time_ms"] for n in replaced) / 1000 - killed_at
        print(f"gpu_worker killed; replacement registered {up:.1f} s later")

    records = _steps(progress)
    steps = [r["step"] for r in records]
    kill_index = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    resumed_from = steps[kill_index] - 1
    assert resumed_from % every == 0 and resumed_from >= every, (
        steps
    )  # restarted after a checkpoint, not at 0
    assert steps[kill_index:] == list(range(resumed_from + 1, max_steps + 1)), steps
    assert records[kill_index]["pid"] != records[kill_index - 1]["pid"]
    checkpoints = sorted(
        storage.glob("as-train-*/checkpoint_*")
    )  # the run's directory: <name>-<identity hash>
    assert checkpoints, "no checkpoint under ray.storage_path"
    state = json.loads((out / "history.jsonl").read_text().splitlines()[-1])
    assert state["step"] == max_steps
    assert (out / "model" / "config.json").is_file()


# ---------------------------------------------------------------------------------------------------- tune


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tune_sweep_queues_trials_and_scales_gpu_workers_to_max(shared_data, tmp_path_factory, tmp_path):
    """3 trials, each a one-worker training run on a gpu_pool node, on a cluster whose gpu_worker type is capped at 2
    nodes: the autoscaler adds gpu_workers up to that cap and never beyond, the third trial waits for a node, every
    trial ends, and the chosen trial is the one the selection rule picks from the trials' own results."""
    import threading

    import ray
    from test_train import session_inputs

    from raysparse.tune import select_trial

    ray.shutdown()
    inputs = session_inputs(shared_data, tmp_path_factory)
    args, storage = _train_job_args(
        inputs,
        tmp_path,
        "as-sweep",
        "train.max_steps=2",
        "train.checkpoint_every=2",
        "train.eval_every=2",
        "tune.max_concurrent_trials=3",
        "tune.scheduler=fifo",
        "tune.search_alg=random",
    )
    out = tmp_path / "sweep"
    root = Path(__file__).resolve().parents[1]
    with FakeAutoscalingHead(idle_timeout_minutes=JOB_LONG_IDLE_TIMEOUT_MIN, max_workers_cap=2) as head:
        cap = head.config["available_node_types"]["gpu_worker"]["max_workers"]
        assert cap == 2
        job = head.submit(
            [
                "python",
                "jobs/tune.py",
                "--out",
                str(out),
                "--space",
                str(root / "tuning" / "tiny.yaml"),
                "--num-samples",
                "3",
                *args,
            ],
            env_vars=_job_env(),
        )
        peak = {"gpu": 0}
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                with contextlib.suppress(Exception):
                    peak["gpu"] = max(peak["gpu"], len(head.alive_nodes("gpu_pool")))
                time.sleep(1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            status, log = job.wait(1200)
        finally:
            done.set()
            watcher.join(timeout=30)
        assert status == "SUCCEEDED", job.driver_output(log)
        gpu_nodes = [n for n in head.nodes() if "gpu_pool" in (n.get("resources_total") or {})]
        print(f"gpu_worker nodes: peak {peak['gpu']} alive at once, {len(gpu_nodes)} launched in all")
        assert peak["gpu"] == cap, peak  # scaled up to max_workers, not beyond

    results = json.loads((out / "sweep_results.json").read_text())
    assert len(results["trials"]) == 3 and not results["failed"], results
    finished = [t for t in results["trials"] if t["status"] == "finished"]
    assert len(finished) == 3, results["trials"]
    from raysparse.config import load_config

    budget = load_config(None).tune.flops_budget  # the sweep ran with the default budget
    again = select_trial(finished, budget, quality="ndcg@10")
    assert results["chosen"]["trial_id"] == again["trial_id"]
    assert (out / "best_model" / "config.json").is_file()
    assert list((storage / "ray_train").iterdir()), "trials did not checkpoint under ray.storage_path"
