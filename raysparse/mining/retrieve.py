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

_DENSE_FACTOR = 64  # a query scans every row once its postings exceed num_docs / _DENSE_FACTOR


@njit(cache=True, nogil=True, inline="always")
def _worse(s1, r1, s2, r2):  # pragma: no cover - jitted
    """(score s1, row r1) ranks below (s2, r2): lower score, or the same score and a higher row."""
    return s1 < s2 or (s1 == s2 and r1 > r2)


@njit(cache=True, nogil=True)
def _offer(h_s, h_r, size, k, score, row):  # pragma: no cover - jitted
    """Offer (score, row) to a heap of the best ``k`` whose root is the worst kept; returns the new size."""
    if size < k:
        i = size
        h_s[i] = score
        h_r[i] = row
        while i > 0:  # sift up: a worse element moves towards the root
            parent = (i - 1) // 2
            if not _worse(h_s[i], h_r[i], h_s[parent], h_r[parent]):
                break
            h_s[i], h_s[parent] = h_s[parent], h_s[i]
            h_r[i], h_r[parent] = h_r[parent], h_r[i]
            i = parent
        return size + 1
    if not _worse(h_s[0], h_r[0], score, row):
        return size
    h_s[0] = score
    h_r[0] = row
    i = 0
    while True:  # sift down: swap with the worse child while it is worse than the node
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _worse(h_s[child + 1], h_r[child + 1], h_s[child], h_r[child]):
            child += 1
        if not _worse(h_s[child], h_r[child], h_s[i], h_r[i]):
            break
        h_s[i], h_s[child] = h_s[child], h_s[i]
        h_r[i], h_r[child] = h_r[child], h_r[i]
        i = child
    return size


@njit(cache=True, nogil=True)
def topk_batch(q_ids, q_ptr, data, indices, indptr, num_docs, k):  # pragma: no cover - jitted
    """Top-k rows/scores for each query; only documents with a positive score; -1 padded; ties by row.

    Scores accumulate in a dense float32 array; the best k are kept in a bounded heap as rows are visited (one
    comparison per scored row, no partition or sort of every candidate). Queries whose posting lists are short
    visit only the rows they touched; the others scan every row once, as bm25s does.
    """
    n_q = len(q_ptr) - 1
    out_rows = np.full((n_q, k), -1, dtype=np.int32)
    out_scores = np.zeros((n_q, k), dtype=np.float32)
    acc = np.zeros(num_docs, dtype=np.float32)
    seen = np.zeros(num_docs, dtype=np.bool_)
    touched = np.empty(num_docs, dtype=np.int32)
    h_s = np.empty(k, dtype=np.float32)
    h_r = np.empty(k, dtype=np.int32)
    for qi in range(n_q):
        n_post = 0
        for p in range(q_ptr[qi], q_ptr[qi + 1]):
            n_post += indptr[q_ids[p] + 1] - indptr[q_ids[p]]
        size = 0
        if _DENSE_FACTOR * n_post >= num_docs:
            # postings beyond 1/64 of the rows: accumulate without tracking touched rows, then visit every row once
            # (tracking costs more per posting than one predictable comparison per row; 64 measured at 20k and
            # 200k passages: faster than 4, 16 and on par with 256)
            for p in range(q_ptr[qi], q_ptr[qi + 1]):
                t = q_ids[p]
                for j in range(indptr[t], indptr[t + 1]):
                    acc[indices[j]] += data[j]
            # rows come in ascending order, so an equal score never displaces a kept row: one comparison against
            # the worst kept score, a branch that is almost never taken once the heap is full
            threshold = np.float32(0.0)
            for d in range(num_docs):
                if acc[d] > threshold:
                    size = _offer(h_s, h_r, size, k, acc[d], d)
                    if size == k:
                        threshold = h_s[0]
            acc[:] = 0.0
        else:
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
            for i in range(n_touched):
                d = touched[i]
                score = acc[d]
                if score > 0.0:
                    size = _offer(h_s, h_r, size, k, score, d)
                acc[d] = 0.0
                seen[d] = False
        # the kept rows by (score desc, row asc): sort by row, then a stable sort on -score
        rows = h_r[:size].copy()
        scores = h_s[:size].copy()
        by_row = np.argsort(rows)
        rows = rows[by_row]
        scores = scores[by_row]
        order = np.argsort(-scores, kind="mergesort")
        for r in range(size):
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
