"""Time-aware term weighting from dated corpora: per-window document frequencies, recency IDF, rising terms.

Three plain functions and one table, usable on analyzer terms (Kiwi morphemes / char bigrams, for BM25 and
OpenSearch) and on model word-piece ids (for the inference-free query weights of :mod:`raysparse.model`):

* :func:`term_document_frequencies` -> :class:`TermStats`: a ``windows x terms`` sparse DF matrix, the number of
  documents per window and the mean document date of each window (its "centre").
* :func:`recency_idf` -> :class:`TimeWeightTable`: BM25-style IDF over exponentially decayed counts.
  With ``h`` the half-life in days, ``r`` the reference date and ``age_w = |r - centre_w|`` in days::

      decay_w = 2 ** (-age_w / h)
      N_eff   = sum_w decay_w * N_w          df_eff(t) = sum_w decay_w * df_w(t)
      idf(t)  = log(1 + (N_eff - df_eff(t) + 0.5) / (df_eff(t) + 0.5))

  i.e. the Robertson/Sparck Jones IDF used by Lucene's BM25 (Robertson & Zaragoza 2009, "The Probabilistic
  Relevance Framework: BM25 and Beyond", eq. 3.3 with Lucene's ``1 +`` to keep it positive), where each document
  counts ``2^(-age/h)`` instead of 1 -- the exponential forgetting of time-decayed term statistics (cf. Efron &
  Golovchinsky 2011, "Estimation methods for ranking recent information"). ``h = None`` gives the plain IDF.
  The age is an absolute distance, so a reference date before the corpus (evaluating an older period) works too.
* :func:`rising_terms`: terms whose DF share in a recent window rose against the earlier windows, by a smoothed
  log-ratio of shares and a two-proportion z-score with a minimum count -- no hand-written boost list.

A table is saved as Parquet (one row per term) plus JSON metadata; no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from raysparse.corpus.dated import _PERIOD_FORMATS, Period
from raysparse.idf import bm25_idf

TABLE_FILE = "time_weights.parquet"
META_FILE = "time_weights.json"

Analyzer = Callable[[Sequence[str]], list[list[str]]]


@dataclass
class TermStats:
    """Document frequencies per time window.

    ``df[w, j]`` = documents of window ``windows[w]`` containing ``terms[j]``; ``docs[w]`` = documents in the window;
    ``centres[w]`` = mean date of its documents (the point ages are measured from). ``undated`` documents are in
    no window and counted here.
    """

    windows: list[str]
    centres: list[datetime]
    terms: list[str]
    df: sp.csr_matrix
    docs: np.ndarray
    period: str
    undated: int = 0

    def term_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.terms)}

    def window_counts(self, term: str) -> dict[str, int]:
        """``{window: df}`` of one term (0 where absent)."""
        j = self.term_index()[term]
        col = self.df[:, j].toarray().ravel()
        return {w: int(c) for w, c in zip(self.windows, col, strict=True)}


def _as_datetime(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip()).replace(tzinfo=None)
        except ValueError as exc:
            raise ValueError(f"{what}: {value!r} is not an ISO date (YYYY-MM-DD)") from exc
    raise TypeError(f"{what}: expected a date, datetime or ISO string, got {type(value).__name__}")


def tokenizer_analyzer(tokenizer: Any) -> Analyzer:
    """An analyzer whose terms are a Hugging Face tokenizer's token ids as strings (``"1234"``), no specials."""

    def analyze(texts: Sequence[str]) -> list[list[str]]:
        ids = tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [[str(i) for i in row] for row in ids]

    return analyze


def _resolve_analyzer(analyzer: str | Analyzer | None, tokenizer: Any) -> Analyzer:
    if tokenizer is not None:
        return tokenizer_analyzer(tokenizer)
    if analyzer is None:
        raise ValueError("term_document_frequencies needs an analyzer (name or callable) or a tokenizer")
    if isinstance(analyzer, str):
        from raysparse.analyzers import get_analyzer

        return get_analyzer(analyzer)
    return analyzer


