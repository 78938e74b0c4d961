"""``raysparse run``: the main job end to end (data -> mining -> augmentation -> training -> evaluation)."""

from __future__ import annotations

import argparse

from raysparse.cli import add_config_args, config_from_args, print_locations, setup_logging
from raysparse.defaults import DEFAULT_CONFIG


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the main job: mine, augment, train and evaluate against BM25 in one go",
        description=(
            "Run the whole pipeline described by the configuration: read the data (the Korean/English sample shipped "
            "with raysparse by default), build a small local backbone when model.backbone is 'local-small', mine BM25 "
            "hard negatives, add code-switched Korean/English queries, train the sparse encoder with DeepSpeed on Ray "
            "Train, and print its dev metrics next to BM25. Finished stages are cached by content hash under "
            "output_dir, so a re-run resumes where it stopped. Without --config it runs the configuration packaged "
            "with raysparse (the repository's configs/default.yaml). Inside a Ray job a relative output directory "
            "goes to ray.storage_path/results/OUT (or the job refuses when ray.storage_path is relative too). It "
            "ends by printing where the results are: 'model: LOCATION', 'metrics: LOCATION', 'tensorboard: "
            "LOCATION', 'results: LOCATION' (bring them back with `raysparse pull LOCATION --to DIR`)."
        ),
    )
    add_config_args(parser)
    parser.add_argument("--out", help="output directory (overrides output_dir); a path or s3:// / gs:// URI")
    parser.add_argument(
        "--force", action="store_true", help="re-run every stage even when its cache is up to date"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from raysparse.pipeline import run_pipeline
    from raysparse.storage import resolve_output, storage_for_outputs

    setup_logging()
    if args.config is None and DEFAULT_CONFIG.is_file():
        args.config = str(DEFAULT_CONFIG)
    cfg = config_from_args(args, [f"output_dir={args.out}"] if args.out else [])
    location = resolve_output(cfg.output_dir, cfg.ray.storage_path, "raysparse run", address=cfg.ray.address)
    cfg = cfg.model_copy(deep=True)
    cfg.output_dir = str(location.local)
    cfg.ray.storage_path = storage_for_outputs(cfg.ray.storage_path, location)
    result = run_pipeline(cfg, force=args.force)
    location.publish()
    print(result.results_path.read_text() if result.results_path else "no results")
    out = location.local
    locations = {"results": result.results_path}
    if result.model_dir is not None:
        locations = {
            "model": result.model_dir,
            "metrics": out / "evaluate" / "model" / "metrics.json",
            "tensorboard": out / "train" / "tensorboard",
            **locations,
        }
    print_locations(location, locations)
    return 0
