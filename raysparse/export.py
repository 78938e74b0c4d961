"""Export a trained :class:`~raysparse.model.SparseEncoder` to TorchScript, ONNX, OpenSearch bundles and HF layout.

Every exported graph computes the *whole* encoder — MLM logits, lexical prior, masked max-pooling, ``log1p∘relu`` and
the special-token mask — so a consumer only tokenizes and reads a (B, V) tensor. Each artefact is checked against
eager PyTorch on fresh random Korean/English batches (with padding, several batch sizes and lengths) and the measured
max |difference| is written to ``manifest.json``; an export whose parity exceeds ``ExportConfig.parity_tolerance``
raises :class:`ExportParityError` instead of shipping a silently different model.

OpenSearch ml-commons contract (checked against ml-commons' ``SentenceTransformerTranslator`` /
``SparseEncodingTranslator`` / ``SparseTokenizerModel`` / ``ModelHelper`` and opensearch-py-ml's
``NeuralSparseModel``):

* SPARSE_ENCODING zip: exactly one ``*.pt`` (more than one ``.pt``/``.onnx`` is rejected: "found multiple models")
  and ``tokenizer.json`` at the zip root. DJL tokenizes one text with ``tokenizer.json`` and passes the ids/mask as
  ``input1.input_ids`` / ``input1.attention_mask``, i.e. a single ``Dict[str, Tensor]`` argument with keys
  ``input_ids`` and ``attention_mask`` (shape (1, L), batchifier STACK). The module returns ``{"output": (B, V)}``;
  ml-commons unbatchifies, takes the non-zero entries and names each by ``tokenizer.decode([id], skip_special=True)``.
  :class:`OpenSearchSparseModule` is that wrapper. ``tokenizer.json`` must carry a truncation setting (DJL would feed
  any length to the position embeddings otherwise), so :func:`opensearch_tokenizer_json` fills it.
* SPARSE_TOKENIZE zip (inference-free queries): ``tokenizer.json`` + ``idf.json`` (``{decoded token: weight}``); no
  model file. ml-commons gives each distinct query token ``idf.get(token, 1.0)`` — a token missing from idf.json
  weighs 1.0, so every non-special token is written, zeros included.
* Register body: ``name``, ``version``, ``model_format: TORCH_SCRIPT``, ``function_name``,
  ``model_content_size_in_bytes``, ``model_content_hash_value`` (sha256 hex of the zip); no ``model_config`` is
  needed for either function. Add ``url`` or upload the zip in chunks (``_register_meta`` + ``upload_chunk``).

Layout of an export directory (``OUT``)::

    OUT/manifest.json                 files, formats, input/output names, parity figures
    OUT/model.pt                      TorchScript: forward(input_ids, attention_mask) -> (B, V)
    OUT/model.onnx                    ONNX: inputs input_ids/attention_mask, output "sparse_vector" (B, V)
    OUT/tokenizer.json ...            tokenizer + raysparse.json (+ query_weights.safetensors) beside them
    OUT/opensearch/<name>-sparse-encoding.zip (+ .register.json)
    OUT/opensearch/<name>-sparse-tokenize.zip (+ .register.json)   inference-free models only
    OUT/hf/                           SparseEncoder.save_pretrained layout
    OUT/sentence-transformers/        sentence_transformers.SparseEncoder(path) loads it (raysparse.interop)
    OUT/MODEL_CARD.md
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raysparse.config import ExportConfig

FORMATS = ("torchscript", "onnx", "opensearch", "hf", "sentence-transformers")
INPUT_NAMES = ["input_ids", "attention_mask"]
ONNX_OUTPUT_NAME = "sparse_vector"
OPENSEARCH_OUTPUT_KEY = "output"
TORCHSCRIPT_FILE = "model.pt"
ONNX_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
TOKENIZE_DEFAULT_WEIGHT = 1.0  # what ml-commons' SparseTokenizerModel gives a token missing from idf.json

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """An export step failed; the message names the model directory and the step."""


class ExportParityError(ExportError):
    """An exported graph differs from eager PyTorch by more than the configured tolerance."""


# ---------------------------------------------------------------------------------------------- traceable wrappers
class OpenSearchSparseModule(nn.Module):
    """ml-commons SPARSE_ENCODING signature: ``{"input_ids", "attention_mask"} -> {"output": (B, V)}``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        reps = self.encoder(features["input_ids"], features["attention_mask"])
        return {OPENSEARCH_OUTPUT_KEY: reps}


