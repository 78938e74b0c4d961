"""``raysparse mine``: BM25 hard-negative mining (bm25s + Kiwi / char bigrams) on Ray Data."""

from __future__ import annotations

import argparse
import sys

from raysparse.cli import (
    add_allow_empty_arg,
    add_config_args,
    add_data_source_args,
    config_from_args,
    data_source_overrides,
    flag_overrides,
    setup_logging,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mine",
        help="BM25 hard-negative mining (bm25s + Kiwi / char bigrams) on Ray Data",
        description=(
            "Mine BM25 hard negatives (top-K minus positives and their near-duplicates) plus seeded random negatives "
            "for every query with a positive, and write TRIPLES Parquet (sorted by query_id) and mining_report.json "
            "to --out. Runs on the Ray cluster of RAY_ADDRESS / ray.address (a local one otherwise); --no-ray mines in "
            "this process with identical output. Flags are shorthands for config keys (mining.*, data.*)."
        ),
    )
    add_data_source_args(
        parser,
        "data (default: data.format/data.path of the config)",
        "a BEIR directory (corpus.jsonl, queries.jsonl, qrels/*.tsv)",
    )
    parser.add_argument("--out", metavar="DIR", help="output directory (default: <output_dir>/mined)")
    parser.add_argument("--analyzer", choices=["kiwi", "bigram", "hf"], help="mining.analyzer")
    parser.add_argument("--hf-tokenizer", metavar="PATH", help="mining.hf_tokenizer (with --analyzer hf)")
    parser.add_argument("--top-k", type=int, metavar="K", help="mining.top_k: BM25 candidates per query")
    parser.add_argument("--hard", type=int, metavar="N", help="mining.num_hard_negatives")
    parser.add_argument("--random", type=int, metavar="M", help="mining.num_random_negatives")
    parser.add_argument("--no-ray", action="store_true", help="mine in this process instead of on Ray Data")
    add_allow_empty_arg(parser, "no query yields a training row")
    add_config_args(parser)
    parser.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """Translate the command's flags into dotted config overrides (``--set`` still wins, it is applied last)."""
    overrides = data_source_overrides(args)
    overrides += flag_overrides(
        args,
        "mining",
        (
            ("analyzer", "analyzer"),
            ("hf_tokenizer", "hf_tokenizer"),
            ("top_k", "top_k"),
            ("hard", "num_hard_negatives"),
            ("random", "num_random_negatives"),
        ),
    )
    return overrides


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from raysparse.errors import require_nonempty

    setup_logging()
    cfg = config_from_args(args, overrides_from_args(args))

    from raysparse.data import load_source
    from raysparse.mining import mine

    t0 = time.perf_counter()
    data = load_source(cfg.data)
    read_s = time.perf_counter() - t0
    for report in data.reports:
        print(report, file=sys.stderr)
    print(f"data: {data.summary()} (read in {read_s:.1f} s)", file=sys.stderr)
    if not args.no_ray:
        from raysparse.ray_utils import init_ray

        init_ray(cfg.ray.address)
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "mined"
    report = mine(data, cfg.mining, out, ray=not args.no_ray)
    print(report)
    print(f"wrote {report.output} and {out / 'mining_report.json'}")
    why = f"0 of {report.queries_in} queries mined"
    if report.positives_not_in_corpus:
        why += f"; {report.positives_not_in_corpus} judged documents are not in the corpus"
    require_nonempty(report.queries_mined, f"mine {out}", why, args.allow_empty)
    return 0
