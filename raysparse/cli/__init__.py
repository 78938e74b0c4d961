"""The ``raysparse`` command line: one subcommand per pipeline stage.

Each module in this package defines ``register(subparsers)`` that adds one (or a few) subcommands and sets
``func`` on them; modules are discovered automatically, so a new stage only adds a file here. Handlers import their
heavy dependencies (torch, ray) lazily so that ``raysparse --help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from raysparse import __version__
from raysparse.config import ConfigError

DESCRIPTION = """\
raysparse trains Korean-English neural sparse (SPLADE-style) retrieval encoders on Ray and ships them into OpenSearch.

Pipeline, one subcommand per stage:
  run        the main job: all stages below in order, resumable (jobs/pipeline.py)
  corpus     build corpora: Wikipedia dumps -> cached passages Parquet; dated corpora -> time splits
  generate-queries
             synthetic Korean queries (doc2query) from your LLM server (Ollama / OpenAI-compatible) on Ray Data
  mine       BM25 hard-negative mining (bm25s + Kiwi / char bigrams) on Ray Data
  augment    Korean<->English code-switched queries and term/sentence pairs for the cross-lingual loss
  train      DeepSpeed training of the sparse encoder on Ray Train
  evaluate   nDCG@10 / MRR@10 / recall@100 against BM25 on any BEIR-layout directory
  tune       Ray Tune sweeps of the loss weights alpha/beta/gamma
  export     TorchScript, ONNX and OpenSearch model bundles
  index      encode a corpus and bulk-index it into OpenSearch
  deploy     register + deploy an exported model bundle in OpenSearch ml-commons
  search     query OpenSearch and show the matched terms
  pull       copy a model or run from cluster storage (path, s3://, gs://, file://) to a local directory

Term statistics and dictionaries:
  time-weights  recency-aware IDF and rising terms from a dated corpus (inference-free queries, OpenSearch recency)
  synonyms      Korean-English term pairs discovered from a trained encoder (discover, evaluate, loop)

Every stage reads the same YAML configuration (--config FILE) and accepts overrides (--set train.lr=3e-4).
Run `raysparse COMMAND --help` for the options of one stage."""


def setup_logging(level: int = logging.INFO) -> None:
    """Timestamped log lines on stderr for a long-running stage (progress bars stay on their own lines)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """The two options every stage shares: a YAML config and dotted overrides."""
    parser.add_argument(
        "--config", metavar="FILE", help="YAML configuration (defaults run offline when omitted)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config key, e.g. --set mining.top_k=50 (repeatable)",
    )


def config_from_args(args: argparse.Namespace, extra_overrides: list[str] | None = None):
    """Load the configuration named by ``--config`` with ``--set`` and command-specific overrides applied."""
    from raysparse.config import load_config

    return load_config(
        getattr(args, "config", None), [*(extra_overrides or []), *getattr(args, "overrides", [])]
    )


DATA_FORMATS = ("sample", "beir", "squad", "msmarco", "jsonl", "parquet", "prototype")


def add_data_source_args(parser: argparse.ArgumentParser, title: str, beir_help: str) -> None:
    """``--beir DIR`` or ``--data-format F --data-path P``: where a stage reads its collection (see
    :func:`data_source_overrides`)."""
    source = parser.add_argument_group(title)
    source.add_argument("--beir", metavar="DIR", help=beir_help)
    source.add_argument(
        "--data-format",
        choices=DATA_FORMATS,
        help="any format raysparse.data.load_source reads (sets data.format)",
    )
    source.add_argument(
        "--data-path", metavar="PATH", help="file or directory for --data-format (sets data.path)"
    )


def flag_overrides(args: argparse.Namespace, section: str, flags: Iterable[tuple[str, str]]) -> list[str]:
    """Flags that are shorthands for ``section.key`` config keys, as dotted overrides; unset flags are left out.

    ``--set`` overrides are applied after these, so they win.
    """
    overrides = []
    for flag, key in flags:
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{section}.{key}={value}")
    return overrides


def data_source_overrides(args: argparse.Namespace) -> list[str]:
    """``--beir DIR`` or ``--data-format F --data-path P`` (mine, index) as ``data.*`` overrides."""
    if args.beir and (args.data_format or args.data_path):
        raise ConfigError("use either --beir DIR or --data-format/--data-path, not both")
    overrides = ["data.format=beir", f"data.path={args.beir}"] if args.beir else []
    if args.data_format:
        overrides.append(f"data.format={args.data_format}")
    if args.data_path:
        overrides.append(f"data.path={args.data_path}")
    return overrides


def backbone_from_args(value: str | None) -> tuple[list[str], str | None]:
    """``--backbone`` of train/tune: ``local-small`` is a config override, a directory or Hub name goes to training."""
    if value == "local-small":
        return ["model.backbone=local-small"], None
    return [], value or None


def print_locations(location: Any, paths: dict[str, Any]) -> None:
    """The last lines of a command that wrote results: ``KIND: LOCATION`` each (``model: ...`` is an interface
    outside checks rely on). ``location`` is the command's :class:`raysparse.storage.OutputLocation`: paths under
    its local folder are printed as the path or URI they were published to."""
    for kind, path in paths.items():
        if path is None:
            continue
        text = str(path)
        with contextlib.suppress(ValueError):  # outside the output folder: Tune's experiment in storage
            text = location.location(Path(path).relative_to(location.local))
        print(f"{kind}: {text}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raysparse", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"raysparse {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"raysparse {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