# ---------------------------------------------------------------------------------------------- parity inputs
def words_from_texts(texts: Sequence[str]) -> list[str]:
    """Whitespace words of ``texts`` (deduplicated, order kept) — the vocabulary random parity sentences draw from."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in str(text).split():
            seen.setdefault(word, None)
    return list(seen)


def words_from_tokenizer(tokenizer: Any, limit: int = 5000) -> list[str]:
    """Fallback word list when no real text is given: whole-word (non-``##``, non-special) vocabulary entries."""
    special = set(tokenizer.all_special_tokens)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    words = [t for t, _ in vocab if t not in special and not t.startswith("##") and not t.startswith("[")]
    return words[:limit]


def random_sentences(
    words: Sequence[str], n: int, min_words: int = 1, max_words: int = 40, seed: int = 0
) -> list[str]:
    """``n`` sentences of ``min_words``..``max_words`` words sampled from ``words`` (fresh, so never seen in training)."""
    if not words:
        raise ValueError("random_sentences needs a non-empty word list")
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(min_words, max_words))) for _ in range(n)]


def parity_batches(
    tokenizer: Any, words: Sequence[str], *, seed: int = 0, max_length: int = 128
) -> list[dict[str, torch.Tensor]]:
    """Padded batches of sizes 1, 2, 3, 5 and 8 with very different lengths: the dynamic-axis and padding cases.

    Size 1 has no padding and a larger batch mixes short and long sentences, so a graph that captured one shape or
    ignored the mask shows up as a parity failure.
    """
    batches = []
    for i, (size, max_words) in enumerate([(1, 6), (2, 60), (3, 25), (5, 12), (8, 60)]):
        texts = random_sentences(words, size, 1, max_words, seed=seed * 100 + i)
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batches.append({k: enc[k] for k in INPUT_NAMES})
    return batches


