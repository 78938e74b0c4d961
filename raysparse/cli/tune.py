"""``raysparse tune``: a Ray Tune sweep of real training runs over a search space file, then the best model within
a FLOPS budget copied to OUT/best_model (and optionally exported)."""

from __future__ import annotations

import argparse
import logging
import sys

from raysparse.cli import (
    add_config_args,
    backbone_from_args,
    config_from_args,
    print_locations,
    setup_logging,
)

EXPORT_FORMATS = ("onnx", "torchscript", "opensearch", "hf")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="sweep loss weights with Ray Tune (ASHA + Optuna) and keep the best model within a FLOPS budget",
        description=(
            "Run tune.num_samples training runs (Ray Train + DeepSpeed) over the values in a search space file, "
            "stopping weak trials early with ASHA (tune.scheduler) and proposing values with Optuna "
            "(tune.search_alg). Trials are compared on validation nDCG@10 from --dev-beir; the chosen trial is the "
            "best one within --flops-budget (the most efficient one when none fits). Writes OUT/sweep_report.md, "
            "OUT/pareto.png, OUT/best_model, each trial under OUT/trials/<id>, and Tune's experiment (TensorBoard "
            "HParams) and the trials' Ray Train checkpoints under ray.storage_path (default OUT/runs: "
            "OUT/runs/tune, OUT/runs/ray_train; s3://, gs:// or a shared NFS path on a cluster). Without --space it reads "
            "tune.search_space: a file of that path when it exists, else the copy packaged with raysparse "
            "(tuning/loss_weights.yaml, tuning/tiny.yaml). Inside a Ray job a relative OUT goes to "
            "ray.storage_path/results/OUT (refused when ray.storage_path is relative too). Ends with 'model: "
            "LOCATION' (the chosen trial's model), 'metrics:', 'report:' and 'tensorboard:' lines."
        ),
    )
    add_config_args(parser)
    parser.add_argument(
        "--triples", required=True, help="mining output: a Parquet file or directory (TRIPLES)"
    )
    parser.add_argument(
        "--dev-beir", required=True, metavar="DIR", help="BEIR-layout dev set (trials are ranked on it)"
    )
    parser.add_argument("--out", required=True, help="output directory; a path or s3:// / gs:// URI")
    parser.add_argument(
        "--space",
        metavar="YAML",
        help="search space file, or the name of a packaged one (loss_weights, tiny); default tune.search_space",
    )
    parser.add_argument(
        "--num-samples", type=int, metavar="N", help="number of trials (default tune.num_samples)"
    )
    parser.add_argument(
        "--flops-budget", type=float, metavar="X", help="FLOPS budget (default tune.flops_budget)"
    )
    parser.add_argument(
        "--export",
        metavar="FORMATS",
        help=f"export the best model, comma-separated from {','.join(EXPORT_FORMATS)} (to OUT/export)",
    )
    parser.add_argument(
        "--backbone",
        metavar="DIR|local-small",
        help="backbone: a Hugging Face directory or name, or local-small; default model.backbone",
    )
    parser.add_argument("--term-pairs", metavar="PARQUET", help="ko/en term pairs for the cross-lingual loss")
    parser.add_argument(
        "--sentence-pairs", metavar="PARQUET", help="ko/en sentence pairs for the cross-lingual loss"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setup_logging()
    extra, backbone_dir = backbone_from_args(args.backbone)
    if args.flops_budget is not None:
        extra.append(f"tune.flops_budget={args.flops_budget}")
    if args.num_samples is not None:
        extra.append(f"tune.num_samples={args.num_samples}")
    formats = [f.strip() for f in args.export.split(",") if f.strip()] if args.export else None
    unknown = [f for f in formats or [] if f not in EXPORT_FORMATS]
    if unknown:
        print(f"raysparse tune: --export: unknown format(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    cfg = config_from_args(args, extra)

    from raysparse.data import read_beir
    from raysparse.defaults import search_space_path
    from raysparse.storage import resolve_output
    from raysparse.tune import load_search_space, run_sweep

    location = resolve_output(args.out, cfg.ray.storage_path, "raysparse tune", address=cfg.ray.address)
    space = load_search_space(search_space_path(args.space or cfg.tune.search_space), cfg)
    dev = read_beir(args.dev_beir)
    for report in dev.reports:
        logging.info("%s", report)
    result = run_sweep(
        cfg,
        space,
        args.triples,
        dev,
        location.local,
        term_pairs=args.term_pairs,
        sentence_pairs=args.sentence_pairs,
        backbone_dir=backbone_dir,
        export_formats=formats,
    )
    location.publish()
    print(f"trials: {len(result.trials)} with metrics, {len(result.failed)} failed")
    if result.best_trial is None:
        print_locations(location, {"report": result.report_path, "tensorboard": result.experiment_dir})
        print("no trial finished with a validation metric; nothing selected", file=sys.stderr)
        return 1
    print(
        f"best trial: {result.best_trial['trial_id']} {space.metric}={result.best_trial[space.metric]:.4f} "
        f"flops={result.best_trial['flops']:.4g}"
    )
    out = location.local
    print_locations(
        location,
        {
            "model": result.best_model_dir,
            "metrics": out / "best_trial.json",
            "report": result.report_path,
            "tensorboard": result.experiment_dir,  # Tune's experiment: every trial's HParams and curves
            "export": out / "export" if formats else None,
        },
    )
    return 0
