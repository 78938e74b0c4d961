"""Ray Tune sweeps of the loss weights (α, β, γ, ...) with quality/efficiency selection.

Each trial is a real training run: the trial function builds the trial's configuration from the sampled values and
calls :func:`raysparse.training.run_training`, whose ``TorchTrainer`` reports validation nDCG@10 and FLOPS to Tune through
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
import os
import shutil
import time
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
    # Only finished trials shipped a model: the front (and the choice) is drawn from them alone; trials stopped
    # early by the scheduler are shown with their last evaluation, marked as such, and never on the front.
    finished = [p for p in points if p.get("status", "finished") == "finished"]
    stopped = [p for p in points if p.get("status", "finished") != "finished"]
    front = pareto_front(finished, metric)
    front_ids = {p["trial_id"] for p in front}

    def plotted(group: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
        kept = [p for p in group if _finite(p.get("flops")) and _finite(p.get(metric))]
        return [p["flops"] for p in kept], [p[metric] for p in kept]

    fig, ax = plt.subplots(figsize=(6, 4))
    xs, ys = plotted(finished)
    ax.scatter(xs, ys, color="tab:gray", label="finished trials")
    xs, ys = plotted(stopped)
    if xs:
        ax.scatter(
            xs, ys, marker="x", color="tab:orange", label="stopped early (last evaluation; not eligible)"
        )
    if front:
        ax.plot(
            [p["flops"] for p in front],
            [p[metric] for p in front],
            "o-",
            color="tab:blue",
            label="Pareto front (finished)",
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
    ax.set_xlabel("FLOPS on the dev set (expected multiply-adds per query-document pair)")
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
        f"{len(points)} trials reported: {len(finished)} finished, {len(stopped)} stopped early by the scheduler "
        f"(shown with their last evaluation; not eligible, never on the Pareto front); {len(failed)} failed. "
        f"Metric: {metric} ({space.mode}); FLOPS budget: {flops_budget if flops_budget is not None else 'none'}.",
        "",
        "FLOPS is measured on the dev set the trials are ranked on, with the evaluation stage's definition "
        "(`raysparse evaluate`'s `flops`: sum over terms of P(query term active) x P(document term active)), at the "
        "evaluation whose metrics are shown (a finished trial's best checkpoint, i.e. the shipped model).",
        "",
        "![Pareto front](pareto.png)",
        "",
        "![metric vs each swept key](weights.png)",
        "",
        "| trial | "
        + " | ".join(keys)
        + f" | {metric} | flops | avg q terms | avg d terms | status | Pareto | chosen |",
        "|---" * (len(keys) + 8) + "|",
    ]
    for p in sorted(points, key=lambda p: -(p.get(metric) or -1)):
        vals = " | ".join(_fmt(p["config"].get(k)) for k in keys)
        lines.append(
            f"| {p['trial_id']} | {vals} | {_fmt(p.get(metric))} | {_fmt(p.get('flops'))} | "
            f"{_fmt(p.get('avg_query_terms'))} | {_fmt(p.get('avg_doc_terms'))} | {p.get('status', '')} | "
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


# ----------------------------------------------------------------------------------------------------------------
# The Ray part: one Tune trial = one real training run (Ray Train + DeepSpeed)
# ----------------------------------------------------------------------------------------------------------------

# The trial function only starts the TorchTrainer and waits; the training workers hold the real CPUs. Tune rejects
# {"cpu": 0}, so the driver asks for a sliver: with train.num_workers=1 and cpus_per_worker=1 a trial fits on 2 CPUs.
TRIAL_DRIVER_CPU = 0.1
TRIALS_SUBDIR = (
    "trials"  # OUT/trials/<trial_id>/: each trial's run_training out_dir (model/, tensorboard/, ...)
)
# Both live under the storage root (ray.storage_path; relative paths are taken from OUT, so the default is OUT/runs):
# ROOT/tune/<name>-sweep/: Tune's experiment dir (result.json, TensorBoard HParams events)
TUNE_SUBDIR = "tune"
RAY_TRAIN_SUBDIR = "ray_train"  # ROOT/ray_train/<name>-<trial_id>/: Ray Train checkpoints of every trial


def storage_root(cfg: RaySparseConfig, out: Path) -> str:
    """Where a sweep keeps Tune and Ray Train state: ``ray.storage_path`` (URI or absolute path) or ``OUT/<it>``."""
    storage = cfg.ray.storage_path
    if "://" in storage:
        return storage.rstrip("/")
    path = Path(storage)
    return str(path if path.is_absolute() else (out / path).resolve())


@dataclass
class SweepResult:
    """What a sweep produced. ``trials`` are the trials that reported metrics; ``failed`` those that errored."""

    best_trial: dict[str, Any] | None
    best_model_dir: Path | None
    report_path: Path
    trials: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    experiment_dir: Path | str | None = None  # str for storage URIs
    export_manifest: dict[str, Any] | None = None


def tune_metric_name(metric: str) -> str:
    """The key training reports for a space file's metric (``ndcg@10`` -> ``val/ndcg@10``)."""
    return metric if "/" in metric else f"val/{metric}"


