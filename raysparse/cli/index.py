"""``raysparse index``: encode a corpus with a trained SparseEncoder on Ray Data and bulk-index it into OpenSearch."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from raysparse.cli import (
    add_config_args,
    add_data_source_args,
    config_from_args,
    data_source_overrides,
    setup_logging,
)
from raysparse.config import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index",
        help="encode a corpus and bulk-index it into OpenSearch",
        description=(
            "Create the index (rank_features + pre-analysed BM25 field) when missing, encode every document with "
            "--model on a Ray Data actor pool and bulk-index with stable ids (re-running overwrites, never "
            "duplicates). Prints the report: indexed, failed (with OpenSearch's reasons), skipped, term fixes. "
            "--url/--index set opensearch.url/opensearch.index; auth and TLS come from the config (opensearch.*)."
        ),
    )
    parser.add_argument("--url", help="OpenSearch URL (opensearch.url), e.g. http://127.0.0.1:9200")
    parser.add_argument("--index", help="index name (opensearch.index)")
    parser.add_argument(
        "--model", metavar="DIR", help="SparseEncoder directory (save_pretrained / export output)"
    )
    parser.add_argument(
        "--lexical",
        action="store_true",
        help="no model: index model-free lexical term weights (raysparse.opensearch.lexical_term_weights)",
    )
    add_data_source_args(
        parser,
        "data (default: data.format/data.path of the config)",
        "a BEIR directory (corpus.jsonl, queries.jsonl, qrels/)",
    )
    parser.add_argument(
        "--bm25-analyzer",
        choices=["bigram", "kiwi"],
        default="bigram",
        help="pre-analysis for the BM25 field (whitespace-analysed in OpenSearch); default bigram",
    )
    parser.add_argument(
        "--bm25-mode",
        choices=["whitespace", "nori", "standard"],
        default="whitespace",
        help="whitespace = raysparse's pre-analysed tokens; nori needs the analysis-nori plugin",
    )
    parser.add_argument("--top-k", type=int, help="keep at most K terms per document (default: all > 0)")
    parser.add_argument("--recreate", action="store_true", help="drop and recreate the index first")
    parser.add_argument(
        "--force",
        action="store_true",
        help=(
            "index even when the index records another encoder (model hash, lengths, top-k, query mode) than this "
            "run's, or none while holding documents; the new encoder is recorded, the old one kept beside it"
        ),
    )
    parser.add_argument("--actors", type=int, default=1, help="encoder actors (Ray Data actor pool size)")
    parser.add_argument(
        "--cpus-per-actor", type=float, default=1.0, help="CPUs per encoder actor (fractional ok)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="documents per encoder batch")
    parser.add_argument("--no-ray", action="store_true", help="encode in this process instead of on Ray Data")
    parser.add_argument(
        "--direct",
        action="store_true",
        help=(
            "Ray Data workers bulk-write to OpenSearch themselves (--actors parallel writers, 429 back-off, "
            "refresh off and no replicas during the load, restored after) instead of sending vectors to this "
            "process; the final count is checked"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_config_args(parser)
    parser.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    overrides = data_source_overrides(args)
    if args.url:
        overrides.append(f"opensearch.url={args.url}")
    if args.index:
        overrides.append(f"opensearch.index={args.index}")
    return overrides


def run(args: argparse.Namespace) -> int:
    setup_logging(logging.WARNING)
    cfg = config_from_args(args, overrides_from_args(args))
    if bool(args.model) == bool(args.lexical):
        raise ConfigError("give exactly one of --model DIR or --lexical")

    from raysparse.data import load_source
    from raysparse.opensearch import (
        AccessDenied,
        EncoderMismatch,
        IndexInterrupted,
        OpenSearchError,
        ServerUnreachable,
        check_reachable,
        encoder_identity,
        index_corpus,
        index_corpus_on_workers,
        index_documents,
        index_mapping,
        lexical_encoder_factory,
        make_client,
        model_encoder_factory,
        prepare_index,
    )

    url, index = cfg.opensearch.url, cfg.opensearch.index
    client = make_client(cfg.opensearch)
    try:
        # before loading data or a model: a stopped server or a user without rights on the index is one line,
        # not a traceback minutes later
        check_reachable(client, url)
        client.indices.exists(index=index)
    except (ServerUnreachable, AccessDenied) as err:
        print(f"raysparse index: {err}", file=sys.stderr)
        return 2
    data = load_source(cfg.data)
    for report in data.reports:
        print(report, file=sys.stderr)
    print(f"data: {data.summary()}", file=sys.stderr)
    if args.model:
        # lengths/windows: the model's saved encoding spec (raysparse.json, covered by the model hash)
        factory = model_encoder_factory(args.model, top_k=args.top_k)
        encoder = encoder_identity(args.model, doc_top_k=args.top_k)
    else:
        factory = lexical_encoder_factory("bigram")
        encoder = encoder_identity(lexical_analyzer="bigram")
    try:
        if args.no_ray:
            with_date = data.corpus.column("date").null_count < data.corpus.num_rows
            mapping = index_mapping(with_date=with_date, bm25_mode=args.bm25_mode, encoder=encoder)
            forced = prepare_index(client, index, mapping, encoder, recreate=args.recreate, force=args.force)
            report = index_documents(
                client,
                index,
                data.corpus.to_pylist(),
                factory(),
                bm25_analyzer=args.bm25_analyzer if args.bm25_mode == "whitespace" else None,
                batch_size=args.batch_size,
                bulk_batch_size=cfg.opensearch.bulk_batch_size,
                max_retries=cfg.opensearch.max_retries,
            )
            report.forced = forced
        else:
            from raysparse.ray_utils import init_ray

            init_ray(cfg.ray.address)
            indexer = index_corpus_on_workers if args.direct else index_corpus
            report = indexer(
                data,
                factory,
                cfg.opensearch,
                client=client,
                bm25_analyzer=args.bm25_analyzer,
                bm25_mode=args.bm25_mode,
                recreate=args.recreate,
                encoder=encoder,
                force=args.force,
                batch_size=args.batch_size,
                num_actors=args.actors,
                num_cpus_per_actor=args.cpus_per_actor,
                resources=cfg.mining.resources,  # the CPU pool, as for mining (docs/deployment.md)
            )
    except (EncoderMismatch, AccessDenied) as err:
        print(f"raysparse index: {err}", file=sys.stderr)
        return 2
    except IndexInterrupted as err:
        print(f"raysparse index: {err} (OpenSearch at {url})", file=sys.stderr)
        print(json.dumps(err.report.as_dict(), ensure_ascii=False, indent=2) if args.json else err.report)
        return 1
    except OpenSearchError as err:
        print(f"raysparse index: {err}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) if args.json else report)
    return 1 if report.failed else 0
