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

BM25 lexical part (``lexical``, a :class:`LexicalPrior`): the vector of a text also holds an exact BM25 weight for
every word piece it contains, computed from the piece counts of the whole text::

    tf[v]    = count of piece v in the text (pieces in ``LexicalPrior.piece_mask`` only: content morphemes)
    lex_d[v] = idf[v] * tf / (tf + k1 (1 - b + b dl / avgdl))               documents (idf moves to the query
                                                                            side in inference-free mode)
    lex_q[v] = tf[v]                                                        queries (encoder mode)
    w        = neural_weight * splade + lex + translation_prior * T^T lex   (T: the translation table, Dice scores)

so ``q . d`` of the untrained encoder *is* BM25 over the encoder's pieces (plus dictionary-translated BM25 across
languages), and training learns the transformer part (expansions, re-weighting) on top. IDF and avgdl are corpus
statistics fitted when the backbone is built (:func:`fit_lexical_prior`). Max-pooling cannot carry term frequency;
the counts can, so the lexical part is computed from them rather than from the pooled logits.

Query modes: ``"encoder"`` runs queries through the transformer like documents; ``"inference_free"`` (OpenSearch's
"doc-only" neural sparse mode) weights each query token by a per-token vector ``query_weights`` (IDF from
:func:`idf_weights`, or learned), so search needs no model call for queries.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raysparse.idf import bm25_idf

RAYSPARSE_JSON = "raysparse.json"
QUERY_WEIGHTS_FILE = "query_weights.safetensors"
TRANSLATION_TABLE_FILE = "translation_table.safetensors"
LEXICAL_PRIOR_FILE = "lexical_prior.safetensors"
QUERY_MODES = ("encoder", "inference_free")
TRANSLATION_SIDES = ("query", "document", "both")
_FORMAT_VERSION = 2

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


