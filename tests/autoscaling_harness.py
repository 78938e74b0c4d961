"""An autoscaling Ray head built from cluster.yaml's node types, on this machine (Ray's fake multi-node provider).

Ray's ``ray.cluster_utils.AutoscalingCluster`` runs the real autoscaler (the monitor process started by
``ray start --head --autoscaling-config=...``) with the ``fake_multinode`` provider, whose "nodes" are raylets started
on this machine. We use the same provider and the same start command but not the class itself: its ``start()`` and
``shutdown()`` run ``ray stop --force``, which kills every Ray process on the machine (other users' clusters on a
shared host), and it reads an example YAML that the pip wheel does not ship. Here:

- node types come from ``cluster.yaml``: same names, same custom resources, same ``min_workers``; ``max_workers``
  too, optionally capped (``max_workers_cap``) because every fake node is a raylet on a 2-core machine;
- CPU counts are scaled: a node type gets ``ceil(vCPUs * cpu_scale)`` CPUs (the vCPUs of its EC2 instance type), and
  a custom resource whose amount equals the instance's vCPUs ("one unit per CPU", like ``cpu_pool: 16`` on a
  16-vCPU c6i.4xlarge) is scaled with them; others (``gpu_pool: 1``, one per GPU) are kept. No node has a real GPU
  here: ``gpu_pool`` is the stand-in that training asks for;
- the head advertises cluster.yaml's head resources (``CPU: 0``) under the type name the fake provider requires
  (``ray.head.default``), and runs with ``RAYSPARSE_PLACEMENT_WAIT_S`` as cluster.yaml's head start command exports it;
- each fake node unpacks runtime envs into its own directory (``autoscaler_provider/per_node_fake_provider.py``,
  loaded as an ``external`` provider): with the shared one, a node joining deletes the job's working directory under
  the workers and driver already running in it, which separate machines never do;
- every port is free-picked and the temp dir is private, so it never collides with other Ray instances;
  :meth:`FakeAutoscalingHead.stop` ends the head's process group and then every process that still carries this
  head's temp dir (the autoscaler's raylets and their workers), by pid.

The idle timeout is the one thing shortened by default (cluster.yaml's 10 minutes would make every test wait 10
minutes for a scale-down); pass ``idle_timeout_minutes`` to keep another value.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray_head import JOB_EXCLUDES, free_port, ray_cli, start_head

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
FAKE_HEAD_TYPE = "ray.head.default"  # the fake provider hard-codes the head's node type name
# vCPUs of the EC2 instance types cluster.yaml uses (Ray's AWS provider detects these; the fake one cannot)
INSTANCE_VCPUS = {"m6i.2xlarge": 8, "c6i.4xlarge": 16, "g5.2xlarge": 8}
DEFAULT_CPU_SCALE = 1 / 8  # c6i.4xlarge (16 vCPUs) -> 2 CPUs, g5.2xlarge (8 vCPUs) -> 1 CPU
DEFAULT_IDLE_TIMEOUT_MIN = 0.25  # 15 s instead of cluster.yaml's 10 minutes
FAKE_PROVIDER_DIR = Path(__file__).resolve().parent / "autoscaler_provider"  # on the autoscaler's PYTHONPATH
FAKE_PROVIDER_MODULE = "per_node_fake_provider"


def placement_wait_from_cluster_yaml(cfg: dict[str, Any]) -> str:
    """The value cluster.yaml's head start command exports as RAYSPARSE_PLACEMENT_WAIT_S (job drivers inherit it)."""
    for cmd in cfg.get("head_start_ray_commands", []):
        m = re.search(r"RAYSPARSE_PLACEMENT_WAIT_S=(\d+(?:\.\d+)?)", cmd)
        if m:
            return m.group(1)
    raise ValueError("cluster.yaml: head_start_ray_commands export no RAYSPARSE_PLACEMENT_WAIT_S")


