"""The SPLADE-style sparse encoder: a masked-LM backbone whose vocabulary logits become term weights.

For each input ``(input_ids, attention_mask)`` the encoder returns one non-negative weight per vocabulary entry::

    z[b, l, v]   = MLM logit of term v at position l            (B, L, V)
    z[b, l, t_l] += lexical_prior                               (each position's own input token)
    w[b, v]      = max over non-padding l of log(1 + ReLU(z[b, l, v]))
    w[b, s]      = 0 for every special token s ([CLS], [SEP], [PAD], ...)

Why the lexical prior: a SPLADE trained from scratch on a few CPU cores never forms a ranking signal (the FLOPS term
sparsifies it before it learns, see ../shared/notes/quality-calibration.md). Adding a constant to each position's own
token logit makes the *untrained* encoder a bag-of-words model (every input token gets weight ~log(1+prior)), so
training only has to learn re-weighting and expansions on top of exact matching.

Translation prior (optional): a fixed-width table ``(ids, weights)`` of shape (V, K) learned from parallel text by
:mod:`raysparse.alignment` raises, at each position, the logits of the input token's translations by
``translation_prior * weight`` (모델 -> model, search -> 검색). With it the untrained encoder already matches across
languages; training re-weights and learns contextual expansions on top. It is a gather + scatter-add, so it traces
and exports like the lexical prior.

Why pooling is computed as ``log1p(relu(max_l z))``: ``log1p∘relu`` is monotone non-decreasing, so taking the max over
positions first gives the same values (and the same argmax gradient) as SPLADE's ``max_l log1p(relu(z))`` while
the elementwise ops run on (B, V) instead of (B, L, V) -- the L×V output layer dominates compute and memory.
Padding positions are filled with 0 before the max, which is exactly what ``relu`` maps them to anyway.

``forward`` has no data-dependent Python control flow, so ``torch.jit.trace`` and ONNX export capture it whole.

Query modes: ``"encoder"`` runs queries through the transformer like documents; ``"inference_free"`` (OpenSearch's
"doc-only" neural sparse mode) weights each query token by a per-token vector ``query_weights`` (IDF from
:func:`idf_weights`, or learned), so search needs no model call for queries.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

RAYSPARSE_JSON = "raysparse.json"
QUERY_WEIGHTS_FILE = "query_weights.safetensors"
TRANSLATION_TABLE_FILE = "translation_table.safetensors"
QUERY_MODES = ("encoder", "inference_free")
_FORMAT_VERSION = 1

log = logging.getLogger(__name__)


def _model_vocab_size(mlm: nn.Module) -> int:
    """Size of the MLM output layer (may exceed ``len(tokenizer)``: checkpoints pad vocabularies)."""
    out = mlm.get_output_embeddings() if hasattr(mlm, "get_output_embeddings") else None
    if out is not None and hasattr(out, "out_features"):
        return int(out.out_features)
    return int(mlm.config.vocab_size)


def special_ids_of(tokenizer: Any, vocab_size: int | None = None) -> list[int]:
    """Sorted ids of the tokenizer's special tokens ([PAD], [CLS], [SEP], [MASK], [UNK], <s>, ...)."""
    ids = {int(i) for i in tokenizer.all_special_ids if i is not None and int(i) >= 0}
    if vocab_size is not None:
        ids = {i for i in ids if i < vocab_size}
    return sorted(ids)