class LexicalPrior(nn.Module):
    """Exact BM25 term weights from piece counts (see the module docstring); no trainable parameters.

    Buffers, all (V,): ``idf``; ``piece_mask`` (1 for pieces that count as terms, 0 for function morphemes,
    punctuation and special tokens); ``word_start`` (1 for a masked piece that still counts when it begins a longer
    word: Kiwi's particle ``이`` alone is not a term, the ``이`` of ``이 ##순 ##신`` is); ``continuation`` (1 for
    ``##`` pieces). ``k1``, ``b``, ``avgdl`` are plain floats (constants of the traced graph).
    """

    def __init__(
        self,
        idf: torch.Tensor,
        piece_mask: torch.Tensor,
        avgdl: float,
        k1: float = 1.2,
        b: float = 0.75,
        word_start: torch.Tensor | None = None,
        continuation: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        idf = torch.as_tensor(idf, dtype=torch.float32).detach().clone()
        piece_mask = torch.as_tensor(piece_mask, dtype=torch.float32).detach().clone()
        if idf.dim() != 1 or idf.shape != piece_mask.shape:
            raise ValueError(
                f"idf and piece_mask must be (V,) vectors, got {tuple(idf.shape)} and {tuple(piece_mask.shape)}"
            )
        if not (avgdl > 0 and k1 >= 0 and 0 <= b <= 1):
            raise ValueError(f"bad BM25 constants avgdl={avgdl}, k1={k1}, b={b}")
        # separate tensors (safetensors refuses buffers that share memory); models saved without them: all 0
        word_start = (
            torch.zeros_like(piece_mask)
            if word_start is None
            else torch.as_tensor(word_start).float().clone()
        )
        continuation = (
            torch.zeros_like(piece_mask)
            if continuation is None
            else torch.as_tensor(continuation).float().clone()
        )
        if word_start.shape != idf.shape or continuation.shape != idf.shape:
            raise ValueError("word_start and continuation must be (V,) like idf")
        self.register_buffer("idf", idf)
        self.register_buffer("piece_mask", piece_mask)
        self.register_buffer("word_start", word_start)
        self.register_buffer("continuation", continuation)
        self.avgdl, self.k1, self.b = float(avgdl), float(k1), float(b)

    def resized(self, size: int) -> LexicalPrior:
        """The same prior over a vocabulary padded with zeros to ``size`` entries."""
        pad = size - self.vocab_size

        def grow(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, torch.zeros(pad, dtype=t.dtype, device=t.device)])

        return LexicalPrior(
            grow(self.idf),
            grow(self.piece_mask),
            self.avgdl,
            self.k1,
            self.b,
            grow(self.word_start),
            grow(self.continuation),
        )

    def position_weights(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L): 1 where the token counts as a term, else 0 (padding, specials, function pieces unless
        they begin a longer word, i.e. the next real token is a ``##`` piece)."""
        mask = attention_mask.to(self.piece_mask.dtype)
        next_cont = self.continuation[input_ids[:, 1:]] * mask[:, 1:]
        next_cont = torch.cat([next_cont, torch.zeros_like(mask[:, :1])], dim=1)
        keep = self.piece_mask[input_ids]
        keep = keep + (1.0 - keep) * self.word_start[input_ids] * next_cont
        return keep * mask

    @property
    def vocab_size(self) -> int:
        return int(self.idf.shape[0])

    def counts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """(B, L) ids -> (B, V) counts of the tokens that are terms (:meth:`position_weights`)."""
        weights = self.position_weights(input_ids, attention_mask)
        counts = torch.zeros(input_ids.shape[0], vocab_size, dtype=weights.dtype, device=input_ids.device)
        return counts.scatter_add(1, input_ids, weights)

    def term_ids(self, ids: Sequence[int]) -> list[int]:
        """The ids of one whole text that count as terms (the list form of :meth:`position_weights`)."""
        if not ids:
            return []
        t = torch.as_tensor(list(ids), dtype=torch.long).clamp_(max=self.vocab_size - 1).unsqueeze(0)
        keep = self.position_weights(t, torch.ones_like(t))[0] > 0
        return t[0][keep].tolist()

    def tf_saturation(self, counts: torch.Tensor) -> torch.Tensor:
        """BM25's term-frequency factor tf / (tf + k1 (1 - b + b dl / avgdl)), 0 where tf = 0: Lucene's form
        (no constant (k1 + 1) factor), so the encoder's scores equal bm25s' Lucene scores used by evaluation."""
        dl = counts.sum(dim=1, keepdim=True)
        norm = self.k1 * (1.0 - self.b + self.b * dl / self.avgdl)
        return counts / (counts + norm)

    def document(self, counts: torch.Tensor, with_idf: bool = True) -> torch.Tensor:
        sat = self.tf_saturation(counts)
        return sat * self.idf if with_idf else sat

    def state(self) -> dict[str, float]:
        return {"avgdl": self.avgdl, "k1": self.k1, "b": self.b}

    def refit(
        self, tokenizer: Any, texts: Sequence[str], documents: Sequence[str] | None = None
    ) -> LexicalPrior:
        """A prior with this one's masks and constants, IDF over ``texts`` and avgdl over ``documents`` (default
        ``texts``), both counted on the term streams (:meth:`term_ids`), as BM25 over those terms counts them.
        Texts must already be pre-tokenized as the model's spec says."""
        from tqdm.auto import tqdm

        texts = list(texts)
        if not texts:
            raise ValueError("fitting lexical statistics needs at least one text")

        def streams(items: list[str], desc: str) -> Iterator[list[int]]:
            step = 512
            for start in tqdm(range(0, len(items), step), desc=desc, disable=len(items) < 5000, leave=False):
                for ids in tokenizer(items[start : start + step], add_special_tokens=False, verbose=False)[
                    "input_ids"
                ]:
                    yield self.term_ids(ids)

        df = torch.zeros(self.vocab_size, dtype=torch.float64)
        for kept in streams(texts, "idf"):
            if kept:
                df[torch.unique(torch.as_tensor(kept, dtype=torch.long))] += 1.0
        n = float(len(texts))
        idf = torch.from_numpy(bm25_idf(n, df.numpy())).float()
        idf = idf * ((self.piece_mask + self.word_start) > 0)  # pieces that are never terms get 0
        docs = texts if documents is None else list(documents)
        lengths = [float(len(kept)) for kept in streams(docs, "avgdl")]
        avgdl = max(sum(lengths) / max(len(lengths), 1), 1.0)
        return LexicalPrior(idf, self.piece_mask, avgdl, self.k1, self.b, self.word_start, self.continuation)


def fit_lexical_prior(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    documents: Sequence[str] | None = None,
    pretokenize: str = "none",
    function_counts: Mapping[str, int] | None = None,
    content_counts: Mapping[str, int] | None = None,
    k1: float = 1.2,
    b: float = 0.75,
    vocab_size: int | None = None,
) -> LexicalPrior:
    """BM25 statistics of ``texts`` (the corpus the backbone is built from) in ``tokenizer``'s pieces.

    Pieces that are mostly function morphemes (particles, endings: ``function_counts`` vs ``content_counts`` of
    each form from :func:`raysparse.encoding.kiwi_segment_with_tags`), punctuation-only pieces and special tokens are masked out of the lexical part, as BM25-Kiwi drops
    them from its terms. IDF is Lucene's ``log(1 + (N - df + 0.5) / (df + 0.5))`` (:func:`idf_weights`) over
    ``texts``; ``avgdl`` (lexical pieces per text) over ``documents`` when given (sentence-level background text
    would make it far shorter than a passage), else over ``texts``.
    """
    from raysparse.encoding import pretokenize as pretok

    size = int(vocab_size if vocab_size is not None else len(tokenizer))
    texts = pretok(list(texts), pretokenize)
    mask = torch.ones(size)
    mask[special_ids_of(tokenizer, size)] = 0.0
    continuation = torch.zeros(size)
    word_start = torch.zeros(size)
    vocab = tokenizer.get_vocab()
    for token, idx in vocab.items():
        if idx >= size:
            continue
        if token.startswith("##"):
            continuation[idx] = 1.0
        piece = (token[2:] if token.startswith("##") else token).lstrip("▁")
        if piece and not any(ch.isalnum() for ch in piece):
            mask[idx] = 0.0
    for form, n in (function_counts or {}).items():
        idx = vocab.get(form.lower())
        if idx is not None and idx < size and n > (content_counts or {}).get(form, 0):
            mask[idx] = 0.0
            word_start[idx] = 1.0  # a particle alone is no term; the first piece of a longer word is
    prior = LexicalPrior(torch.zeros(size), mask, 1.0, k1, b, word_start, continuation)
    docs = texts if documents is None else pretok(list(documents), pretokenize)
    return prior.refit(tokenizer, texts, docs)


TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "spiece.model",
)


