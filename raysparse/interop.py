"""sentence-transformers interop: raysparse models out to ``sentence_transformers.SparseEncoder`` and sparse models in.

Out (:func:`export_sentence_transformers`, ``raysparse export --format sentence-transformers``):

* a model without priors (no BM25 lexical part, no logit or translation prior, no per-side pruning) is written with
  standard modules only -- ``Transformer(transformer_task="fill-mask")`` + ``SpladePooling(max, relu)`` in encoder
  mode, a ``Router`` whose query route is a ``SparseStaticEmbedding`` (the inference-free weights) in inference-free
  mode -- and loads without remote code. raysparse zeroes the special tokens' weights; the exported copy of the MLM
  gets a -1e4 output bias on those ids instead, so ``log1p(relu(.))`` is 0 there too.
* a model with priors is written as one custom module (``raysparse_st.py`` beside the model, loaded with
  ``trust_remote_code=True``) around a TorchScript graph that raysparse traces with two methods (documents and
  queries): the priors need token counts and a translation table that no standard module computes.

Both are checked after writing: the directory is loaded back through ``sentence_transformers.SparseEncoder`` and its
``encode_query`` / ``encode_document`` vectors are compared with raysparse's on real-word texts that fit one window.
What cannot match is refused or warned about in one line: Kiwi pre-tokenisation (refused), documents longer than one
window (sentence-transformers sees the first ``max_doc_length`` tokens), ``lexical_statistics: corpus``.

In (:func:`read_sparse_model`): a sentence-transformers sparse model directory (SPLADE: ``MLMTransformer`` /
``Transformer`` + ``SpladePooling``; inference-free ``Router`` with ``query_0_SparseStaticEmbedding`` or the older
``query_0_IDF`` + ``idf.json``) or an OpenSearch pretrained sparse model (a masked-LM directory + ``idf.json``) ->
the masked-LM directory raysparse trains from, and the query weights inference-free mode starts from.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from raysparse.errors import InputError

log = logging.getLogger(__name__)

ST_SUBDIR = "sentence-transformers"
REMOTE_MODULE_FILE = "raysparse_st.py"
REMOTE_CLASS = "RaySparseModule"
SPECIAL_BIAS = -1e4  # logit bias of special tokens in a standard export: relu() of it is 0 for any sane logit
_RESOURCE = Path(__file__).parent / "resources" / "sentence_transformers" / REMOTE_MODULE_FILE


class InteropError(InputError):
    """A sentence-transformers artefact cannot be written or read; the message names the path (exit 2)."""


def _require_st() -> Any:
    try:
        import sentence_transformers
    except ImportError:
        raise InteropError(
            "sentence-transformers is not installed: pip install 'sentence-transformers>=6' (raysparse[dev])"
        ) from None
    return sentence_transformers


# ---------------------------------------------------------------------------------------------- export
def remote_code_reasons(encoder: Any) -> list[str]:
    """Why ``encoder`` needs the custom module (empty: standard modules express it exactly)."""
    spec = encoder.spec
    reasons = []
    if encoder.lexical is not None:
        reasons.append("BM25 lexical part (token counts, IDF, avgdl)")
    if encoder.lexical_prior:
        reasons.append("lexical logit prior")
    if encoder.translation_ids is not None and encoder.translation_prior:
        reasons.append("translation prior")
    if spec.threshold > 0 or spec.doc_top_k != spec.query_top_k:
        reasons.append("per-side pruning / threshold")
    out_layer = encoder.mlm.get_output_embeddings() if hasattr(encoder.mlm, "get_output_embeddings") else None
    if getattr(out_layer, "bias", None) is None:
        reasons.append("no output bias to mask special tokens with")
    return reasons


def parity_warnings(encoder: Any, model_dir: Path) -> list[str]:
    """One line per raysparse behaviour a sentence-transformers copy does not reproduce; raises where no text
    would get the same vector (Kiwi pre-tokenisation)."""
    spec = encoder.spec
    if spec.pretokenize != "none":
        raise InputError(
            f"{model_dir}: encoding.pretokenize is {spec.pretokenize!r}: sentence-transformers cannot segment text "
            "with Kiwi, so its vectors of Korean text would differ from raysparse's; export torchscript/onnx and "
            "encode with raysparse instead"
        )
    notes = []
    if spec.max_windows > 1:
        notes.append(
            f"documents longer than max_doc_length={spec.max_doc_length} tokens: sentence-transformers encodes the "
            f"first window only, raysparse up to {spec.max_windows} windows (max-pooled) with whole-text counts"
        )
    if spec.lexical_statistics == "corpus" and encoder.lexical is not None:
        notes.append(
            "encoding.lexical_statistics=corpus: raysparse evaluate/index refit IDF/avgdl on the corpus they "
            "encode; sentence-transformers uses the statistics saved with the model"
        )
    return notes


def _load_remote_class() -> type:
    """The custom module class, imported from the file that is copied into every export (one source)."""
    _require_st()
    name = "raysparse_st"
    if name in sys.modules:
        return getattr(sys.modules[name], REMOTE_CLASS)
    spec = importlib.util.spec_from_file_location(name, _RESOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return getattr(module, REMOTE_CLASS)


def _special_masked_mlm(encoder: Any) -> Any:
    """A copy of the masked LM whose special tokens' logits are pushed to SPECIAL_BIAS (raysparse's keep mask)."""
    mlm = copy.deepcopy(encoder.mlm).cpu().eval()
    bias = mlm.get_output_embeddings().bias
    with torch.no_grad():
        bias[torch.as_tensor(encoder.special_token_ids, dtype=torch.long)] = SPECIAL_BIAS
    return mlm


def _standard_modules(encoder: Any, staging: Path) -> list[Any]:
    from sentence_transformers.sparse_encoder.modules import (
        Router,
        SparseStaticEmbedding,
        SpladePooling,
        Transformer,
    )

    from raysparse.encoding import _special_ids

    spec = encoder.spec
    mlm_dir = staging / "mlm"
    _special_masked_mlm(encoder).save_pretrained(mlm_dir)
    encoder.tokenizer.save_pretrained(mlm_dir)
    document = [
        Transformer(
            str(mlm_dir),
            transformer_task="fill-mask",
            max_seq_length=spec.max_doc_length,
            query_length=spec.max_query_length,
            document_length=spec.max_doc_length,
        ),
        SpladePooling(
            pooling_strategy="max", activation_function="relu", embedding_dimension=encoder.vocab_size
        ),
    ]
    if encoder.query_mode != "inference_free":
        return document
    prefix, suffix = _special_ids(encoder.tokenizer)
    query_tokenizer = copy.deepcopy(encoder.tokenizer)
    # SparseStaticEmbedding tokenizes without special tokens, truncating at model_max_length: raysparse keeps
    # max_query_length tokens including them
    query_tokenizer.model_max_length = spec.max_query_length - len(prefix) - len(suffix)
    weights = torch.relu(encoder.query_weights.detach().float().cpu()) * encoder.keep_mask.cpu()
    query = [SparseStaticEmbedding(query_tokenizer, weight=weights, frozen=True)]
    return [Router.for_query_document(query_modules=query, document_modules=document)]


class PrunedEncoder(torch.nn.Module):
    """The encoder's two tensor paths followed by the spec's pruning: what the remote-code module traces."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder
        self.spec = encoder.spec

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from raysparse.model import prune

        return prune(self.encoder(input_ids, attention_mask), self.spec.doc_top_k, self.spec.threshold)

    def query_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from raysparse.model import prune

        reps = self.encoder.query_forward(input_ids, attention_mask)
        return prune(reps, self.spec.query_top_k, self.spec.threshold)


