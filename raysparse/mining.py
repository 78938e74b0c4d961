"""BM25 hard-negative mining: Korean-aware analyzers + bm25s, distributed with Ray Data.

For every query with at least one positive in the corpus we keep the top ``num_hard_negatives`` BM25 documents that
are neither a positive nor a near-duplicate of one, plus ``num_random_negatives`` documents drawn from the rest of the
corpus. Output rows follow :data:`raysparse.schemas.TRIPLES` (one row per query).

Design (why it is shaped like this):

- **One index, built once.** :meth:`Bm25Index.build` tokenises the corpus with the configured analyzer and lets
  bm25s compute the BM25 (Lucene variant, ``k1``/``b`` from :class:`MiningConfig`) weight matrix in CSC form. Ray
  workers never rebuild it: :func:`mine` puts the index into the object store **once** (``ray.put``); its big parts
  are numpy / Arrow buffers, which Ray deserialises zero-copy from shared memory, so every actor on a node maps the
  same bytes. Only the vocabulary dict is unpickled per actor (once, in the actor constructor).
- **Scoring kernel.** bm25s' own numba ``retrieve`` is JIT-compiled on first use in every process (~7 s measured),
  which dominated short Ray jobs. We score the same bm25s CSC arrays with a small numba kernel compiled with
  ``cache=True`` (compiled once per machine, loaded from disk afterwards) that touches only the postings of the
  query terms. Scores are summed in float32 in query-token order, exactly as bm25s does, and ties are broken by
  corpus row, so results are identical in every process. Documents with score 0 are never hard negatives.
- **Near-duplicates.** A candidate is a near-duplicate of a positive when its normalised text (NFKC, lower case,
  whitespace collapsed) equals the positive's, or when the Jaccard similarity of their *analyzer term sets* (the
  same terms BM25 indexes: character bigrams, Kiwi morphemes or word pieces) is ``>= near_duplicate_threshold``.
  Term sets come for free from the index (the CSR transpose of the BM25 matrix), so the check costs microseconds and
  no text is re-analysed.
- **Determinism.** Random negatives come from a splitmix64 stream keyed by blake2b(seed, query_id) (stable across
  processes, unlike Python's salted ``hash``; numpy's ``default_rng`` cost ~100 µs per query to seed), so the
  output does not depend on batching, worker count or node count; output is sorted by ``query_id`` and written by the driver, so files are byte-comparable across runs.
- **Ray overhead.** Queries are tokenised inside the same ``map_batches`` pass that retrieves, batches are large,
  actors ask for fractional CPUs (a 2-CPU node otherwise hangs, see docs) and results come back as Arrow tables.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from raysparse.config import MiningConfig
from raysparse.schemas import TRIPLES, RetrievalData

log = logging.getLogger(__name__)

TRIPLES_FILE = "triples.parquet"
REPORT_FILE = "mining_report.json"

# ----------------------------------------------------------------------------------------------------------------
# numba kernels (compiled lazily, cached on disk)
# ----------------------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _topk_batch(q_ids, q_ptr, data, indices, indptr, num_docs, k):  # pragma: no cover - jitted
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
def _score_flat(q_ids, q_ptr, rows, rows_ptr, data, indices, indptr):  # pragma: no cover - jitted
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


@njit(cache=True, nogil=True)
def _jaccard(terms, term_ptr, a, b):  # pragma: no cover - jitted
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
    for p in range(p_lo, p_hi):
        q = pos[p]
        if row == q or text_hash[row] == text_hash[q] or _jaccard(terms, term_ptr, row, q) >= threshold:
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


# ----------------------------------------------------------------------------------------------------------------
# text helpers
# ----------------------------------------------------------------------------------------------------------------

_SPACES = re.compile(r"\s+")


def normalize_for_dedup(text: str) -> str:
    """NFKC + lower case + collapsed whitespace: the form compared for exact-duplicate detection."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def _text_hash(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(normalize_for_dedup(text).encode("utf-8"), digest_size=8).digest(), "little"
    )


