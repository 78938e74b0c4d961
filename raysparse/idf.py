"""The one IDF raysparse uses: Lucene's BM25 IDF, for the lexical part, inference-free query weights, BM25
baselines' statistics and the recency-weighted (time-aware) variant."""

from __future__ import annotations

import numpy as np


def bm25_idf(n: float | np.ndarray, df: np.ndarray) -> np.ndarray:
    """``log(1 + (N - df + 0.5) / (df + 0.5))``: positive for every df <= N, largest for unseen terms (df = 0)."""
    return np.log1p((n - df + 0.5) / (df + 0.5))
