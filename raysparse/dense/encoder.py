"""The dense bi-encoder baseline: one transformer, one pooled vector per text, scored by inner product.

For a text tokenized into windows ``w`` (the encoding spec's windows, :mod:`raysparse.encoding`)::

    h[w, l]  = last hidden state of position l                          (W, L, H)
    e[w]     = mean over non-padding l of h[w, l]       (pooling "mean")
             = h[w, 0]                                  (pooling "cls")
    v[text]  = mean over the text's windows of e[w]                     (H,)
    v        = v / ||v||                                (normalize: true)

A query is one window (``max_query_length``); a long document is read in up to ``max_windows`` windows whose
embeddings are averaged (a single vector per document keeps the index one row per document, like the sparse one).
``score(q, d) = q · d``; with ``normalize`` that is the cosine.

Backbones: the small local BERT :mod:`raysparse.backbone` builds (its masked-LM head is not used) or any directory
``AutoModel`` loads, e.g. a sentence-transformers model (multilingual E5, BGE-M3) on a user's machine: its
``modules.json`` / ``1_Pooling/config.json`` / ``config_sentence_transformers.json`` (prompts such as E5's
``"query: "``) are read when ``raysparse.json`` is absent. Nothing is downloaded here.

:meth:`DenseEncoder.save_pretrained` writes the Hugging Face files plus the sentence-transformers layout
(``modules.json``, ``sentence_bert_config.json``, ``1_Pooling/config.json``, ``2_Normalize``), so
``sentence_transformers.SentenceTransformer(dir)`` loads the same model, and ``raysparse.json`` (``"kind": "dense"``,
pooling, normalisation, prompts and the encoding spec) for raysparse's own readers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

RAYSPARSE_JSON = "raysparse.json"
POOLINGS = ("mean", "cls")
KIND = "dense"
_FORMAT_VERSION = 1


def is_dense_dir(path: str | Path) -> bool:
    """True for a directory :meth:`DenseEncoder.from_pretrained` should read: ``raysparse.json`` says
    ``"kind": "dense"``, or (no raysparse.json) a dense sentence-transformers layout (``modules.json`` with a
    ``Pooling`` module)."""
    p = Path(path)
    meta = p / RAYSPARSE_JSON
    if meta.is_file():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta}: not valid JSON: {err}") from None
        return isinstance(data, dict) and data.get("kind") == KIND
    modules = p / "modules.json"
    if not modules.is_file():
        return False
    try:
        types = [str(m.get("type", "")) for m in json.loads(modules.read_text(encoding="utf-8"))]
    except (json.JSONDecodeError, AttributeError, TypeError):
        raise ValueError(f"{modules}: expected a JSON list of modules") from None
    # a dense sentence-transformers model pools token states (models.Pooling); its sparse models
    # (sentence_transformers.sparse_encoder: MLMTransformer + SpladePooling) are SparseEncoder directories
    return any(t.endswith("models.Pooling") for t in types) and not any("sparse_encoder" in t for t in types)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(W, L, H) hidden states -> (W, H) window embeddings by ``pooling`` ("mean" over real tokens, or "cls")."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class DenseEncoder(nn.Module):
    """Dense (H-dimensional) bi-encoder over any Hugging Face encoder (``AutoModel``)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        pooling: str = "mean",
        normalize: bool = True,
        spec: Any = None,
        query_prefix: str = "",
        document_prefix: str = "",
    ) -> None:
        super().__init__()
        from raysparse.encoding import EncodingSpec

        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
        if isinstance(spec, dict):
            spec = EncodingSpec.from_dict(spec)
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.spec = spec if spec is not None else EncodingSpec()
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix

    kind = KIND

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ forward
    def encode_batch(self, batch: Any, *, is_query: bool) -> torch.Tensor:
        """A :class:`raysparse.encoding.TokenizedBatch` -> (num_texts, H); windows averaged per text."""
        out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        windows = pool(out.last_hidden_state, batch.attention_mask, self.pooling)  # (W, H)
        if windows.shape[0] == batch.num_texts:
            reps = windows  # one window per text (queries, short documents)
        else:
            index = batch.text_index.to(windows.device)
            sums = torch.zeros(batch.num_texts, windows.shape[1], dtype=windows.dtype, device=windows.device)
            sums = sums.index_add(0, index, windows)
            counts = torch.bincount(index, minlength=batch.num_texts).clamp(min=1).to(windows.dtype)
            reps = sums / counts.unsqueeze(1)
        if self.normalize:
            reps = nn.functional.normalize(reps, p=2, dim=-1)
        return reps

    def forward(self, batch: Any, is_query: bool = False) -> torch.Tensor:
        return self.encode_batch(batch, is_query=is_query)

    # ------------------------------------------------------------------ text helpers
    def tokenize_texts(self, texts: Sequence[str], *, is_query: bool, spec: Any = None) -> Any:
        """Texts (with the query/document prefix) -> :class:`raysparse.encoding.TokenizedBatch` by the spec."""
        from raysparse.encoding import tokenize_texts

        prefix = self.query_prefix if is_query else self.document_prefix
        texts = [prefix + t for t in texts] if prefix else list(texts)
        return tokenize_texts(self.tokenizer, texts, spec or self.spec, is_query=is_query)

    def _encode(
        self, texts: Sequence[str], max_length: int | None, batch_size: int, query: bool
    ) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        spec = self.spec.with_max_length(max_length, query)
        was_training = self.training
        self.eval()
        out = []
        try:
            with torch.inference_mode():
                for start in range(0, len(texts), batch_size):
                    batch = self.tokenize_texts(texts[start : start + batch_size], is_query=query, spec=spec)
                    out.append(self.encode_batch(batch.to(self.device), is_query=query).float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(out)

    def encode_queries(
        self, texts: Sequence[str], max_length: int | None = None, batch_size: int = 64
    ) -> torch.Tensor:
        """Queries -> (N, H) float32 on CPU."""
        return self._encode(texts, max_length, batch_size, query=True)

    def encode_documents(
        self, texts: Sequence[str], max_length: int | None = None, batch_size: int = 32
    ) -> torch.Tensor:
        """Documents -> (N, H) float32 on CPU (windows of the spec averaged)."""
        return self._encode(texts, max_length, batch_size, query=False)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, out_dir: str | Path) -> None:
        """HF files + the sentence-transformers layout + ``raysparse.json`` (see the module docstring)."""
        from raysparse.files import apply_umask

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if self.normalize:
            modules.append(
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                }
            )
            (out / "2_Normalize").mkdir(exist_ok=True)
        elif (out / "2_Normalize").is_dir():
            (out / "2_Normalize").rmdir()  # a stale Normalize from an earlier save would change the vectors
        (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
        # sentence-transformers truncates to one window of max_seq_length; raysparse averages windows of documents
        (out / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.spec.max_doc_length, "do_lower_case": False}, indent=2) + "\n",
            encoding="utf-8",
        )
        (out / "1_Pooling").mkdir(exist_ok=True)
        pooling = {
            "word_embedding_dimension": self.dim,
            "pooling_mode_cls_token": self.pooling == "cls",
            "pooling_mode_mean_tokens": self.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        }
        (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n", encoding="utf-8")
        prompts = {"query": self.query_prefix, "document": self.document_prefix}
        (out / "config_sentence_transformers.json").write_text(
            json.dumps(
                {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "dot"}, indent=2
            )
            + "\n",
            encoding="utf-8",
        )
        meta = {
            "format_version": _FORMAT_VERSION,
            "kind": KIND,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "dim": self.dim,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
            "encoding": self.spec.to_dict(),
        }
        (out / RAYSPARSE_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        apply_umask(out)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **overrides: Any) -> DenseEncoder:
        """Load a directory written by :meth:`save_pretrained`, a sentence-transformers directory, or any HF encoder
        directory (mean pooling, normalised, by default). ``overrides``: ``pooling``, ``normalize``, ``spec``,
        ``query_prefix``, ``document_prefix``."""
        from transformers import AutoModel, AutoTokenizer

        allowed = {"pooling", "normalize", "spec", "query_prefix", "document_prefix"}
        unknown = set(overrides) - allowed
        if unknown:
            raise TypeError(
                f"unknown DenseEncoder.from_pretrained overrides {sorted(unknown)}; allowed {sorted(allowed)}"
            )
        path = Path(name_or_path)
        kwargs: dict[str, Any] = {}
        weights_dir = path
        meta_file = path / RAYSPARSE_JSON
        if meta_file.is_file():
            meta = _read_json(meta_file)
            if meta.get("kind", KIND) == KIND:
                kwargs = {
                    "pooling": meta.get("pooling", "mean"),
                    "normalize": bool(meta.get("normalize", True)),
                    "query_prefix": str(meta.get("query_prefix", "")),
                    "document_prefix": str(meta.get("document_prefix", "")),
                    "spec": meta.get("encoding"),
                }
        elif (path / "modules.json").is_file():
            kwargs, weights_dir = _sentence_transformers_settings(path)
        from raysparse.model import check_model_source

        check_model_source(weights_dir)  # one line naming a directory that is not a model
        tokenizer = AutoTokenizer.from_pretrained(str(weights_dir))
        model = (
            AutoModel.from_pretrained(str(weights_dir), add_pooling_layer=False)
            if _is_bert(weights_dir)
            else (AutoModel.from_pretrained(str(weights_dir)))
        )
        kwargs.update(overrides)
        return cls(model, tokenizer, **kwargs).eval()  # inference by default, as HF's from_pretrained


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _is_bert(path: Path) -> bool:
    """BERT-family configs: load without BERT's pooler (unused here; a masked-LM checkpoint has none)."""
    config = path / "config.json"
    if not config.is_file():
        return False
    return _read_json(config).get("model_type") == "bert"


def _sentence_transformers_settings(path: Path) -> tuple[dict[str, Any], Path]:
    """Pooling, normalisation, prompts and max length of a sentence-transformers directory; where its weights are."""
    from raysparse.encoding import EncodingSpec

    raw = json.loads((path / "modules.json").read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ValueError(f"{path / 'modules.json'}: expected a JSON list of modules")
    kwargs: dict[str, Any] = {"normalize": False}
    weights_dir = path
    for i, module in enumerate(raw):
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        sub = path / str(module.get("path", "")) if isinstance(module, dict) else path
        if kind.endswith("Transformer"):
            weights_dir = sub
        elif kind.endswith("Pooling"):
            cfg = _read_json(sub / "config.json")
            if cfg.get("pooling_mode_cls_token"):
                kwargs["pooling"] = "cls"
            elif cfg.get("pooling_mode_mean_tokens"):
                kwargs["pooling"] = "mean"
            else:
                modes = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode") and v)
                raise ValueError(f"{sub / 'config.json'}: pooling {modes} is not supported (mean or cls)")
        elif kind.endswith("Normalize"):
            kwargs["normalize"] = True
        elif kind:
            raise ValueError(
                f"{path / 'modules.json'} module {i}: {kind} is not supported (Transformer, Pooling, Normalize)"
            )
    st_cfg = weights_dir / "sentence_bert_config.json"
    max_len = int(_read_json(st_cfg).get("max_seq_length", 512)) if st_cfg.is_file() else 512
    kwargs["spec"] = EncodingSpec(
        max_query_length=min(max_len, 64), max_doc_length=max_len, doc_stride=max(1, (max_len - 2) * 3 // 4)
    )
    prompts_file = path / "config_sentence_transformers.json"
    if prompts_file.is_file():
        prompts = _read_json(prompts_file).get("prompts") or {}
        if isinstance(prompts, dict):
            kwargs["query_prefix"] = str(prompts.get("query", "") or "")
            kwargs["document_prefix"] = str(prompts.get("document", prompts.get("passage", "")) or "")
    return kwargs, weights_dir


def build_dense_encoder(backbone: str, model_cfg: Any, out_dir: str | Path) -> tuple[str, dict[str, Any]]:
    """A :class:`DenseEncoder` over ``backbone`` (a local masked-LM directory or a HF / sentence-transformers
    encoder directory) with the pooling, normalisation and encoding spec of ``model_cfg``; saved; returns the dir.

    A sentence-transformers directory keeps its own pooling, prompts and lengths unless the config sets them
    (``model.pooling`` always applies: it is a typed key with a default)."""
    from raysparse.encoding import spec_from_model_config

    spec = spec_from_model_config(model_cfg)
    encoder = DenseEncoder.from_pretrained(
        backbone, pooling=model_cfg.pooling, normalize=model_cfg.normalize, spec=spec
    )
    out = Path(out_dir)
    encoder.save_pretrained(out)
    return str(out), {
        "kind": KIND,
        "pooling": encoder.pooling,
        "normalize": encoder.normalize,
        "dim": encoder.dim,
    }