def document_texts(corpus: pa.Table) -> pa.Array:
    """The text indexed and emitted for each document: ``title + " " + text`` when a title exists (BEIR convention)."""
    text = corpus.column("text").combine_chunks()
    if "title" not in corpus.column_names:
        return text
    title = corpus.column("title").combine_chunks()
    has_title = pc.and_(pc.is_valid(title), pc.not_equal(pc.utf8_length(pc.fill_null(title, "")), 0))
    joined = pc.binary_join_element_wise(pc.fill_null(title, ""), text, " ")
    return pc.if_else(has_title, joined, text)


# ----------------------------------------------------------------------------------------------------------------
# the index
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Bm25Index:
    """A BM25 index over a corpus, built once and shared read-only with every worker.

    Arrays (all numpy/Arrow, so ``ray.put`` shares them zero-copy between the actors of a node):
    ``data/indices/indptr`` — bm25s' CSC matrix of BM25 weights (one column per term);
    ``terms/term_ptr`` — its CSR transpose: each document's sorted unique term ids (near-duplicate check);
    ``text_hash`` — 64-bit hash of each normalised document text; ``doc_ids``/``texts`` — Arrow string arrays.
    """

    analyzer: str
    hf_tokenizer: str | None
    vocab: dict[str, int]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    terms: np.ndarray
    term_ptr: np.ndarray
    text_hash: np.ndarray
    doc_ids: pa.Array
    texts: pa.Array
    k1: float
    b: float
    _row_of: dict[str, int] | None = field(default=None, repr=False, compare=False)
    _analyze: Any = field(default=None, repr=False, compare=False)

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @classmethod
    def build(
        cls, corpus: pa.Table, cfg: MiningConfig, show_progress: bool = True, tokenize_batch: int = 1024
    ) -> Bm25Index:
        """Tokenise ``corpus`` (CORPUS schema) with ``cfg.analyzer`` and build the BM25 matrix with bm25s.

        Raises ValueError naming the row of a duplicate ``doc_id`` (positives would be ambiguous otherwise).
        """
        import bm25s
        from tqdm.auto import tqdm

        from raysparse.analyzers import get_analyzer

        if corpus.num_rows == 0:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        doc_ids = corpus.column("doc_id").combine_chunks()
        ids_list = doc_ids.to_pylist()
        row_of: dict[str, int] = {}
        for row, doc_id in enumerate(ids_list):
            if doc_id in row_of:
                raise ValueError(
                    f"corpus row {row}: doc_id {doc_id!r} duplicates row {row_of[doc_id]} (doc_id must be unique)"
                )
            row_of[doc_id] = row
        texts = document_texts(corpus)
        text_list = texts.to_pylist()
        analyze = get_analyzer(cfg.analyzer, cfg.hf_tokenizer)
        tokens: list[list[str]] = []
        for start in tqdm(
            range(0, len(text_list), tokenize_batch),
            desc=f"tokenise corpus ({cfg.analyzer})",
            unit="batch",
            disable=not show_progress,
        ):
            tokens.extend(analyze(text_list[start : start + tokenize_batch]))
        text_hash = np.fromiter((_text_hash(t) for t in text_list), dtype=np.uint64, count=len(text_list))

        # bm25s builds the vocabulary and the BM25 weight matrix (CSC: one column per term) from our tokens.
        retriever = bm25s.BM25(k1=cfg.bm25_k1, b=cfg.bm25_b, backend="numpy")
        retriever.index(tokens, show_progress=False)
        scores = retriever.scores
        data = np.ascontiguousarray(scores["data"], dtype=np.float32)
        indices = np.ascontiguousarray(scores["indices"], dtype=np.int32)
        indptr = np.ascontiguousarray(scores["indptr"], dtype=np.int64)
        # The kernels binary-search rows within a column, so each column's rows must be sorted (bm25s does this;
        # re-sort defensively, which changes nothing else).
        col = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        order = np.lexsort((indices, col))
        if not np.array_equal(order, np.arange(len(order))):
            data, indices = data[order], indices[order]
        # CSR transpose: each document's sorted unique term ids.
        by_doc = np.lexsort((col, indices))
        terms = col[by_doc].astype(np.int32)
        term_ptr = np.zeros(len(ids_list) + 1, dtype=np.int64)
        np.cumsum(np.bincount(indices, minlength=len(ids_list)), out=term_ptr[1:])
        index = cls(
            analyzer=cfg.analyzer,
            hf_tokenizer=cfg.hf_tokenizer,
            vocab=dict(retriever.vocab_dict),
            data=data,
            indices=indices,
            indptr=indptr,
            terms=terms,
            term_ptr=term_ptr,
            text_hash=text_hash,
            doc_ids=doc_ids,
            texts=texts,
            k1=cfg.bm25_k1,
            b=cfg.bm25_b,
        )
        index._row_of = row_of
        return index

    def __getstate__(self) -> dict[str, Any]:
        # The row lookup and the analyzer are cheap to rebuild and not needed by most workers: don't ship them.
        state = dict(self.__dict__)
        state["_row_of"] = None
        state["_analyze"] = None
        return state

    def row_of(self, doc_id: str) -> int | None:
        if self._row_of is None:
            self._row_of = {d: i for i, d in enumerate(self.doc_ids.to_pylist())}
        return self._row_of.get(doc_id)

    def analyze(self, texts: Sequence[str]) -> list[list[str]]:
        if self._analyze is None:
            from raysparse.analyzers import get_analyzer

            self._analyze = get_analyzer(self.analyzer, self.hf_tokenizer)
        return self._analyze(texts)

    def query_term_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenise queries and map tokens to term ids (unknown tokens dropped): flat ids + per-query offsets."""
        vocab = self.vocab
        flat: list[int] = []
        ptr = [0]
        for tokens in self.analyze(texts):
            flat.extend(vocab[t] for t in tokens if t in vocab)
            ptr.append(len(flat))
        return np.asarray(flat, dtype=np.int64), np.asarray(ptr, dtype=np.int64)

    def search(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows and BM25 scores per query (rows -1 where fewer than k documents match)."""
        q_ids, q_ptr = self.query_term_ids(texts)
        return _topk_batch(q_ids, q_ptr, self.data, self.indices, self.indptr, self.num_docs, k)

    def score(self, text: str, rows: Sequence[int]) -> np.ndarray:
        """BM25 scores of the given corpus rows for one query."""
        q_ids, q_ptr = self.query_term_ids([text])
        rows_arr = np.asarray(rows, dtype=np.int32)
        rows_ptr = np.asarray([0, len(rows_arr)], dtype=np.int64)
        return _score_flat(q_ids, q_ptr, rows_arr, rows_ptr, self.data, self.indices, self.indptr)

    def is_near_duplicate(self, row: int, other: int, threshold: float) -> bool:
        """Same normalised text, or analyzer-term-set Jaccard >= threshold."""
        if self.text_hash[row] == self.text_hash[other]:
            return True
        return _jaccard(self.terms, self.term_ptr, row, other) >= threshold

    def nbytes(self) -> int:
        arrays = (self.data, self.indices, self.indptr, self.terms, self.term_ptr, self.text_hash)
        return int(sum(a.nbytes for a in arrays) + self.doc_ids.nbytes + self.texts.nbytes)