def evaluations_per_run(max_steps: int, eval_every: int, checkpoint_every: int) -> int:
    """How many validation results one full run reports (ASHA's ``max_t`` with one Tune iteration per evaluation).

    Mirrors the loop in :func:`raysparse.training.run_loop`: it evaluates at multiples of ``eval_every`` and of
    ``checkpoint_every`` and at the last step.
    """
    return sum(
        1
        for s in range(1, max_steps + 1)
        if s % eval_every == 0 or s % checkpoint_every == 0 or s == max_steps
    )


def _eval_report_callback(metric_key: str) -> Any:
    """A ``TuneReportCallback`` that forwards only the reports carrying validation metrics.

    Training reports every step but evaluates every ``eval_every`` steps; Tune's strict metric check rejects a
    result without the sweep metric, and ASHA's rungs are meant to count evaluations, not steps. Built inside the
    trial because the callback refuses to exist outside a Tune session.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    class EvalReportCallback(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            if metrics and metric_key in metrics[0]:
                super().after_report(run_context, metrics, checkpoint)

    return EvalReportCallback()


def _run_trial(
    sampled: dict[str, Any],
    *,
    base: dict[str, Any],
    metric_key: str,
    triples_path: Any,
    dev: Any,
    out_dir: str,
    storage: str,
    term_pairs: Any,
    sentence_pairs: Any,
    backbone_dir: str | None,
    extra_loop_config: dict[str, Any] | None,
    placement_wait_s: str | None = None,
) -> None:
    """Tune function trainable: the trial's config, then :func:`raysparse.training.run_training` reporting to Tune."""
    from ray import tune

    from raysparse.ray_utils import PLACEMENT_WAIT_ENV
    from raysparse.training import run_training

    if placement_wait_s and PLACEMENT_WAIT_ENV not in os.environ:
        # trials run on worker nodes, which the head's export (cluster.yaml) does not reach: the trial's
        # check_placement must wait for the autoscaler as long as the sweep's driver would
        os.environ[PLACEMENT_WAIT_ENV] = placement_wait_s

    trial_id = tune.get_context().get_trial_id()
    base_cfg = config_from_dict(base, source="sweep base")
    trial_out = Path(out_dir) / TRIALS_SUBDIR / trial_id
    trial_out.mkdir(parents=True, exist_ok=True)
    cfg = trial_config(
        base_cfg,
        {
            **sampled,
            "name": f"{base_cfg.name}-{trial_id}",
            "ray.storage_path": f"{storage}/{RAY_TRAIN_SUBDIR}",
        },
    )
    (trial_out / "trial_config.json").write_text(
        json.dumps({"trial_id": trial_id, "sampled": _plain(sampled)}, indent=2)
    )
    run_training(
        cfg,
        triples_path,
        dev,
        trial_out,
        term_pairs,
        sentence_pairs,
        backbone_dir,
        extra_loop_config=extra_loop_config,
        callbacks=[_eval_report_callback(metric_key)],
    )


