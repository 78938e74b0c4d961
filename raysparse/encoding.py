"""The encoding spec: how texts become model inputs, saved with the model and read by every consumer.

Training, validation, ``raysparse evaluate``, ``raysparse index``/``search``, export parity and the OpenSearch bundles
all encode through :func:`tokenize_documents` / :func:`tokenize_queries` with the model's :class:`EncodingSpec`
(``raysparse.json["encoding"]``), so the vectors a checkpoint is selected on are the vectors that get indexed.
Overriding a field is explicit (:meth:`EncodingSpec.replace`) and logged.

Long documents are encoded in overlapping windows of ``max_doc_length`` tokens, ``doc_stride`` tokens apart (at most
``max_windows``); the transformer's term weights are max-pooled over the windows, while the lexical (BM25) part of the
vector counts every token of the whole text once (:class:`TokenizedBatch.lexical_ids`) -- BM25 reads whole documents,
and so does the encoder.

``pretokenize="kiwi"`` segments Korean into morphemes with Kiwi before the word-piece tokenizer (the local tokenizer is
trained on the same segmentation): ``검색을`` becomes ``검색 을``, so the piece ``검색`` matches across particles and
compounds the way BM25-Kiwi does. It is part of the spec because a tokenizer trained on segmented text must see
segmented text at inference too; HF backbones keep ``pretokenize="none"``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

PRETOKENIZERS = ("none", "kiwi")


@dataclass(frozen=True)
class EncodingSpec:
    """Everything that decides which vector a text gets, besides the weights."""

    max_query_length: int = 32  # tokens, special tokens included
    max_doc_length: int = 128  # tokens per document window, special tokens included
    doc_stride: int = 96  # tokens between window starts (max_doc_length - 2 - doc_stride tokens of overlap)
    max_windows: int = 8  # windows per document (the lexical part still reads the whole text)
    title_separator: str = " "  # documents are title + separator + text (BEIR convention)
    pretokenize: str = "none"  # "kiwi": Korean morpheme segmentation before the word-piece tokenizer
    doc_top_k: int | None = None  # keep at most this many terms per document vector (pruning)
    query_top_k: int | None = None
    threshold: float = 0.0  # drop weights <= threshold
    # Where the BM25 lexical part's IDF and avgdl come from when a corpus is encoded as a whole (evaluate, index):
    # "corpus" refits them on the documents being encoded, as BM25 does (no queries or labels involved);
    # "model" keeps the statistics saved with the model (fitted on the backbone's corpus).
    lexical_statistics: str = "model"

    def __post_init__(self) -> None:
        if self.pretokenize not in PRETOKENIZERS:
            raise ValueError(f"encoding.pretokenize must be one of {PRETOKENIZERS}, got {self.pretokenize!r}")
        if self.max_doc_length < 8 or self.max_query_length < 4:
            raise ValueError("encoding.max_doc_length must be >= 8 and max_query_length >= 4")
        if not 1 <= self.doc_stride <= self.max_doc_length - 2:
            raise ValueError(
                f"encoding.doc_stride must be in [1, max_doc_length - 2 = {self.max_doc_length - 2}], "
                f"got {self.doc_stride}"
            )
        if self.lexical_statistics not in ("model", "corpus"):
            raise ValueError(
                f"encoding.lexical_statistics must be 'model' or 'corpus', got {self.lexical_statistics!r}"
            )
        if self.max_windows < 1:
            raise ValueError("encoding.max_windows must be >= 1")
        for name in ("doc_top_k", "query_top_k"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"encoding.{name} must be >= 1 or null, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EncodingSpec:
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown encoding spec keys {sorted(unknown)}; known {sorted(known)}")
        return cls(**data)

    def replace(self, reason: str = "override", **changes: Any) -> EncodingSpec:
        """A copy with ``changes``; every changed field is logged (an override must never be silent)."""
        changed = {k: v for k, v in changes.items() if v is not None and getattr(self, k) != v}
        if not changed:
            return self
        log.info(
            "encoding spec %s: %s",
            reason,
            ", ".join(f"{k} {getattr(self, k)!r} -> {v!r}" for k, v in changed.items()),
        )
        return dataclasses.replace(self, **changed)

    def with_max_length(self, max_length: int | None, is_query: bool) -> EncodingSpec:
        """The spec for an ``encode(..., max_length=N)`` call: that side's window length (a document stride kept
        below the new window); ``None`` keeps the spec."""
        if max_length is None:
            return self
        key = "max_query_length" if is_query else "max_doc_length"
        changes: dict[str, Any] = {key: int(max_length)}
        if not is_query and self.doc_stride > int(max_length) - 2:
            changes["doc_stride"] = max(1, int(max_length) - 2)
        return self.replace("max_length argument", **changes)


def spec_from_model_config(model_cfg: Any) -> EncodingSpec:
    """The spec a model trained with ``model_cfg`` (:class:`raysparse.config.ModelConfig`) is saved with."""
    window = int(model_cfg.max_doc_length)
    stride = model_cfg.doc_stride or max(1, (window - 2) * 3 // 4)
    return EncodingSpec(
        max_query_length=int(model_cfg.max_query_length),
        max_doc_length=window,
        doc_stride=min(int(stride), window - 2),
        max_windows=int(model_cfg.max_windows),
        pretokenize=model_cfg.pretokenize,
        doc_top_k=model_cfg.doc_top_k,
        query_top_k=model_cfg.query_top_k,
        threshold=float(model_cfg.threshold),
        lexical_statistics=model_cfg.lexical_statistics,
    )


def join_title(title: str | None, text: str, spec: EncodingSpec) -> str:
    return f"{title}{spec.title_separator}{text}" if title else text


# ------------------------------------------------------------------------------------------------ pre-tokenisation
def pretokenize(texts: Sequence[str], mode: str) -> list[str]:
    """Texts as the word-piece tokenizer must see them: unchanged, or Kiwi morphemes joined by spaces."""
    texts = [t if isinstance(t, str) else str(t) for t in texts]
    if mode == "none":
        return texts
    if mode != "kiwi":
        raise ValueError(f"unknown pretokenize mode {mode!r}; choose one of {PRETOKENIZERS}")
    return kiwi_segment_with_tags(texts)[0]


def _join_morphemes(text: str, tokens: Sequence[Any]) -> str:
    """Kiwi morphemes joined by spaces, Korean as Kiwi's forms (했다 -> 하 었 다) but everything else as written:
    adjacent non-Hangul tokens are re-joined from the original text (Kiwi can split an English word, e.g.
    "models." -> "m" + "odels."), so English, numbers and code keep the word pieces they have without Kiwi."""
    from raysparse.analyzers import is_hangul

    pieces: list[str] = []
    last_end = -1
    last_foreign = False
    for tok in tokens:
        surface = text[tok.start : tok.start + tok.len]
        foreign = not any(is_hangul(ch) for ch in surface)
        if foreign and last_foreign and tok.start == last_end:
            pieces[-1] += surface
        else:
            pieces.append(surface if foreign else tok.form)
        last_end, last_foreign = tok.start + tok.len, foreign
    return " ".join(pieces)


# Kiwi is the slow part (~1k sentences/s per core): a process-wide memo of each text's analysis, so building a
# backbone (tokenizer texts, lexical statistics, translation pairs: the same texts) segments every text once.
_KIWI_MEMO: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
_KIWI_MEMO_MAX = 200_000  # ~100k sentence pairs; bounded so a long-running indexer does not grow


def kiwi_segment_with_tags(texts: Sequence[str]) -> tuple[list[str], Counter[str], Counter[str]]:
    """One Kiwi pass: the ``pretokenize(texts, "kiwi")`` output plus the content and function morpheme forms seen
    (by Kiwi tag; :func:`raysparse.model.fit_lexical_prior` masks pieces that are mostly function morphemes)."""
    from raysparse.analyzers import KIWI_CONTENT_TAGS, get_kiwi

    texts = [t if isinstance(t, str) else str(t) for t in texts]
    todo = list(dict.fromkeys(t for t in texts if t.strip() and t not in _KIWI_MEMO))
    if len(todo) == 1:
        analysed = [get_kiwi().tokenize(todo[0])]
    else:
        analysed = list(get_kiwi(-1).tokenize(todo)) if todo else []
    fresh: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
    for text, tokens in zip(todo, analysed, strict=True):
        content = tuple(tok.form for tok in tokens if tok.tag in KIWI_CONTENT_TAGS)
        function = tuple(tok.form for tok in tokens if tok.tag not in KIWI_CONTENT_TAGS)
        fresh[text] = (_join_morphemes(text, tokens) if tokens else text, content, function)
    if len(_KIWI_MEMO) + len(fresh) <= _KIWI_MEMO_MAX:
        _KIWI_MEMO.update(fresh)
    segmented: list[str] = []
    content_counts: Counter[str] = Counter()
    function_counts: Counter[str] = Counter()
    for text in texts:
        entry = fresh.get(text) or _KIWI_MEMO.get(text)
        if entry is None:  # empty or whitespace-only
            segmented.append(text)
            continue
        segmented.append(entry[0])
        content_counts.update(entry[1])
        function_counts.update(entry[2])
    return segmented, content_counts, function_counts


# ------------------------------------------------------------------------------------------------ tokenisation
@dataclass
class TokenizedBatch:
    """Model inputs for a batch of texts.

    ``input_ids``/``attention_mask`` are (W, L) windows; ``text_index`` (W,) says which text each window belongs to
    (queries and short documents: one window each, ``text_index = arange``). ``lexical_ids`` holds every token of
    each whole text (no special tokens), for the lexical part of the vector.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    text_index: torch.Tensor
    num_texts: int
    lexical_ids: list[list[int]]

    def to(self, device: Any) -> TokenizedBatch:
        return TokenizedBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.text_index.to(device),
            self.num_texts,
            self.lexical_ids,
        )


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(r) for r in rows), default=1) or 1
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _special_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a single-sequence encoding puts before and after the text ([CLS] / [SEP], <s> / </s>)."""
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(probe) - len(bare) + 1):
        if probe[start : start + len(bare)] == bare:
            return probe[:start], probe[start + len(bare) :]
    return [], []


def tokenize_texts(
    tokenizer: Any, texts: Sequence[str], spec: EncodingSpec, *, is_query: bool
) -> TokenizedBatch:
    """Tokenize ``texts`` by ``spec``: queries truncated to ``max_query_length``; documents split into windows."""
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not a single string")
    texts = pretokenize(list(texts), spec.pretokenize)
    ids_list = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    prefix, suffix = _special_ids(tokenizer)
    extra = len(prefix) + len(suffix)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows: list[list[int]] = []
    owner: list[int] = []
    lexical: list[list[int]] = []
    for i, ids in enumerate(ids_list):
        if is_query:
            body = ids[: spec.max_query_length - extra]
            rows.append(prefix + body + suffix)
            owner.append(i)
            lexical.append(body)
            continue
        width = spec.max_doc_length - extra
        starts = list(range(0, max(len(ids) - width, 0) + 1, spec.doc_stride))
        if starts[-1] + width < len(ids):
            starts.append(len(ids) - width)  # the tail always gets a window
        starts = starts[: spec.max_windows]
        for s in starts:
            rows.append(prefix + ids[s : s + width] + suffix)
            owner.append(i)
        lexical.append(ids)
    input_ids, attention_mask = _pad(rows, pad_id)
    return TokenizedBatch(
        input_ids, attention_mask, torch.as_tensor(owner, dtype=torch.long), len(texts), lexical
    )


def term_weights(
    reps: torch.Tensor | np.ndarray, tokenizer: Any, *, top_k: int | None = None, threshold: float = 0.0
) -> list[dict[str, float]]:
    """(N, V) weights -> one ``{token: weight}`` dict per row (what OpenSearch's ``rank_features`` field stores).

    Keeps weights > ``threshold``, at most ``top_k`` per row, sorted by weight descending with ties in token-id
    order (a stable sort), so truncating a dict keeps the strongest terms and every runtime -- the in-process
    encoder, TorchScript, ONNX -- turns equal vectors into equal dicts.
    """
    rows = (
        reps.detach().float().cpu().numpy()
        if isinstance(reps, torch.Tensor)
        else np.asarray(reps, np.float32)
    )
    out: list[dict[str, float]] = []
    for row in rows:
        active = np.flatnonzero(row > threshold)
        order = active[np.argsort(-row[active], kind="stable")]
        if top_k is not None:
            order = order[: int(top_k)]
        tokens = tokenizer.convert_ids_to_tokens(order.tolist())
        out.append({tok: float(row[i]) for tok, i in zip(tokens, order, strict=True)})
    return out