def _remote_module(encoder: Any, example: dict[str, torch.Tensor]) -> Any:
    cls = _load_remote_class()
    cpu = PrunedEncoder(copy.deepcopy(encoder).cpu()).eval()
    args = (example["input_ids"], example["attention_mask"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings; checked by the parity run below
        graph = torch.jit.trace_module(cpu, {"forward": args, "query_forward": args})
    spec = encoder.spec
    return cls(
        graph,
        encoder.tokenizer,
        max_query_length=spec.max_query_length,
        max_doc_length=spec.max_doc_length,
        vocab_size=encoder.vocab_size,
    )


def fitting_texts(encoder: Any, texts: Sequence[str], *, is_query: bool) -> list[str]:
    """The ``texts`` that fit one window (queries: ``max_query_length``, documents: ``max_doc_length`` tokens)."""
    limit = encoder.spec.max_query_length if is_query else encoder.spec.max_doc_length
    ids = encoder.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)[
        "input_ids"
    ]
    return [t for t, row in zip(texts, ids, strict=True) if len(row) <= limit]


def st_vectors(st_model: Any, texts: Sequence[str], *, is_query: bool) -> torch.Tensor:
    """(N, V) dense float32 vectors of ``texts`` from a loaded ``sentence_transformers.SparseEncoder``."""
    encode = st_model.encode_query if is_query else st_model.encode_document
    reps = encode(list(texts), convert_to_tensor=True, batch_size=16, show_progress_bar=False)
    return (reps.to_dense() if reps.is_sparse else reps).float().cpu()


def st_parity(
    encoder: Any, st_model: Any, queries: Sequence[str], documents: Sequence[str]
) -> dict[str, Any]:
    """Max |sentence-transformers - raysparse| over queries and documents (texts that fit one window)."""
    out: dict[str, Any] = {}
    for side, texts, is_query in (("query", queries, True), ("document", documents, False)):
        kept = fitting_texts(encoder, texts, is_query=is_query)
        if not kept:
            raise InteropError(f"no {side} parity text fits one window")
        ours = encoder.encode_queries(kept) if is_query else encoder.encode_documents(kept)
        theirs = st_vectors(st_model, kept, is_query=is_query)
        out[f"{side}_texts"] = len(kept)
        out[f"{side}_max_abs_diff"] = float((ours - theirs).abs().max()) if ours.numel() else 0.0
    out["max_abs_diff"] = max(out["query_max_abs_diff"], out["document_max_abs_diff"])
    return out


def export_sentence_transformers(
    encoder: Any,
    out_dir: str | Path,
    *,
    model_dir: Path,
    example: dict[str, torch.Tensor],
    queries: Sequence[str],
    documents: Sequence[str],
) -> dict[str, Any]:
    """Write ``out_dir`` loadable by ``sentence_transformers.SparseEncoder``, load it back, measure parity.

    Returns the manifest entry: ``remote_code`` (whether ``trust_remote_code=True`` is needed and why), the notes on
    what differs, and the parity figures on ``queries``/``documents`` that fit one window.
    """
    st = _require_st()
    from sentence_transformers import SparseEncoder as STSparseEncoder

    notes = parity_warnings(encoder, model_dir)
    for note in notes:
        log.warning("%s: sentence-transformers export differs from raysparse for %s", model_dir, note)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    staging = out.parent / f".{out.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    reasons = remote_code_reasons(encoder)
    spec = encoder.spec
    try:
        if reasons:
            modules = [_remote_module(encoder, example)]
            max_active = None
        else:
            modules = _standard_modules(encoder, staging)
            max_active = spec.doc_top_k  # == query_top_k here (else: remote code)
        model = STSparseEncoder(modules=modules, max_active_dims=max_active, device="cpu")
        model.similarity_fn_name = "dot"
        model.save(str(out))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if reasons:
        shutil.copy2(_RESOURCE, out / REMOTE_MODULE_FILE)
    (out / "raysparse_export.json").write_text(
        json.dumps({"source": str(model_dir), "remote_code": reasons, "differences": notes}, indent=2) + "\n",
        encoding="utf-8",
    )
    loaded = STSparseEncoder(str(out), trust_remote_code=bool(reasons), device="cpu")
    parity = st_parity(encoder, loaded, queries, documents)
    return {
        "format": "sentence-transformers",
        "sentence_transformers_version": st.__version__,
        "remote_code": reasons,
        "differences": notes,
        "inputs": {
            "texts": f"SparseEncoder(path{', trust_remote_code=True' if reasons else ''}).encode_query/encode_document"
        },
        "outputs": {"return": "sparse (N, V)"},
        "parity_max_abs_diff": parity["max_abs_diff"],
        "parity": parity,
    }


# ---------------------------------------------------------------------------------------------- import
@dataclass
class SparseModelLayout:
    """What :func:`read_sparse_model` found: where the masked LM lives and the query weights, if any."""

    kind: str  # "sentence-transformers-splade" | "sentence-transformers-router" | "opensearch" | "hf"
    mlm_dir: Path
    query_weights: torch.Tensor | None = None
    query_weights_source: str | None = None
    notes: list[str] = field(default_factory=list)
    missing_idf_tokens: int = 0
    unknown_idf_tokens: int = 0


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InteropError(f"{path}: not readable JSON ({err})") from None


def idf_json_weights(path: Path, tokenizer: Any, vocab_size: int) -> tuple[torch.Tensor, int, int]:
    """(V,) weights from an ``idf.json`` (``{token: weight}``, OpenSearch and sentence-transformers layout).

    Keys are looked up as vocabulary tokens (what ``SparseStaticEmbedding.from_json`` does), then as the decoded form
    ml-commons writes. Returns the weights, the number of vocabulary tokens the file does not name (they get 1.0,
    ml-commons' default for SPARSE_TOKENIZE) and the number of keys that are no token (counted, not used).
    """
    from raysparse.export import TOKENIZE_DEFAULT_WEIGHT

    data = _read_json(path)
    if not isinstance(data, dict):
        raise InteropError(f"{path}: expected a JSON object {{token: weight}}, got {type(data).__name__}")
    vocab = tokenizer.get_vocab()
    decoded = {}
    weights = torch.full((vocab_size,), float("nan"))
    unknown = 0
    for key, value in data.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InteropError(f"{path}: token {key!r}: weight must be a number, got {value!r}")
        idx = vocab.get(key)
        if idx is None:
            if not decoded:
                decoded = {tokenizer.decode([i], skip_special_tokens=True): i for i in vocab.values()}
            idx = decoded.get(key)
        if idx is None or idx >= vocab_size:
            unknown += 1
            continue
        weights[idx] = float(value)
    missing = int(torch.isnan(weights[: len(vocab)]).sum())
    weights = torch.nan_to_num(weights, nan=TOKENIZE_DEFAULT_WEIGHT)
    return weights, missing, unknown


def _mlm_vocab_size(mlm_dir: Path) -> int:
    config = _read_json(mlm_dir / "config.json")
    return int(config.get("vocab_size") or 0)


def _pooling_notes(pool_dir: Path) -> list[str]:
    config_file = pool_dir / "config.json"
    if not config_file.is_file():
        return []
    config = _read_json(config_file)
    notes = []
    if config.get("pooling_strategy", "max") != "max":
        notes.append(f"{pool_dir.name}: pooling {config['pooling_strategy']!r}; raysparse max-pools")
    if config.get("activation_function", "relu") != "relu":
        notes.append(
            f"{pool_dir.name}: activation {config['activation_function']!r}; raysparse uses log1p(relu) "
            "(training continues under it)"
        )
    return notes


def _query_weights_from_dir(
    query_dir: Path, tokenizer: Any, vocab_size: int, layout: SparseModelLayout
) -> None:
    """Inference-free query weights from a Router's query route: idf.json, or SparseStaticEmbedding weights."""
    idf_file = query_dir / "idf.json"
    config_file = query_dir / "config.json"
    if not idf_file.is_file() and config_file.is_file():
        named = _read_json(config_file).get("path")
        if isinstance(named, str) and named.endswith(".json"):
            idf_file = (query_dir / named) if (query_dir / named).is_file() else query_dir.parent / named
    if idf_file.is_file():
        weights, layout.missing_idf_tokens, layout.unknown_idf_tokens = idf_json_weights(
            idf_file, tokenizer, vocab_size
        )
        layout.query_weights, layout.query_weights_source = weights, str(idf_file)
        return
    tensors_file = query_dir / "model.safetensors"
    if tensors_file.is_file():
        from safetensors.torch import load_file  # no pickle

        weight = load_file(str(tensors_file)).get("weight")
        if weight is None or weight.dim() != 1:
            raise InteropError(f"{tensors_file}: expected a 1-d 'weight' tensor (SparseStaticEmbedding)")
        full = torch.zeros(vocab_size)
        n = min(vocab_size, weight.shape[0])
        full[:n] = weight[:n].float()
        layout.query_weights, layout.query_weights_source = full, str(tensors_file)
        return
    raise InteropError(f"{query_dir}: query route has neither idf.json nor model.safetensors")


def read_sparse_model(path: str | Path) -> SparseModelLayout | None:
    """Recognise a sentence-transformers or OpenSearch sparse model directory; None for anything else.

    A plain Hugging Face masked-LM directory (and a raysparse one) is not a layout of its own: None.
    """
    from transformers import AutoTokenizer

    root = Path(path)
    if not root.is_dir() or (root / "raysparse.json").is_file():
        return None
    modules_file = root / "modules.json"
    if modules_file.is_file():
        modules = _read_json(modules_file)
        if not isinstance(modules, list) or not modules:
            raise InteropError(f"{modules_file}: expected a non-empty list of modules")
        types = [str(m.get("type", "")) for m in modules]
        if any(t.endswith(".Router") or t.endswith(".Asym") for t in types):
            router = root / modules[0].get("path", "")
            config = _read_json(router / "router_config.json")
            structure = config.get("structure") or {}
            doc_route = structure.get("document") or []
            query_route = structure.get("query") or []
            mlm = next(
                (
                    router / name
                    for name in doc_route
                    if (router / name / "config.json").is_file()
                    and "model_type" in _read_json(router / name / "config.json")
                ),
                None,
            )
            if mlm is None:
                raise InteropError(
                    f"{router / 'router_config.json'}: no masked-LM module in the document route"
                )
            layout = SparseModelLayout("sentence-transformers-router", mlm)
            for name in doc_route:
                if "Pooling" in name:
                    layout.notes += _pooling_notes(router / name)
            if query_route:
                query_dir = router / query_route[0]
                tok_dir = query_dir if (query_dir / "tokenizer_config.json").is_file() else mlm
                tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
                _query_weights_from_dir(query_dir, tokenizer, _mlm_vocab_size(mlm), layout)
            return layout
        first = root / modules[0].get("path", "")
        if not (first / "config.json").is_file():
            raise InteropError(f"{modules_file}: first module {modules[0].get('path')!r} has no config.json")
        layout = SparseModelLayout("sentence-transformers-splade", first)
        for module in modules[1:]:
            if "Pooling" in str(module.get("type", "")):
                layout.notes += _pooling_notes(root / module.get("path", ""))
        if (root / "idf.json").is_file():  # an OpenSearch repository also carries its query weights
            tokenizer = AutoTokenizer.from_pretrained(str(first))
            _query_weights_from_dir(root, tokenizer, _mlm_vocab_size(first), layout)
        return layout
    if (root / "idf.json").is_file() and (root / "config.json").is_file():
        layout = SparseModelLayout("opensearch", root)
        tokenizer = AutoTokenizer.from_pretrained(str(root))
        _query_weights_from_dir(root, tokenizer, _mlm_vocab_size(root), layout)
        return layout
    return None


# ---------------------------------------------------------------------------------------------- evaluation
ST_METRICS = {"ndcg@10": "ndcg@10", "mrr@10": "mrr@10", "recall@100": "recall@100", "map@100": "map@100"}


def st_evaluator_figures(
    encoder: Any, data: Any, work_dir: str | Path, *, batch_size: int = 32, name: str = "raysparse"
) -> dict[str, Any]:
    """sentence-transformers' ``SparseInformationRetrievalEvaluator`` on ``data`` with the model exported to
    ``work_dir`` (the same vectors as raysparse for texts that fit one window, see the module docstring).

    Relevance is binary there (qrels score > 0) and ranking ties break by the library's top-k, so graded qrels or
    tied scores can move its figures away from raysparse's; the returned ``differences`` name what else differs.
    """
    _require_st()
    from sentence_transformers import SparseEncoder as STSparseEncoder
    from sentence_transformers.sparse_encoder.evaluation import SparseInformationRetrievalEvaluator

    from raysparse.evaluation import document_texts
    from raysparse.export import parity_batches, words_from_texts

    queries = dict(
        zip(data.queries.column("query_id").to_pylist(), data.queries.column("text").to_pylist(), strict=True)
    )
    docs = document_texts(data)
    corpus = dict(zip(data.corpus.column("doc_id").to_pylist(), docs, strict=True))
    relevant: dict[str, set[str]] = {}
    for qid, did, score in zip(
        data.qrels.column("query_id").to_pylist(),
        data.qrels.column("doc_id").to_pylist(),
        data.qrels.column("score").to_pylist(),
        strict=True,
    ):
        if score > 0 and qid in queries and did in corpus:
            relevant.setdefault(qid, set()).add(did)
    if (
        encoder.spec.lexical_statistics == "corpus"
    ):  # as raysparse evaluate encodes: statistics of this corpus
        encoder = encoder.with_corpus_statistics(docs)
    sample_q, sample_d = list(queries.values())[:32], docs[:32]
    example = parity_batches(encoder.tokenizer, words_from_texts(sample_q + sample_d))[-1]
    st_dir = Path(work_dir)
    entry = export_sentence_transformers(
        encoder,
        st_dir,
        model_dir=Path(name),
        example=example,
        queries=sample_q,
        documents=sample_d + sample_q,
    )  # the queries double as short documents: a corpus of long passages may have none that fits one window
    model = STSparseEncoder(str(st_dir), trust_remote_code=bool(entry["remote_code"]), device="cpu")
    evaluator = SparseInformationRetrievalEvaluator(
        queries,
        corpus,
        relevant,
        ndcg_at_k=[10],
        mrr_at_k=[10],
        accuracy_at_k=[1],
        precision_recall_at_k=[100],
        map_at_k=[100],
        batch_size=batch_size,
        name=name,
        write_csv=False,
    )
    raw = evaluator(model)
    figures = {}
    for ours, suffix in ST_METRICS.items():
        key = next((k for k in raw if k.endswith(suffix)), None)
        if key is not None:
            figures[ours] = float(raw[key])
    return {
        "sentence_transformers_version": entry["sentence_transformers_version"],
        "evaluator": "SparseInformationRetrievalEvaluator",
        "queries": len(relevant),
        "metrics": figures,
        "remote_code": entry["remote_code"],
        "differences": entry["differences"],
        "parity_on_sample": entry["parity"],
        "raw": {k: float(v) for k, v in raw.items()},
    }