def _release_placement_groups_callback(worker_bundle: dict[str, float]) -> Any:
    """A Tune callback that removes a finished trial's leftover Ray Train worker placement group.

    When Tune stops a trial (ASHA) it kills the trial actor, and with it the Train controller. Ray Train's own
    ``PlacementGroupCleaner`` then removes the workers' placement group, but it asks the State API, which needs the
    dashboard; without one (``include_dashboard=False``, measured in tests) the group keeps its CPUs forever and the
    next trial's worker group times out waiting for them. Used with one trial at a time only: a group created while
    the trial ran, still alive after it ended and shaped like Train's worker bundles can only be that trial's.
    """
    from ray.tune import Callback

    class ReleaseTrainPlacementGroups(Callback):
        def __init__(self) -> None:
            self._before: set[str] = set()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._before = set(_placement_groups())

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._release(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._release(trial)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._release(trial)

        def _release(self, trial: Any) -> None:
            from ray._raylet import PlacementGroupID
            from ray.util.placement_group import PlacementGroup, remove_placement_group

            time.sleep(2.0)  # let a normal shutdown remove its own group first
            for pg_id, entry in _placement_groups().items():
                bundles = list((entry.get("bundles") or {}).values())
                if pg_id in self._before or entry.get("state") != "CREATED" or not bundles:
                    continue
                if all(b == worker_bundle for b in bundles):
                    log.warning(
                        "trial %s left Ray Train placement group %s behind; removing it", trial, pg_id
                    )
                    remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_id))))
            self._before = set(_placement_groups())

    return ReleaseTrainPlacementGroups()


def _placement_groups() -> dict[str, dict[str, Any]]:
    from ray.util import placement_group_table

    return placement_group_table()


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.item() if hasattr(v, "item") else v for k, v in values.items()}


def _scheduler(cfg: RaySparseConfig, space: SearchSpace, metric_key: str) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.tune.scheduler == "fifo":
        return FIFOScheduler()
    tc = cfg.train
    evaluations = evaluations_per_run(tc.max_steps, tc.eval_every, tc.checkpoint_every)
    if evaluations < 2:
        log.warning("one evaluation per run leaves ASHA nothing to compare early; using FIFO")
        return FIFOScheduler()
    # Every rung must come before a run's last evaluation: a trial stopped at (or after) it is killed before
    # run_training consolidates the best checkpoint to model/ (measured: with max_t = evaluations, trials below the
    # top rung ended without a model). So the top rung is the second-to-last evaluation, and nothing stops a trial
    # for reaching max_t.
    max_t = evaluations - 1
    return ASHAScheduler(
        time_attr="training_iteration",  # one iteration per forwarded evaluation
        max_t=max_t,
        grace_period=min(int(space.scheduler.get("grace_period", 1)), max_t),
        reduction_factor=float(space.scheduler.get("reduction_factor", 2)),
        stop_last_trials=False,
    )


def _search_alg(cfg: RaySparseConfig, seed: int) -> Any:
    if cfg.tune.search_alg == "random":
        return None  # Tune's BasicVariantGenerator samples the space at random
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    # Tune wraps it in a ConcurrencyLimiter from TuneConfig(max_concurrent_trials)
    return OptunaSearch(sampler=TPESampler(seed=seed))


