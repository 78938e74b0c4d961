"""``raysparse generate-queries``: synthetic Korean queries (doc2query) from an LLM server, on Ray Data."""

from __future__ import annotations

import argparse
import sys
import textwrap

from raysparse.cli import (
    add_allow_empty_arg,
    add_config_args,
    add_data_source_args,
    config_from_args,
    data_source_overrides,
    flag_overrides,
    setup_logging,
)

EPILOG = """\
A real model server is needed: nothing here runs a language model. Start one, then point --url at it.

examples:
  # Ollama (native API, http://127.0.0.1:11434 by default): `ollama serve` and `ollama pull qwen2.5:7b` first
  raysparse generate-queries --api ollama --model qwen2.5:7b \\
      --data-format parquet --data-path passages.parquet --out outputs/genq

  # vLLM or llama.cpp server (OpenAI-compatible): `vllm serve Qwen/Qwen2.5-7B-Instruct --port 8000`
  raysparse generate-queries --api openai --url http://127.0.0.1:8000 --model Qwen/Qwen2.5-7B-Instruct \\
      --beir corpus_dir --concurrency 16 --stream --out outputs/genq

  # then mine and train on the kept queries, no conversion:
  raysparse mine --beir outputs/genq/beir --out outputs/genq/mined
  raysparse run --set data.format=beir --set data.path=outputs/genq/beir

Re-running the same command resumes: documents with a reply for the same prompt version and model are skipped
(failed requests are tried again). Outputs: OUT/raw/*.parquet (every reply, the resumable state),
OUT/generations.parquet (reply, parsed queries, one filter verdict per query), OUT/beir/, OUT/generate_report.json.
An API key for --api openai is read from $OPENAI_API_KEY (generate.api_key_env names another variable).
See docs/synthetic-queries.md."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate-queries",
        help="synthetic Korean queries (doc2query) from an LLM server (Ollama / OpenAI-compatible) on Ray Data",
        description=textwrap.fill(
            "Ask an LLM server for --num-queries search queries per passage (prompt template from a file), with "
            "bounded concurrency (--concurrency requests in flight, one Ray Data actor each), timeouts and retries "
            "with back-off on 429/5xx/timeouts. Queries are kept when they are mostly Korean, within the length "
            "bounds, not duplicates and retrieve their own passage in BM25's top k (the round trip). Kept pairs are "
            "written as a BEIR directory that `raysparse mine` and `raysparse run` read as is. Flags are shorthands "
            "for config keys (generate.*, data.*).",
            width=100,
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    server = parser.add_argument_group("model server")
    server.add_argument(
        "--api", choices=["ollama", "openai"], help="generate.api: wire protocol of the server"
    )
    server.add_argument("--url", metavar="URL", help="generate.url: server root, e.g. http://127.0.0.1:11434")
    server.add_argument(
        "--model", metavar="NAME", help="generate.model: the model the server runs (required)"
    )
    server.add_argument(
        "--ollama-endpoint",
        choices=["chat", "generate"],
        help="generate.ollama_endpoint: /api/chat or /api/generate",
    )
    server.add_argument(
        "--stream", action="store_true", default=None, help="generate.stream: streamed replies"
    )
    server.add_argument("--timeout", type=float, metavar="S", help="generate.read_timeout in seconds")
    server.add_argument("--retries", type=int, metavar="N", help="generate.max_retries after the first try")
    server.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="generate.concurrency: requests in flight (Ray Data actors)",
    )
    gen = parser.add_argument_group("prompt")
    gen.add_argument(
        "--prompt",
        metavar="NAME|FILE",
        help="generate.prompt: a shipped template (doc2query_ko_v1) or your own file with {title} {text} "
        "{num_queries}",
    )
    gen.add_argument("--num-queries", type=int, metavar="N", help="generate.num_queries per passage")
    gen.add_argument("--max-docs", type=int, metavar="N", help="generate.max_docs: only the first N passages")
    filters = parser.add_argument_group("filters")
    filters.add_argument(
        "--min-korean-ratio", type=float, metavar="R", help="generate.min_korean_ratio (0.8)"
    )
    filters.add_argument("--min-chars", type=int, metavar="N", help="generate.min_chars")
    filters.add_argument("--max-chars", type=int, metavar="N", help="generate.max_chars")
    filters.add_argument(
        "--round-trip", choices=["bm25", "model", "none"], help="generate.round_trip: the retrieval check"
    )
    filters.add_argument("--round-trip-k", type=int, metavar="K", help="generate.round_trip_k")
    filters.add_argument(
        "--round-trip-model",
        metavar="DIR",
        help="generate.round_trip_model (a trained model, --round-trip model)",
    )
    add_data_source_args(
        parser,
        "passages (default: data.format/data.path of the config)",
        "a BEIR directory (its corpus.jsonl is used)",
    )
    parser.add_argument("--out", metavar="DIR", help="output directory (default: <output_dir>/generated)")
    parser.add_argument(
        "--no-ray", action="store_true", help="generate with threads in this process, not Ray Data"
    )
    add_allow_empty_arg(parser, "no query is kept (every request failed or every reply was filtered out)")
    add_config_args(parser)
    parser.set_defaults(func=run)


_FLAGS = (
    ("api", "api"),
    ("url", "url"),
    ("model", "model"),
    ("ollama_endpoint", "ollama_endpoint"),
    ("stream", "stream"),
    ("timeout", "read_timeout"),
    ("retries", "max_retries"),
    ("concurrency", "concurrency"),
    ("prompt", "prompt"),
    ("num_queries", "num_queries"),
    ("max_docs", "max_docs"),
    ("min_korean_ratio", "min_korean_ratio"),
    ("min_chars", "min_chars"),
    ("max_chars", "max_chars"),
    ("round_trip", "round_trip"),
    ("round_trip_k", "round_trip_k"),
    ("round_trip_model", "round_trip_model"),
)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The command's flags as dotted config overrides (``--set`` still wins, it is applied last)."""
    return data_source_overrides(args) + flag_overrides(args, "generate", _FLAGS)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    setup_logging()
    cfg = config_from_args(args, overrides_from_args(args))
    gcfg = cfg.generate
    if not gcfg.model:
        print("raysparse generate-queries: --model (generate.model) is required", file=sys.stderr)
        return 2

    from raysparse.data import load_source
    from raysparse.generate import LLMRequestError, generate_queries, make_client
    from raysparse.generate.prompts import load_prompt

    load_prompt(gcfg.prompt)  # a missing or malformed template: one line, exit 2 (cli.main)
    # Fail in a second, not after starting Ray, when the server is not there or does not know the model.
    try:
        models = make_client(gcfg, max_retries=1, backoff_base=0.5).list_models()
    except LLMRequestError as err:
        print(
            f"raysparse generate-queries: the model server at {gcfg.url} is not reachable: {err}",
            file=sys.stderr,
        )
        return 2
    if models and gcfg.model not in models and f"{gcfg.model}:latest" not in models:
        print(
            f"raysparse generate-queries: warning: {gcfg.url} lists {models[:10]}, not {gcfg.model!r}",
            file=sys.stderr,
        )

    data = load_source(cfg.data)
    for report in data.reports:
        print(report, file=sys.stderr)
    print(f"passages: {data.corpus.num_rows}", file=sys.stderr)
    if not args.no_ray:
        from raysparse.ray_utils import init_ray

        init_ray(cfg.ray.address)
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "generated"
    try:
        report = generate_queries(data, gcfg, out, ray=not args.no_ray)
    except LLMRequestError as err:  # generate.on_error=raise
        print(f"raysparse generate-queries: {err} (re-run to resume)", file=sys.stderr)
        return 1
    print(report)
    print(f"wrote {report.output}, {report.beir_dir} and {out / 'generate_report.json'}")
    from raysparse.errors import require_nonempty

    failed = ", ".join(f"{n} {k}" for k, n in sorted(report.docs_failed.items())) or "no failed request"
    require_nonempty(
        report.queries_kept,
        f"generate-queries {out}",
        f"0 queries kept from {report.docs_in} documents; failed requests: {failed}",
        args.allow_empty,
    )
    return 0