def scaled_node_types(
    cfg: dict[str, Any],
    cpu_scale: float = DEFAULT_CPU_SCALE,
    max_workers_cap: int | None = None,
    object_store_mb: int = 200,
) -> dict[str, dict[str, Any]]:
    """cluster.yaml's worker node types for the fake provider (see the module docstring for the scaling rules)."""
    head_type = cfg["head_node_type"]
    out: dict[str, dict[str, Any]] = {}
    for name, spec in cfg["available_node_types"].items():
        if name == head_type:
            continue
        instance = spec.get("node_config", {}).get("InstanceType")
        if instance not in INSTANCE_VCPUS:
            raise ValueError(
                f"cluster.yaml: available_node_types.{name}.node_config.InstanceType={instance!r}: "
                f"vCPUs unknown to the harness (add it to INSTANCE_VCPUS)"
            )
        vcpus = INSTANCE_VCPUS[instance]
        cpus = max(1, math.ceil(vcpus * cpu_scale))
        resources: dict[str, Any] = {"CPU": cpus}
        for res, amount in spec.get("resources", {}).items():
            if res == "CPU":
                resources["CPU"] = max(0, math.ceil(float(amount) * cpu_scale)) if amount else 0
            elif float(amount) == vcpus:
                resources[res] = cpus  # one unit per CPU: scaled with the CPUs
            else:
                resources[res] = amount
        resources["object_store_memory"] = object_store_mb * 1024**2
        max_workers = int(spec.get("max_workers", cfg.get("max_workers", 0)))
        if max_workers_cap is not None:
            max_workers = min(max_workers, max_workers_cap)
        out[name] = {
            "resources": resources,
            "node_config": {},
            "min_workers": int(spec.get("min_workers", 0)),
            "max_workers": max_workers,
        }
    return out


def fake_autoscaling_config(
    cluster_yaml: Path = CLUSTER_YAML,
    *,
    gcs_address: str,
    cpu_scale: float = DEFAULT_CPU_SCALE,
    max_workers_cap: int | None = None,
    idle_timeout_minutes: float | None = DEFAULT_IDLE_TIMEOUT_MIN,
) -> dict[str, Any]:
    """The autoscaling config ``ray start --head --autoscaling-config`` gets: cluster.yaml's cluster-wide settings and
    node types, with the fake provider in place of AWS (its keys as in Ray's fake_multi_node example)."""
    cfg = yaml.safe_load(cluster_yaml.read_text())
    workers = scaled_node_types(cfg, cpu_scale, max_workers_cap)
    head = cfg["available_node_types"][cfg["head_node_type"]]
    head_resources = {k: v for k, v in head.get("resources", {}).items()}
    return {
        "cluster_name": f"{cfg['cluster_name']}-fake-{uuid.uuid4().hex[:6]}",
        "max_workers": min(int(cfg["max_workers"]), sum(t["max_workers"] for t in workers.values())),
        "upscaling_speed": cfg.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": cfg["idle_timeout_minutes"]
        if idle_timeout_minutes is None
        else idle_timeout_minutes,
        "provider": {
            # Ray's fake_multinode provider, each node with its own runtime-env directory (see that module)
            "type": "external",
            "module": f"{FAKE_PROVIDER_MODULE}.PerNodeRuntimeEnvFakeProvider",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,  # else the provider assumes port 6379
        },
        "available_node_types": {
            FAKE_HEAD_TYPE: {"resources": head_resources, "node_config": {}, "max_workers": 0},
            **workers,
        },
        "head_node_type": FAKE_HEAD_TYPE,
        "auth": {},
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "_placement_wait_s": placement_wait_from_cluster_yaml(cfg),  # popped before writing
    }


# "[2026-12-01 18:16:12,853 I 17937 17937] (raylet) accessor.cc:475: ..." and the banner Ray prints above them
_RAY_COMPONENT_LINE = re.compile(
    r"^\s*\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\]|\((raylet|gcs_server)\) (Raylet|Last \d+ lines)"
)


