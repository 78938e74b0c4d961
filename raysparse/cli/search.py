"""``raysparse search``: query an OpenSearch index and show each hit's matched terms and weights."""

from __future__ import annotations

import argparse
import json
import sys

from raysparse.cli import add_config_args, config_from_args
from raysparse.config import ConfigError
from raysparse.fusion import DEFAULT_BM25_WEIGHT


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="query OpenSearch and show the matched terms",
        description=(
            "Run one query against an index built by `raysparse index`: sparse (rank_feature / neural_sparse with "
            "the model's query term weights), bm25 (pre-analysed BM25 field) or hybrid (min-max normalised, "
            "weighted sum). Each hit lists the matched terms as token query-weight x doc-weight."
        ),
    )
    parser.add_argument("query", help='the query text, e.g. "한국어 검색 모델"')
    parser.add_argument("--url", help="OpenSearch URL (opensearch.url)")
    parser.add_argument("--index", help="index name (opensearch.index)")
    parser.add_argument("--model", metavar="DIR", help="SparseEncoder directory (query side)")
    parser.add_argument("--lexical", action="store_true", help="model-free lexical query weights instead")
    parser.add_argument(
        "--server-encode",
        metavar="MODEL_ID",
        help=(
            "encode the query on the server with this deployed ml-commons model (`raysparse deploy` prints the id): "
            "_predict, then the sparse query, as an OpenSearch user would; --model DIR, when given as well, is "
            "only used to check the index's recorded encoder"
        ),
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="search even when the index records another encoder (model hash, query length, mode) than --model",
    )
    parser.add_argument("--mode", choices=["sparse", "bm25", "hybrid"], default="sparse")
    parser.add_argument("--bm25-analyzer", choices=["bigram", "kiwi"], default="bigram")
    parser.add_argument(
        "--bm25-weight",
        type=float,
        default=DEFAULT_BM25_WEIGHT,
        help="hybrid: weight of the min-max normalised BM25 list (the sparse list gets 1 - it; default %(default)s)",
    )
    parser.add_argument("-k", "--size", type=int, default=10, help="hits to show")
    parser.add_argument("--terms", type=int, default=8, help="matched terms to show per hit")
    parser.add_argument("--json", action="store_true", help="print hits as JSON lines")
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = [f"opensearch.url={args.url}"] if args.url else []
    overrides += [f"opensearch.index={args.index}"] if args.index else []
    cfg = config_from_args(args, overrides)
    if not args.query.strip():
        # an empty query matches nothing; without this check special-token noise came back as 10 "hits"
        raise ConfigError("the query is empty (give some text to search for)")
    if args.mode != "bm25" and not args.server_encode and bool(args.model) == bool(args.lexical):
        raise ConfigError(
            f"--mode {args.mode} needs exactly one of --model DIR, --lexical or --server-encode"
        )
    if args.model and args.lexical:
        raise ConfigError("give --model DIR or --lexical, not both")

    from raysparse.opensearch import (
        AccessDenied,
        EncoderMismatch,
        OpenSearchError,
        ServerUnreachable,
        check_encoder,
        check_reachable,
        encoder_identity,
        lexical_term_weights,
        make_client,
        model_query_encoder,
        search,
        server_query_encoder,
    )

    url, index = cfg.opensearch.url, cfg.opensearch.index
    client = make_client(cfg.opensearch)
    try:
        check_reachable(client, url)
    except (ServerUnreachable, AccessDenied) as err:
        print(f"raysparse search: {err}", file=sys.stderr)
        return 2
    if not client.indices.exists(index=index):
        print(f"raysparse search: no index {index!r} at {url}", file=sys.stderr)
        return 2
    encoder = None
    wanted = None
    if args.model:
        encoder = model_query_encoder(args.model)  # the model's spec
        wanted = encoder_identity(args.model)
    elif args.lexical:
        encoder = lexical_term_weights
        wanted = encoder_identity(lexical_analyzer="bigram")
    try:
        if wanted is not None and args.mode != "bm25":
            forced = check_encoder(client, index, wanted, for_search=True, force=args.force)
            if forced:
                print(f"raysparse search: --force: searching despite {'; '.join(forced)}", file=sys.stderr)
        if args.server_encode:
            encoder = server_query_encoder(client, args.server_encode)
    except (EncoderMismatch, AccessDenied) as err:
        print(f"raysparse search: {err}", file=sys.stderr)
        return 2
    except OpenSearchError as err:
        print(f"raysparse search: {err}", file=sys.stderr)
        return 1
    try:
        hits = search(
            client,
            index,
            args.query,
            encoder,
            mode=args.mode,
            size=args.size,
            bm25_analyzer=args.bm25_analyzer,
            bm25_weight=args.bm25_weight,
        )
    except AccessDenied as err:
        print(f"raysparse search: {err}", file=sys.stderr)
        return 2
    except OpenSearchError as err:
        print(f"raysparse search: {err}", file=sys.stderr)
        return 1
    if not hits:
        print("no hits")
    for rank, hit in enumerate(hits, start=1):
        terms = list(hit.matched.items())[: args.terms]
        if args.json:
            print(
                json.dumps(
                    {
                        "rank": rank,
                        "doc_id": hit.doc_id,
                        "score": hit.score,
                        "title": hit.title,
                        "matched": dict(terms),
                    },
                    ensure_ascii=False,
                )
            )
            continue
        snippet = " ".join(hit.text.split())[:120]
        print(f"{rank:>2}. {hit.score:9.4f}  {hit.doc_id}  {hit.title}")
        print(f"    {snippet}")
        if terms:
            print("    " + "  ".join(f"{t} {qw:.2f}x{dw:.2f}" for t, (qw, dw) in terms))
    return 0
