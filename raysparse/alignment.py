"""Korean<->English term translation tables learned from parallel text, in the encoder's own vocabulary.

Why: a SPLADE encoder learns expansions (검색 -> search) only slowly from ranking signal, and on 2 CPU cores it does
not learn them at all from scratch (docs/quality.md). Parallel sentences and glossaries already say which word pieces
translate each other. We turn them into a sparse table ``T[k, e]`` over the tokenizer vocabulary and give it to the
encoder as a *translation prior*: at each position, the output logits of the input token's translations are raised
by ``translation_prior * T[token, e]``. The untrained encoder then already matches 모델 with model; training adjusts
weights and learns contextual expansions on top.

The association score is the Dice coefficient over sentence-level co-occurrence,

    dice(k, e) = 2 * c(k, e) / (c(k) + c(e)),

computed on the sets of word pieces of each aligned pair (Smadja et al., 1996, "Translating collocations for bilingual
lexicons"). Dice rewards pairs that occur *together* and penalises frequent function pieces (the, ##을) that co-occur
with everything, without an EM loop; glossary entries are added as extra "sentence" pairs with a configurable
repeat weight because each is a clean one-to-one signal. For each source piece we keep the ``top_k`` targets above
``min_score`` with at least ``min_count`` co-occurrences, in both directions (ko->en and en->ko).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from raysparse.analyzers import is_hangul


@dataclass
class TranslationTable:
    """A sparse source-piece -> target-piece table over one vocabulary, as fixed-width arrays.

    ``ids[v]`` are the target token ids of source token ``v`` and ``weights[v]`` their scores in [0, 1]; unused slots
    have weight 0 (and id 0). Fixed width keeps the encoder's forward a plain gather + scatter-add (TorchScript/ONNX
    friendly).
    """

    ids: np.ndarray  # (V, K) int64
    weights: np.ndarray  # (V, K) float32

    @property
    def num_entries(self) -> int:
        return int((self.weights > 0).sum())

    def translations(self, token_id: int) -> list[tuple[int, float]]:
        return [
            (int(i), float(w))
            for i, w in zip(self.ids[token_id], self.weights[token_id], strict=True)
            if w > 0
        ]

    def save(self, path: str) -> None:
        np.savez_compressed(path, ids=self.ids, weights=self.weights)

    @classmethod
    def load(cls, path: str) -> TranslationTable:
        with np.load(path) as z:
            return cls(ids=z["ids"], weights=z["weights"])


def _piece_sets(tokenizer, texts: Sequence[str], max_length: int) -> sparse.csr_matrix:
    """Binary (num_texts, V) presence matrix of each text's word pieces (special tokens excluded)."""
    vocab_size = len(tokenizer)
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)[
        "input_ids"
    ]
    indptr = [0]
    indices: list[int] = []
    for ids in encoded:
        uniq = sorted(set(ids))
        indices.extend(uniq)
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    return sparse.csr_matrix(
        (data, np.asarray(indices, dtype=np.int64), np.asarray(indptr)), shape=(len(encoded), vocab_size)
    )