def term_document_frequencies(
    texts: Sequence[str],
    dates: Sequence[Any],
    analyzer: str | Analyzer | None = "bigram",
    period: Period = "month",
    tokenizer: Any = None,
    batch_size: int = 512,
) -> TermStats:
    """Per-window document frequencies of every term of ``texts`` (one date per text; None = undated, counted).

    ``analyzer`` is a name for :func:`raysparse.analyzers.get_analyzer` or a callable on a list of texts; with
    ``tokenizer`` (a Hugging Face tokenizer) the terms are its token ids as strings, for model query weights.
    """
    from tqdm.auto import tqdm

    if len(texts) != len(dates):
        raise ValueError(f"term_document_frequencies: {len(texts)} texts but {len(dates)} dates")
    if period not in _PERIOD_FORMATS:
        raise ValueError(f"period must be one of {sorted(_PERIOD_FORMATS)}, got {period!r}")
    fmt = _PERIOD_FORMATS[period]
    analyze = _resolve_analyzer(analyzer, tokenizer)
    parsed = [_as_datetime(d, f"dates[{i}]") for i, d in enumerate(dates)]
    labels = [d.strftime(fmt) if d is not None else None for d in parsed]
    windows = sorted({lab for lab in labels if lab is not None})
    if not windows:
        raise ValueError("term_document_frequencies: no dated text (every date is empty)")
    w_index = {w: i for i, w in enumerate(windows)}
    vocab: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    docs = np.zeros(len(windows), dtype=np.int64)
    seconds = np.zeros(len(windows), dtype=np.float64)
    epoch = datetime(1970, 1, 1)
    dated = [i for i, lab in enumerate(labels) if lab is not None]
    for start in tqdm(
        range(0, len(dated), batch_size), desc="term df", disable=len(dated) < 5000, leave=False
    ):
        chunk = dated[start : start + batch_size]
        for i, terms in zip(chunk, analyze([texts[i] for i in chunk]), strict=True):
            w = w_index[labels[i]]
            docs[w] += 1
            seconds[w] += (parsed[i] - epoch).total_seconds()
            for t in set(terms):
                rows.append(w)
                cols.append(vocab.setdefault(t, len(vocab)))
    df = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.int64), (rows, cols)), shape=(len(windows), len(vocab)), dtype=np.int64
    )
    df.sum_duplicates()
    centres = [epoch + timedelta(seconds=s / n) for s, n in zip(seconds, docs, strict=True)]
    return TermStats(windows, centres, list(vocab), df, docs, period, undated=len(texts) - len(dated))


def decay_factors(stats: TermStats, half_life_days: float | None, reference_date: Any = None) -> np.ndarray:
    """``2^(-|reference - centre_w| / h)`` per window (all 1 when ``h`` is None); reference defaults to the newest
    window centre."""
    if half_life_days is None:
        return np.ones(len(stats.windows))
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    ref = _as_datetime(reference_date, "reference_date") or max(stats.centres)
    ages = np.array([abs((ref - c).total_seconds()) / 86400.0 for c in stats.centres])
    return np.power(2.0, -ages / half_life_days)


