"""BM25 retrieval kernels over the index's CSC weight matrix (numba, compiled once per machine with ``cache=True``).

bm25s' own numba ``retrieve`` is JIT-compiled in every process (~7 s measured), which dominated short Ray jobs; these
kernels score the same CSC arrays, are loaded from the on-disk cache after the first compile, and touch only the
postings of the query terms. Scores are summed in float32 in query-token order, exactly as bm25s does, and ties are
broken by corpus row, so results are identical in every process. Documents with score 0 are never returned.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["score_flat", "topk_batch", "topk_parallel"]


@njit(cache=True, nogil=True)
def topk_batch(q_ids, q_ptr, data, indices, indptr, num_docs, k):  # pragma: no cover - jitted
    """Top-k rows/scores for each query; only documents with a positive score; -1 padded; ties by row."""
    n_q = len(q_ptr) - 1
    out_rows = np.full((n_q, k), -1, dtype=np.int32)
    out_scores = np.zeros((n_q, k), dtype=np.float32)
    acc = np.zeros(num_docs, dtype=np.float32)
    seen = np.zeros(num_docs, dtype=np.bool_)
    touched = np.empty(num_docs, dtype=np.int32)
    for qi in range(n_q):
        n_touched = 0
        for p in range(q_ptr[qi], q_ptr[qi + 1]):
            t = q_ids[p]
            for j in range(indptr[t], indptr[t + 1]):
                d = indices[j]
                acc[d] += data[j]
                if not seen[d]:
                    seen[d] = True
                    touched[n_touched] = d
                    n_touched += 1
        # gather positive scores (and reset the accumulator for the next query)
        rows = np.empty(n_touched, dtype=np.int32)
        scores = np.empty(n_touched, dtype=np.float32)
        n_pos = 0
        for i in range(n_touched):
            d = touched[i]
            if acc[d] > 0.0:
                rows[n_pos] = d
                scores[n_pos] = acc[d]
                n_pos += 1
            acc[d] = 0.0
            seen[d] = False
        rows = rows[:n_pos]
        scores = scores[:n_pos]
        if n_pos > k:  # O(n) threshold, then sort only the few rows at or above it (ties included)
            kth = np.partition(scores, n_pos - k)[n_pos - k]
            keep = scores >= kth
            rows = rows[keep]
            scores = scores[keep]
        # order by (score desc, row asc): sort by row, then a stable sort on -score
        by_row = np.argsort(rows)
        rows = rows[by_row]
        scores = scores[by_row]
        order = np.argsort(-scores, kind="mergesort")
        m = min(k, len(rows))
        for r in range(m):
            out_rows[qi, r] = rows[order[r]]
            out_scores[qi, r] = scores[order[r]]
    return out_rows, out_scores


@njit(cache=True, nogil=True)
def score_flat(q_ids, q_ptr, rows, rows_ptr, data, indices, indptr):  # pragma: no cover - jitted
    """BM25 score of rows[rows_ptr[i]:rows_ptr[i+1]] for query i (same float32 summation order as top-k)."""
    out = np.zeros(len(rows), dtype=np.float32)
    for qi in range(len(rows_ptr) - 1):
        for i in range(rows_ptr[qi], rows_ptr[qi + 1]):
            d = rows[i]
            s = np.float32(0.0)
            for p in range(q_ptr[qi], q_ptr[qi + 1]):
                t = q_ids[p]
                lo = indptr[t]
                hi = indptr[t + 1]
                j = lo + np.searchsorted(indices[lo:hi], d)
                if j < hi and indices[j] == d:
                    s += data[j]
            out[i] = s
    return out


@njit(cache=True, nogil=True, parallel=True)
def topk_parallel(q_ids, q_ptr, data, indices, indptr, num_docs, k, bounds):  # pragma: no cover - jitted
    """:func:`topk_batch` over query chunks ``bounds[c]:bounds[c+1]`` on numba's threads (one scratch per chunk):
    the same rows and scores as the serial kernel, for the in-process miner that has the whole machine."""
    n_q = len(q_ptr) - 1
    out_rows = np.full((n_q, k), -1, dtype=np.int32)
    out_scores = np.zeros((n_q, k), dtype=np.float32)
    for c in prange(len(bounds) - 1):
        lo = bounds[c]
        hi = bounds[c + 1]
        rows, scores = topk_batch(q_ids, q_ptr[lo : hi + 1], data, indices, indptr, num_docs, k)
        out_rows[lo:hi] = rows
        out_scores[lo:hi] = scores
    return out_rows, out_scores


def topk(q_ids, q_ptr, data, indices, indptr, num_docs: int, k: int, threads: int = 1):
    """Top-k rows/scores per query; ``threads > 1`` splits the batch over numba threads (same result)."""
    n_q = len(q_ptr) - 1
    if threads <= 1 or n_q < 2 * threads:
        return topk_batch(q_ids, q_ptr, data, indices, indptr, num_docs, k)
    import numba

    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(threads)
    bounds = np.linspace(0, n_q, 4 * threads + 1).astype(np.int64)
    return topk_parallel(q_ids, q_ptr, data, indices, indptr, num_docs, k, bounds)
