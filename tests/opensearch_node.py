"""A node from scripts/opensearch.sh for a test module or session: started with the given flags on a dedicated port,
stopped at the end only if this call started it. Under CI=true a node that cannot start fails the tests (CI
installs everything they need); elsewhere they are skipped with the script's error."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "opensearch.sh"


@contextlib.contextmanager
def opensearch_node(port: int, *flags: str, url: str | None = None, timeout: float = 1800) -> Iterator[str]:
    """``scripts/opensearch.sh start FLAGS --fresh --port PORT``; yields its URL (the script's last stdout line).
    A given ``url`` (a node the caller was pointed at, e.g. by an environment variable) is yielded as it is."""
    if url:
        yield url
        return
    proc = subprocess.run(
        ["bash", str(SCRIPT), "start", *flags, "--fresh", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        command = " ".join(["start", *flags])
        msg = f"scripts/opensearch.sh {command} failed:\n{proc.stderr[-3000:]}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    started = "already running" not in proc.stderr
    try:
        yield proc.stdout.strip().splitlines()[-1]
    finally:
        if started:
            subprocess.run(["bash", str(SCRIPT), "stop", "--port", str(port)], capture_output=True)
