"""``raysparse encode``: print the top weighted terms of texts with any exported model format."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="show the sparse terms of a text (PyTorch dir, TorchScript .pt or ONNX .onnx)",
        description=(
            "Encode texts and print their top terms with weights. --model is a model directory (PyTorch), a .pt "
            "(TorchScript) or a .onnx file; the tokenizer is read from the directory holding the file. An export "
            "directory plus --format picks its model.pt / model.onnx."
        ),
    )
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="texts to encode")
    parser.add_argument("--model", required=True, metavar="PATH", help="model dir, .pt or .onnx")
    parser.add_argument(
        "--format", choices=["pytorch", "torchscript", "onnx"], help="default: from the path (.pt/.onnx/dir)"
    )
    parser.add_argument("--top-k", type=int, default=20, help="terms to show per text (default 20)")
    side = parser.add_mutually_exclusive_group()
    side.add_argument("--query", dest="is_query", action="store_true", help="encode as queries")
    side.add_argument(
        "--document", dest="is_query", action="store_false", help="encode as documents (default)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per text instead of a table")
    parser.set_defaults(func=run, is_query=False)


def run(args: argparse.Namespace) -> int:
    from raysparse.export import load_term_encoder

    if args.top_k is not None and args.top_k < 1:
        print("raysparse encode: --top-k must be >= 1", file=sys.stderr)
        return 2
    empty = [i for i, text in enumerate(args.texts, start=1) if not text.strip()]
    if empty:  # an empty text has no terms; the model would return special-token noise as if it had
        print(f"raysparse encode: text {empty[0]} of {len(args.texts)} is empty", file=sys.stderr)
        return 2
    encoder = load_term_encoder(args.model, args.format)  # a bad model dir: one line, exit 2 (cli.main)
    results = encoder.encode(args.texts, is_query=args.is_query, top_k=args.top_k)
    for text, terms in zip(args.texts, results, strict=True):
        if args.json:
            print(json.dumps({"text": text, "terms": terms}, ensure_ascii=False))
            continue
        print(f"# {text}  ({len(terms)} terms, {encoder.format}, {'query' if args.is_query else 'document'})")
        for token, weight in terms.items():
            print(f"{token}\t{weight:.4f}")
    return 0
