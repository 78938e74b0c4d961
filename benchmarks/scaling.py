"""Scaling on a simulated multi-node Ray cluster: mining q/s vs number of nodes, training steps/s vs workers.

Not a test: run ``python benchmarks/scaling.py`` (``--help`` for sizes). Every configuration gets a fresh
``ray.cluster_utils.Cluster`` on this machine: a head node with 0 CPUs (it schedules nothing, like cluster.yaml's
head) plus N worker nodes with 1 CPU each. Each node is a real raylet with its own object store, so the bm25s
index really is shipped to every node and Ray Data really spreads batches over actors on different nodes.

Caveat, and the reason the table shows overhead rather than speed-up: all the "nodes" are processes on the same
machine and share its cores (2 on the project VM). Going from 2 to 4 nodes adds actors, not CPUs. What the table
does show: the work spreads (batches and actors per node are counted) and what each extra node costs or saves.

What is timed:
  mining   ``raysparse.mining.mine(ray=True)`` on pooled Korean data (the collection of benchmarks/mining.py:
           KLUE-MRC + MS MARCO ko + petitions + news + Python-docs segments; paraKQC / question-pair queries),
           mining phase only (actor pool start-up included, index build excluded), for 1..--max-nodes nodes, same
           data and config; ratio vs 1 node from the same run. Batches per node are counted by a thin subclass of
           the mining actor that appends (node, pid, rows) to a file in a directory every node can see.
  training ``raysparse.training.run_training`` (Ray Train + DeepSpeed, tiny local backbone, the triples mined above)
           with 1 worker on a 1-node cluster and 2 workers on a 2-node cluster: median step time over the steps
           after the first (from each rank's progress records), steps/s and training queries/s (all workers).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mining import pooled_collection  # noqa: E402  (benchmarks/mining.py: the same pooled collection)

import raysparse.mining.stage as mining_module  # noqa: E402  (mine() looks its actor class up here)

OBJECT_STORE_BYTES = 300 * 1024**2  # per node: 4 nodes x 300 MB stays well inside a laptop's /dev/shm


class CountingMiner(mining_module._MinerActor):
    """The real mining actor, plus one line per batch: which node and process mined how many queries.

    The log directory is passed through the environment (every "node" here runs on one machine, like an NFS
    mount on a real cluster); appends of one short line are atomic, so actors never interleave.
    """

    def __call__(self, batch: Any) -> Any:
        import ray

        out = super().__call__(batch)
        node = ray.get_runtime_context().get_node_id()
        with open(Path(os.environ["RAYSPARSE_SCALING_LOG"]) / "batches.jsonl", "a") as f:
            f.write(json.dumps({"node": node, "pid": os.getpid(), "rows": batch.num_rows}) + "\n")
        return out


def start_cluster(nodes: int, log_dir: Path) -> tuple[Any, list[str]]:
    """A fresh Cluster: 0-CPU head + ``nodes`` 1-CPU workers; returns it and the worker node ids in order."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    env = {"env_vars": {"RAYSPARSE_SCALING_LOG": str(log_dir)}}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": OBJECT_STORE_BYTES},
    )
    workers = [cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES) for _ in range(nodes)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, runtime_env=env)
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) != nodes + 1:
        raise RuntimeError(f"expected {nodes + 1} alive nodes, Ray sees {len(alive)}")
    return cluster, [w.node_id for w in workers]


def stop_cluster(cluster: Any) -> None:
    import ray

    ray.shutdown()
    cluster.shutdown()