def _max_abs_diff(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    if a.shape != b.shape:
        raise ExportParityError(f"exported output shape {a.shape} != eager shape {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _check(name: str, diff: float, tolerance: float) -> None:
    if not diff <= tolerance:  # also catches NaN
        raise ExportParityError(
            f"{name}: max |exported - eager| = {diff:.3g} exceeds parity_tolerance {tolerance:g}"
        )


# ---------------------------------------------------------------------------------------------- exporters
def export_torchscript(
    encoder: nn.Module, example: dict[str, torch.Tensor], path: str | Path, *, opensearch: bool = False
) -> Path:
    """Trace the encoder (pooling included) and save it; ``opensearch=True`` traces the dict-in/dict-out wrapper.

    The example must contain padding: tracing records one branch of the backbone's mask handling, and a batch
    without padding may take a shortcut that would then ignore masks forever.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = encoder.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # TracerWarnings from the backbone's shape checks (verified by parity)
        if opensearch:
            module: nn.Module = OpenSearchSparseModule(encoder).eval()
            traced = torch.jit.trace(module, (dict(example),), strict=False)
        else:
            traced = torch.jit.trace(encoder, (example["input_ids"], example["attention_mask"]))
    torch.jit.save(traced, str(path))
    return path


def export_onnx(
    encoder: nn.Module, example: dict[str, torch.Tensor], path: str | Path, opset: int = 17
) -> Path:
    """ONNX with dynamic batch and sequence axes; inputs ``input_ids``/``attention_mask``, output ``sparse_vector``.

    ``dynamo=False`` (TorchScript-based exporter): the dynamo exporter needs onnxscript and writes a side
    ``.onnx.data`` file; the classic one produces a single self-contained file for models under 2 GB.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"0": "batch", "1": "sequence"}
    dynamic_axes = {
        "input_ids": {0: axes["0"], 1: axes["1"]},
        "attention_mask": {0: axes["0"], 1: axes["1"]},
        ONNX_OUTPUT_NAME: {0: axes["0"]},
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder.eval(),
            (example["input_ids"], example["attention_mask"]),
            str(path),
            input_names=INPUT_NAMES,
            output_names=[ONNX_OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """A CPU ONNX Runtime session (``threads`` intra-op threads; None = ORT's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def torchscript_parity(
    encoder: nn.Module, path: str | Path, batches: Sequence[dict[str, torch.Tensor]], opensearch: bool = False
) -> float:
    """Max |TorchScript - eager| over ``batches`` (the saved file is loaded back, as a consumer would)."""
    loaded = torch.jit.load(str(path))
    worst = 0.0
    with torch.no_grad():
        for batch in batches:
            ref = encoder(batch["input_ids"], batch["attention_mask"])
            if opensearch:
                out = loaded({k: batch[k] for k in INPUT_NAMES})[OPENSEARCH_OUTPUT_KEY]
            else:
                out = loaded(batch["input_ids"], batch["attention_mask"])
            worst = max(worst, _max_abs_diff(out, ref))
    return worst


def onnx_parity(encoder: nn.Module, path: str | Path, batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """Max |ONNX Runtime - eager| over ``batches``."""
    session = onnx_session(path)
    worst = 0.0
    with torch.no_grad():
        for batch in batches:
            ref = encoder(batch["input_ids"], batch["attention_mask"])
            feeds = {k: batch[k].numpy().astype(np.int64) for k in INPUT_NAMES}
            (out,) = session.run([ONNX_OUTPUT_NAME], feeds)
            worst = max(worst, _max_abs_diff(out, ref))
    return worst


# ---------------------------------------------------------------------------------------------- OpenSearch bundles
def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def opensearch_tokenizer_json(tokenizer: Any, max_length: int) -> str:
    """``tokenizer.json`` text with truncation set (DJL truncates only when the file says so) and padding cleared."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    trunc = data.get("truncation") or {}
    data["truncation"] = {
        "direction": trunc.get("direction", "Right"),
        "max_length": int(max_length),
        "strategy": trunc.get("strategy", "LongestFirst"),
        "stride": int(trunc.get("stride", 0)),
    }
    data["padding"] = None  # one text per call in ml-commons; DJL adds its own padding option
    return json.dumps(data, ensure_ascii=False)


def idf_json(tokenizer: Any, query_weights: torch.Tensor) -> tuple[dict[str, float], int]:
    """``{decoded token: weight}`` for every non-special token, keyed exactly as ml-commons looks tokens up.

    ml-commons decodes each query token id alone with ``skip_special_tokens=True``; two ids decoding to the same
    string keep the larger weight (returned as the collision count so the manifest can report it).
    """
    weights = torch.relu(query_weights.detach().float().cpu()).tolist()
    special = {int(i) for i in tokenizer.all_special_ids}
    out: dict[str, float] = {}
    collisions = 0
    for token_id in range(min(len(weights), len(tokenizer))):
        if token_id in special:
            continue
        key = tokenizer.decode([token_id], skip_special_tokens=True)
        if not key:
            continue
        if key in out:
            collisions += 1
            out[key] = max(out[key], float(weights[token_id]))
        else:
            out[key] = float(weights[token_id])
    return out, collisions


def register_body(
    zip_path: str | Path, *, name: str, version: str, function_name: str, description: str
) -> dict[str, Any]:
    """The ml-commons ``_plugins/_ml/models/_register`` body for a local zip (size and sha256 of the zip)."""
    zip_path = Path(zip_path)
    return {
        "name": name,
        "version": version,
        "description": description,
        "model_format": "TORCH_SCRIPT",
        "function_name": function_name,
        "model_content_size_in_bytes": zip_path.stat().st_size,
        "model_content_hash_value": sha256_of(zip_path),
    }


def _write_zip(zip_path: Path, members: dict[str, bytes | Path]) -> None:
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, content in members.items():
            if isinstance(content, Path):
                zf.write(content, arcname=arcname)
            else:
                zf.writestr(arcname, content)


def build_opensearch_bundles(
    encoder: Any,
    example: dict[str, torch.Tensor],
    out_dir: str | Path,
    *,
    name: str,
    version: str = "1.0.0",
    max_length: int = 512,
) -> list[dict[str, Any]]:
    """Write the SPARSE_ENCODING zip (+ SPARSE_TOKENIZE zip for inference-free models) and their register bodies.

    Returns one manifest entry per zip (the traced ``.pt`` is checked for parity by the caller).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = name.replace("/", "-")
    tok_json = opensearch_tokenizer_json(encoder.tokenizer, max_length).encode("utf-8")
    pt_name = f"{stem}.pt"
    staging = out / f".{stem}.staging"
    staging.mkdir(exist_ok=True)
    # the staged .pt is parity-checked by export_model (entry['_pt']) and then removed
    pt_path = export_torchscript(encoder, example, staging / pt_name, opensearch=True)
    enc_zip = out / f"{stem}-sparse-encoding.zip"
    _write_zip(enc_zip, {pt_name: pt_path, "tokenizer.json": tok_json})
    entries = [
        {
            "path": enc_zip,
            "format": "opensearch-sparse-encoding",
            "function_name": "SPARSE_ENCODING",
            "members": [pt_name, "tokenizer.json"],
            "inputs": {"features": {"input_ids": "int64 (B, L)", "attention_mask": "int64 (B, L)"}},
            "outputs": {OPENSEARCH_OUTPUT_KEY: "float32 (B, V)"},
            "_pt": pt_path,
        }
    ]
    qw = getattr(encoder, "query_weights", None)
    if qw is not None:
        idf, collisions = idf_json(encoder.tokenizer, qw)
        tok_zip = out / f"{stem}-sparse-tokenize.zip"
        _write_zip(
            tok_zip,
            {
                "tokenizer.json": tok_json,
                "idf.json": json.dumps(idf, ensure_ascii=False, indent=0).encode("utf-8"),
            },
        )
        entries.append(
            {
                "path": tok_zip,
                "format": "opensearch-sparse-tokenize",
                "function_name": "SPARSE_TOKENIZE",
                "members": ["tokenizer.json", "idf.json"],
                "inputs": {"text": "string"},
                "outputs": {"response": "{token: idf weight}"},
                "idf_tokens": len(idf),
                "idf_decode_collisions": collisions,
            }
        )
    for entry in entries:
        fn = entry["function_name"]
        body = register_body(
            entry["path"],
            name=f"{name}-{fn.lower().replace('_', '-')}",
            version=version,
            function_name=fn,
            description=f"raysparse {fn} model ({encoder.query_mode} query mode, vocabulary {encoder.vocab_size})",
        )
        reg_path = entry["path"].with_suffix(".register.json")
        reg_path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        entry["register_body"] = reg_path
        entry["sha256"] = body["model_content_hash_value"]
        entry["bytes"] = body["model_content_size_in_bytes"]
    return entries


# ---------------------------------------------------------------------------------------------- model card
def _flatten_metrics(metrics: Any, prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if isinstance(metrics, dict):
        for key, value in metrics.items():
            rows.extend(
                _flatten_metrics(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}")
            )
    elif isinstance(metrics, float):
        rows.append((prefix.rstrip("."), f"{metrics:.4f}"))
    elif isinstance(metrics, (int, str, bool)) or metrics is None:
        rows.append((prefix.rstrip("."), str(metrics)))
    else:
        rows.append((prefix.rstrip("."), json.dumps(metrics, ensure_ascii=False)[:200]))
    return rows


def sparsity_figures(encoder: Any, words: Sequence[str], seed: int = 0) -> dict[str, float]:
    """Mean non-zero terms per query (3–12 words) and per document (40–120 words) on random real-word sentences."""
    queries = random_sentences(words, 32, 3, 12, seed=seed + 7)
    docs = random_sentences(words, 16, 40, 120, seed=seed + 8)
    q = encoder.encode_queries(queries)
    d = encoder.encode_documents(docs)  # the model's encoding spec
    return {
        "query_terms_mean": float((q > 0).sum(1).float().mean()),
        "doc_terms_mean": float((d > 0).sum(1).float().mean()),
        "query_flops_proxy": float(((q > 0).float().mean(0) ** 2).sum()),
    }


def write_model_card(
    path: str | Path,
    *,
    encoder: Any,
    model_dir: Path,
    manifest: dict[str, Any],
    metrics: dict[str, Any] | None,
    config_text: str | None,
    sparsity: dict[str, float],
) -> Path:
    """MODEL_CARD.md: what the model is, how to use each artefact, evaluation (if known), sparsity, training config."""
    lines = [
        f"# {manifest['name']} — raysparse Korean–English sparse retrieval encoder",
        "",
        "SPLADE-style sparse encoder: masked-LM logits (+ lexical prior on each input token), log(1+ReLU), max over",
        "positions; one non-negative weight per vocabulary token, stored in OpenSearch `rank_features`.",
        "",
        "| property | value |",
        "|---|---|",
        f"| source model | `{model_dir}` |",
        f"| vocabulary | {encoder.vocab_size} |",
        f"| query mode | {encoder.query_mode} |",
        f"| lexical prior | {encoder.lexical_prior} |",
        f"| parameters | {sum(p.numel() for p in encoder.parameters()):,} |",
        "",
        "## Exported files",
        "",
        "| file | format | inputs | outputs | max abs diff vs PyTorch |",
        "|---|---|---|---|---|",
    ]
    for f in manifest["files"]:
        diff = f.get("parity_max_abs_diff")
        lines.append(
            f"| `{f['path']}` | {f['format']} | {', '.join(f.get('inputs', {}))} | {', '.join(f.get('outputs', {}))} "
            f"| {'' if diff is None else f'{diff:.2e}'} |"
        )
    lines += ["", "## Evaluation", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in _flatten_metrics(metrics)]
    else:
        lines.append("No metrics.json was found next to the model or given with --metrics.")
    lines += [
        "",
        "## Sparsity (random sentences of real Korean/English words)",
        "",
        "| figure | value |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in sparsity.items()],
        "",
        "## Usage",
        "",
        "```bash",
        'raysparse encode "한국어 검색 모델" --model model.onnx --top-k 20',
        "```",
        "",
        "OpenSearch: register `opensearch/*-sparse-encoding.zip` with the body in the `.register.json` beside it",
        "(add `url` or upload the zip in chunks), deploy, and use it in a `sparse_encoding` ingest processor and",
        "`neural_sparse` queries. Inference-free models also ship a SPARSE_TOKENIZE zip for queries.",
        "",
        "## Training configuration",
        "",
    ]
    if config_text:
        lines += ["```yaml", config_text.rstrip(), "```"]
    else:
        lines.append("No training configuration was found next to the model or given with --config.")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- the entry point
_CONFIG_NAMES = ("config.yaml", "resolved_config.yaml", "raysparse_config.yaml", "train_config.yaml")


def _file_entry(path: Path, out: Path, **fields: Any) -> dict[str, Any]:
    entry = {"path": str(path.relative_to(out)), "bytes": path.stat().st_size, **fields}
    if "sha256" not in entry and path.is_file():
        entry["sha256"] = sha256_of(path)
    return entry


def export_model(
    model_dir: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] | None = None,
    cfg: ExportConfig | None = None,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    parity_texts: Sequence[str] | None = None,
    metrics_path: str | Path | None = None,
    config_path: str | Path | None = None,
    max_length: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Export ``model_dir`` (a ``SparseEncoder.save_pretrained`` directory) to ``out_dir``; return the manifest.

    ``parity_texts`` supplies real text whose words build the random parity sentences (the tokenizer's own
    vocabulary is used when omitted). Raises :class:`ExportParityError` when an artefact differs from eager PyTorch
    by more than ``cfg.parity_tolerance``.
    """
    from tqdm.auto import tqdm

    from raysparse.model import SparseEncoder

    cfg = cfg or ExportConfig()
    formats = list(formats if formats is not None else cfg.formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {unknown or formats}; choose from {', '.join(FORMATS)}")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        encoder = SparseEncoder.from_pretrained(model_dir).eval()
    except Exception as err:
        raise ExportError(f"{model_dir}: cannot load a SparseEncoder ({type(err).__name__}: {err})") from err
    name = name or model_dir.resolve().name
    tol = cfg.parity_tolerance
    positions = int(getattr(encoder.mlm.config, "max_position_embeddings", 512) or 512)
    # the bundles' tokenizer truncates where the model's window ends (its encoding spec), so OpenSearch-side
    # encoding of a document that fits one window equals raysparse's; longer ones see their first window only
    max_length = int(max_length or min(positions, encoder.spec.max_doc_length))
    if encoder.spec.pretokenize != "none":
        log.warning(
            "%s was trained on %s-segmented text: OpenSearch's tokenizer cannot segment, so ml-commons encoding "
            "(ingest pipelines, SPARSE_TOKENIZE queries) will not match raysparse index/search; encode client-side "
            "with `raysparse index` / `raysparse search` (docs/encoding.md)",
            model_dir,
            encoder.spec.pretokenize,
        )

    words = words_from_texts(parity_texts) if parity_texts else words_from_tokenizer(encoder.tokenizer)
    batches = parity_batches(encoder.tokenizer, words, seed=seed, max_length=min(max_length, 128))
    example = batches[-1]  # batch 8 with mixed lengths: has padding (see export_torchscript)

    # tokenizer + metadata beside model.pt / model.onnx, so `raysparse encode --model OUT/model.onnx` works
    encoder.tokenizer.save_pretrained(out)
    for extra in ("raysparse.json", "query_weights.safetensors", "lexical_prior.safetensors"):
        if (model_dir / extra).is_file():
            shutil.copy2(model_dir / extra, out / extra)

    files: list[dict[str, Any]] = []
    for fmt in tqdm(formats, desc="export", leave=False):
        t0, first = time.perf_counter(), len(files)
        if fmt in ("torchscript", "onnx"):
            if fmt == "torchscript":
                path = export_torchscript(encoder, example, out / TORCHSCRIPT_FILE)
                diff = torchscript_parity(encoder, path, batches)
                io: dict[str, Any] = {
                    "inputs": {"input_ids": "int64 (B, L)", "attention_mask": "int64 (B, L)"},
                    "outputs": {"return": "float32 (B, V)"},
                }
            else:
                path = export_onnx(encoder, example, out / ONNX_FILE, opset=cfg.opset)
                diff = onnx_parity(encoder, path, batches)
                io = {
                    "opset": cfg.opset,
                    "inputs": {
                        "input_ids": "int64 (batch, sequence)",
                        "attention_mask": "int64 (batch, sequence)",
                    },
                    "outputs": {ONNX_OUTPUT_NAME: "float32 (batch, V)"},
                }
            _check(str(path), diff, tol)
            files.append(_file_entry(path, out, format=fmt, **io, parity_max_abs_diff=diff))
        elif fmt == "opensearch":
            entries = build_opensearch_bundles(
                encoder, example, out / "opensearch", name=name, version=version, max_length=max_length
            )
            for entry in entries:
                pt = entry.pop("_pt", None)
                if pt is not None:
                    entry["parity_max_abs_diff"] = torchscript_parity(encoder, pt, batches, opensearch=True)
                    _check(f"{entry['path']}:{Path(pt).name}", entry["parity_max_abs_diff"], tol)
                    shutil.rmtree(Path(pt).parent, ignore_errors=True)
                zip_path = entry.pop("path")
                entry["register_body"] = str(Path(entry["register_body"]).relative_to(out))
                files.append(_file_entry(zip_path, out, **entry))
        elif fmt == "hf":
            hf_dir = out / "hf"
            encoder.save_pretrained(hf_dir)
            reloaded = SparseEncoder.from_pretrained(hf_dir).eval()
            with torch.no_grad():
                diff = max(
                    _max_abs_diff(
                        reloaded(b["input_ids"], b["attention_mask"]),
                        encoder(b["input_ids"], b["attention_mask"]),
                    )
                    for b in batches
                )
            _check(str(hf_dir), diff, tol)
            files.append(
                {
                    "path": "hf",
                    "format": "hf",
                    "inputs": {"texts": "SparseEncoder.from_pretrained(path).encode(texts)"},
                    "outputs": {"return": "list[dict[str, float]]"},
                    "parity_max_abs_diff": diff,
                }
            )
        elif fmt == "sentence-transformers":
            from raysparse.interop import ST_SUBDIR, export_sentence_transformers

            entry = export_sentence_transformers(
                encoder,
                out / ST_SUBDIR,
                model_dir=model_dir,
                example=example,
                queries=random_sentences(words, 32, 1, 8, seed=seed + 11),
                documents=random_sentences(words, 32, 5, 60, seed=seed + 12),
            )
            _check(str(out / ST_SUBDIR), entry["parity_max_abs_diff"], tol)
            files.append({"path": ST_SUBDIR, **entry})
        for entry in files[first:]:  # wall time of the whole step (one step may write several files)
            entry["seconds"] = round(time.perf_counter() - t0, 2)

    manifest: dict[str, Any] = {
        "name": name,
        "version": version,
        "model_dir": str(model_dir),
        "created_unix": int(time.time()),
        "vocab_size": encoder.vocab_size,
        "query_mode": encoder.query_mode,
        "lexical_prior": encoder.lexical_prior,
        "max_length": max_length,
        "parity": {
            "tolerance": tol,
            "batches": [list(b["input_ids"].shape) for b in batches],
            "word_source": "given texts" if parity_texts else "tokenizer vocabulary",
        },
        "tokenizer": "tokenizer.json",
        "files": files,
    }
    metrics_file = Path(metrics_path) if metrics_path else model_dir / "metrics.json"
    metrics = None
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ExportError(f"{metrics_file}: not valid JSON: {err}") from None
    elif metrics_path:
        raise FileNotFoundError(f"metrics file not found: {metrics_file}")
    config_text = None
    if config_path:
        config_text = Path(config_path).read_text(encoding="utf-8")
    else:
        found = next((model_dir / c for c in _CONFIG_NAMES if (model_dir / c).is_file()), None)
        config_text = found.read_text(encoding="utf-8") if found else None
    sparsity = sparsity_figures(encoder, words, seed=seed)
    manifest["sparsity"] = sparsity
    card = write_model_card(
        out / MODEL_CARD_FILE,
        encoder=encoder,
        model_dir=model_dir,
        manifest=manifest,
        metrics=metrics,
        config_text=config_text,
        sparsity=sparsity,
    )
    manifest["model_card"] = card.name
    (out / MANIFEST_FILE).write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return manifest


# ---------------------------------------------------------------------------------------------- running any format
RUN_FORMATS = ("pytorch", "torchscript", "onnx")


class TermEncoder:
    """Text -> ``{token: weight}`` with the same tokenization and query modes whatever runs the (B, V) graph.

    Subclasses implement :meth:`run` on int64 ``(B, L)`` arrays. Inference-free query weights (from
    ``raysparse.json`` + ``query_weights.safetensors`` beside the file) are applied here in numpy, exactly like
    ``SparseEncoder.query_forward``: each distinct token gets ``relu(w[token])``, special tokens 0.
    """

    format = "base"

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int,
        *,
        query_weights: np.ndarray | None = None,
        max_query_length: int | None = None,
        max_doc_length: int | None = None,
        spec: Any = None,
    ) -> None:
        from raysparse.encoding import EncodingSpec

        # the model's encoding spec (raysparse.json "encoding"): pre-tokenisation and lengths, as in training
        self.spec = spec if isinstance(spec, EncodingSpec) else EncodingSpec.from_dict(spec)
        self.tokenizer = tokenizer
        self.vocab_size = int(vocab_size)
        self.special_token_ids = sorted(
            {int(i) for i in tokenizer.all_special_ids if i is not None and 0 <= int(i) < self.vocab_size}
        )
        self.query_weights = (
            None if query_weights is None else np.maximum(np.asarray(query_weights, np.float32), 0)
        )
        if self.query_weights is not None:
            self.query_weights[self.special_token_ids] = 0.0
        self.max_query_length = max_query_length or self.spec.max_query_length
        # an exported graph encodes one window per document: texts longer than max_doc_length tokens are truncated
        # here, while SparseEncoder (raysparse index/evaluate) reads them whole in windows (docs/encoding.md)
        self.max_doc_length = max_doc_length or self.spec.max_doc_length

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
        from raysparse.encoding import pretokenize

        enc = self.tokenizer(
            pretokenize(list(texts), self.spec.pretokenize),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        return {k: enc[k].astype(np.int64) for k in INPUT_NAMES}

    def reps(self, texts: Sequence[str], *, is_query: bool = False) -> np.ndarray:
        """(N, V) float32 weights of ``texts`` (queries use the inference-free weights when the model has them)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        batch = self.tokenize(texts, self.max_query_length if is_query else self.max_doc_length)
        if is_query and self.query_weights is not None:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            out = np.zeros((ids.shape[0], self.vocab_size), dtype=np.float32)
            rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
            np.maximum.at(out, (rows, ids.reshape(-1)), (self.query_weights[ids] * mask).reshape(-1))
            return out
        return np.asarray(self.run(batch["input_ids"], batch["attention_mask"]), dtype=np.float32)

    def encode(
        self,
        texts: Sequence[str],
        *,
        is_query: bool = False,
        top_k: int | None = None,
        threshold: float = 0.0,
    ) -> list[dict[str, float]]:
        """Texts -> ``[{token: weight}]`` sorted by weight, weights > ``threshold``, at most ``top_k`` each."""
        from raysparse.encoding import term_weights

        return term_weights(
            self.reps(texts, is_query=is_query), self.tokenizer, top_k=top_k, threshold=threshold
        )


class PyTorchTermEncoder(TermEncoder):
    format = "pytorch"

    def __init__(self, encoder: Any, **kwargs: Any) -> None:
        qw = encoder.query_weights.detach().cpu().numpy() if encoder.query_weights is not None else None
        if encoder.query_mode != "inference_free":
            qw = None
        kwargs.setdefault("spec", encoder.spec)
        super().__init__(encoder.tokenizer, encoder.vocab_size, query_weights=qw, **kwargs)
        self.encoder = encoder.eval()

    def reps(self, texts: Sequence[str], *, is_query: bool = False) -> np.ndarray:
        """The in-process encoder itself (windows, whole-text lexical counts, pruning): one term encoder."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        encode = self.encoder.encode_queries if is_query else self.encoder.encode_documents
        length = self.max_query_length if is_query else self.max_doc_length
        spec_length = self.spec.max_query_length if is_query else self.spec.max_doc_length
        return encode(list(texts), None if length == spec_length else length).numpy()

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.encoder(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()


class TorchScriptTermEncoder(TermEncoder):
    """Runs ``model.pt`` (positional) or an OpenSearch-style ``.pt`` (dict in, ``{"output"}`` out)."""

    format = "torchscript"

    def __init__(self, path: str | Path, tokenizer: Any, vocab_size: int, **kwargs: Any) -> None:
        super().__init__(tokenizer, vocab_size, **kwargs)
        self.module = torch.jit.load(str(path)).eval()
        args = [a for a in self.module.forward.schema.arguments if a.name != "self"]
        self.dict_input = len(args) == 1

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        with torch.inference_mode():
            if self.dict_input:
                return self.module({"input_ids": ids, "attention_mask": mask})[OPENSEARCH_OUTPUT_KEY].numpy()
            return self.module(ids, mask).numpy()


class OnnxTermEncoder(TermEncoder):
    format = "onnx"

    def __init__(
        self, path: str | Path, tokenizer: Any, vocab_size: int | None = None, **kwargs: Any
    ) -> None:
        self.session = onnx_session(path, threads=kwargs.pop("threads", None))
        self.output_name = self.session.get_outputs()[0].name
        dim = self.session.get_outputs()[0].shape[-1]
        super().__init__(tokenizer, int(vocab_size or dim), **kwargs)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(
            [self.output_name], {"input_ids": input_ids, "attention_mask": attention_mask}
        )[0]


def _side_metadata(directory: Path) -> tuple[dict[str, Any], np.ndarray | None]:
    meta: dict[str, Any] = {}
    meta_file = directory / "raysparse.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_file}: not valid JSON: {err}") from None
    qw = None
    if meta.get("query_mode") == "inference_free":
        qw_file = directory / "query_weights.safetensors"
        if not qw_file.is_file():
            raise FileNotFoundError(f"{meta_file} says query_mode inference_free but {qw_file} is missing")
        from safetensors.numpy import load_file

        qw = load_file(str(qw_file))["query_weights"]
    return meta, qw


def load_term_encoder(path: str | Path, fmt: str | None = None, **kwargs: Any) -> TermEncoder:
    """Open any exported model: an HF/``save_pretrained`` dir, a ``.pt``, a ``.onnx`` or an export dir + ``fmt``.

    The tokenizer (and ``raysparse.json`` / query weights) are read from the directory holding the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if fmt is None:
        fmt = {".pt": "torchscript", ".onnx": "onnx"}.get(path.suffix, "pytorch")
    if fmt not in RUN_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(RUN_FORMATS)}")
    if path.is_dir() and fmt != "pytorch":
        path = path / (TORCHSCRIPT_FILE if fmt == "torchscript" else ONNX_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (export with --format {fmt} first)")
    if fmt == "pytorch":
        from raysparse.model import SparseEncoder

        model_dir = path if path.is_dir() else path.parent
        if (model_dir / "hf").is_dir() and not (model_dir / "config.json").is_file():
            model_dir = model_dir / "hf"  # an export directory: its HF copy
        return PyTorchTermEncoder(SparseEncoder.from_pretrained(model_dir), **kwargs)
    from transformers import AutoTokenizer

    if (
        not (path.parent / "tokenizer.json").is_file()
        and not (path.parent / "tokenizer_config.json").is_file()
    ):
        raise FileNotFoundError(f"no tokenizer beside {path} (expected {path.parent / 'tokenizer.json'})")
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent))
    meta, qw = _side_metadata(path.parent)
    vocab = meta.get("vocab_size")
    kwargs.setdefault("spec", meta.get("encoding") or {"max_query_length": 32, "max_doc_length": 128})
    if fmt == "torchscript":
        return TorchScriptTermEncoder(
            path, tokenizer, int(vocab or len(tokenizer)), query_weights=qw, **kwargs
        )
    return OnnxTermEncoder(path, tokenizer, vocab, query_weights=qw, **kwargs)