class SparseEncoder(nn.Module):
    """Sparse (vocabulary-sized, non-negative) encoder over any Hugging Face masked-LM.

    ``klue/bert-base``, ``xlm-roberta-base`` and the small local BERT from :mod:`raysparse.backbone` take the same code
    path: anything ``AutoModelForMaskedLM`` loads whose ``.logits`` are (B, L, V).
    """

    def __init__(
        self,
        mlm: nn.Module,
        tokenizer: Any,
        *,
        lexical_prior: float = 0.0,
        query_mode: str = "encoder",
        query_weights: torch.Tensor | None = None,
        translation_prior: float = 0.0,
        translation_table: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if query_mode not in QUERY_MODES:
            raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")
        if lexical_prior < 0 or not math.isfinite(lexical_prior):
            raise ValueError(f"lexical_prior must be a finite number >= 0, got {lexical_prior!r}")
        if translation_prior < 0 or not math.isfinite(translation_prior):
            raise ValueError(f"translation_prior must be a finite number >= 0, got {translation_prior!r}")
        self.mlm = mlm
        self.tokenizer = tokenizer
        self.lexical_prior = float(lexical_prior)
        self.translation_prior = float(translation_prior)
        self.query_mode = query_mode
        self.vocab_size: int = _model_vocab_size(mlm)
        self.special_token_ids: list[int] = special_ids_of(tokenizer, self.vocab_size)
        keep = torch.ones(self.vocab_size)
        keep[self.special_token_ids] = 0.0
        # 1 for ordinary terms, 0 for special tokens; multiplied into the output (cheaper than a scatter per call).
        self.register_buffer("keep_mask", keep, persistent=False)
        if query_weights is not None:
            query_weights = torch.as_tensor(query_weights, dtype=torch.float32).detach().clone()
            if query_weights.shape != (self.vocab_size,):
                raise ValueError(
                    f"query_weights must have shape ({self.vocab_size},) (the model vocabulary), "
                    f"got {tuple(query_weights.shape)}"
                )
            # A Parameter so a trainer can learn it (and it travels with state_dict); set requires_grad_(False) to
            # keep pure IDF weights.
            self.query_weights: nn.Parameter | None = nn.Parameter(query_weights)
        elif query_mode == "inference_free":
            # Uniform start, learned by training (the Parameter is in model.parameters()); IDF is a better start.
            log.warning(
                "query_mode='inference_free' without query_weights: starting from uniform weights 1.0 (learned in "
                "training); pass query_weights=idf_weights(tokenizer, corpus) for an IDF start"
            )
            self.query_weights = nn.Parameter(torch.ones(self.vocab_size))
        else:
            self.query_weights = None
        # Buffers (None when absent) so .to(device) moves them; saved in their own file, not in the HF weights.
        self.register_buffer("translation_ids", None, persistent=False)
        self.register_buffer("translation_weights", None, persistent=False)
        if translation_table is not None:
            if hasattr(translation_table, "ids"):  # a raysparse.alignment.TranslationTable
                translation_table = (translation_table.ids, translation_table.weights)
            ids, weights = (torch.as_tensor(t) for t in translation_table)
            if ids.dim() != 2 or ids.shape != weights.shape or ids.shape[0] > self.vocab_size:
                raise ValueError(
                    f"translation_table must be two (V, K) arrays with V <= {self.vocab_size}, "
                    f"got {tuple(ids.shape)} and {tuple(weights.shape)}"
                )
            if ids.numel() and int(ids.max()) >= self.vocab_size:
                raise ValueError("translation_table has target ids outside the model vocabulary")
            pad_rows = self.vocab_size - ids.shape[0]  # the tokenizer may be smaller than the output layer
            self.translation_ids = torch.cat(
                [ids.long(), torch.zeros(pad_rows, ids.shape[1], dtype=torch.long)]
            )
            self.translation_weights = torch.cat([weights.float(), torch.zeros(pad_rows, weights.shape[1])])

    # ------------------------------------------------------------------ core tensor paths (traceable)
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and mask -> (B, V) non-negative term weights (documents, and queries in encoder mode)."""
        logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V)
        if self.lexical_prior != 0.0:  # a constant of the module, not data: tracing records one branch
            index = input_ids.unsqueeze(-1)
            prior = torch.full(index.shape, self.lexical_prior, dtype=logits.dtype, device=logits.device)
            # In place on the fresh logits tensor: no second (B, L, V) copy. Autograd allows it: the producing
            # matmul does not need its output for backward and scatter_add's backward needs only the index.
            logits = logits.scatter_add_(-1, index, prior)
        if self.translation_ids is not None and self.translation_prior != 0.0:
            targets = self.translation_ids[input_ids]  # (B, L, K)
            boost = (self.translation_weights[input_ids] * self.translation_prior).to(logits.dtype)
            logits = logits.scatter_add_(-1, targets, boost)
        pad = (attention_mask == 0).unsqueeze(-1)
        # also in place (masked_fill's backward needs only the mask): the pooled max then saves this same buffer
        logits = logits.masked_fill_(pad, 0.0)
        pooled = logits.amax(dim=1)  # (B, V)
        reps = torch.log1p(torch.relu(pooled))
        return reps * self.keep_mask.to(reps.dtype)

    def query_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Queries -> (B, V): the transformer in encoder mode; ``query_weights[token]`` per token when inference-free.

        In inference-free mode a token present in the query gets its weight once (presence, not counts), matching
        OpenSearch's inference-free sparse search; padding and special tokens get 0.
        """
        if self.query_mode == "encoder":
            return self.forward(input_ids, attention_mask)
        assert self.query_weights is not None
        weights = torch.relu(self.query_weights)[input_ids] * attention_mask.to(self.query_weights.dtype)
        reps = torch.zeros(
            input_ids.shape[0], self.vocab_size, dtype=weights.dtype, device=weights.device
        ).scatter_reduce(1, input_ids, weights, reduce="amax", include_self=True)
        return reps * self.keep_mask.to(reps.dtype)

    # ------------------------------------------------------------------ text helpers
    @property
    def device(self) -> torch.device:
        return next(self.mlm.parameters()).device

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """Tokenize with padding and truncation; returns input_ids and attention_mask on the model's device."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def _encode(self, texts: Sequence[str], max_length: int, batch_size: int, query: bool) -> torch.Tensor:
        from tqdm.auto import tqdm

        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.vocab_size)
        was_training = self.training
        self.eval()
        out = []
        starts = range(0, len(texts), batch_size)
        try:
            with torch.inference_mode():
                for start in tqdm(starts, desc="encode", disable=len(starts) < 20, leave=False):
                    batch = self.tokenize(texts[start : start + batch_size], max_length)
                    fn = self.query_forward if query else self.forward
                    out.append(fn(batch["input_ids"], batch["attention_mask"]).float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(out)

    def encode_queries(
        self, texts: Sequence[str], max_length: int = 32, batch_size: int = 64
    ) -> torch.Tensor:
        """Queries -> (N, V) float32 on CPU; inference-free mode needs no transformer call."""
        return self._encode(texts, max_length, batch_size, query=True)

    def encode_documents(
        self, texts: Sequence[str], max_length: int = 256, batch_size: int = 32
    ) -> torch.Tensor:
        """Documents -> (N, V) float32 on CPU."""
        return self._encode(texts, max_length, batch_size, query=False)

    def encode(
        self,
        texts: Sequence[str],
        *,
        is_query: bool = False,
        max_length: int | None = None,
        batch_size: int = 32,
        top_k: int | None = None,
        threshold: float = 0.0,
    ) -> list[dict[str, float]]:
        """Texts -> one ``{token: weight}`` dict each (what OpenSearch's ``rank_features`` field stores)."""
        if is_query:
            reps = self.encode_queries(texts, max_length or 32, batch_size)
        else:
            reps = self.encode_documents(texts, max_length or 256, batch_size)
        return self.to_term_weights(reps, top_k=top_k, threshold=threshold)

    def to_term_weights(
        self, reps: torch.Tensor, top_k: int | None = None, threshold: float = 0.0
    ) -> list[dict[str, float]]:
        """(N, V) weights -> ``[{token: weight}]`` keeping weights > ``threshold``, at most ``top_k`` per row.

        Rows are sorted by weight (descending) so truncating a dict keeps the strongest terms.
        """
        if reps.dim() != 2 or reps.shape[1] != self.vocab_size:
            raise ValueError(f"reps must be (N, {self.vocab_size}), got {tuple(reps.shape)}")
        reps = reps.detach().float().cpu()
        k = self.vocab_size if top_k is None else min(int(top_k), self.vocab_size)
        values, indices = torch.topk(reps, k=k, dim=1) if k < self.vocab_size else torch.sort(reps, 1, True)
        out: list[dict[str, float]] = []
        for row_values, row_ids in zip(values.tolist(), indices.tolist(), strict=True):
            keep = [(i, v) for i, v in zip(row_ids, row_values, strict=True) if v > threshold]
            tokens = self.tokenizer.convert_ids_to_tokens([i for i, _ in keep])
            out.append({tok: float(v) for tok, (_, v) in zip(tokens, keep, strict=True)})
        return out

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, out_dir: str | Path) -> None:
        """Hugging Face layout (config.json, model.safetensors, tokenizer files) + ``raysparse.json``.

        ``raysparse.json`` carries what the HF files cannot: the lexical prior, the query mode and the special ids
        (export and OpenSearch packaging read it). Learned/IDF query weights go to ``query_weights.safetensors``.
        """
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.mlm.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        meta = {
            "format_version": _FORMAT_VERSION,
            "lexical_prior": self.lexical_prior,
            "query_mode": self.query_mode,
            "vocab_size": self.vocab_size,
            "special_token_ids": self.special_token_ids,
            "has_query_weights": self.query_weights is not None,
            "translation_prior": self.translation_prior,
            "has_translation_table": self.translation_ids is not None,
        }
        (out / RAYSPARSE_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        qw = out / QUERY_WEIGHTS_FILE
        if self.query_weights is not None:
            save_file({"query_weights": self.query_weights.detach().float().cpu().contiguous()}, str(qw))
        elif qw.exists():
            qw.unlink()  # a stale file from an earlier save must not resurrect old weights
        table = out / TRANSLATION_TABLE_FILE
        if self.translation_ids is not None:
            save_file(
                {
                    "ids": self.translation_ids.cpu().contiguous(),
                    "weights": self.translation_weights.cpu().contiguous(),
                },
                str(table),
            )
        elif table.exists():
            table.unlink()

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **overrides: Any) -> SparseEncoder:
        """Load from a directory written by :meth:`save_pretrained`, any HF masked-LM directory, or a Hub name.

        ``overrides`` (``lexical_prior``, ``query_mode``, ``query_weights``, ``translation_prior``,
        ``translation_table``) replace values from ``raysparse.json`` and the saved files;
        a plain HF checkpoint without ``raysparse.json`` starts with the defaults.
        """
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        allowed = {"lexical_prior", "query_mode", "query_weights", "translation_prior", "translation_table"}
        unknown = set(overrides) - allowed
        if unknown:
            raise TypeError(
                f"unknown SparseEncoder.from_pretrained overrides {sorted(unknown)}; allowed {sorted(allowed)}"
            )
        path = Path(name_or_path)
        meta: dict[str, Any] = {}
        query_weights = None
        translation_table = None
        if path.is_dir():
            meta_file = path / RAYSPARSE_JSON
            if meta_file.is_file():
                try:
                    meta = json.loads(meta_file.read_text(encoding="utf-8"))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{meta_file}: not valid JSON: {err}") from None
                if not isinstance(meta, dict):
                    raise ValueError(f"{meta_file}: expected a JSON object, got {type(meta).__name__}")
            qw_file = path / QUERY_WEIGHTS_FILE
            if qw_file.is_file():
                from safetensors.torch import load_file  # safetensors: no pickle, safe on untrusted files

                query_weights = load_file(str(qw_file))["query_weights"]
            table_file = path / TRANSLATION_TABLE_FILE
            if table_file.is_file():
                from safetensors.torch import load_file

                tensors = load_file(str(table_file))
                translation_table = (tensors["ids"], tensors["weights"])
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        mlm = AutoModelForMaskedLM.from_pretrained(str(name_or_path))
        kwargs: dict[str, Any] = {
            "lexical_prior": float(meta.get("lexical_prior", 0.0)),
            "query_mode": meta.get("query_mode", "encoder"),
            "query_weights": query_weights,
            "translation_prior": float(meta.get("translation_prior", 0.0)),
            "translation_table": translation_table,
        }
        kwargs.update(overrides)
        return cls(mlm, tokenizer, **kwargs)


def idf_weights(tokenizer: Any, texts: Sequence[str], vocab_size: int | None = None) -> torch.Tensor:
    """(V,) BM25-style IDF ``log(1 + (N - df + 0.5) / (df + 0.5))`` of each token id over ``texts``.

    Used as ``query_weights`` for the inference-free query mode. The BM25 form stays positive even for tokens in
    every document; special tokens get 0. Tokens never seen get the largest IDF (df = 0), as BM25 would.
    """
    from tqdm.auto import tqdm

    size = int(vocab_size if vocab_size is not None else len(tokenizer))
    df = torch.zeros(size, dtype=torch.float64)
    texts = list(texts)
    if not texts:
        raise ValueError("idf_weights needs at least one text")
    batch = 256
    for start in tqdm(range(0, len(texts), batch), desc="idf", disable=len(texts) < 5000, leave=False):
        enc = tokenizer(texts[start : start + batch], add_special_tokens=False, truncation=False)["input_ids"]
        for ids in enc:
            if ids:
                uniq = torch.unique(torch.as_tensor(ids, dtype=torch.long))
                df[uniq[uniq < size]] += 1.0
    n = float(len(texts))
    idf = torch.log1p((n - df + 0.5) / (df + 0.5)).float()
    idf[special_ids_of(tokenizer, size)] = 0.0
    return idf