def _trial_points(
    results: Any, out_dir: Path, space: SearchSpace, metric_key: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every trial as a report row: finished (metrics of the checkpoint it shipped), stopped early, or failed."""
    points: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for result in results:
        last = dict(result.metrics or {})
        trial_id = last.get("trial_id") or Path(result.path).name
        config = _plain(dict(result.config or {}))
        trial_dir = out_dir / TRIALS_SUBDIR / str(trial_id)
        if result.error is not None:
            failed.append({"trial_id": trial_id, "error": _one_line(result.error), "config": config})
            continue
        model_dir = trial_dir / "model"
        best_file = trial_dir / "best_metrics.json"
        if model_dir.is_dir() and best_file.is_file():
            metrics, status = json.loads(best_file.read_text()), "finished"
        else:
            metrics, status = last, "stopped early"
        if metric_key not in metrics:
            failed.append(
                {
                    "trial_id": trial_id,
                    "error": f"reported no {metric_key} (status {status})",
                    "config": config,
                }
            )
            continue
        points.append(
            {
                "trial_id": trial_id,
                space.metric: metrics.get(metric_key),
                # dev-set efficiency, as `raysparse evaluate` measures it (raysparse.training.evaluate_dev)
                "flops": metrics.get("val/flops"),
                "avg_query_terms": metrics.get("val/avg_query_terms"),
                "avg_doc_terms": metrics.get("val/avg_doc_terms"),
                "step": metrics.get("step"),
                "evaluations": last.get("training_iteration"),
                "status": status,
                "model_dir": str(model_dir) if status == "finished" else None,
                "config": config,
            }
        )
    return points, failed


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    # Tune wraps the trial's exception; its last line is the original error message
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:500]


def run_sweep(
    cfg: RaySparseConfig,
    space: SearchSpace,
    triples_path: Any,
    dev: Any,
    out_dir: str | Path,
    term_pairs: Any = None,
    sentence_pairs: Any = None,
    backbone_dir: str | None = None,
    *,
    num_samples: int | None = None,
    export_formats: list[str] | None = None,
    extra_loop_config: dict[str, Any] | None = None,
) -> SweepResult:
    """Run ``num_samples`` training runs over ``space`` with Ray Tune and keep the best one within the FLOPS budget.

    Every trial is :func:`raysparse.training.run_training` with the sampled values applied (``OUT/trials/<id>``); its
    validation reports reach Tune through ``TuneReportCallback`` so ASHA can stop weak trials at evaluation rungs.
    Failed trials are retried ``tune.max_failures`` times, then listed in the report with their error. Only trials
    that finished (and so consolidated their best checkpoint to ``model/``) are eligible; early-stopped ones are
    reported. The chosen model is copied to ``OUT/best_model`` and, with ``export_formats``, exported to
    ``OUT/export``. ``extra_loop_config`` goes to every trial's workers (fault injection in tests).
    """
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    from raysparse.ray_utils import PLACEMENT_WAIT_ENV, init_ray

    if dev is None:
        raise ValueError("run_sweep needs a dev set: trials are compared on validation " + space.metric)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    metric_key = tune_metric_name(space.metric)
    samples = num_samples if num_samples is not None else cfg.tune.num_samples
    storage = storage_root(cfg, out)
    init_ray(cfg.ray.address)

    trainable = tune.with_parameters(
        _run_trial,
        base=cfg.model_dump(mode="json"),
        metric_key=metric_key,
        triples_path=str(Path(triples_path).resolve())
        if isinstance(triples_path, str | Path)
        else triples_path,
        dev=dev,
        out_dir=str(out),
        storage=storage,
        term_pairs=term_pairs,
        sentence_pairs=sentence_pairs,
        backbone_dir=str(Path(backbone_dir).resolve()) if backbone_dir else None,
        extra_loop_config=extra_loop_config,
        placement_wait_s=os.environ.get(PLACEMENT_WAIT_ENV),
    )
    # TBX writes each trial's HParams summary (sampled values + final metrics) for TensorBoard's HParams tab
    callbacks = [JsonLoggerCallback(), CSVLoggerCallback(), TBXLoggerCallback()]
    if cfg.tune.max_concurrent_trials == 1:
        worker_bundle = {"CPU": float(cfg.train.cpus_per_worker)}
        if cfg.train.use_gpu:
            worker_bundle["GPU"] = 1.0
        callbacks.append(_release_placement_groups_callback(worker_bundle))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": TRIAL_DRIVER_CPU}),
        param_space=space.to_tune(),
        tune_config=tune.TuneConfig(
            metric=metric_key,
            mode=space.mode,
            scheduler=_scheduler(cfg, space, metric_key),
            search_alg=_search_alg(cfg, cfg.train.seed),
            num_samples=samples,
            max_concurrent_trials=cfg.tune.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=f"{cfg.name}-sweep",
            storage_path=f"{storage}/{TUNE_SUBDIR}",
            failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures),
            callbacks=callbacks,
            verbose=1,
        ),
    )
    results = tuner.fit()
    # a URI (s3://, gs://) stays a string: Path() would fold its '//'
    experiment_dir = (
        results.experiment_path if "://" in str(results.experiment_path) else Path(results.experiment_path)
    )
    points, failed = _trial_points(results, out, space, metric_key)
    eligible = [p for p in points if p["status"] == "finished"]
    chosen = select_trial(eligible, cfg.tune.flops_budget, quality=space.metric)
    report = write_sweep_report(points, chosen, failed, space, cfg.tune.flops_budget, out)
    best_model_dir = None
    manifest = None
    if chosen is not None:
        best_model_dir = copy_best_model(chosen["model_dir"], out)
        (out / "best_trial.json").write_text(json.dumps(chosen, indent=2, default=str))
        if export_formats:
            from raysparse.export import export_model

            manifest = export_model(
                best_model_dir,
                out / "export",
                export_formats,
                cfg.export,
                name=cfg.name,
                metrics_path=out / "best_trial.json",
            )
    else:
        log.error("no trial finished with %s; see %s", metric_key, report)
    log.info("sweep: %d trials with metrics, %d failed; chosen %s", len(points), len(failed), chosen)
    return SweepResult(chosen, best_model_dir, report, points, failed, experiment_dir, manifest)
