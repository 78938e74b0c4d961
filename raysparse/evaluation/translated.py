"""BM25 over dictionary-translated queries: the cross-lingual baseline a search engineer builds without a model.

Each query is analysed like the BM25 index (Kiwi content morphemes; English words as Kiwi reads them), every term is
looked up in a word-level Korean<->English table and its translations are added to the query with their Dice score
as weight (the original term stays, weight 1, for names, numbers and code-switched words); BM25-Kiwi then searches
the target-language documents with that weighted query.

The table is learned from the same parallel text and glossaries the encoder's translation prior uses, with the same
Dice scoring (:func:`raysparse.alignment.dice_table`), but over whole analysed words instead of word pieces: the
strongest prior a model has to beat.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse

from raysparse.alignment import dice_table
from raysparse.analyzers import get_analyzer, is_hangul


@dataclass
class WordTranslator:
    """term -> [(translation, Dice score)], both directions."""

    table: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    def translate(self, terms: Sequence[str]) -> dict[str, float]:
        """Analysed query terms -> weighted terms: each term (weight 1 per occurrence) plus its translations."""
        out: dict[str, float] = {}
        for term in terms:
            out[term] = out.get(term, 0.0) + 1.0
            for target, score in self.table.get(term, ()):
                out[target] = out.get(target, 0.0) + score
        return out

    def translate_all(self, term_lists: list[list[str]]) -> list[dict[str, float]]:
        return [self.translate(terms) for terms in term_lists]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.table, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> WordTranslator:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a word translation table ({err})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object of term -> [[translation, score], ...]")
        return cls({str(k): [(str(t), float(w)) for t, w in v] for k, v in raw.items()})


def _presence(term_lists: list[list[str]], vocab: dict[str, int]) -> sparse.csr_matrix:
    indptr, indices = [0], []
    for terms in term_lists:
        indices.extend(sorted({vocab[t] for t in terms}))
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    return sparse.csr_matrix(
        (data, np.asarray(indices, dtype=np.int64), indptr), shape=(len(term_lists), len(vocab))
    )


def learn_word_translator(
    pairs: Iterable[tuple[str, str]],
    glossary: Iterable[tuple[str, str]] = (),
    *,
    analyzer: str = "kiwi",
    top_k: int = 3,
    min_count: int = 2,
    min_score: float = 0.1,
    glossary_weight: int = 3,
    max_df: float = 0.05,
) -> WordTranslator:
    """A word-level Dice table from (Korean, English) sentence pairs and glossary entries (counted
    ``glossary_weight`` times), analysed with ``analyzer`` so its terms are the BM25 index's terms."""
    pairs = list(pairs)
    glossary = list(glossary)
    ko_texts = [k for k, _ in pairs] + [k for k, _ in glossary] * glossary_weight
    en_texts = [e for _, e in pairs] + [e for _, e in glossary] * glossary_weight
    if not ko_texts:
        raise ValueError("learn_word_translator needs at least one sentence pair or glossary entry")
    analyze = get_analyzer(analyzer)
    ko_terms = analyze(ko_texts)
    en_terms = analyze(en_texts)
    vocab: dict[str, int] = {}
    for terms in (*ko_terms, *en_terms):
        for t in terms:
            vocab.setdefault(t, len(vocab))
    names = list(vocab)
    hangul = np.array([is_hangul(t) for t in names], dtype=bool)
    latin = np.array([t.isascii() and any(c.isalpha() for c in t) and len(t) >= 2 for t in names], dtype=bool)
    scores = dice_table(
        _presence(ko_terms, vocab),
        _presence(en_terms, vocab),
        hangul,
        latin,
        min_count=min_count,
        min_score=min_score,
        max_df=max_df,
    )
    table: dict[str, list[tuple[str, float]]] = {}
    for row in range(scores.shape[0]):
        lo, hi = scores.indptr[row], scores.indptr[row + 1]
        if lo == hi:
            continue
        cols, vals = scores.indices[lo:hi], scores.data[lo:hi]
        order = np.lexsort((cols, -vals))[:top_k]  # score desc, then a stable order
        table[names[row]] = [(names[int(cols[i])], round(float(vals[i]), 4)) for i in order]
    return WordTranslator(table)
