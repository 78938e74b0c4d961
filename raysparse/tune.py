"""Ray Tune sweeps of the loss weights (α, β, γ, ...) with quality/efficiency selection.

Each trial is a real training run: the trial function builds the trial's configuration from the sampled values and
calls :func:`raysparse.train.run_training`, whose ``TorchTrainer`` reports validation nDCG@10 and FLOPS to Tune through
``TuneReportCallback`` (Ray Train V2's Tune integration). ASHA stops weak trials early; Optuna (or random search)
proposes the next values.

Selection is not "highest nDCG": users pay for every active term at query time, so a sweep has a FLOPS budget
(``tune.flops_budget``). We report the Pareto front of (nDCG@10 ↑, FLOPS ↓) and pick the best nDCG@10 among trials
within the budget (the most efficient trial when none is). The chosen trial's model — already consolidated to fp32
Hugging Face layout by training — is copied to ``OUT/best_model``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raysparse.config import ConfigError, RaySparseConfig, config_from_dict

log = logging.getLogger(__name__)

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "quniform")


@dataclass
class SearchSpace:
    """A search space file: dotted config keys -> distributions, the metric to optimise and the scheduler."""

    params: dict[str, tuple[str, list[Any]]]
    metric: str = "ndcg@10"
    mode: str = "max"
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "asha"})
    search_alg: str = "optuna"

    def to_tune(self) -> dict[str, Any]:
        """The Ray Tune ``param_space`` (flat dotted keys; the trial maps them back onto the config)."""
        from ray import tune

        space: dict[str, Any] = {}
        for key, (dist, args) in self.params.items():
            if dist == "choice":
                space[key] = tune.choice(args)
            elif dist == "uniform":
                space[key] = tune.uniform(*args)
            elif dist == "loguniform":
                space[key] = tune.loguniform(*args)
            elif dist == "randint":
                space[key] = tune.randint(*args)
            elif dist == "quniform":
                space[key] = tune.quniform(*args)
        return space


def load_search_space(path: str | Path, base: RaySparseConfig | None = None) -> SearchSpace:
    """Read a ``tuning/*.yaml`` search space; every key must be a real config key and every distribution known."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search space file not found: {p}")
    doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("space"), dict) or not doc["space"]:
        raise ConfigError(f"{p}: expected a mapping with a non-empty 'space' section")
    base_tree = (base or RaySparseConfig()).model_dump()
    params: dict[str, tuple[str, list[Any]]] = {}
    for key, spec in doc["space"].items():
        if not isinstance(spec, dict) or len(spec) != 1:
            raise ConfigError(
                f"{p}: space.{key}: expected one distribution such as {{loguniform: [1e-4, 1e-2]}}"
            )
        ((dist, args),) = spec.items()
        if dist not in DISTRIBUTIONS:
            raise ConfigError(
                f"{p}: space.{key}: unknown distribution {dist!r} (use one of {', '.join(DISTRIBUTIONS)})"
            )
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{p}: space.{key}.{dist}: expected a non-empty list")
        node: Any = base_tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{p}: space.{key}: '{key}' is not a configuration key")
            node = node[part]
        params[key] = (dist, list(args))
    mode = doc.get("mode", "max")
    if mode not in ("max", "min"):
        raise ConfigError(f"{p}: mode must be 'max' or 'min', got {mode!r}")
    return SearchSpace(
        params=params,
        metric=doc.get("metric", "ndcg@10"),
        mode=mode,
        scheduler=doc.get("scheduler") or {"type": "asha"},
        search_alg=doc.get("search_alg", "optuna"),
    )


def trial_config(base: RaySparseConfig, sampled: dict[str, Any]) -> RaySparseConfig:
    """The base configuration with one trial's sampled values applied (dotted keys)."""
    tree = base.model_dump()
    for key, value in sampled.items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value.item() if hasattr(value, "item") else value
    return config_from_dict(tree, source="trial")


def pareto_front(
    points: list[dict[str, Any]], quality: str = "ndcg@10", cost: str = "flops"
) -> list[dict[str, Any]]:
    """Trials not dominated by another (higher-or-equal quality and lower-or-equal cost, one strictly better).

    Returned sorted by cost ascending. Trials missing either metric (failed before evaluating) are excluded.
    """
    valid = [p for p in points if _finite(p.get(quality)) and _finite(p.get(cost))]
    front = []
    for p in valid:
        dominated = any(
            q[quality] >= p[quality] and q[cost] <= p[cost] and (q[quality] > p[quality] or q[cost] < p[cost])
            for q in valid
        )
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p[cost], -p[quality]))


def select_trial(
    points: list[dict[str, Any]], flops_budget: float | None, quality: str = "ndcg@10", cost: str = "flops"
) -> dict[str, Any] | None:
    """Best quality within the FLOPS budget; without a budget, best quality; if nothing fits, the cheapest trial."""
    valid = [p for p in points if _finite(p.get(quality)) and _finite(p.get(cost))]
    if not valid:
        return None
    within = [p for p in valid if flops_budget is None or p[cost] <= flops_budget]
    if within:
        return max(within, key=lambda p: (p[quality], -p[cost]))
    log.warning("no trial within the FLOPS budget %s; choosing the most efficient one", flops_budget)
    return min(valid, key=lambda p: (p[cost], -p[quality]))


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def write_sweep_report(
    points: list[dict[str, Any]],
    chosen: dict[str, Any] | None,
    failed: list[dict[str, Any]],
    space: SearchSpace,
    flops_budget: float | None,
    out_dir: str | Path,
) -> Path:
    """sweep_report.md with every trial, the Pareto front, failures, and PNG plots (Pareto, nDCG vs each weight)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric = space.metric
    front = pareto_front(points, metric)
    front_ids = {p["trial_id"] for p in front}

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p["flops"] for p in points if _finite(p.get("flops")) and _finite(p.get(metric))]
    ys = [p[metric] for p in points if _finite(p.get("flops")) and _finite(p.get(metric))]
    ax.scatter(xs, ys, color="tab:gray", label="trials")
    if front:
        ax.plot(
            [p["flops"] for p in front],
            [p[metric] for p in front],
            "o-",
            color="tab:blue",
            label="Pareto front",
        )
    if chosen:
        ax.scatter(
            [chosen["flops"]],
            [chosen[metric]],
            s=160,
            facecolors="none",
            edgecolors="tab:red",
            label="chosen",
        )
    if flops_budget:
        ax.axvline(flops_budget, color="tab:red", linestyle="--", linewidth=1, label="FLOPS budget")
    ax.set_xlabel("FLOPS (expected multiply-adds per query-document pair)")
    ax.set_ylabel(metric)
    ax.set_title("Sweep: quality vs efficiency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=120)
    plt.close(fig)

    keys = list(space.params)
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3), squeeze=False)
        for ax, key in zip(axes[0], keys, strict=True):
            pts = [(p["config"].get(key), p.get(metric)) for p in points if _finite(p.get(metric))]
            ax.scatter([x for x, _ in pts], [y for _, y in pts])
            if space.params[key][0] == "loguniform":
                ax.set_xscale("log")
            ax.set_xlabel(key, fontsize=8)
            ax.set_ylabel(metric, fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "weights.png", dpi=120)
        plt.close(fig)

    lines = [
        "# Sweep report",
        "",
        f"{len(points)} trials finished, {len(failed)} failed. Metric: {metric} ({space.mode}); "
        f"FLOPS budget: {flops_budget if flops_budget is not None else 'none'}.",
        "",
        "![Pareto front](pareto.png)",
        "",
        "![metric vs each swept key](weights.png)",
        "",
        "| trial | "
        + " | ".join(keys)
        + f" | {metric} | flops | avg q terms | avg d terms | Pareto | chosen |",
        "|---" * (len(keys) + 7) + "|",
    ]
    for p in sorted(points, key=lambda p: -(p.get(metric) or -1)):
        vals = " | ".join(_fmt(p["config"].get(k)) for k in keys)
        lines.append(
            f"| {p['trial_id']} | {vals} | {_fmt(p.get(metric))} | {_fmt(p.get('flops'))} | "
            f"{_fmt(p.get('avg_query_terms'))} | {_fmt(p.get('avg_doc_terms'))} | "
            f"{'yes' if p['trial_id'] in front_ids else ''} | {'**yes**' if chosen and p is chosen else ''} |"
        )
    if failed:
        lines += ["", "## Failed trials", ""]
        lines += [f"- {f['trial_id']}: {f['error']}" for f in failed]
    path = out / "sweep_report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "sweep_results.json").write_text(
        json.dumps({"trials": points, "failed": failed, "chosen": chosen}, indent=2, default=str)
    )
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def copy_best_model(model_dir: str | Path, out_dir: str | Path) -> Path:
    dest = Path(out_dir) / "best_model"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(model_dir, dest)
    return dest