@dataclass
class TimeWeightTable:
    """Recency IDF per term, with the plain IDF and the decayed counts it came from; see the module docstring."""

    terms: list[str]
    idf: np.ndarray
    plain_idf: np.ndarray
    df_eff: np.ndarray
    n_eff: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {t: i for i, t in enumerate(self.terms)}

    @property
    def unseen_idf(self) -> float:
        """IDF of a term absent from the corpus (df_eff = 0), as BM25 would give it."""
        return float(bm25_idf(self.n_eff, np.zeros(1))[0])

    def weight(self, term: str) -> float:
        i = self._index.get(term)
        return float(self.idf[i]) if i is not None else self.unseen_idf

    def as_dict(self) -> dict[str, float]:
        return {t: float(v) for t, v in zip(self.terms, self.idf, strict=True)}

    def vector(self, vocab_size: int, special_ids: Sequence[int] = ()) -> np.ndarray:
        """(V,) weights for token-id terms (tables built with a tokenizer): unseen ids get :attr:`unseen_idf`
        like :func:`raysparse.model.idf_weights`, special ids 0."""
        out = np.full(vocab_size, self.unseen_idf, dtype=np.float32)
        for t, v in zip(self.terms, self.idf, strict=True):
            if not t.isdigit():
                raise ValueError(
                    f"term {t!r} is not a token id: build the table with a tokenizer for vectors"
                )
            if int(t) < vocab_size:
                out[int(t)] = v
        out[list(special_ids)] = 0.0
        return out

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "term": pa.array(self.terms, pa.string()),
                "idf": pa.array(self.idf, pa.float64()),
                "plain_idf": pa.array(self.plain_idf, pa.float64()),
                "df_eff": pa.array(self.df_eff, pa.float64()),
            }
        )
        pq.write_table(table, out / TABLE_FILE)
        meta = {**self.meta, "n_eff": self.n_eff, "num_terms": len(self.terms)}
        (out / META_FILE).write_text(
            json.dumps(meta, ensure_ascii=False, indent=2, default=str), encoding="utf-8"
        )
        return out

    @classmethod
    def load(cls, path: str | Path) -> TimeWeightTable:
        p = Path(path)
        root = p.parent if p.is_file() else p
        for f in (root / TABLE_FILE, root / META_FILE):
            if not f.is_file():
                raise FileNotFoundError(f"{f}: missing (a time-weight table is {TABLE_FILE} + {META_FILE})")
        table = pq.read_table(root / TABLE_FILE)
        missing = {"term", "idf", "plain_idf", "df_eff"} - set(table.column_names)
        if missing:
            raise ValueError(f"{root / TABLE_FILE}: missing columns {sorted(missing)}")
        meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
        if "n_eff" not in meta:
            raise ValueError(f"{root / META_FILE}: field 'n_eff' is missing")
        return cls(
            table["term"].to_pylist(),
            table["idf"].to_numpy(),
            table["plain_idf"].to_numpy(),
            table["df_eff"].to_numpy(),
            float(meta.pop("n_eff")),
            {k: v for k, v in meta.items() if k != "num_terms"},
        )


def recency_idf(
    stats: TermStats, decay_half_life: float | None, reference_date: Any = None
) -> TimeWeightTable:
    """Recency-aware IDF over ``stats`` (formula and references in the module docstring)."""
    decay = decay_factors(stats, decay_half_life, reference_date)
    n_eff = float(decay @ stats.docs)
    df_eff = np.asarray(stats.df.T @ decay).ravel()
    n_plain = float(stats.docs.sum())
    df_plain = np.asarray(stats.df.sum(axis=0)).ravel().astype(np.float64)
    ref = _as_datetime(reference_date, "reference_date") or max(stats.centres)
    meta = {
        "half_life_days": decay_half_life,
        "reference_date": ref.isoformat(),
        "period": stats.period,
        "windows": {
            w: {"documents": int(n), "decay": float(d)}
            for w, n, d in zip(stats.windows, stats.docs, decay, strict=True)
        },
        "undated": stats.undated,
        "formula": "idf = log(1 + (N_eff - df_eff + 0.5) / (df_eff + 0.5)), counts weighted 2^(-|ref-centre|/h)",
    }
    return TimeWeightTable(
        list(stats.terms), bm25_idf(n_eff, df_eff), bm25_idf(n_plain, df_plain), df_eff, n_eff, meta
    )