@dataclass
class JobRun:
    """A job submitted with ``ray job submit --no-wait``; :meth:`wait` polls its status and returns its logs."""

    submission_id: str
    dashboard_url: str
    submitted_at: float  # time.time() when the CLI accepted it
    submit_output: str = ""

    def status(self) -> str:
        from ray.job_submission import JobSubmissionClient

        return str(JobSubmissionClient(self.dashboard_url).get_job_status(self.submission_id).value)

    def logs(self) -> str:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard_url).get_job_logs(self.submission_id)

    def driver_output(self, log: str | None = None, chars: int = 4000) -> str:
        """The tail of what the job's driver printed, without the raylet/GCS lines Ray forwards into job logs
        (after a node loss they fill the whole tail and hide the driver's traceback)."""
        log = self.logs() if log is None else log
        kept = [line for line in log.splitlines() if not _RAY_COMPONENT_LINE.search(line)]
        return "\n".join(kept)[-chars:]

    def wait(self, timeout: float) -> tuple[str, str]:
        """(final status, logs); raises TimeoutError (with the log tail) when it is still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status in {"SUCCEEDED", "FAILED", "STOPPED"}:
                return status, self.logs()
            time.sleep(2)
        raise TimeoutError(
            f"job {self.submission_id} still {self.status()} after {timeout:.0f} s:\n{self.driver_output()}"
        )

    def stop(self) -> None:
        from ray.job_submission import JobSubmissionClient

        with contextlib.suppress(Exception):  # the head may be gone already
            JobSubmissionClient(self.dashboard_url).stop_job(self.submission_id)


@dataclass
class FakeAutoscalingHead:
    """A ``ray start --head --block`` with the real autoscaler and the fake provider; use as a context manager."""

    cpu_scale: float = DEFAULT_CPU_SCALE
    max_workers_cap: int | None = None
    idle_timeout_minutes: float | None = DEFAULT_IDLE_TIMEOUT_MIN
    cluster_yaml: Path = CLUSTER_YAML
    env: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict, init=False)
    temp_dir: str = field(default="", init=False)
    gcs_address: str = field(default="", init=False)
    dashboard_url: str = field(default="", init=False)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _jobs: list[JobRun] = field(default_factory=list, init=False, repr=False)

    # ------------------------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeAutoscalingHead:
        # one retry with fresh ports: on a loaded shared machine a head occasionally fails to come up (a port taken
        # between picking and binding, a GCS start timeout); the error of the last attempt is raised
        for attempt in (1, 2):
            try:
                self.start()
                return self
            except BaseException as err:
                self.stop()
                if attempt == 2 or not isinstance(err, RuntimeError | TimeoutError):
                    raise
                print(f"autoscaling head failed to start, retrying once: {str(err)[:2000]}", file=sys.stderr)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 420.0) -> None:
        import ray._private.services as services

        ip = services.get_node_ip_address()
        gcs, dash = free_port(), free_port()
        self.gcs_address = f"{ip}:{gcs}"
        self.dashboard_url = f"http://127.0.0.1:{dash}"
        # short: Ray's socket paths have a length limit; private: our processes are found by it at stop()
        self.temp_dir = tempfile.mkdtemp(prefix="rs-as-", dir="/tmp")
        self.config = fake_autoscaling_config(
            self.cluster_yaml,
            gcs_address=self.gcs_address,
            cpu_scale=self.cpu_scale,
            max_workers_cap=self.max_workers_cap,
            idle_timeout_minutes=self.idle_timeout_minutes,
        )
        wait_s = self.config.pop("_placement_wait_s")
        config_path = Path(self.temp_dir) / "autoscaling.json"
        config_path.write_text(json.dumps(self.config))
        head_cpus = self.config["available_node_types"][FAKE_HEAD_TYPE]["resources"].get("CPU", 0)
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_FAKE_CLUSTER": "1",  # the fake provider refuses to start without it
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # as AutoscalingCluster sets it (default 5 s)
            "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "300",  # default 60 s: too short at load 15+ on 2 cores
            # the raylet aborts when its dashboard agent takes longer than this to come up (seen here at load 16+:
            # "Timed out waiting for file .../dashboard_agent_listen_port_*", then `ray start --block` stops all)
            "RAY_agent_register_timeout_ms": "300000",
            "RAYSPARSE_PLACEMENT_WAIT_S": wait_s,  # as cluster.yaml's head start command exports it
            # the autoscaler imports the provider from there (a directory holding that module alone)
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(FAKE_PROVIDER_DIR), os.environ.get("PYTHONPATH")) if p
            ),
            **self.env,
        }
        env.pop("RAY_ADDRESS", None)
        self._proc = start_head(
            env,
            gcs_port=gcs,
            dashboard_port=dash,
            temp_dir=self.temp_dir,
            num_cpus=head_cpus,
            extra=[f"--autoscaling-config={config_path}", f"--object-store-memory={200 * 1024**2}"],
        )
        self._wait_for_dashboard(timeout)

    def _wait_for_dashboard(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                out = self._proc.stdout.read() if self._proc.stdout else ""
                errors = [ln for ln in out.splitlines() if re.search(r"Error|Exception|Failed|failed", ln)]
                raise RuntimeError(
                    f"ray start --head exited with {self._proc.returncode}:\n"
                    + "\n".join(errors[-15:])
                    + f"\n...\n{out[-1500:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"Ray dashboard at {self.dashboard_url} did not answer within {timeout:.0f} s")

    def own_pids(self) -> list[int]:
        """Every process whose command line or environment names this head's private temp dir."""
        if not self.temp_dir:
            return []
        needle = self.temp_dir.encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "cmdline").read_bytes() or needle in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        for job in self._jobs:
            if self._proc is not None and self._proc.poll() is None:
                job.stop()
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)  # `ray start --block` stops its own processes
                self._proc.wait(timeout=60)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=30)
        # the autoscaler's raylets (and their workers) outlive the monitor: end them by pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.own_pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if pids:
                time.sleep(3)
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        self._proc = None
        self._jobs = []

    # ------------------------------------------------------------------------------------------------ state
    def nodes(self) -> list[dict[str, Any]]:
        """All nodes the GCS knows (alive and dead), from the state API of the head's dashboard."""
        from ray.util.state import list_nodes

        rows = list_nodes(address=self.dashboard_url, limit=1000, raise_on_missing_output=False, detail=True)
        return [n.__dict__ if hasattr(n, "__dict__") else dict(n) for n in rows]

    def alive_nodes(self, resource: str | None = None) -> list[dict[str, Any]]:
        return [
            n
            for n in self.nodes()
            if n["state"] == "ALIVE" and (resource is None or resource in (n.get("resources_total") or {}))
        ]

    def actors(self, class_contains: str, job_id: str | None = None) -> list[dict[str, Any]]:
        from ray.util.state import list_actors

        rows = list_actors(
            address=self.dashboard_url, limit=10000, detail=True, raise_on_missing_output=False
        )
        rows = [a.__dict__ if hasattr(a, "__dict__") else dict(a) for a in rows]
        return [
            a
            for a in rows
            if class_contains in (a.get("class_name") or "") and (job_id is None or a.get("job_id") == job_id)
        ]

    def job_info(self, submission_id: str) -> Any:
        """The job's details (status, start_time / end_time in ms, job_id) from the job API."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard_url).get_job_info(submission_id)

    def job_id(self, submission_id: str) -> str | None:
        """The Ray job id (hex) of a submission, for filtering actors."""
        from ray.job_submission import JobSubmissionClient

        details = JobSubmissionClient(self.dashboard_url).get_job_info(submission_id)
        return details.job_id

    def wait_until(self, predicate, timeout: float, interval: float = 1.0, what: str = "condition") -> float:
        """Poll ``predicate`` until true; returns the time (time.time()) it became true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return time.time()
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"the head exited with {self._proc.returncode} while waiting for {what}")
            time.sleep(interval)
        raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")

    def node_pids(self, node_id: str) -> list[int]:
        """The processes of one fake node (its raylet and workers): the provider starts them with
        RAY_OVERRIDE_NODE_ID_FOR_TESTING=<node id> in their environment."""
        needle = f"RAY_OVERRIDE_NODE_ID_FOR_TESTING={node_id}".encode()
        pids = []
        for pid in self.own_pids():
            try:
                if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    pids.append(pid)
            except OSError:
                continue
        return pids

    def kill_node(self, node_id: str, extra_pids: set[int] | None = None) -> int:
        """SIGKILL a fake node's processes and everything they started (a spot instance taken away); returns how
        many were killed. A worker started by the raylet does not carry the node's environment variable, and a Train
        worker left alive went on training to the end after its raylet was gone; so the node's workers (from the
        state API) and every child process go too."""
        import psutil
        from ray.util.state import list_workers

        pids = set(self.node_pids(node_id)) | set(extra_pids or ())
        with contextlib.suppress(Exception):  # and every worker the GCS places on that node, by its pid
            workers = list_workers(
                address=self.dashboard_url, filters=[("node_id", "=", node_id)], limit=10000, detail=True,
                raise_on_missing_output=False,
            )  # fmt: skip
            pids.update(int(w.pid) for w in workers if getattr(w, "pid", None) and w.pid != os.getpid())
        for pid in list(pids):
            with contextlib.suppress(psutil.Error):
                pids.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    # ------------------------------------------------------------------------------------------------ jobs
    def runtime_env_dirs(self) -> set[str]:
        """The runtime-env directory names in this head's session: ``runtime_resources`` (the head's) and one
        ``runtime_resources_<node id>`` per fake node that unpacked a job's files."""
        return {p.name for p in Path(self.temp_dir).glob("session_*/runtime_resources*") if p.is_dir()}

    def submit(self, entrypoint: list[str], env_vars: dict[str, str] | None = None) -> JobRun:
        """``ray job submit --no-wait --working-dir <repo> -- ENTRYPOINT`` against this head."""
        runtime_env: dict[str, Any] = {"excludes": JOB_EXCLUDES}
        if env_vars:
            runtime_env["env_vars"] = env_vars
        sid = f"rs-{uuid.uuid4().hex[:10]}"
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        res = None
        out = ""
        cmd = [
            ray_cli(),
            "job",
            "submit",
            "--no-wait",
            f"--address={self.dashboard_url}",
            f"--submission-id={sid}",
            f"--working-dir={REPO}",
            f"--runtime-env-json={json.dumps(runtime_env)}",
            "--",
            *entrypoint,
        ]
        # the job agent starts a little after the dashboard answers, and on a loaded machine the dashboard can drop
        # a request: retry those, but never submit twice (a dropped reply may still have created the job)
        for _attempt in range(20):
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError("the autoscaling head is not running (see its raylet.out for the cause)")
            try:
                res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
            except subprocess.TimeoutExpired:
                if self._submitted(sid):
                    break
                continue
            out = res.stdout + res.stderr
            if res.returncode == 0 or self._submitted(sid):
                break
            if not re.search(
                r"No available agent|Failed to connect to Ray|ConnectionError|Connection aborted", out
            ):
                break
            time.sleep(10)
        if not self._submitted(sid):
            code = res.returncode if res is not None else "timed out"
            raise RuntimeError(f"ray job submit failed ({code}):\n{out[-3000:]}")
        run = JobRun(sid, self.dashboard_url, time.time(), out)
        self._jobs.append(run)
        return run

    def _submitted(self, submission_id: str) -> bool:
        from ray.job_submission import JobSubmissionClient

        try:
            JobSubmissionClient(self.dashboard_url).get_job_info(submission_id)
            return True
        except Exception:
            return False
