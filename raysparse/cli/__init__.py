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
import os
import pkgutil
import sys
import traceback
from collections.abc import Iterable, Iterator
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
  demo       serve a search page: BM25, sparse and hybrid side by side, expanded terms, highlighted matches
  pull       copy a model or run from cluster storage (path, s3://, gs://, file://) to a local directory

Term statistics and dictionaries:
  time-weights  recency-aware IDF and rising terms from a dated corpus (inference-free queries, OpenSearch recency)
  synonyms      Korean-English term pairs discovered from a trained encoder (discover, evaluate, loop)

Every stage reads the same YAML configuration (--config FILE) and accepts overrides (--set train.lr=3e-4).
Run `raysparse COMMAND --help` for the options of one stage.

Errors: bad input (a missing or malformed file, a bad record or setting, an unreachable server) is one line naming
the file and line/record/field (or the URL), exit code 2; an empty result (nothing mined, every request failed) is
exit code 2 too unless --allow-empty; an internal error prints its traceback (exit 1). --debug (or RAYSPARSE_DEBUG=1)
prints tracebacks for every error."""

DEBUG_HELP = "print the traceback of every error, user errors included (also RAYSPARSE_DEBUG=1)"


def redact(text: str) -> str:
    """``text`` without the values of secret settings (passwords, tokens) known to this process."""
    from raysparse.config import redact_secrets

    return redact_secrets(text)


class RedactingFilter(logging.Filter):
    """Scrubs secret values (raysparse.config.redact_secrets) from every log record a handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def setup_logging(level: int = logging.INFO) -> None:
    """Timestamped log lines on stderr for a long-running stage (progress bars stay on their own lines); secrets
    are scrubbed from them."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    # opensearch-py logs every failed request as a WARNING with the urllib3 traceback; raysparse reports the
    # failure itself in one line (or retries it), so only the library's errors reach the console
    logging.getLogger("opensearch").setLevel(logging.ERROR)


def add_allow_empty_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """``--allow-empty``: by default a command that produces nothing (``what``) fails with exit code 2."""
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help=f"exit 0 even when {what} (by default that is an error, exit code 2: it usually means the input "
        "does not match, e.g. qrels naming ids that are not in the corpus)",
    )


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
    if value and any((Path(value) / name).is_file() for name in ("modules.json", "idf.json")):
        # a sentence-transformers / OpenSearch sparse model: built like model.backbone (its MLM + priors + idf.json)
        return [f"model.backbone={value}"], None
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
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    for sub in {id(p): p for p in subparsers.choices.values()}.values():
        if "--debug" not in sub._option_string_actions:
            # SUPPRESS: a subcommand's default must not reset `raysparse --debug COMMAND`
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


class _RedactingStream:
    """A text stream that scrubs secrets (known secret values, ``user:password@`` in URLs) from every write: the
    commands print URLs, settings and server messages in many places, and none of them may show a password."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _redacted_console() -> Iterator[None]:
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _RedactingStream(out), _RedactingStream(err)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


def main(argv: list[str] | None = None) -> int:
    """Run one command under the shared error policy (:mod:`raysparse.errors`): a user error is one line on
    stderr and exit code 2, an internal error keeps its traceback (exit 1), ``--debug`` shows tracebacks for all.
    Everything the command prints goes through :func:`redact`."""
    if isinstance(sys.stdout, _RedactingStream):
        return _main(argv)
    with _redacted_console():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    from raysparse.errors import user_error_message

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # `raysparse corpus dated: ...`: a verb with sub-verbs (dest "<verb>_command") names both in its messages
    command = " ".join(filter(None, (args.command, getattr(args, f"{args.command}_command", None))))
    debug = bool(getattr(args, "debug", False)) or os.environ.get("RAYSPARSE_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"raysparse {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise  # an internal error: the traceback is what a bug report needs
        if debug:
            traceback.print_exc()
        print(f"raysparse {command}: {redact(message)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
