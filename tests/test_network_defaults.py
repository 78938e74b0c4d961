"""Network defaults: a Ray instance a command starts for itself listens on 127.0.0.1 only, and no command turns Ray's
authentication off behind the user's back.

The run happens in a child process without RAY_AUTH_MODE (the suite's conftest sets ``disabled`` for its private
instances), so Ray's own default applies there; its token comes from a file of the test (RAY_AUTH_TOKEN_PATH), so
nothing is written to the machine's ~/.ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What a stage does: start Ray through raysparse.ray_utils.init_ray, run tasks and a Ray Data pipeline, then report
# every listening TCP socket of this process and its descendants (GCS, raylet, workers, agents, dashboard).
SCRIPT = r"""
import json, os, sys
import psutil
import ray
from raysparse.ray_utils import init_ray

init_ray(num_cpus=1)  # a private local instance, as the CLI's --workers / synonyms paths start one
ray.get([ray.remote(lambda: os.getpid()).remote() for _ in range(2)])
ray.data.range(100).map_batches(lambda b: b).materialize()
me = psutil.Process()
listening = []
for proc in [me, *me.children(recursive=True)]:
    try:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                listening.append([proc.name(), conn.laddr.ip, conn.laddr.port])
    except psutil.Error:
        pass
print(json.dumps({
    "listening": listening,
    "auth_mode": os.environ.get("RAY_AUTH_MODE"),
    "node_ip": ray.util.get_node_ip_address(),
}))
ray.shutdown()
"""


@pytest.mark.slow
def test_a_local_run_listens_on_loopback_only_and_keeps_ray_auth(tmp_path):
    import secrets

    token = tmp_path / "ray_token"
    token.write_text(secrets.token_hex(32), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(
        RAY_AUTH_TOKEN_PATH=str(token),  # else Ray would generate one into ~/.ray/auth_token
        PYTHONPATH=str(REPO),
        RAY_USAGE_STATS_ENABLED="0",
        # a loaded 2-core machine can take minutes to start the raylet's agents
        RAY_raylet_start_wait_time_s="600",
        RAY_agent_register_timeout_ms="600000",
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=1200, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    listening = report["listening"]
    names = {name for name, _, _ in listening}
    assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), listening
    loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    exposed = [entry for entry in listening if entry[1] not in loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert report["node_ip"] == "127.0.0.1"
    # nothing forced authentication off: Ray's default for a new local instance (token) applied
    assert report["auth_mode"] == "token"


def test_no_raysparse_code_or_script_forces_ray_auth_off():
    offenders = []
    for path in [*REPO.glob("raysparse/**/*.py"), *REPO.glob("jobs/*.py"), *REPO.glob("scripts/*.sh")]:
        text = path.read_text(encoding="utf-8")
        if "RAY_AUTH_MODE" in text and "disabled" in text.split("RAY_AUTH_MODE", 1)[1][:40]:
            offenders.append(str(path.relative_to(REPO)))
    for path in (REPO / "cluster.yaml", *REPO.glob("deploy/kuberay/*.yaml")):
        if "RAY_AUTH_MODE" in path.read_text(encoding="utf-8"):
            text = path.read_text(encoding="utf-8")
            if "disabled" in text:
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders


def test_cluster_configs_put_token_auth_on_where_the_jobs_api_is_reachable():
    import yaml

    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text(encoding="utf-8"))
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in cluster[key] if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH=" in start, start
    token_path = "~/.ray/raysparse_auth_token"
    assert token_path in cluster["file_mounts"], cluster["file_mounts"]
    assert f"RAY_AUTH_TOKEN_PATH={token_path}" in " ".join(cluster["head_start_ray_commands"])

    raycluster = yaml.safe_load((REPO / "deploy" / "kuberay" / "raycluster.yaml").read_text(encoding="utf-8"))
    assert raycluster["spec"]["authOptions"] == {"mode": "token"}
    assert raycluster["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"  # 8265 not on a public address