# ----------------------------------------------------------------------------------------------------------------
# the per-batch core
# ----------------------------------------------------------------------------------------------------------------


def _column(batch: Mapping[str, Any] | pa.Table, name: str) -> list:
    """One column as a Python list (only the columns mining needs are converted)."""
    values = batch.column(name) if isinstance(batch, pa.Table) else batch[name]
    if isinstance(values, pa.ChunkedArray | pa.Array):
        return values.to_pylist()
    return values.tolist() if hasattr(values, "tolist") else list(values)


def random_keys(seed: int, query_ids: Sequence[str]) -> np.ndarray:
    """64-bit RNG key per query from (seed, query_id): blake2b, stable across processes (``hash`` is salted)."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(f"{seed}\x00{q}".encode(), digest_size=8).digest(), "little")
            for q in query_ids
        ),
        dtype=np.uint64,
        count=len(query_ids),
    )


def _list_array(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)


_KINDS = np.array(["hard", "random"])


def mine_batch(
    index: Bm25Index, batch: Mapping[str, Any] | pa.Table, cfg: MiningConfig
) -> dict[str, pa.Array]:
    """Mine hard + random negatives for a batch of queries; returns TRIPLES columns (Arrow arrays).

    ``batch`` has columns ``query_id``, ``query`` and ``positive_ids`` (list of doc ids), optionally
    ``positive_rows`` (their corpus rows, resolved by the driver so workers need no id→row dict). A plain function
    of its inputs: the same call works in-process and inside ``Dataset.map_batches``. Raises ValueError naming the
    batch record and query_id when a positive is not in the corpus or a query has no positive (the caller filters
    these out and counts them first — see :func:`prepare_queries`).
    """
    names = batch.column_names if isinstance(batch, pa.Table) else list(batch)
    query_ids: list[str] = [str(q) for q in _column(batch, "query_id")]
    queries: list[str] = [str(q) for q in _column(batch, "query")]
    if isinstance(batch, pa.Table) and "positive_rows" in names:  # fast path (Ray Data / in-process mine)
        col = batch.column("positive_rows").combine_chunks()
        offsets = col.offsets.to_numpy()
        pos_flat = col.values.to_numpy()[offsets[0] : offsets[-1]].astype(np.int32)
        pos_ptr = (offsets - offsets[0]).astype(np.int64)
    else:
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
    for i in np.nonzero(np.diff(pos_ptr) == 0)[0]:
        raise ValueError(f"batch record {i} (query_id {query_ids[i]!r}): positive_ids is empty")
    n_q = len(query_ids)
    n_hard, n_rand = cfg.num_hard_negatives, cfg.num_random_negatives
    arrays = (index.data, index.indices, index.indptr)

    # 1. tokenise + BM25 top-k for the whole batch (one kernel call)
    q_ids, q_ptr = index.query_term_ids(queries)
    k = min(cfg.top_k, index.num_docs)
    top_rows, top_scores = _topk_batch(q_ids, q_ptr, *arrays, index.num_docs, k)

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

    hard, hard_rank, _, rand, rand_rank = select()
    short = (rand < 0).any(axis=1) & ~exhaustive if n_rand else np.zeros(n_q, dtype=np.bool_)
    if short.any():  # rare: the short draw hit too many excluded rows; walk those queries' full permutation
        exhaustive |= short
        hard, hard_rank, _, rand, rand_rank = select()

    # 3. assemble Arrow columns: per query, hard negatives (valid, left-packed) then random ones
    neg_rows = np.concatenate([hard, rand], axis=1)
    valid = neg_rows >= 0
    neg_flat = neg_rows[valid]
    neg_ptr = np.zeros(n_q + 1, dtype=np.int64)
    np.cumsum(valid.sum(axis=1), out=neg_ptr[1:])
    neg_scores = _score_flat(
        q_ids, q_ptr, neg_flat, neg_ptr, *arrays
    )  # equal to the top-k scores for hard ones
    neg_ranks = np.concatenate([hard_rank, rand_rank], axis=1)[valid]
    kinds = np.concatenate([np.zeros(hard.shape, dtype=np.int8), np.ones(rand.shape, dtype=np.int8)], axis=1)[
        valid
    ]
    pos_scores = _score_flat(q_ids, q_ptr, pos_flat, pos_ptr, *arrays)

    pos_take = pa.array(pos_flat.astype(np.int64))
    neg_take = pa.array(neg_flat.astype(np.int64))
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
        "negative_kinds": _list_array(neg_ptr, pa.array(_KINDS[kinds], type=pa.string())),
    }


def triples_table(columns: Mapping[str, pa.Array]) -> pa.Table:
    """TRIPLES table from :func:`mine_batch` columns (types and nullability checked by the cast)."""
    return pa.Table.from_arrays([columns[f.name] for f in TRIPLES], schema=TRIPLES)


# ----------------------------------------------------------------------------------------------------------------
# the driver: prepare, mine (in-process or Ray Data), write, report
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class MiningReport:
    """What :func:`mine` did; written next to the triples as ``mining_report.json``."""

    queries_in: int = 0
    queries_mined: int = 0
    triples: int = 0  # (query, positive, negative) combinations = sum over rows of |positives| * |negatives|
    hard_negatives: int = 0
    random_negatives: int = 0
    queries_short_of_hard: int = 0  # fewer than num_hard_negatives hard negatives (few BM25 matches)
    positives_not_in_corpus: int = 0  # judgements dropped because the doc id is not in the corpus
    skipped: dict[str, int] = field(default_factory=dict)  # queries skipped, by reason
    num_docs: int = 0
    analyzer: str = ""
    mode: str = "in-process"  # or "ray"
    workers: int = 1
    timings: dict[str, float] = field(default_factory=dict)  # seconds: index_build, mining, write, total
    queries_per_second: float = 0.0  # mining phase only (tokenise queries + retrieve + select + gather texts)
    output: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items())) or "none"
        return (
            f"mined {self.queries_mined}/{self.queries_in} queries over {self.num_docs} documents "
            f"({self.hard_negatives} hard + {self.random_negatives} random negatives, {self.mode}, "
            f"{self.workers} worker(s), {self.queries_per_second:.0f} q/s); skipped: {skipped}"
        )


def prepare_queries(data: RetrievalData, index: Bm25Index, report: MiningReport) -> pa.Table:
    """Join queries with their positives (qrels score > 0) and resolve them to corpus rows.

    Skipped queries are counted in ``report.skipped`` by reason; nothing is dropped silently.
    Returns columns query_id, query, positive_ids, positive_rows (sorted by query_id).
    """
    positives: dict[str, list[str]] = {}
    qrels = data.qrels
    for qid, did, score in zip(
        qrels.column("query_id").to_pylist(),
        qrels.column("doc_id").to_pylist(),
        qrels.column("score").to_pylist(),
        strict=True,
    ):
        if score > 0:
            lst = positives.setdefault(qid, [])
            if did not in lst:
                lst.append(did)
    out_ids: list[str] = []
    out_text: list[str] = []
    out_pos: list[list[str]] = []
    out_rows: list[list[int]] = []
    seen: set[str] = set()
    q_ids = data.queries.column("query_id").to_pylist()
    q_text = data.queries.column("text").to_pylist()
    report.queries_in = len(q_ids)
    for qid, text in zip(q_ids, q_text, strict=True):
        if qid in seen:
            report.skip("duplicate query_id")
            continue
        seen.add(qid)
        if not text or not text.strip():
            report.skip("empty query text")
            continue
        pids = positives.get(qid)
        if not pids:
            report.skip("no positive judgement in qrels")
            continue
        kept = [(p, index.row_of(p)) for p in pids]
        missing = sum(1 for _, r in kept if r is None)
        report.positives_not_in_corpus += missing
        kept = [(p, r) for p, r in kept if r is not None]
        if not kept:
            report.skip("no positive in corpus")
            continue
        out_ids.append(qid)
        out_text.append(text)
        out_pos.append([p for p, _ in kept])
        out_rows.append([r for _, r in kept])
    table = pa.table(
        {
            "query_id": pa.array(out_ids, pa.string()),
            "query": pa.array(out_text, pa.string()),
            "positive_ids": pa.array(out_pos, pa.list_(pa.string())),
            "positive_rows": pa.array(out_rows, pa.list_(pa.int64())),
        }
    )
    return table.sort_by("query_id")


class _MinerActor:
    """Ray Data actor: resolves the shared index once (zero-copy for its arrays) and mines batches."""

    def __init__(self, index_ref_holder: list, cfg_dict: dict[str, Any]):
        import ray

        self.index: Bm25Index = ray.get(index_ref_holder[0])
        self.cfg = MiningConfig.model_validate(cfg_dict)
        self.index.analyze(["warm up"])  # load Kiwi / the tokenizer before the first batch

    def __call__(self, batch: pa.Table) -> pa.Table:
        return triples_table(mine_batch(self.index, batch, self.cfg))


def _ray_pool(cfg: MiningConfig) -> tuple[int, float]:
    """Pool size and per-actor CPUs: one actor per CPU of the nodes that satisfy ``mining.resources`` by default,
    with fractional CPUs so that actors plus Ray Data's own bookkeeping never ask for more than those nodes have
    (the documented 2-CPU hang). A fixed-size pool larger than what the eligible nodes can host would never start."""
    from raysparse.ray_utils import check_placement

    nodes = check_placement(cfg.resources, "mining.resources")
    total = sum(float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes) or 1.0
    slots = 0
    for n in nodes:
        res = n.get("Resources", {})
        per_node = int(res.get("CPU", 0.0))
        for k, v in cfg.resources.items():
            per_node = min(per_node, int(res.get(k, 0.0) // v)) if v > 0 else per_node
        slots += per_node
    workers = cfg.num_workers or max(1, slots)
    cpus = min(cfg.cpus_per_worker, max(0.1, 0.9 * total / workers))
    return workers, cpus


def mine_dataset(
    queries: Any, index_ref: Any, cfg: MiningConfig, workers: int, cpus_per_worker: float
) -> Any:
    """Ray Data building block: ``queries`` (a Dataset from :func:`prepare_queries`) → Dataset of TRIPLES rows.

    Actors ask for ``mining.resources`` on top of their CPUs (placement: e.g. ``{cpu_pool: 1}`` keeps them on the
    CPU node type of cluster.yaml). They restart without limit and their batches are retried when a node is lost:
    the index they read is owned by the driver, and batches are pure functions of their rows, so a re-run batch
    yields the same triples and nothing is lost or duplicated.
    """
    from ray.data import ActorPoolStrategy

    remote_args: dict[str, Any] = {"max_restarts": -1, "max_task_retries": -1}
    if cfg.resources:
        remote_args["resources"] = dict(cfg.resources)
    return queries.map_batches(
        _MinerActor,
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=workers),
        fn_constructor_args=([index_ref], cfg.model_dump()),
        num_cpus=cpus_per_worker,
        zero_copy_batch=True,
        **remote_args,
    )


def _mine_in_process(index: Bm25Index, queries: pa.Table, cfg: MiningConfig, show_progress: bool) -> pa.Table:
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=queries.num_rows, desc="mine", unit="q", disable=not show_progress) as bar:
        for start in range(0, queries.num_rows, cfg.batch_size):
            batch = queries.slice(start, cfg.batch_size)
            parts.append(triples_table(mine_batch(index, batch, cfg)))
            bar.update(batch.num_rows)
    return pa.concat_tables(parts) if parts else TRIPLES.empty_table()


def _mine_with_ray(index: Bm25Index, queries: pa.Table, cfg: MiningConfig) -> tuple[pa.Table, int]:
    import ray

    from raysparse.ray_utils import init_ray

    init_ray()
    workers, cpus = _ray_pool(cfg)
    index_ref = ray.put(index)  # once: every actor maps the same object
    # Blocks of batch_size rows so that the pool gets work right away and batches are not re-sliced.
    blocks = [queries.slice(s, cfg.batch_size) for s in range(0, queries.num_rows, cfg.batch_size)]
    ds = ray.data.from_arrow(blocks or [queries])
    out = mine_dataset(ds, index_ref, cfg, workers, cpus)
    tables = [ray.get(ref) for ref in out.to_arrow_refs()]
    del index_ref
    tables = [t for t in tables if t.num_rows]
    return (pa.concat_tables([t.cast(TRIPLES) for t in tables]) if tables else TRIPLES.empty_table()), workers


def write_triples(table: pa.Table, out_dir: str | Path) -> Path:
    """Write the triples sorted by query_id into one Parquet file (byte-identical for identical rows)."""
    import pyarrow.parquet as pq

    from raysparse.outputs import atomic_target

    path = Path(out_dir) / TRIPLES_FILE
    table = table.sort_by("query_id").cast(TRIPLES).combine_chunks().replace_schema_metadata(None)
    with atomic_target(
        path
    ) as tmp:  # a killed run leaves .triples.parquet.partial, never a short triples.parquet
        pq.write_table(table, tmp, row_group_size=4096, compression="zstd")
    return path


def read_triples(path: str | Path) -> pa.Table:
    """Read mined triples from a :func:`mine` output directory or a Parquet file."""
    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_dir():
        p = p / TRIPLES_FILE
    return pq.read_table(p, schema=TRIPLES)


def mine(
    data: RetrievalData,
    cfg: MiningConfig,
    out_dir: str | Path,
    ray: bool = True,
    index: Bm25Index | None = None,
    show_progress: bool = True,
) -> MiningReport:
    """Mine TRIPLES for ``data`` into ``out_dir/triples.parquet`` and ``out_dir/mining_report.json``.

    ``ray=True`` distributes batches over a Ray Data actor pool (joining the cluster from ``RAY_ADDRESS`` or
    starting a local one); ``ray=False`` runs the same :func:`mine_batch` in this process. Both give identical files.
    Pass a prebuilt ``index`` to reuse it across calls.
    """
    t_start = time.perf_counter()
    report = MiningReport(analyzer=cfg.analyzer, mode="ray" if ray else "in-process", config=cfg.model_dump())
    if index is None:
        t0 = time.perf_counter()
        index = Bm25Index.build(data.corpus, cfg, show_progress=show_progress)
        report.timings["index_build"] = time.perf_counter() - t0
    else:
        report.timings["index_build"] = 0.0
    report.num_docs = index.num_docs
    queries = prepare_queries(data, index, report)

    t0 = time.perf_counter()
    if queries.num_rows == 0:
        table = TRIPLES.empty_table()
    elif ray:
        table, report.workers = _mine_with_ray(index, queries, cfg)
    else:
        table = _mine_in_process(index, queries, cfg, show_progress)
    mining_s = time.perf_counter() - t0
    report.timings["mining"] = mining_s
    report.queries_per_second = queries.num_rows / mining_s if mining_s > 0 else 0.0

    t0 = time.perf_counter()
    path = write_triples(table, out_dir)
    report.timings["write"] = time.perf_counter() - t0
    report.output = str(path)

    report.queries_mined = table.num_rows
    kinds = pc.list_flatten(table.column("negative_kinds"))
    report.hard_negatives = int(pc.sum(pc.equal(kinds, "hard")).as_py() or 0)
    report.random_negatives = int(pc.sum(pc.equal(kinds, "random")).as_py() or 0)
    n_pos = pc.list_value_length(table.column("positive_ids"))
    n_neg = pc.list_value_length(table.column("negative_ids"))
    report.triples = int(pc.sum(pc.multiply(n_pos, n_neg)).as_py() or 0)
    hard_per_row = [sum(1 for k in row if k == "hard") for row in table.column("negative_kinds").to_pylist()]
    report.queries_short_of_hard = sum(1 for n in hard_per_row if n < cfg.num_hard_negatives)
    report.timings["total"] = time.perf_counter() - t_start
    from raysparse.outputs import atomic_write_text

    atomic_write_text(
        Path(out_dir) / REPORT_FILE, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    )
    log.info("%s", report)
    return report
