"""``raysparse run``: the main job end to end (data -> mining -> augmentation -> training -> evaluation)."""

from __future__ import annotations

import argparse
from pathlib import Path

from raysparse.cli import add_config_args, config_from_args, setup_logging

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the main job: mine, augment, train and evaluate against BM25 in one go",
        description=(
            "Run the whole pipeline described by the configuration: read the data (the Korean/English sample shipped "
            "with raysparse by default), build a small local backbone when model.backbone is 'local-small', mine BM25 "
            "hard negatives, add code-switched Korean/English queries, train the sparse encoder with DeepSpeed on Ray "
            "Train, and print its dev metrics next to BM25. Finished stages are cached by content hash under "
            "output_dir, so a re-run resumes where it stopped."
        ),
    )
    add_config_args(parser)
    parser.add_argument("--out", help="output directory (overrides output_dir)")
    parser.add_argument(
        "--force", action="store_true", help="re-run every stage even when its cache is up to date"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from raysparse.pipeline import run_pipeline

    setup_logging()
    if args.config is None and DEFAULT_CONFIG.is_file():
        args.config = str(DEFAULT_CONFIG)
    cfg = config_from_args(args, [f"output_dir={args.out}"] if args.out else [])
    result = run_pipeline(cfg, force=args.force)
    print(result.results_path.read_text() if result.results_path else "no results")
    return 0
