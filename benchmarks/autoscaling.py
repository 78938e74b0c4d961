"""Scale-up and scale-down times of cluster.yaml's node types on a real Ray autoscaler (fake multi-node provider).

Not a test: run ``python benchmarks/autoscaling.py`` (``--help`` for options). It starts the autoscaling head of
tests/autoscaling_harness.py (cluster.yaml's node types, CPUs scaled to this machine, both worker types at 0 nodes)
and, for each worker type and repeat, with no node of that type running:

  demand       a driver on the head submits one task asking for the type's pool (``{cpu_pool: 1}`` /
               ``{gpu_pool: 1}``, what ``mining.resources`` / ``train.resources`` ask for); the clock starts here;
  node up      the new node's raylet registers with the GCS (its ``start_time_ms``);
  first task   the task starts running on that node (its own ``time.time()``);
  released     the task has ended and the node is idle; the autoscaler terminates it after ``idle_timeout_minutes``
               (the node's ``end_time_ms``). ``released - idle timeout`` is the autoscaler's own delay.

A fake node is a raylet started on this machine by the autoscaler's monitor process, so "node up" measures the
autoscaler's reaction (update loop, launch decision) and a raylet start, not a cloud VM boot (minutes on EC2: see
docs/deployment.md). The results file records the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from autoscaling_harness import FakeAutoscalingHead  # noqa: E402

POOLS = {"cpu_worker": {"cpu_pool": 1}, "gpu_worker": {"gpu_pool": 1}}


def measure(head: FakeAutoscalingHead, node_type: str, timeout: float) -> dict[str, float]:
    import ray

    pool = POOLS[node_type]
    (name,) = pool
    assert not head.alive_nodes(name), f"a {node_type} is still up: the measurement needs zero to start from"
    known = {n["node_id"] for n in head.nodes()}

    @ray.remote(num_cpus=0.5, resources=pool)
    def probe() -> tuple[float, str, float]:
        start = time.time()
        time.sleep(1.0)  # a short task, like one mining batch
        return start, ray.get_runtime_context().get_node_id(), time.time()

    t0 = time.time()
    started, node_id, ended = ray.get(probe.remote(), timeout=timeout)
    node = next(n for n in head.nodes() if n["node_id"] == node_id)
    assert node_id not in known, "the task ran on a node that existed before the demand"
    head.wait_until(
        lambda: next(n for n in head.nodes() if n["node_id"] == node_id)["state"] == "DEAD",
        timeout,
        what=f"{node_type} release",
    )
    dead = next(n for n in head.nodes() if n["node_id"] == node_id)
    return {
        "node_up_s": node["start_time_ms"] / 1000 - t0,
        "first_task_s": started - t0,
        "released_s": dead["end_time_ms"] / 1000 - ended,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="measurements per node type (default 3)")
    parser.add_argument(
        "--idle-timeout-min",
        type=float,
        default=0.25,
        help="the autoscaler's idle_timeout_minutes (default 0.25 = 15 s; cluster.yaml's 10 would make each "
        "repeat wait 10 minutes)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="per-step time limit in seconds")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    args = parser.parse_args(argv)

    import ray

    load_before = os.getloadavg()
    rows: dict[str, list[dict[str, float]]] = {t: [] for t in POOLS}
    with FakeAutoscalingHead(idle_timeout_minutes=args.idle_timeout_min) as head:
        cfg_types = {
            t: " " + ", ".join(f"{k} {v}" for k, v in spec["resources"].items() if k != "object_store_memory")
            for t, spec in head.config["available_node_types"].items()
        }
        for attempt in range(3):  # connecting times out now and then at load 15+ on 2 cores
            try:
                ray.init(address=head.gcs_address, log_to_driver=False)
                break
            except ConnectionError:
                if attempt == 2:
                    raise
                time.sleep(10)
        try:
            for _ in range(args.repeats):
                for node_type in POOLS:
                    row = measure(head, node_type, args.timeout)
                    rows[node_type].append(row)
                    print(node_type, {k: round(v, 1) for k, v in row.items()}, flush=True)
        finally:
            ray.shutdown()
    load_after = os.getloadavg()

    idle_s = args.idle_timeout_min * 60
    lines = [
        f"Idle timeout {idle_s:.0f} s; median (min-max) of {args.repeats} scale-ups and scale-downs per node type, "
        "each from zero nodes of that type.",
        "",
        "| node type (scaled) | node up after demand | first task on the new node | released after its last task "
        "| released - idle timeout |",
        "|---|---|---|---|---|",
    ]

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"

    for node_type, got in rows.items():
        lines.append(
            f"| `{node_type}`{cfg_types[node_type]} | {cell([r['node_up_s'] for r in got])} | {cell([r['first_task_s'] for r in got])} "
            f"| {cell([r['released_s'] for r in got])} | {cell([r['released_s'] - idle_s for r in got])} |"
        )
    machine = (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Ray {ray.__version__}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after."
    )
    command = " ".join(["python benchmarks/autoscaling.py", *(argv if argv is not None else sys.argv[1:])])
    about = (
        'A "node" is a raylet the autoscaler starts on this machine: "node up" is the autoscaler\'s reaction '
        "plus a raylet start, not a cloud VM boot. When the load average (last line) is above the core count, the "
        "times include waiting for CPU. See "
        "[docs/deployment.md](../../docs/deployment.md#autoscaling-measured-on-rays-own-autoscaler) and the module "
        "docstring of benchmarks/autoscaling.py for what each column times."
    )
    title = "# Autoscaling: cluster.yaml's node types on Ray's autoscaler (fake multi-node provider)"
    text = "\n".join([title, "", about, "", "Command:", "", f"`{command}`", "", *lines, "", machine])
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
