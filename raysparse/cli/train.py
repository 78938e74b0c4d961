"""``raysparse train``: train the sparse encoder on mined triples with DeepSpeed on Ray Train (one stage, not the
whole pipeline: ``raysparse run`` chains mining, augmentation, training and evaluation)."""

from __future__ import annotations

import argparse
import json
import logging

from raysparse.cli import (
    add_config_args,
    backbone_from_args,
    config_from_args,
    print_locations,
    setup_logging,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the sparse encoder on mined triples (Ray Train + DeepSpeed)",
        description=(
            "Train a SPLADE-style sparse encoder on mining output (Parquet in the TRIPLES schema) with DeepSpeed "
            "ZeRO on Ray Train workers (train.num_workers, train.use_gpu, train.deepspeed.*). Checkpoints go to "
            "ray.storage_path/<name>-<hash> (a relative ray.storage_path, default 'runs', is taken from OUT; the hash "
            "covers the triples, pairs, backbone and every setting that changes what is learnt, but not max_steps or "
            "the evaluation/checkpoint intervals). Running the same training again (same data, settings and "
            "storage) resumes from its latest checkpoint and says so; other triples or another OUT start a new run. "
            "The best checkpoint (validation nDCG@10 when --dev-beir is given, else the last) is written as an fp32 "
            "Hugging Face layout model to OUT/model. Inside a Ray job a relative OUT goes to "
            "ray.storage_path/results/OUT (refused when ray.storage_path is relative too); the command ends with "
            "'model: LOCATION', 'metrics: LOCATION' and 'tensorboard: LOCATION' lines."
        ),
    )
    add_config_args(parser)
    parser.add_argument(
        "--triples", required=True, help="mining output: a Parquet file or directory (TRIPLES)"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output directory (model/, tensorboard/, history.jsonl); a path or s3:// / gs:// URI",
    )
    parser.add_argument("--dev-beir", metavar="DIR", help="BEIR-layout dev set for validation nDCG@10")
    parser.add_argument(
        "--backbone",
        metavar="DIR|local-small",
        help="backbone: a Hugging Face directory or name, or local-small (built from the triples' text); "
        "default model.backbone",
    )
    parser.add_argument("--term-pairs", metavar="PARQUET", help="ko/en term pairs for the cross-lingual loss")
    parser.add_argument(
        "--sentence-pairs", metavar="PARQUET", help="ko/en sentence pairs for the cross-lingual loss"
    )
    parser.add_argument(
        "--resume",
        choices=["never", "auto", "must"],
        default="auto",
        help="auto (default): continue this run from its latest checkpoint when it has one; must: fail (exit 2) "
        "when there is none; never: start afresh in a new run folder (the earlier checkpoints are kept)",
    )
    parser.add_argument(
        "--single-process", action="store_true", help="train in this process without Ray (debugging, one GPU)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from raysparse.storage import in_ray_job, resolve_output, storage_for_outputs
    from raysparse.training import run_training, train_single_process

    setup_logging()
    extra, backbone_dir = backbone_from_args(args.backbone)
    cfg = config_from_args(args, extra)
    location = resolve_output(args.out, cfg.ray.storage_path, "raysparse train", address=cfg.ray.address)
    if location.remote or in_ray_job():  # a relative storage path must not resolve into the working-dir copy
        cfg = cfg.model_copy(deep=True)
        cfg.ray.storage_path = storage_for_outputs(cfg.ray.storage_path, location)
    dev = None
    if args.dev_beir:
        from raysparse.data import read_beir

        dev = read_beir(args.dev_beir)
        for report in dev.reports:
            logging.info("%s", report)
    train = train_single_process if args.single_process else run_training
    # bad input or settings raise ValueError/FileNotFoundError: main() turns them into one line, exit 2
    result = train(
        cfg,
        args.triples,
        dev,
        location.local,
        term_pairs=args.term_pairs,
        sentence_pairs=args.sentence_pairs,
        backbone_dir=backbone_dir,
        resume=args.resume,
    )
    location.publish()
    print(
        json.dumps(
            {k: v for k, v in result.best_metrics.items() if not k.startswith("loss/weight")}, indent=1
        )
    )
    print(f"checkpoint: {result.checkpoint_path}")
    out = location.local
    print_locations(
        location,
        {
            "model": result.model_dir,
            "metrics": out / "best_metrics.json",
            "tensorboard": out / "tensorboard" if (out / "tensorboard").is_dir() else None,
        },
    )
    return 0