def rising_terms(
    stats: TermStats,
    recent: str | Sequence[str] | None = None,
    past: str | Sequence[str] | None = None,
    min_count: int = 5,
    min_z: float = 3.0,
    smoothing: float = 0.5,
    top_k: int | None = 50,
) -> list[dict[str, Any]]:
    """Terms whose document share rose in ``recent`` windows (default: the newest) against ``past`` (default: all
    earlier windows).

    With ``a``/``A`` the recent DF and documents and ``b``/``B`` the past ones, ``s`` = ``smoothing``::

        log_ratio = log((a + s) / (A + 2s)) - log((b + s) / (B + 2s))
        z = (a/A - b/B) / sqrt(p (1 - p) (1/A + 1/B)),   p = (a + b) / (A + B)

    A term is kept when ``a >= min_count``, ``z >= min_z`` and ``log_ratio > 0``; rows are sorted by z (strong
    evidence first), then log-ratio. Each row: ``term, score (log_ratio), z, recent_df, past_df, recent_docs,
    past_docs, counts`` (``{window: df}`` over every window).
    """
    index = {w: i for i, w in enumerate(stats.windows)}

    def pick(sel: str | Sequence[str] | None, default: list[int]) -> list[int]:
        if sel is None:
            return default
        names = [sel] if isinstance(sel, str) else list(sel)
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(f"unknown windows {unknown}; the stats have {stats.windows}")
        return [index[n] for n in names]

    r_idx = pick(recent, [len(stats.windows) - 1])
    p_idx = pick(past, [i for i in range(len(stats.windows)) if i < min(r_idx)])
    if not p_idx:
        raise ValueError(f"rising_terms: no past window before {[stats.windows[i] for i in r_idx]}")
    if set(r_idx) & set(p_idx):
        raise ValueError("rising_terms: recent and past windows overlap")
    a = np.asarray(stats.df[r_idx].sum(axis=0)).ravel().astype(np.float64)
    b = np.asarray(stats.df[p_idx].sum(axis=0)).ravel().astype(np.float64)
    big_a, big_b = float(stats.docs[r_idx].sum()), float(stats.docs[p_idx].sum())
    s = smoothing
    log_ratio = np.log((a + s) / (big_a + 2 * s)) - np.log((b + s) / (big_b + 2 * s))
    p = (a + b) / (big_a + big_b)
    se = np.sqrt(np.maximum(p * (1 - p), 1e-12) * (1 / big_a + 1 / big_b))
    z = (a / big_a - b / big_b) / se
    keep = np.flatnonzero((a >= min_count) & (z >= min_z) & (log_ratio > 0))
    order = keep[np.lexsort((-log_ratio[keep], -z[keep]))]
    if top_k is not None:
        order = order[:top_k]
    dense = stats.df[:, order].toarray() if len(order) else np.zeros((len(stats.windows), 0))
    return [
        {
            "term": stats.terms[j],
            "score": float(log_ratio[j]),
            "z": float(z[j]),
            "recent_df": int(a[j]),
            "past_df": int(b[j]),
            "recent_docs": int(big_a),
            "past_docs": int(big_b),
            "counts": {w: int(dense[wi, k]) for wi, w in enumerate(stats.windows)},
        }
        for k, j in enumerate(order)
    ]


def rising_terms_per_window(stats: TermStats, **kwargs: Any) -> dict[str, list[dict[str, Any]]]:
    """:func:`rising_terms` of every window but the first against all windows before it."""
    return {w: rising_terms(stats, recent=w, **kwargs) for w in stats.windows[1:]}


def recency_query_weights(
    tokenizer: Any,
    texts: Sequence[str],
    dates: Sequence[Any],
    half_life_days: float | None,
    reference_date: Any = None,
    period: Period = "month",
    vocab_size: int | None = None,
) -> Any:
    """(V,) torch tensor of recency IDF per token id: the inference-free query weights of
    :class:`raysparse.model.SparseEncoder` (the time-aware counterpart of :func:`raysparse.model.idf_weights`)."""
    import torch

    from raysparse.model import special_ids_of

    size = int(vocab_size if vocab_size is not None else len(tokenizer))
    stats = term_document_frequencies(texts, dates, None, period, tokenizer=tokenizer)
    table = recency_idf(stats, half_life_days, reference_date)
    return torch.from_numpy(table.vector(size, special_ids_of(tokenizer, size)))


def idf_delta(table: TimeWeightTable, top_k: int = 20) -> list[tuple[str, float, float]]:
    """Terms whose recency IDF moved most below their plain IDF (recently frequent): ``(term, plain, recency)``."""
    diff = table.idf - table.plain_idf
    order = np.argsort(diff)[:top_k]
    return [(table.terms[i], float(table.plain_idf[i]), float(table.idf[i])) for i in order]


__all__ = [
    "TermStats",
    "TimeWeightTable",
    "bm25_idf",
    "decay_factors",
    "idf_delta",
    "recency_idf",
    "recency_query_weights",
    "rising_terms",
    "rising_terms_per_window",
    "term_document_frequencies",
    "tokenizer_analyzer",
]