def check_model_source(name_or_path: str | Path) -> None:
    """Fail with one line naming the path when ``name_or_path`` is not a loadable model, before transformers does
    (its messages for a wrong directory are about sentencepiece, Hub repo ids or slow tokenizers).

    A local path (an existing one, or one written as a path: absolute, ``./``, ``~``) must be a directory with
    ``config.json`` and a tokenizer file; anything else is taken for a Hub name and must be in the local cache
    (these machines are offline).
    """
    from raysparse.errors import InputError

    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_local = path.exists() or path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1
    if not looks_local:
        return  # a Hub name: transformers resolves it (from the cache when offline)
    if not path.is_dir():
        raise InputError(f"{text}: no such model directory")
    if not (path / "config.json").is_file():
        raise InputError(f"{text}: not a model directory (no config.json)")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(
            f"{text}: not a model directory (no tokenizer: none of {', '.join(TOKENIZER_FILES)})"
        )


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
        lexical: LexicalPrior | None = None,
        neural_weight: float = 1.0,
        translation_side: str | None = None,
        spec: Any = None,
    ) -> None:
        super().__init__()
        from raysparse.encoding import EncodingSpec

        if query_mode not in QUERY_MODES:
            raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")
        if lexical_prior < 0 or not math.isfinite(lexical_prior):
            raise ValueError(f"lexical_prior must be a finite number >= 0, got {lexical_prior!r}")
        if translation_prior < 0 or not math.isfinite(translation_prior):
            raise ValueError(f"translation_prior must be a finite number >= 0, got {translation_prior!r}")
        if neural_weight < 0 or not math.isfinite(neural_weight):
            raise ValueError(f"neural_weight must be a finite number >= 0, got {neural_weight!r}")
        if translation_side is None:  # inference-free queries cannot expand: translate the documents instead
            translation_side = "document" if query_mode == "inference_free" else "query"
        if translation_side not in TRANSLATION_SIDES:
            raise ValueError(f"translation_side must be one of {TRANSLATION_SIDES}, got {translation_side!r}")
        self.mlm = mlm
        self.tokenizer = tokenizer
        self.lexical_prior = float(lexical_prior)
        self.translation_prior = float(translation_prior)
        self.query_mode = query_mode
        self.neural_weight = float(neural_weight)
        self.translation_side = translation_side
        self.spec: EncodingSpec = spec if isinstance(spec, EncodingSpec) else EncodingSpec.from_dict(spec)
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
        self.lexical: LexicalPrior | None = None
        if lexical is not None:
            if lexical.vocab_size > self.vocab_size:
                raise ValueError(
                    f"lexical prior has {lexical.vocab_size} entries, the model {self.vocab_size}"
                )
            if lexical.vocab_size < self.vocab_size:  # the output layer may be padded past the tokenizer
                lexical = lexical.resized(self.vocab_size)
            self.lexical = lexical

    # ------------------------------------------------------------------ core tensor paths (traceable)
    def neural(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The transformer part: (B, L) -> (B, V) SPLADE max-pooled ``log(1 + ReLU(logits))`` (with the logit priors)."""
        logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V)
        if self.lexical_prior != 0.0:  # a constant of the module, not data: tracing records one branch
            index = input_ids.unsqueeze(-1)
            prior = torch.full(index.shape, self.lexical_prior, dtype=logits.dtype, device=logits.device)
            # In place on the fresh logits tensor: no second (B, L, V) copy. Autograd allows it: the producing
            # matmul does not need its output for backward and scatter_add's backward needs only the index.
            logits = logits.scatter_add_(-1, index, prior)
        if self.translation_ids is not None and self.translation_prior != 0.0 and self.lexical is None:
            targets = self.translation_ids[input_ids]  # (B, L, K)
            boost = (self.translation_weights[input_ids] * self.translation_prior).to(logits.dtype)
            logits = logits.scatter_add_(-1, targets, boost)
        pad = (attention_mask == 0).unsqueeze(-1)
        # also in place (masked_fill's backward needs only the mask): the pooled max then saves this same buffer
        logits = logits.masked_fill_(pad, 0.0)
        pooled = logits.amax(dim=1)  # (B, V)
        reps = torch.log1p(torch.relu(pooled))
        return reps * self.keep_mask.to(reps.dtype)

    def translate(self, weights: torch.Tensor) -> torch.Tensor:
        """(B, V) -> (B, V): ``sum_v T[v, u] * weights[v]``, each term's weight spread to its translations."""
        assert self.translation_ids is not None
        spread = weights.unsqueeze(-1) * self.translation_weights.to(weights.dtype)  # (B, V, K)
        out = torch.zeros_like(weights)
        return out.scatter_add(
            1, self.translation_ids.reshape(1, -1).expand(weights.shape[0], -1), spread.flatten(1)
        )

    def _lexical_reps(self, counts: torch.Tensor, *, is_query: bool) -> torch.Tensor:
        """Lexical (+ translated) part from (B, V) piece counts: BM25 weights for documents, counts for queries."""
        assert self.lexical is not None
        if is_query:
            lex = counts
        else:  # inference-free: IDF is the query's weight, so documents carry the tf factor alone
            lex = self.lexical.document(counts, with_idf=self.query_mode != "inference_free")
        side = "query" if is_query else "document"
        if (
            self.translation_ids is not None
            and self.translation_prior != 0.0
            and self.translation_side in (side, "both")
        ):
            lex = lex + self.translation_prior * self.translate(lex)
        return lex

    def lexical_counts(self, lexical_ids: Sequence[Sequence[int]], device: Any = None) -> torch.Tensor:
        """Piece counts (B, V) of whole texts (token id lists without special tokens)."""
        assert self.lexical is not None
        lengths = [len(ids) for ids in lexical_ids]
        width = max(max(lengths, default=0), 1)
        ids = torch.zeros(len(lexical_ids), width, dtype=torch.long)
        mask = torch.zeros(len(lexical_ids), width, dtype=torch.long)
        for i, row in enumerate(lexical_ids):
            ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long).clamp_(max=self.vocab_size - 1)
            mask[i, : len(row)] = 1
        device = self.keep_mask.device if device is None else device
        return self.lexical.counts(ids.to(device), mask.to(device), self.vocab_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and mask -> (B, V) non-negative term weights of one window per document.

        The traced/exported graph. The lexical part counts this window's tokens, so it equals :meth:`encode_batch`
        for documents that fit one window; longer documents go through :meth:`encode_batch` (windows + whole-text
        counts).
        """
        reps = self.neural(input_ids, attention_mask)
        if self.lexical is not None:
            counts = self.lexical.counts(input_ids, attention_mask, self.vocab_size)
            reps = self.neural_weight * reps + self._lexical_reps(counts.to(reps.dtype), is_query=False)
        return reps

    def query_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Queries -> (B, V): the transformer in encoder mode; ``query_weights[token]`` per token when inference-free.

        In inference-free mode a token present in the query gets its weight once (presence, not counts), matching
        OpenSearch's inference-free sparse search; padding and special tokens get 0.
        """
        if self.query_mode == "encoder":
            reps = self.neural(input_ids, attention_mask)
            if self.lexical is not None:
                counts = self.lexical.counts(input_ids, attention_mask, self.vocab_size)
                reps = self.neural_weight * reps + self._lexical_reps(counts.to(reps.dtype), is_query=True)
            return reps
        assert self.query_weights is not None
        weights = torch.relu(self.query_weights)[input_ids] * attention_mask.to(self.query_weights.dtype)
        reps = torch.zeros(
            input_ids.shape[0], self.vocab_size, dtype=weights.dtype, device=weights.device
        ).scatter_reduce(1, input_ids, weights, reduce="amax", include_self=True)
        return reps * self.keep_mask.to(reps.dtype)

    def encode_batch(self, batch: Any, *, is_query: bool) -> torch.Tensor:
        """A :class:`raysparse.encoding.TokenizedBatch` -> (num_texts, V), with gradient when training.

        Documents: the transformer part max-pooled over each text's windows, plus the lexical part from the counts
        of the whole text. Queries: one window each, through :meth:`query_forward`.
        """
        ids, mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        if is_query:
            return self.query_forward(ids, mask)
        if self.lexical is None and ids.shape[0] == batch.num_texts:
            return self.forward(ids, mask)
        if self.lexical is not None and self.neural_weight == 0.0:  # lexical part alone: no transformer call
            counts = self.lexical_counts(batch.lexical_ids, self.keep_mask.device)
            return self._lexical_reps(counts, is_query=False)
        windows = self.neural(ids, mask)
        index = batch.text_index.to(windows.device)
        if ids.shape[0] == batch.num_texts:
            pooled = windows
        else:
            pooled = torch.zeros(
                batch.num_texts, windows.shape[1], dtype=windows.dtype, device=windows.device
            )
            pooled = pooled.scatter_reduce(
                0, index.unsqueeze(1).expand_as(windows), windows, reduce="amax", include_self=True
            )
        if self.lexical is None:
            return pooled
        counts = self.lexical_counts(batch.lexical_ids, pooled.device).to(pooled.dtype)
        return self.neural_weight * pooled + self._lexical_reps(counts, is_query=False)

    def with_corpus_statistics(self, documents: Sequence[str]) -> SparseEncoder:
        """A shallow copy whose lexical IDF/avgdl are refitted on ``documents`` (the corpus about to be encoded);
        the piece mask, BM25 constants and every weight are shared. Without a lexical part: ``self``."""
        import copy

        if self.lexical is None:
            return self
        from raysparse.encoding import pretokenize

        texts = pretokenize(list(documents), self.spec.pretokenize)
        refitted = self.lexical.refit(self.tokenizer, texts)
        clone = copy.copy(self)  # nn.Module shallow copy: same mlm, buffers and tokenizer
        clone._modules = dict(self._modules)
        clone.lexical = refitted.to(self.keep_mask.device)
        log.info("lexical statistics refitted on %d documents (avgdl %.1f)", len(texts), refitted.avgdl)
        return clone

    # ------------------------------------------------------------------ text helpers
    @property
    def device(self) -> torch.device:
        return next(self.mlm.parameters()).device

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """Tokenize (after the spec's pre-tokenisation) with padding and truncation; ids and mask on the device."""
        from raysparse.encoding import pretokenize

        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        enc = self.tokenizer(
            pretokenize(list(texts), self.spec.pretokenize),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        return {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def tokenize_texts(self, texts: Sequence[str], *, is_query: bool, spec: Any = None) -> Any:
        """Texts -> :class:`raysparse.encoding.TokenizedBatch` by the model's spec (or ``spec``)."""
        from raysparse.encoding import tokenize_texts

        return tokenize_texts(self.tokenizer, texts, spec or self.spec, is_query=is_query)

    def _encode(
        self, texts: Sequence[str], max_length: int | None, batch_size: int, query: bool
    ) -> torch.Tensor:
        from tqdm.auto import tqdm

        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.vocab_size)
        spec = self.spec.with_max_length(max_length, query)
        was_training = self.training
        self.eval()
        out = []
        starts = range(0, len(texts), batch_size)
        try:
            with torch.inference_mode():
                for start in tqdm(starts, desc="encode", disable=len(starts) < 20, leave=False):
                    batch = self.tokenize_texts(texts[start : start + batch_size], is_query=query, spec=spec)
                    out.append(self.encode_batch(batch, is_query=query).float().cpu())
        finally:
            self.train(was_training)
        reps = torch.cat(out)
        top_k = spec.query_top_k if query else spec.doc_top_k
        return prune(reps, top_k, spec.threshold)

    def encode_queries(
        self, texts: Sequence[str], max_length: int | None = None, batch_size: int = 64
    ) -> torch.Tensor:
        """Queries -> (N, V) float32 on CPU by the model's encoding spec (``max_length`` overrides it, logged);
        inference-free mode needs no transformer call."""
        return self._encode(texts, max_length, batch_size, query=True)

    def encode_documents(
        self, texts: Sequence[str], max_length: int | None = None, batch_size: int = 32
    ) -> torch.Tensor:
        """Documents -> (N, V) float32 on CPU by the model's encoding spec: windows of ``spec.max_doc_length``
        tokens max-pooled, the lexical part over the whole text, pruned to ``spec.doc_top_k`` terms."""
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
            reps = self.encode_queries(texts, max_length, batch_size)
        else:
            reps = self.encode_documents(texts, max_length, batch_size)
        return self.to_term_weights(reps, top_k=top_k, threshold=threshold)

    def to_term_weights(
        self, reps: torch.Tensor, top_k: int | None = None, threshold: float = 0.0
    ) -> list[dict[str, float]]:
        """(N, V) weights -> ``[{token: weight}]`` (:func:`raysparse.encoding.term_weights`)."""
        from raysparse.encoding import term_weights

        if reps.dim() != 2 or reps.shape[1] != self.vocab_size:
            raise ValueError(f"reps must be (N, {self.vocab_size}), got {tuple(reps.shape)}")
        return term_weights(reps, self.tokenizer, top_k=top_k, threshold=threshold)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, out_dir: str | Path) -> None:
        """Hugging Face layout (config.json, model.safetensors, tokenizer files) + ``raysparse.json``.

        ``raysparse.json`` carries what the HF files cannot: the priors, the query mode, the special ids and the
        encoding spec (every consumer reads it). The BM25 statistics go to ``lexical_prior.safetensors``. Learned/IDF query weights go to ``query_weights.safetensors``.
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
            "translation_side": self.translation_side,
            "neural_weight": self.neural_weight,
            "lexical": None if self.lexical is None else self.lexical.state(),
            "encoding": self.spec.to_dict(),
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
        lexical_file = out / LEXICAL_PRIOR_FILE
        if self.lexical is not None:
            save_file(
                {
                    "idf": self.lexical.idf.detach().float().cpu().contiguous(),
                    "piece_mask": self.lexical.piece_mask.detach().float().cpu().contiguous(),
                    "word_start": self.lexical.word_start.detach().float().cpu().contiguous(),
                    "continuation": self.lexical.continuation.detach().float().cpu().contiguous(),
                },
                str(lexical_file),
            )
        elif lexical_file.exists():
            lexical_file.unlink()
        from raysparse.files import apply_umask

        apply_umask(out)  # transformers writes model.safetensors 0600; every file as the umask says

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **overrides: Any) -> SparseEncoder:
        """Load from a directory written by :meth:`save_pretrained`, any HF masked-LM directory, or a Hub name.

        ``overrides`` (``lexical_prior``, ``query_mode``, ``query_weights``, ``translation_prior``,
        ``translation_table``) replace values from ``raysparse.json`` and the saved files;
        a plain HF checkpoint without ``raysparse.json`` starts with the defaults.
        """
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        allowed = {
            "lexical_prior",
            "query_mode",
            "query_weights",
            "translation_prior",
            "translation_table",
            "lexical",
            "neural_weight",
            "translation_side",
            "spec",
        }
        unknown = set(overrides) - allowed
        if unknown:
            raise TypeError(
                f"unknown SparseEncoder.from_pretrained overrides {sorted(unknown)}; allowed {sorted(allowed)}"
            )
        path = Path(name_or_path)
        meta: dict[str, Any] = {}
        query_weights = None
        translation_table = None
        lexical = None
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
            lexical_file = path / LEXICAL_PRIOR_FILE
            if lexical_file.is_file() and isinstance(meta.get("lexical"), dict):
                from safetensors.torch import load_file

                tensors = load_file(str(lexical_file))
                lexical = LexicalPrior(
                    tensors["idf"],
                    tensors["piece_mask"],
                    **meta["lexical"],
                    word_start=tensors.get("word_start"),
                    continuation=tensors.get("continuation"),
                )
        check_model_source(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        mlm = AutoModelForMaskedLM.from_pretrained(str(name_or_path))
        kwargs: dict[str, Any] = {
            "lexical_prior": float(meta.get("lexical_prior", 0.0)),
            "query_mode": meta.get("query_mode", "encoder"),
            "query_weights": query_weights,
            "translation_prior": float(meta.get("translation_prior", 0.0)),
            "translation_table": translation_table,
            "lexical": lexical,
            "neural_weight": float(meta.get("neural_weight", 1.0)),
            "translation_side": meta.get("translation_side"),
            # models saved before the spec existed were trained and evaluated at query 32 / document 128 tokens
            "spec": meta.get("encoding") or {"max_query_length": 32, "max_doc_length": 128, "max_windows": 1},
        }
        kwargs.update(overrides)
        if "query_mode" in overrides and "translation_side" not in overrides:
            kwargs["translation_side"] = None  # follows the (new) query mode
        return cls(mlm, tokenizer, **kwargs)


def prune(reps: torch.Tensor, top_k: int | None, threshold: float = 0.0) -> torch.Tensor:
    """Keep each row's ``top_k`` largest weights above ``threshold`` (the spec's pruning), zero the rest."""
    if threshold > 0:
        reps = torch.where(reps > threshold, reps, torch.zeros_like(reps))
    if top_k is None or top_k >= reps.shape[1] or reps.shape[0] == 0:
        return reps
    values, index = torch.topk(reps, int(top_k), dim=1)
    return torch.zeros_like(reps).scatter_(1, index, values)


def idf_weights(tokenizer: Any, texts: Sequence[str], vocab_size: int | None = None) -> torch.Tensor:
    """(V,) BM25-style IDF ``log(1 + (N - df + 0.5) / (df + 0.5))`` of each token id over ``texts``.

    Used as ``query_weights`` for the inference-free query mode and by :class:`LexicalPrior`. The BM25 form stays
    positive even for tokens in every document; special tokens get 0. Tokens never seen get the largest IDF
    (df = 0), as BM25 would. ``texts`` must already be pre-tokenized the way the model's spec says
    (:func:`raysparse.encoding.pretokenize`).
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
    idf = torch.from_numpy(bm25_idf(n, df.numpy())).float()
    idf[special_ids_of(tokenizer, size)] = 0.0
    return idf
