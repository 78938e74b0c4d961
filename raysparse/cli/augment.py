"""``raysparse augment``: code-switched query variants plus term/sentence pairs for the cross-lingual loss.

Two modes:
- ``--triples DIR|FILE --out DIR``: augment mined TRIPLES Parquet (Ray Data, or in-process with ``--no-ray``) and
  write ``triples/*.parquet``, ``term_pairs.parquet``, ``sentence_pairs.parquet`` and ``augment_report.json``;
- ``--queries FILE``: print the variants of each query as JSON lines (a quick way to check a dictionary).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from raysparse.cli import add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "augment",
        help="Korean<->English code-switched queries and term/sentence pairs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--triples", metavar="DIR|FILE", help="mined TRIPLES Parquet file or directory")
    source.add_argument(
        "--queries",
        metavar="FILE",
        help="list the variants of these queries (text: one per line; JSON/JSONL: strings or {query})",
    )
    parser.add_argument("--out", metavar="DIR", help="output directory (required with --triples)")
    parser.add_argument(
        "--dictionary",
        metavar="FILE",
        action="append",
        default=[],
        help="dictionary file: TSV (ko/en or korean/english columns) or synonym JSON (repeatable)",
    )
    parser.add_argument(
        "--shared-glossaries",
        action="store_true",
        help="also merge ../shared/data/bilingual glossaries (kengdic, Python-docs glossary)",
    )
    parser.add_argument(
        "--parallel",
        metavar="FILE",
        action="append",
        default=[],
        help="parallel text for sentence pairs: X.ko/X.en, TSV or JSONL (repeatable)",
    )
    parser.add_argument(
        "--max-variants", type=int, metavar="N", help="variants per query (augment.max_variants_per_query)"
    )
    parser.add_argument("--no-ray", action="store_true", help="run in this process instead of Ray Data")
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from raysparse.augment import (
        AugmentReport,
        BilingualDictionary,
        augment_triples_file,
        code_switch_batch,
        iter_query_file,
        sentence_pairs,
    )

    extra = []
    if args.max_variants is not None:
        extra.append(f"augment.max_variants_per_query={args.max_variants}")
    if args.shared_glossaries:
        extra.append("augment.use_shared_glossaries=true")
    full_cfg = config_from_args(args, extra)
    cfg = full_cfg.augment
    dictionary_files = [*cfg.dictionaries, *args.dictionary]
    parallel_files = [*cfg.parallel_text, *args.parallel]
    if args.triples and not args.out:
        print("raysparse augment: --out DIR is required with --triples", file=sys.stderr)
        return 2
    dictionary = BilingualDictionary.from_sources(dictionary_files, use_shared=cfg.use_shared_glossaries)
    for report in dictionary.reports:
        print(report, file=sys.stderr)
    if len(dictionary) == 0:
        print(
            "raysparse augment: the dictionary is empty; pass --dictionary FILE or --shared-glossaries",
            file=sys.stderr,
        )
        return 2

    if args.queries:
        queries = list(iter_query_file(args.queries))
        variants = code_switch_batch(queries, dictionary, None, cfg.max_variants_per_query, cfg.seed)
        out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
        try:
            for q, vs in zip(queries, variants, strict=True):
                out.write(json.dumps({"query": q, "variants": vs}, ensure_ascii=False) + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
        report = AugmentReport(
            queries_in=len(queries),
            variants_out=sum(len(v) for v in variants),
            queries_with_variants=sum(1 for v in variants if v),
            queries_without_variant=sum(1 for v in variants if not v),
            dictionary_pairs=len(dictionary),
        )
        print(report, file=sys.stderr)
        return 0

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    sentences, sentence_reports = sentence_pairs(parallel_files)
    for r in sentence_reports:
        print(r, file=sys.stderr)
    report = augment_triples_file(
        args.triples,
        dictionary,
        cfg,
        out_dir / "triples",
        use_ray=not args.no_ray,
        resources=full_cfg.mining.resources,  # the CPU pool, as for mining (docs/deployment.md)
    )

    import pyarrow.parquet as pq

    pq.write_table(dictionary.to_table(), out_dir / "term_pairs.parquet")
    pq.write_table(sentences, out_dir / "sentence_pairs.parquet")
    report.sentence_pairs = sentences.num_rows
    summary = {
        **report.to_dict(),
        "config": cfg.model_dump(mode="json"),
        "dictionary_files": [str(r) for r in dictionary.reports],
        "parallel_files": [str(r) for r in sentence_reports],
    }
    (out_dir / "augment_report.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2))
    print(report)
    print(
        f"wrote {out_dir}/triples, term_pairs.parquet ({len(dictionary)} pairs), sentence_pairs.parquet "
        f"({sentences.num_rows} pairs), augment_report.json"
    )
    return 0
