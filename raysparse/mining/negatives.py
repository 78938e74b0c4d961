"""Negative selection and the per-batch mining core (pure: the same call runs in-process and on Ray Data).

For every query the first ``num_hard_negatives`` BM25 top-k documents that are neither a positive nor a
near-duplicate of one are hard negatives; then ``num_random_negatives`` documents are drawn from the rest of the
corpus. A candidate is a near-duplicate of a positive when its normalised text (NFKC, lower case, whitespace
collapsed) equals the positive's, or when the Jaccard similarity of their analyzer term sets is
``>= near_duplicate_threshold`` (term sets come from the index's CSR transpose, so no text is re-analysed).

Determinism: random negatives come from a splitmix64 stream keyed by blake2b(seed, query_id) (stable across
processes, unlike Python's salted ``hash``), so the output does not depend on batching, worker count or node count.

Post-processing is vectorised: selection, scoring and random draws are batch numba kernels, and the output
columns are assembled with Arrow ``take`` and list offsets (no per-query Python objects).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from numba import njit

from raysparse.config import MiningConfig
from raysparse.mining.index import Bm25Index
from raysparse.mining.retrieve import score_flat, topk
from raysparse.schemas import TRIPLES

__all__ = ["jaccard", "mine_batch", "random_keys", "triples_table"]


@njit(cache=True, nogil=True)
def jaccard(terms, term_ptr, a, b):  # pragma: no cover - jitted
    """Jaccard similarity of the sorted unique term-id sets of rows a and b."""
    i, i_end = term_ptr[a], term_ptr[a + 1]
    j, j_end = term_ptr[b], term_ptr[b + 1]
    n_a, n_b = i_end - i, j_end - j
    if n_a == 0 and n_b == 0:
        return 0.0
    inter = 0
    while i < i_end and j < j_end:
        if terms[i] == terms[j]:
            inter += 1
            i += 1
            j += 1
        elif terms[i] < terms[j]:
            i += 1
        else:
            j += 1
    return inter / (n_a + n_b - inter)


@njit(cache=True, nogil=True)
def _excluded(row, pos, p_lo, p_hi, text_hash, terms, term_ptr, threshold):  # pragma: no cover - jitted
    """A positive itself, or a near-duplicate of one (same normalised text or term-set Jaccard >= threshold)."""
    n_row = term_ptr[row + 1] - term_ptr[row]
    for p in range(p_lo, p_hi):
        q = pos[p]
        if row == q or text_hash[row] == text_hash[q]:
            return True
        # Jaccard <= min(|A|,|B|) / max(|A|,|B|): skip the merge when the set sizes alone rule it out
        n_q = term_ptr[q + 1] - term_ptr[q]
        if min(n_row, n_q) < threshold * max(n_row, n_q):
            continue
        if jaccard(terms, term_ptr, row, q) >= threshold:
            return True
    return False


@njit(cache=True, nogil=True)
def _draw_candidates(keys, exhaustive, num_docs, size):  # pragma: no cover - jitted
    """Candidate rows for each query from a splitmix64 stream keyed by ``keys[q]``: ``size`` draws with replacement,
    or a full Fisher-Yates permutation where ``exhaustive[q]``. Pure function of (key, corpus size)."""
    n_q = len(keys)
    ptr = np.zeros(n_q + 1, dtype=np.int64)
    for q in range(n_q):
        ptr[q + 1] = ptr[q] + (num_docs if exhaustive[q] else size)
    out = np.empty(ptr[n_q], dtype=np.int32)
    for q in range(n_q):
        state = keys[q]
        lo = ptr[q]
        if exhaustive[q]:
            for i in range(num_docs):
                out[lo + i] = i
        for i in range(ptr[q + 1] - lo):
            state += np.uint64(0x9E3779B97F4A7C15)
            z = state
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            if exhaustive[q]:  # Fisher-Yates: swap position i with one in [i, num_docs)
                j = i + np.int64(z % np.uint64(num_docs - i))
                tmp = out[lo + i]
                out[lo + i] = out[lo + j]
                out[lo + j] = tmp
            else:
                out[lo + i] = np.int32(z % np.uint64(num_docs))
    return out, ptr


@njit(cache=True, nogil=True)
def _select_batch(
    top_rows, top_scores, pos, pos_ptr, cand, cand_ptr, text_hash, terms, term_ptr, threshold, n_hard, n_rand
):  # pragma: no cover - jitted
    """Per query: the first n_hard top-k rows that are not positives/near-duplicates (with rank and score), then
    the first n_rand candidate rows (pre-drawn by the query's RNG) that are neither those nor already chosen."""
    n_q, k = top_rows.shape
    hard = np.full((n_q, n_hard), -1, dtype=np.int32)
    hard_rank = np.full((n_q, n_hard), -1, dtype=np.int32)
    hard_score = np.zeros((n_q, n_hard), dtype=np.float32)
    rand = np.full((n_q, n_rand), -1, dtype=np.int32)
    rand_rank = np.full((n_q, n_rand), -1, dtype=np.int32)
    for qi in range(n_q):
        p_lo, p_hi = pos_ptr[qi], pos_ptr[qi + 1]
        h = 0
        for r in range(k):
            row = top_rows[qi, r]
            if row < 0 or h >= n_hard:
                break
            if _excluded(row, pos, p_lo, p_hi, text_hash, terms, term_ptr, threshold):
                continue
            hard[qi, h] = row
            hard_rank[qi, h] = r + 1
            hard_score[qi, h] = top_scores[qi, r]
            h += 1
        m = 0
        for c in range(cand_ptr[qi], cand_ptr[qi + 1]):
            if m >= n_rand:
                break
            row = cand[c]
            taken = False
            for x in range(h):
                if hard[qi, x] == row:
                    taken = True
            for x in range(m):
                if rand[qi, x] == row:
                    taken = True
            if taken or _excluded(row, pos, p_lo, p_hi, text_hash, terms, term_ptr, threshold):
                continue
            rand[qi, m] = row
            for r in range(k):
                if top_rows[qi, r] == row:
                    rand_rank[qi, m] = r + 1
                    break
            m += 1
    return hard, hard_rank, hard_score, rand, rand_rank


def random_keys(seed: int, query_ids: Sequence[str]) -> np.ndarray:
    """64-bit RNG key per query from (seed, query_id): blake2b, stable across processes (``hash`` is salted)."""
    prefix = f"{seed}\x00".encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(prefix + q.encode(), digest_size=8).digest(), "little")
            for q in query_ids
        ),
        dtype=np.uint64,
        count=len(query_ids),
    )


