"""``raysparse pull``: copy a model or a run's results from where a job left them (a path or storage URI) to here."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pull",
        help="copy a model or run from cluster storage (path, s3://, gs://, file://) to a local directory",
        description=(
            "Copy what a job printed after 'model:', 'metrics:', 'tensorboard:' or 'results:' (a file or a folder, "
            "given as a path or as an s3://, gs:// or file:// URI) to the local directory --to, through pyarrow.fs "
            "(the filesystem layer Ray's own storage uses; credentials come from the usual AWS / Google "
            "environment). --to must not exist or be empty unless --force. Then e.g. `raysparse evaluate --model "
            "DIR ...` or `raysparse export --model DIR ...`; both also accept the URI directly."
        ),
    )
    parser.add_argument("location", metavar="LOCATION", help="path or URI printed by the job")
    parser.add_argument("--to", required=True, metavar="DIR", help="local destination")
    parser.add_argument("--force", action="store_true", help="replace --to when it exists and is not empty")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from raysparse.storage import pull

    dest = pull(args.location, args.to, force=args.force)
    print(f"pulled: {dest}")
    return 0