def _language_masks(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Which vocabulary entries are Hangul pieces and which are Latin-alphabet pieces."""
    vocab_size = len(tokenizer)
    hangul = np.zeros(vocab_size, dtype=bool)
    latin = np.zeros(vocab_size, dtype=bool)
    for token, idx in tokenizer.get_vocab().items():
        if idx >= vocab_size:
            continue
        piece = token[2:] if token.startswith("##") else token
        if is_hangul(piece):
            hangul[idx] = True
        elif piece.isascii() and any(c.isalpha() for c in piece) and len(piece) >= 2:
            latin[idx] = True
    return hangul, latin


def _top_k_rows(scores: sparse.csr_matrix, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    vocab_size = scores.shape[0]
    ids = np.zeros((vocab_size, top_k), dtype=np.int64)
    weights = np.zeros((vocab_size, top_k), dtype=np.float32)
    for row in range(vocab_size):
        start, end = scores.indptr[row], scores.indptr[row + 1]
        if start == end:
            continue
        cols = scores.indices[start:end]
        vals = scores.data[start:end]
        order = np.lexsort((cols, -vals))[:top_k]  # score desc, id asc: deterministic
        ids[row, : len(order)] = cols[order]
        weights[row, : len(order)] = vals[order]
    return ids, weights


def learn_translation_table(
    tokenizer,
    pairs: Iterable[tuple[str, str]],
    glossary: Iterable[tuple[str, str]] = (),
    *,
    top_k: int = 4,
    min_count: int = 2,
    min_score: float = 0.1,
    glossary_weight: int = 3,
    max_df: float = 0.05,
    max_length: int = 128,
) -> TranslationTable:
    """Learn a Dice-scored Korean<->English piece translation table from sentence pairs and glossary entries.

    Args:
        tokenizer: the encoder's tokenizer (Hugging Face); the table lives in its vocabulary.
        pairs: aligned (Korean, English) sentences.
        glossary: (Korean term, English term) dictionary entries, counted ``glossary_weight`` times each.
        top_k: translations kept per source piece.
        min_count: minimum co-occurrence count of a kept pair.
        min_score: minimum Dice score of a kept pair.
        max_df: pieces present in more than this fraction of pairs (function pieces) are never sources or targets.
    """
    pairs = list(pairs)
    glossary = list(glossary)
    ko_texts = [k for k, _ in pairs] + [k for k, _ in glossary] * glossary_weight
    en_texts = [e for _, e in pairs] + [e for _, e in glossary] * glossary_weight
    if not ko_texts:
        raise ValueError("learn_translation_table needs at least one sentence pair or glossary entry")
    ko = _piece_sets(tokenizer, ko_texts, max_length)
    en = _piece_sets(tokenizer, en_texts, max_length)
    hangul, latin = _language_masks(tokenizer)
    both = dice_table(ko, en, hangul, latin, min_count=min_count, min_score=min_score, max_df=max_df)
    ids, weights = _top_k_rows(both, top_k)
    return TranslationTable(ids=ids, weights=weights)


def dice_table(
    ko: sparse.csr_matrix,
    en: sparse.csr_matrix,
    ko_terms: np.ndarray,
    en_terms: np.ndarray,
    *,
    min_count: int,
    min_score: float,
    max_df: float,
) -> sparse.csr_matrix:
    """Dice scores between the columns of two aligned binary presence matrices, both directions in one (V, V).

    ``ko``/``en``: (num_pairs, V) presence of each term in each side of a pair; ``ko_terms``/``en_terms``: (V,) which
    columns may be sources/targets on each side. Terms in more than ``max_df`` of the pairs are dropped.
    """
    n = ko.shape[0]
    df_ko = np.asarray(ko.sum(axis=0)).ravel()
    df_en = np.asarray(en.sum(axis=0)).ravel()
    keep_ko = ko_terms & (df_ko > 0) & (df_ko <= max_df * n + min_count)
    keep_en = en_terms & (df_en > 0) & (df_en <= max_df * n + min_count)
    ko = ko @ sparse.diags(keep_ko.astype(np.float32))
    en = en @ sparse.diags(keep_en.astype(np.float32))
    co = (ko.T @ en).tocoo()  # (V, V): c(k, e)
    mask = co.data >= min_count
    rows, cols, counts = co.row[mask], co.col[mask], co.data[mask]
    dice = 2.0 * counts / (df_ko[rows] + df_en[cols])
    keep = dice >= min_score
    rows, cols, dice = rows[keep], cols[keep], dice[keep].astype(np.float32)
    size = ko.shape[1]
    # Both directions in one table: ko term -> en terms and en term -> ko terms.
    both = sparse.csr_matrix(
        (np.concatenate([dice, dice]), (np.concatenate([rows, cols]), np.concatenate([cols, rows]))),
        shape=(size, size),
    )
    both.sum_duplicates()
    return both


def describe(table: TranslationTable, tokenizer, terms: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
    """Human-readable translations of each term's first word piece (for reports and tests)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for term in terms:
        ids = tokenizer(term, add_special_tokens=False)["input_ids"]
        if not ids:
            out[term] = []
            continue
        out[term] = [(tokenizer.convert_ids_to_tokens(i), round(w, 3)) for i, w in table.translations(ids[0])]
    return out