def _list_array(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)


_KIND_NAMES = pa.array(["hard", "random"], pa.string())


def _column(batch: Mapping[str, Any] | pa.Table, name: str) -> list:
    """One column as a Python list (only the columns mining needs are converted)."""
    values = batch.column(name) if isinstance(batch, pa.Table) else batch[name]
    if isinstance(values, pa.ChunkedArray | pa.Array):
        return values.to_pylist()
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _positive_rows(
    index: Bm25Index, batch: Mapping[str, Any] | pa.Table, query_ids: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Flat positive rows + per-query offsets: from ``positive_rows`` (resolved by the driver) when present."""
    names = batch.column_names if isinstance(batch, pa.Table) else list(batch)
    if isinstance(batch, pa.Table) and "positive_rows" in names:  # fast path (Ray Data / in-process mine)
        col = batch.column("positive_rows").combine_chunks()
        offsets = col.offsets.to_numpy()
        pos_flat = col.values.to_numpy()[offsets[0] : offsets[-1]].astype(np.int32)
        return pos_flat, (offsets - offsets[0]).astype(np.int64)
    if "positive_rows" in names:
        positive_rows = [[int(r) for r in rows] for rows in _column(batch, "positive_rows")]
    else:
        positive_rows = []
        for i, (qid, pids) in enumerate(zip(query_ids, _column(batch, "positive_ids"), strict=True)):
            rows = []
            for pid in pids:
                row = index.row_of(pid)
                if row is None:
                    raise ValueError(
                        f"batch record {i} (query_id {qid!r}): positive_ids has {pid!r}, not in the corpus"
                    )
                rows.append(row)
            positive_rows.append(rows)
    pos_flat = np.fromiter((r for rows in positive_rows for r in rows), dtype=np.int32)
    pos_ptr = np.zeros(len(positive_rows) + 1, dtype=np.int64)
    np.cumsum([len(rows) for rows in positive_rows], out=pos_ptr[1:])
    return pos_flat, pos_ptr


def mine_batch(
    index: Bm25Index, batch: Mapping[str, Any] | pa.Table, cfg: MiningConfig, threads: int = 1
) -> dict[str, pa.Array]:
    """Mine hard + random negatives for a batch of queries; returns TRIPLES columns (Arrow arrays).

    ``batch`` has columns ``query_id``, ``query`` and ``positive_ids`` (list of doc ids), optionally
    ``positive_rows`` (their corpus rows, resolved by the driver so workers need no id→row dict). A plain function
    of its inputs: the same call works in-process and inside ``Dataset.map_batches``. Raises ValueError naming the
    batch record and query_id when a positive is not in the corpus or a query has no positive (the caller filters
    these out and counts them first — see :func:`raysparse.mining.stage.prepare_queries`). ``threads`` > 1 runs
    the top-k kernel on that many numba threads (in-process use; Ray actors use one each).
    """
    query_ids: list[str] = [str(q) for q in _column(batch, "query_id")]
    queries: list[str] = [str(q) for q in _column(batch, "query")]
    pos_flat, pos_ptr = _positive_rows(index, batch, query_ids)
    for i in np.nonzero(np.diff(pos_ptr) == 0)[0]:
        raise ValueError(f"batch record {i} (query_id {query_ids[i]!r}): positive_ids is empty")
    n_q = len(query_ids)
    n_hard, n_rand = cfg.num_hard_negatives, cfg.num_random_negatives
    arrays = (index.data, index.indices, index.indptr)

    # 1. tokenise + BM25 top-k for the whole batch (one kernel call)
    q_ids, q_ptr = index.query_term_ids(queries)
    k = min(cfg.top_k, index.num_docs)
    top_rows, top_scores = topk(q_ids, q_ptr, *arrays, index.num_docs, k, threads)

    # 2. hard + random selection (one kernel call; the RNG draws are per query, so batching cannot change them)
    keys = random_keys(cfg.seed, query_ids)
    # Small corpora walk a full permutation (every eligible row reachable); large ones take a short list of draws.
    exhaustive = np.full(n_q, index.num_docs <= 64 * n_rand + 1024, dtype=np.bool_)
    draws = 4 * n_rand + 32 if n_rand else 0

    def select():
        cand, cand_ptr = _draw_candidates(keys, exhaustive, index.num_docs, draws)
        return _select_batch(
            top_rows, top_scores, pos_flat, pos_ptr, cand, cand_ptr, index.text_hash, index.terms,
            index.term_ptr, cfg.near_duplicate_threshold, n_hard, n_rand,
        )  # fmt: skip

    hard, hard_rank, hard_score, rand, rand_rank = select()
    short = (rand < 0).any(axis=1) & ~exhaustive if n_rand else np.zeros(n_q, dtype=np.bool_)
    if short.any():  # rare: the short draw hit too many excluded rows; walk those queries' full permutation
        exhaustive |= short
        hard, hard_rank, hard_score, rand, rand_rank = select()

    # 3. assemble Arrow columns: per query, hard negatives (valid, left-packed) then random ones
    neg_rows = np.concatenate([hard, rand], axis=1)
    valid = neg_rows >= 0
    neg_flat = neg_rows[valid]
    neg_ptr = np.zeros(n_q + 1, dtype=np.int64)
    np.cumsum(valid.sum(axis=1), out=neg_ptr[1:])
    # hard negatives' scores are their top-k scores; only the random ones are scored here
    rand_valid = rand >= 0
    rand_flat = rand[rand_valid]
    rand_ptr = np.zeros(n_q + 1, dtype=np.int64)
    np.cumsum(rand_valid.sum(axis=1), out=rand_ptr[1:])
    rand_scores = np.zeros(rand.shape, dtype=np.float32)
    rand_scores[rand_valid] = score_flat(q_ids, q_ptr, rand_flat, rand_ptr, *arrays)
    neg_scores = np.concatenate([hard_score, rand_scores], axis=1)[valid]
    neg_ranks = np.concatenate([hard_rank, rand_rank], axis=1)[valid]
    kinds = np.concatenate(
        [np.zeros(hard.shape, dtype=np.int32), np.ones(rand.shape, dtype=np.int32)], axis=1
    )[valid]
    pos_scores = score_flat(q_ids, q_ptr, pos_flat, pos_ptr, *arrays)

    pos_take = pa.array(pos_flat, type=pa.int32())
    neg_take = pa.array(neg_flat, type=pa.int32())
    return {
        "query_id": pa.array(query_ids, type=pa.string()),
        "query": pa.array(queries, type=pa.string()),
        "positive_ids": _list_array(pos_ptr, index.doc_ids.take(pos_take)),
        "positive_texts": _list_array(pos_ptr, index.texts.take(pos_take)),
        "positive_scores": _list_array(pos_ptr, pa.array(pos_scores, type=pa.float32())),
        "negative_ids": _list_array(neg_ptr, index.doc_ids.take(neg_take)),
        "negative_texts": _list_array(neg_ptr, index.texts.take(neg_take)),
        "negative_scores": _list_array(neg_ptr, pa.array(neg_scores, type=pa.float32())),
        "negative_ranks": _list_array(neg_ptr, pa.array(neg_ranks, type=pa.int32())),
        "negative_kinds": _list_array(neg_ptr, _KIND_NAMES.take(pa.array(kinds, type=pa.int32()))),
    }


def triples_table(columns: Mapping[str, pa.Array]) -> pa.Table:
    """TRIPLES table from :func:`mine_batch` columns (types and nullability checked by the cast)."""
    return pa.Table.from_arrays([columns[f.name] for f in TRIPLES], schema=TRIPLES)
