"""``raysparse export``: TorchScript, ONNX, OpenSearch zips and HF layout of a trained model, parity-checked."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from raysparse.cli import add_config_args, config_from_args, print_locations

EXPORT_FORMATS = ("torchscript", "onnx", "opensearch", "hf", "sentence-transformers")


def _formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad or not formats:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {', '.join(bad) or repr(text)}; choose from {','.join(EXPORT_FORMATS)}"
        )
    return formats


def _read_texts(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--parity-text file not found: {p}")
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="TorchScript / ONNX / OpenSearch model zips (+ HF layout) with parity checks",
        description=(
            "Export a trained sparse encoder directory (SparseEncoder.save_pretrained layout). Each artefact computes "
            "the whole encoder (pooling included) and is compared with PyTorch on random Korean/English batches; the "
            "max abs difference goes to OUT/manifest.json and a difference above export.parity_tolerance is an "
            "error. 'opensearch' writes ml-commons SPARSE_ENCODING (and, for inference-free models, SPARSE_TOKENIZE) "
            "zips with their _register request bodies. --model and --out accept storage URIs (s3://, gs://, "
            "file://) as well as paths; inside a Ray job a relative --out goes to ray.storage_path/results/OUT "
            "(refused when ray.storage_path is relative too). Ends with 'export: LOCATION' and 'manifest: LOCATION'."
        ),
    )
    add_config_args(parser)
    parser.add_argument(
        "--model",
        required=True,
        metavar="DIR|URI",
        help="trained model directory, or its storage URI (what a job printed after 'model:')",
    )
    parser.add_argument("--out", required=True, metavar="DIR|URI", help="output directory or storage URI")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="--out holds an earlier export (manifest.json): remove that export's bundles, manifest and model card "
        "first; without it such a directory is refused (exit 2), so no unlisted old bundle stays beside new ones",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        type=_formats,
        default=None,
        metavar="LIST",
        help=f"comma-separated subset of {','.join(EXPORT_FORMATS)} (default: export.formats from the config)",
    )
    parser.add_argument(
        "--name", help="model name in the OpenSearch bundles (default: the model directory name)"
    )
    parser.add_argument("--version", default="1.0.0", help="model version in the register bodies")
    parser.add_argument(
        "--metrics", metavar="FILE", help="metrics.json for the model card (default: beside the model)"
    )
    parser.add_argument(
        "--train-config",
        metavar="FILE",
        help="training config for the model card (default: one beside the model)",
    )
    parser.add_argument(
        "--parity-text",
        metavar="FILE",
        help="text file (one text per line) whose words build the random parity sentences "
        "(default: the tokenizer's vocabulary)",
    )
    parser.add_argument(
        "--max-length", type=int, help="truncation length written into tokenizer.json for OpenSearch"
    )
    parser.set_defaults(func=run)


def earlier_export(out: Path) -> list[Path]:
    """What an earlier export left in ``out``: its manifest, model card and every bundle the manifest lists."""
    from raysparse.export import MANIFEST_FILE, MODEL_CARD_FILE

    manifest_path = out / MANIFEST_FILE
    if not manifest_path.is_file():
        return []
    found = [manifest_path]
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    names = {
        MODEL_CARD_FILE,
        *(str(e.get("path", "")) for e in manifest.get("files", []) if isinstance(e, dict)),
    }
    for name in names:
        target = (out / name).resolve()
        if name and target.is_relative_to(out.resolve()) and target.exists():
            found.append(out / name)
    return found


def run(args: argparse.Namespace) -> int:
    from raysparse.errors import InputError
    from raysparse.export import ExportParityError, export_model
    from raysparse.outputs import claim_output_dir
    from raysparse.storage import local_model, resolve_output

    cfg = config_from_args(args)
    location = resolve_output(args.out, cfg.ray.storage_path, "raysparse export", address=cfg.ray.address)
    out = location.local
    if "://" not in args.model and out.resolve() == Path(args.model).resolve():
        raise InputError(
            f"export --out {args.out} is the --model directory: exporting there would rewrite the model's own "
            "tokenizer files; choose another --out"
        )
    removed = claim_output_dir(out, "export", earlier_export, args.overwrite)
    if removed:
        print(f"--overwrite: removed the earlier export ({len(removed)} files) from {out}", file=sys.stderr)
    try:
        model_dir = local_model(args.model)
        manifest = export_model(
            model_dir,
            location.local,
            formats=args.formats,
            cfg=cfg.export,
            name=args.name or (Path(args.model.rstrip("/")).name if args.model != model_dir else None),
            version=args.version,
            parity_texts=_read_texts(args.parity_text) if args.parity_text else None,
            metrics_path=args.metrics,
            config_path=args.train_config,
            max_length=args.max_length,
        )
        location.publish()
    except (
        ExportParityError
    ) as err:  # the exported model disagrees with PyTorch: a failed check, not bad input
        print(f"raysparse export: {err}", file=sys.stderr)
        return 1
    for entry in manifest["files"]:
        diff = entry.get("parity_max_abs_diff")
        parity = "" if diff is None else f"  max|diff| {diff:.2e}"
        print(f"{entry['format']:<28} {location.location(entry['path'])}{parity}")
    print(json.dumps(manifest["sparsity"]))
    print_locations(location, {"export": location.local, "manifest": location.local / "manifest.json"})
    return 0