def mine_on(nodes: int, data: Any, index: Any, cfg: Any, work: Path) -> dict[str, Any]:
    """One mining run on a fresh ``nodes``-node cluster; q/s of the mining phase and the per-node batch counts."""
    log_dir = work / f"log-{nodes}"
    log_dir.mkdir(parents=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    cluster, worker_ids = start_cluster(nodes, log_dir)
    startup_s = time.perf_counter() - t0
    # mine() builds its actor pool from the module's _MinerActor: point it at the counting subclass for this run
    original = mining_module._MinerActor
    mining_module._MinerActor = CountingMiner
    try:
        report = mining_module.mine(
            data, cfg, work / f"mined-{nodes}", ray=True, index=index, show_progress=False
        )
    finally:
        mining_module._MinerActor = original
        stop_cluster(cluster)
    records = [json.loads(line) for line in (log_dir / "batches.jsonl").read_text().splitlines()]
    label = {nid: f"n{i + 1}" for i, nid in enumerate(worker_ids)}
    batches = Counter(label.get(r["node"], "head") for r in records)
    rows = Counter(label.get(r["node"], "head") for r in records for _ in range(r["rows"]))
    actors = Counter(
        label.get(r["node"], "head") for r in {(r["node"], r["pid"]): r for r in records}.values()
    )
    return {
        "nodes": nodes,
        "load": load,
        "qps": report.queries_per_second,
        "mining_s": report.timings["mining"],
        "queries": report.queries_mined,
        "workers": report.workers,
        "cluster_start_s": startup_s,
        "batches": dict(sorted(batches.items())),
        "rows": dict(sorted(rows.items())),
        "actors": dict(sorted(actors.items())),
        "triples": report.output,
    }


def train_on(
    nodes: int, workers: int, triples: str, backbone: str, steps: int, batch: int, work: Path
) -> dict:
    """Ray Train + DeepSpeed with ``workers`` workers on a fresh ``nodes``-node cluster; median step time."""
    from raysparse.config import load_config
    from raysparse.training import run_training

    out = work / f"train-{nodes}n-{workers}w"
    cfg = load_config(
        None,
        [
            *TINY_MODEL,
            f"name=scaling-{nodes}n-{workers}w",
            f"ray.storage_path={work / 'storage'}",
            f"train.num_workers={workers}",
            "train.cpus_per_worker=1",
            f"train.max_steps={steps}",
            f"train.checkpoint_every={steps}",
            f"train.eval_every={steps + 1}",
            f"train.batch_size={batch}",
            "train.negatives_per_query=1",
            "train.max_failures=0",
        ],
    )
    cluster, _ = start_cluster(nodes, work)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        run_training(cfg, triples, None, out, backbone_dir=backbone)
    finally:
        wall = time.perf_counter() - t0
        stop_cluster(cluster)
    step_times: list[float] = []
    pids = set()
    for rank in range(workers):
        recs = [json.loads(x) for x in (out / "progress" / f"rank{rank}.jsonl").read_text().splitlines() if x]
        times = [r["time"] for r in recs]
        # progress records are written at the end of each step: consecutive differences are steps 2..N
        step_times += [b - a for a, b in itertools.pairwise(times)]
        pids |= {r["pid"] for r in recs}
    median = statistics.median(step_times)
    return {
        "nodes": nodes,
        "workers": workers,
        "load": load,
        "step_s": median,
        "steps_per_s": 1.0 / median,
        "queries_per_s": workers * batch / median,
        "wall_s": wall,
        "worker_processes": len(pids),
    }


TINY_MODEL = [
    "model.vocab_size=2000",
    "model.hidden_size=64",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.intermediate_size=128",
    "model.max_query_length=16",
    "model.max_doc_length=64",
]


def machine_lines(load_start: tuple[float, float, float]) -> list[str]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "(unavailable)"

    keep = ("Architecture", "CPU(s)", "Model name", "Thread(s) per core", "Core(s) per socket", "Socket(s)")
    lscpu = [line for line in sh("lscpu").splitlines() if line.split(":")[0].strip() in keep]
    return [
        "Machine (`lscpu`, abridged):",
        "",
        "```",
        *lscpu,
        f"Python {platform.python_version()}; load average at start "
        f"{load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f} (1 / 5 / 15 min)",
        "```",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20000, help="pooled documents (default 20000)")
    parser.add_argument("--queries", type=int, default=10000, help="pooled queries (default 10000)")
    parser.add_argument("--max-nodes", type=int, default=4, help="mine on 1..N worker nodes (default 4)")
    parser.add_argument(
        "--batch-size", type=int, default=500, help="queries per Ray Data batch (default 500)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="mining runs per node count; best is kept")
    parser.add_argument(
        "--train-steps", type=int, default=8, help="training steps per run (0 skips training)"
    )
    parser.add_argument("--train-batch", type=int, default=8, help="queries per training worker per step")
    parser.add_argument(
        "--note", default="", help="a sentence for the caveat, e.g. what else ran on the machine"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling.md"))
    args = parser.parse_args()

    from raysparse.config import MiningConfig
    from raysparse.mining import Bm25Index

    load_start = os.getloadavg()
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cfg = MiningConfig(
        analyzer="bigram", batch_size=args.batch_size, shard_rows=args.batch_size, in_process_below=0
    )
    data = pooled_collection(args.docs, args.queries)
    print(f"pooled: {data.summary()}", flush=True)
    index = Bm25Index.build(data.corpus, cfg, show_progress=False)

    mining_rows: list[dict[str, Any]] = []
    train_rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="raysparse-scaling-") as tmp:
        work = Path(tmp)
        # repeats interleaved (1, 2, .., N, 1, 2, .., N): a load change on the machine hits every node count alike
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in range(1, args.max_nodes + 1)}
        for r in range(args.repeats):
            for nodes in runs:
                runs[nodes].append(mine_on(nodes, data, index, cfg, work / f"m{nodes}-{r}"))
                last = runs[nodes][-1]
                print(
                    f"{nodes} node(s): {last['qps']:,.0f} q/s, batches per node {last['batches']}", flush=True
                )
        for done in runs.values():
            best = max(done, key=lambda r: r["qps"])
            best["all_qps"] = [r["qps"] for r in done]
            best["all_load"] = [r["load"] for r in done]
            mining_rows.append(best)

        if args.train_steps > 0:
            from raysparse.backbone import build_local_backbone
            from raysparse.config import load_config
            from raysparse.training import load_triples

            triples = mining_rows[0]["triples"]
            texts = load_triples(triples, 1).texts()[:20000]  # plenty for a 2,000-piece tokenizer
            model_cfg = load_config(None, TINY_MODEL).model
            backbone = build_local_backbone(texts, model_cfg, work / "backbone")
            for nodes, workers in ((1, 1), (2, 2)):
                row = train_on(nodes, workers, triples, backbone, args.train_steps, args.train_batch, work)
                train_rows.append(row)
                print(
                    f"train {nodes} node(s) x {workers} worker(s): {row['steps_per_s']:.2f} steps/s",
                    flush=True,
                )
    load_end = os.getloadavg()

    base = mining_rows[0]["qps"]
    lines = [
        "# Scaling on a simulated multi-node cluster",
        "",
        f'**Caveat: every "node" below is a Ray node process on one {os.cpu_count()}-core machine.** Adding a '
        "node adds a raylet and an actor, not CPU, so throughput cannot scale linearly here: the table measures "
        "the overhead of more nodes and shows that the work spreads over them. On a real cluster each node brings "
        f"its own cores. Load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end (per run "
        f"below). {args.note}".rstrip(),
        "",
        f"Command: `python benchmarks/scaling.py --docs {args.docs} --queries {args.queries} "
        f"--max-nodes {args.max_nodes} --batch-size {args.batch_size} --repeats {args.repeats} "
        f"--train-steps {args.train_steps} --train-batch {args.train_batch}"
        + (f' --note "{args.note}"`' if args.note else "`"),
        "",
        f"`uptime` at start: `{uptime_start}`",
        "",
        *machine_lines(load_start),
        "",
        "## Mining (Ray Data actor pool, one actor per 1-CPU node, 0-CPU head)",
        "",
        f"Data: {data.summary()}; analyzer `{cfg.analyzer}`, top-K {cfg.top_k}, batch {cfg.batch_size}; "
        f"best of {args.repeats} runs per row (all runs listed); mining phase incl. actor start-up, index prebuilt.",
        "",
        "| nodes | queries/s | vs 1 node | all runs (q/s) | load avg at each run's start | actors per node "
        "| batches per node | queries per node | cluster start (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in mining_rows:
        lines.append(
            f"| {r['nodes']} | {r['qps']:,.0f} | {r['qps'] / base:.2f} | "
            f"{', '.join(f'{q:,.0f}' for q in r['all_qps'])} | {', '.join(f'{x:.1f}' for x in r['all_load'])} | "
            f"{_fmt(r['actors'])} | {_fmt(r['batches'])} | "
            f"{_fmt(r['rows'])} | {r['cluster_start_s']:.1f} |"
        )
    if train_rows:
        t_base = train_rows[0]["queries_per_s"]
        lines += [
            "",
            "## Training (Ray Train + DeepSpeed, tiny local backbone, 1 CPU per worker)",
            "",
            f"{args.train_steps} steps, {args.train_batch} queries per worker per step (1 positive + 1 mined "
            "negative each); step time = median over steps 2..N of each rank's progress records. DeepSpeed on CPU "
            "(gloo); with 2 workers the gradients are all-reduced between the two node processes every step.",
            "",
            "| nodes | workers | step (s) | steps/s | training queries/s (all workers) | vs 1 worker | run wall (s) "
            "| load avg at start |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in train_rows:
            lines.append(
                f"| {r['nodes']} | {r['workers']} | {r['step_s']:.3f} | {r['steps_per_s']:.2f} | "
                f"{r['queries_per_s']:.1f} | {r['queries_per_s'] / t_base:.2f} | {r['wall_s']:.0f} | "
                f"{r['load']:.1f} |"
            )
    lines += [
        "",
        "Node labels n1..nN are the worker nodes in the order they were added; the head (0 CPUs) mined nothing. "
        "How to read it: with one core per node and two real cores, 2 nodes is the most that can run in "
        "parallel here; 3 and 4 nodes time-share those cores with each other and with everything else on the "
        "machine. Rows measured at very different load averages (columns above) are not comparable with each other; "
        "re-run on an idle machine for cleaner ratios.",
    ]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


def _fmt(counts: dict[str, int]) -> str:
    return " / ".join(f"{k}: {v}" for k, v in counts.items()) or "–"


if __name__ == "__main__":
    main()
