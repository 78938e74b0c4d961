"""``raysparse demo``: serve a search page comparing BM25, sparse and hybrid results on one OpenSearch index."""

from __future__ import annotations

import argparse
import logging
import sys

from raysparse.cli import add_config_args, config_from_args, setup_logging
from raysparse.fusion import DEFAULT_BM25_WEIGHT


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="serve a search page: BM25, sparse and hybrid results side by side",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Serve one web page on http://HOST:PORT/ that searches an index built by `raysparse index`:

  - a query box;
  - three result columns from the same query: BM25 (OpenSearch match on the pre-analysed BM25 field), sparse
    (rank_feature query with the model's query term weights) and hybrid (the two lists min-max normalised and
    summed with --bm25-weight, raysparse.fusion — the same fusion `raysparse search --mode hybrid` uses);
  - the query's terms with their weights, each marked as a piece of the query itself, an expansion, or a
    Korean<->English expansion (a term in the other script, or a translation from the model's table);
  - in every hit, the matched terms highlighted in the text and listed with query weight x document weight.

The page and its JSON route (/api/search?q=TEXT) are served by Python's standard library; the page loads nothing
from the internet. It binds 127.0.0.1 unless --host says otherwise (it has no authentication of its own).
Stop it with Ctrl-C.

Example:
  raysparse index --url http://127.0.0.1:9200 --index ko --model OUT/model --beir OUT/data/dev/klue
  raysparse demo --url http://127.0.0.1:9200 --index ko --model OUT/model --port 8080
""",
    )
    parser.add_argument("--url", help="OpenSearch URL (opensearch.url); auth and TLS from the config")
    parser.add_argument("--index", help="index name (opensearch.index)")
    parser.add_argument(
        "--model", metavar="DIR", required=True, help="the SparseEncoder directory the index was built with"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="port to serve on (default 8080; 0 = any free)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("-k", "--size", type=int, default=10, help="hits per column (default 10)")
    parser.add_argument(
        "--bm25-analyzer",
        choices=["bigram", "kiwi"],
        default="bigram",
        help="analyser the index's BM25 field was built with (`raysparse index --bm25-analyzer`; default bigram)",
    )
    parser.add_argument(
        "--bm25-weight",
        type=float,
        default=DEFAULT_BM25_WEIGHT,
        help="hybrid: weight of the min-max normalised BM25 list (the sparse list gets 1 - it; default %(default)s)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="serve even when the index records another encoder (model hash, query mode) than --model",
    )
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from raysparse.config import ConfigError

    if not 0.0 <= args.bm25_weight <= 1.0:
        raise ConfigError(f"--bm25-weight must be in [0, 1], got {args.bm25_weight}")
    if args.size < 1:
        raise ConfigError(f"--size must be >= 1, got {args.size}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    overrides = [f"opensearch.url={args.url}"] if args.url else []
    overrides += [f"opensearch.index={args.index}"] if args.index else []
    cfg = config_from_args(args, overrides)
    from raysparse.model import check_model_source

    check_model_source(args.model)  # not a model directory: one line naming it, before the server is asked
    setup_logging()

    from raysparse.demo import DemoSearcher, make_server
    from raysparse.opensearch import OpenSearchError, check_reachable, make_client

    url, index = cfg.opensearch.url, cfg.opensearch.index
    client = make_client(cfg.opensearch)
    check_reachable(client, url)  # unreachable: one line, exit 2 (cli.main's error policy)
    if not client.indices.exists(index=index):
        raise OpenSearchError(f"no index {index!r} at {url} (build it with `raysparse index`)")
    searcher = DemoSearcher.open(
        client,
        index,
        args.model,
        force=args.force,
        size=args.size,
        bm25_analyzer=args.bm25_analyzer,
        bm25_weight=args.bm25_weight,
    )
    server = make_server(searcher, args.host, args.port)
    host, port = server.server_address[:2]
    logging.getLogger(__name__).info("index %s at %s, model %s", index, url, args.model)
    # the last stdout line is the page's address (scripts and tests read it)
    print(f"http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("raysparse demo: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
