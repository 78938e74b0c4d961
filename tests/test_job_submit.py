"""`ray job submit ... -- python jobs/mine.py` against a real `ray start --head` cluster (with its dashboard).

The head runs with ``--block`` in its own process group, and the test stops exactly that group at the end instead of
``ray stop`` (which kills every Ray process on the machine, including other users' clusters on a shared host).
Every port is picked free and the session directory is private, so it does not collide with other Ray instances.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_head import JOB_EXCLUDES, SMALL_JOB_OVERRIDES, as_sets, free_port, ray_cli, start_head, stop_head

REPO = Path(__file__).resolve().parents[1]


def wait_for_dashboard(url: str, head: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            output = head.stdout.read() if head.stdout else ""
            raise RuntimeError(f"ray start --head exited with {head.returncode}:\n{output[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"Ray dashboard at {url} did not answer within {timeout:.0f} s")


def job_env() -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return env


@contextlib.contextmanager
def ray_head(env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """A private `ray start --head --block` on free ports; yields (dashboard URL, session temp dir) and stops exactly
    that process group at the end (and removes its temp dir)."""
    dash, gcs = free_port(), free_port()
    session_dir = tempfile.mkdtemp(
        prefix="rs-job-", dir="/tmp"
    )  # short: Ray's socket paths have a length limit
    head = start_head(env, gcs_port=gcs, dashboard_port=dash, temp_dir=session_dir, num_cpus=2)
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_for_dashboard(url, head)
        yield url, session_dir
    finally:
        stop_head(head)
        shutil.rmtree(session_dir, ignore_errors=True)


def submit(url: str, env: dict[str, str], *command: str, timeout: float = 480) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir REPO -- COMMAND`; retries only while the job agent is not up yet."""
    for _attempt in range(12):
        result = subprocess.run(
            [
                ray_cli(),
                "job",
                "submit",
                f"--address={url}",
                f"--working-dir={REPO}",
                f"--runtime-env-json={json.dumps({'excludes': JOB_EXCLUDES})}",
                "--",
                *command,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if "No available agent" not in result.stdout + result.stderr:
            return result
        time.sleep(10)
    return result


@pytest.mark.slow
def test_ray_job_submit_runs_jobs_mine(shared_data, tmp_path):
    import ray

    from raysparse.data import read_squad, write_beir
    from raysparse.mining import read_triples
    from raysparse.schemas import RetrievalData

    ray.shutdown()
    # A small BEIR directory from real KLUE-MRC data: the first 40 questions and every passage.
    data = read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")
    queries = data.queries.slice(0, 40)
    keep = set(queries.column("query_id").to_pylist())
    qrels = data.qrels.filter([q in keep for q in data.qrels.column("query_id").to_pylist()])
    beir_dir = tmp_path / "beir"
    write_beir(RetrievalData(data.corpus, queries, qrels), beir_dir)
    out_dir = tmp_path / "mined"

    env = job_env()
    with ray_head(env) as (url, _session_dir):
        result = submit(
            url,
            env,
            "python",
            "jobs/mine.py",
            "--beir",
            str(beir_dir),
            "--out",
            str(out_dir),
            "--hard",
            "5",
            "--random",
            "2",
            "--set",
            "mining.in_process_below=0",  # 40 queries: the Ray path is what this test submits
        )
        log = result.stdout + result.stderr
        assert result.returncode == 0, log[-4000:]
        assert "succeeded" in log, log[-4000:]
        assert "mined 40/40 queries" in log, log[-4000:]

        table = read_triples(out_dir)
        assert table.num_rows == 40
        assert table.column("query_id").to_pylist() == sorted(keep)
        for row in table.to_pylist():
            assert row["negative_kinds"].count("random") == 2
            assert 1 <= row["negative_kinds"].count("hard") <= 5
            assert set(row["negative_ids"]).isdisjoint(row["positive_ids"])
        report = json.loads((out_dir / "mining_report.json").read_text())
        assert report["mode"] == "ray" and report["queries_mined"] == 40


SMALL_JOB = as_sets(SMALL_JOB_OVERRIDES)


def printed_locations(log: str) -> dict[str, str]:
    """The job's `KIND: LOCATION` lines (model, metrics, tensorboard, results), each on a line of its own."""
    found = {}
    for line in log.splitlines():
        match = re.fullmatch(r"(model|metrics|tensorboard|results): (\S+)", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


@pytest.mark.slow
@pytest.mark.timeout(2700)  # a whole main job (+ sweep) in subprocesses; ~15 min on the loaded 2-core VM
def test_main_job_results_outlive_the_session_and_come_back_with_pull(tmp_path):
    """Issue #18 end to end: `ray job submit --working-dir . -- python jobs/pipeline.py --out outputs/X` with
    ray.storage_path on shared storage prints where the model went; after the head is stopped and its session
    (with the working-dir copy) deleted, the model is there, `raysparse pull` brings it back (path and file:// URI)
    and `raysparse evaluate` / `raysparse export` run on it. Without a storage path the same job refuses at start."""
    import ray

    from raysparse.storage import RESULTS_SUBDIR

    ray.shutdown()
    storage = tmp_path / "shared-storage"
    env = job_env()
    with ray_head(env) as (url, session_dir):
        refused = submit(url, env, "python", "jobs/pipeline.py", "--out", "outputs/job-refused", timeout=300)
        log = refused.stdout + refused.stderr
        assert refused.returncode != 0, log[-3000:]
        assert (
            "raysparse run: output directory 'outputs/job-refused' is relative and this runs inside a Ray job"
            in log
        )
        assert "absolute --out" in log and "ray.storage_path" in log

        result = submit(
            url,
            env,
            "python",
            "jobs/pipeline.py",
            "--out",
            "outputs/job-test",
            "--set",
            f"ray.storage_path={storage}",
            *SMALL_JOB,
            timeout=1500,
        )
        log = result.stdout + result.stderr
        assert result.returncode == 0 and "succeeded" in log, log[-4000:]
        where = printed_locations(log)
        expected = storage / RESULTS_SUBDIR / "outputs" / "job-test"
        assert where["model"] == str(expected / "train" / "model"), where
        assert where["metrics"] == str(expected / "evaluate" / "model" / "metrics.json"), where
        assert where["tensorboard"] == str(expected / "train" / "tensorboard"), where
        copies = list(Path(session_dir).glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*"))
        assert copies, "no working-dir copy found: the test would not show where outputs would have gone"
        assert not any((c / "outputs").exists() for c in copies), "something was written into the job's copy"
        # Ray Train's checkpoints went to the storage too, not into the working-dir copy
        assert any(p.name.startswith("checkpoint_") for p in storage.rglob("checkpoint_*"))
    # the head is stopped and its session directory (with the working-dir copy) is gone
    assert not Path(session_dir).exists()
    model = Path(where["model"])
    assert (model / "model.safetensors").is_file() and (model / "raysparse.json").is_file()
    assert json.loads(Path(where["metrics"]).read_text())["num_queries"] > 0
    assert list(Path(where["tensorboard"]).glob("events.out.tfevents.*"))

    cli = [sys.executable, "-m", "raysparse"]
    run_env = {**env, "PYTHONPATH": str(REPO)}
    pulled = tmp_path / "laptop" / "model"
    done = subprocess.run(
        [*cli, "pull", where["model"], "--to", str(pulled)], env=run_env, text=True, capture_output=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in pulled.iterdir()) == sorted(p.name for p in model.iterdir())
    via_uri = tmp_path / "laptop" / "model-uri"
    done = subprocess.run(
        [*cli, "pull", f"file://{model}", "--to", str(via_uri)], env=run_env, text=True, capture_output=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (via_uri / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()

    sample = REPO / "raysparse" / "resources" / "sample"
    evaluated = subprocess.run(
        [
            *cli,
            "evaluate",
            "--model",
            str(pulled),
            "--beir",
            str(sample),
            "--no-baseline",
            "--out",
            str(tmp_path / "ev"),
        ],
        env=run_env,
        text=True,
        capture_output=True,
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["num_queries"] > 0
    exported = subprocess.run(
        [
            *cli,
            "export",
            "--model",
            f"file://{model}",
            "--out",
            str(tmp_path / "export"),
            "--format",
            "torchscript",
        ],
        env=run_env,
        text=True,
        capture_output=True,
        timeout=600,
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert f"manifest: {tmp_path / 'export' / 'manifest.json'}" in exported.stdout.splitlines()
