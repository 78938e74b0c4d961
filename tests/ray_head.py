"""A private ``ray start --head --block`` for tests that submit real jobs (tests/test_job_submit.py, the autoscaling
harness): free ports, a short temp dir, its own process group so that stopping it ends exactly what it started."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# what `ray job submit --working-dir <repo>` leaves out of the uploaded package
JOB_EXCLUDES = [
    ".git",
    "**/__pycache__",
    "outputs",
    "runs",
    ".venv",
    "*.parquet",
    ".ruff_cache",
    "build",
    "dist",
]

# the main job at test size: a few steps of a tiny backbone
SMALL_JOB_OVERRIDES = (
    "train.max_steps=4",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "model.vocab_size=2000",
    "model.hidden_size=32",
    "model.intermediate_size=64",
)


def as_sets(overrides: Sequence[str]) -> list[str]:
    """``["--set", o1, "--set", o2, ...]`` for the CLI and the jobs."""
    return [x for o in overrides for x in ("--set", o)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def start_head(
    env: dict[str, str],
    *,
    gcs_port: int,
    dashboard_port: int,
    temp_dir: str,
    num_cpus: int,
    extra: Sequence[str] = (),
) -> subprocess.Popen:
    """``ray start --head --block`` on 127.0.0.1 with every port chosen here (two heads never collide) and
    ``extra`` arguments (e.g. ``--autoscaling-config``); stdout and stderr merged into ``.stdout``."""
    return subprocess.Popen(
        [
            ray_cli(),
            "start",
            "--head",
            "--block",
            f"--num-cpus={num_cpus}",
            f"--port={gcs_port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stop_head ends exactly what it started
    )


def stop_head(head: subprocess.Popen) -> None:
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
