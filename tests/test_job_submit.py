"""`ray job submit ... -- python jobs/mine.py` against a real `ray start --head` cluster (with its dashboard).

The head runs with ``--block`` in its own process group, and the test stops exactly that group at the end instead of
``ray stop`` (which kills every Ray process on the machine, including other users' clusters on a shared host).
Every port is picked free and the session directory is private, so it does not collide with other Ray instances.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


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

    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    dash, gcs = free_port(), free_port()
    session_dir = tempfile.mkdtemp(
        prefix="rs-job-", dir="/tmp"
    )  # short: Ray's socket paths have a length limit
    head = subprocess.Popen(
        [
            ray_cli(),
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            f"--port={gcs}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--temp-dir={session_dir}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: we stop exactly what we started
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_for_dashboard(url, head)
        excludes = [".git", "**/__pycache__", "outputs", "runs", ".venv", "*.parquet", ".ruff_cache"]
        # The job agent starts a little after the dashboard answers (slowly on a loaded machine): retry only that.
        for _attempt in range(12):
            submit = subprocess.run(
                [
                    ray_cli(),
                    "job",
                    "submit",
                    f"--address={url}",
                    f"--working-dir={REPO}",
                    f"--runtime-env-json={json.dumps({'excludes': excludes})}",
                    "--",
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
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=480,
            )
            if "No available agent" not in submit.stdout + submit.stderr:
                break
            time.sleep(10)
        log = submit.stdout + submit.stderr
        assert submit.returncode == 0, log[-4000:]
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
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait(timeout=30)
        shutil.rmtree(session_dir, ignore_errors=True)
