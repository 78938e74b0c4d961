"""``raysparse deploy``: register and deploy an exported sparse model bundle in OpenSearch ml-commons."""

from __future__ import annotations

import argparse
import json
import sys

from raysparse.cli import add_config_args, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="register + deploy an OpenSearch model bundle (ml-commons)",
        description=(
            "Register one zip written by `raysparse export --format opensearch` (SPARSE_ENCODING: TorchScript/ONNX "
            "model + tokenizer.json; SPARSE_TOKENIZE: tokenizer.json + idf.json) with ml-commons — chunked upload "
            "with the zip's sha256 — deploy it and wait until it is DEPLOYED. Idempotent: a model with the same "
            "name and sha256 already registered is reused, not registered twice. Cluster settings are only "
            "checked; --apply-settings sets the missing ones (persistent) and reports them. The last stdout line "
            "is the deployed model id; exit 0 only once the model is DEPLOYED. Auth and TLS come from the config "
            "(opensearch.*)."
        ),
    )
    parser.add_argument("--url", help="OpenSearch URL (opensearch.url)")
    parser.add_argument(
        "--bundle", metavar="ZIP", required=True, help="OUT/opensearch/<name>-sparse-{encoding,tokenize}.zip"
    )
    parser.add_argument(
        "--apply-settings",
        action="store_true",
        help=(
            "set plugins.ml_commons.allow_registering_model_via_local_file=true and only_run_on_ml_node=false "
            "when they are not (cluster-wide, persistent)"
        ),
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for DEPLOYED (default 300)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON before the id line")
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, [f"opensearch.url={args.url}"] if args.url else [])
    from raysparse.opensearch import (
        AccessDenied,
        OpenSearchError,
        PluginUnavailable,
        ServerUnreachable,
        check_reachable,
        deploy_bundle,
        make_client,
    )
    from raysparse.opensearch.mlcommons import MLCommonsError, bundle_info

    url = cfg.opensearch.url
    try:
        bundle_info(args.bundle)  # a bad bundle is the user's input: exit 2 before talking to the server
    except MLCommonsError as err:
        print(f"raysparse deploy: {err}", file=sys.stderr)
        return 2
    client = make_client(cfg.opensearch, timeout=max(60.0, args.timeout))
    try:
        check_reachable(client, url)
        result = deploy_bundle(client, args.bundle, apply_settings=args.apply_settings, timeout=args.timeout)
    except (ServerUnreachable, PluginUnavailable, AccessDenied) as err:
        print(f"raysparse deploy: {err}", file=sys.stderr)
        return 2
    except OpenSearchError as err:
        print(f"raysparse deploy: {url}: {err}", file=sys.stderr)
        return 1
    for key, value in result.settings_changed.items():
        print(f"raysparse deploy: changed cluster setting {key}={value} (persistent)", file=sys.stderr)
    how = "already registered, reused" if result.reused else "registered"
    print(
        f"raysparse deploy: {result.name} ({result.function_name}, sha256 {result.sha256[:12]}…) {how}, "
        f"{result.state} in {result.seconds:.1f} s",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
    print(result.model_id)
    return 0
