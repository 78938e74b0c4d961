"""An in-process inverted index over sparse term-weight vectors: exact top-k by a sparse matrix product.

Documents are rows of a SciPy CSR matrix (``num_docs x vocab``). Scoring a batch of queries is one sparse product
``Q @ D.T``, which SciPy evaluates term by term -- i.e. it walks exactly the posting lists of the query terms, like an
inverted index does, and never touches documents that share no term with the query. Only documents with a positive
score are retrieved (a document matching no query term is not a hit, as in BM25 and OpenSearch).

Ties are broken by doc_id ascending: rows are stored in doc_id order, so "lower row" means "smaller doc_id".

Sparsity statistics (the cost side of the quality/cost trade-off):

- ``avg_doc_terms`` / ``avg_query_terms``: mean number of non-zero weights per vector.
- ``flops``: the SPLADE paper's FLOPS (Formal et al. 2021), the expected number of multiply-adds to score one random
  query against one random document with an inverted index: ``sum_v p_q(v) * p_d(v)``, where ``p_q(v)`` (``p_d(v)``)
  is the fraction of queries (documents) whose vector has term ``v`` active. Unlike ``avg_q * avg_d`` it rewards
  spreading activations over rare terms, which is what makes posting lists short.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp


def as_csr(matrix: sp.spmatrix | np.ndarray, num_cols: int | None = None) -> sp.csr_matrix:
    """A float32 CSR copy with explicit zeros removed (they would count as active terms)."""
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    if num_cols is not None and csr.shape[1] != num_cols:
        raise ValueError(f"expected {num_cols} columns (the vocabulary), got {csr.shape[1]}")
    if csr.nnz and csr.data.min() < 0:
        raise ValueError("term weights must be non-negative")
    csr.eliminate_zeros()
    csr.sort_indices()
    return csr


def activation_rate(matrix: sp.csr_matrix) -> np.ndarray:
    """(V,) fraction of rows in which each column is non-zero."""
    if matrix.shape[0] == 0:
        return np.zeros(matrix.shape[1])
    counts = np.bincount(matrix.indices, minlength=matrix.shape[1])
    return counts / matrix.shape[0]


def expected_flops(query_rates: Any, doc_rates: Any) -> float:
    """SPLADE FLOPS from per-term activation rates: ``sum_v p_q(v) * p_d(v)`` (see the module docstring).

    The one definition of the efficiency metric: evaluation passes rates over the dev set's sparse vectors,
    training passes rates over its micro-batch tensors (numpy arrays and torch tensors both work)."""
    return float((query_rates * doc_rates).sum())


def flops(queries: sp.csr_matrix, docs: sp.csr_matrix) -> float:
    """SPLADE FLOPS of a query set against a document set (:func:`expected_flops` of their activation rates)."""
    return expected_flops(activation_rate(queries), activation_rate(docs))


def avg_terms(matrix: sp.csr_matrix) -> float:
    return float(np.diff(matrix.indptr).mean()) if matrix.shape[0] else 0.0


def terms_to_csr(
    term_lists: Sequence[Sequence[str] | dict[str, float]], vocab: dict[str, int], grow: bool
) -> sp.csr_matrix:
    """Token lists (counted) or ``{term: weight}`` dicts -> CSR over ``vocab``.

    ``grow=True`` adds unseen terms to ``vocab`` (documents); ``grow=False`` drops them (queries: a term no
    document has can never match, so it costs nothing and scores nothing).
    """
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for terms in term_lists:
        weights: dict[int, float] = {}
        items = terms.items() if isinstance(terms, dict) else ((t, 1.0) for t in terms)
        for term, w in items:
            col = vocab.get(term)
            if col is None:
                if not grow:
                    continue
                col = vocab[term] = len(vocab)
            weights[col] = weights.get(col, 0.0) + float(w)
        for col in sorted(weights):
            indices.append(col)
            data.append(weights[col])
        indptr.append(len(indices))
    shape = (len(term_lists), len(vocab))
    return as_csr(
        sp.csr_matrix((np.asarray(data, np.float32), np.asarray(indices, np.int64), indptr), shape=shape)
    )


class SparseIndex:
    """Exact top-k retrieval over non-negative sparse document vectors (see the module docstring)."""

    def __init__(self, doc_ids: Sequence[str], doc_matrix: sp.spmatrix | np.ndarray) -> None:
        doc_ids = [str(d) for d in doc_ids]
        if len(doc_ids) != doc_matrix.shape[0]:
            raise ValueError(f"{len(doc_ids)} doc_ids for {doc_matrix.shape[0]} document vectors")
        seen: dict[str, int] = {}
        for row, doc_id in enumerate(doc_ids):
            if doc_id in seen:
                raise ValueError(f"document {row}: doc_id {doc_id!r} duplicates document {seen[doc_id]}")
            seen[doc_id] = row
        order = np.argsort(np.asarray(doc_ids, dtype=object), kind="stable")  # doc_id order = tie order
        self.doc_ids: list[str] = [doc_ids[i] for i in order]
        self.docs: sp.csr_matrix = as_csr(doc_matrix)[order]
        self._docs_t = self.docs.T.tocsr()  # (V, N): one posting list per term

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def vocab_size(self) -> int:
        return int(self.docs.shape[1])

    @property
    def avg_doc_terms(self) -> float:
        return avg_terms(self.docs)

    def search(
        self, queries: sp.spmatrix | np.ndarray, k: int, batch_size: int = 256
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(doc_id, score)`` per query row, best first; fewer when fewer documents match."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = as_csr(queries, num_cols=self.vocab_size)
        results: list[list[tuple[str, float]]] = []
        for start in range(0, q.shape[0], batch_size):
            scores = (q[start : start + batch_size] @ self._docs_t).tocsr()  # (B, N) sparse
            scores.sort_indices()
            for row in range(scores.shape[0]):
                lo, hi = scores.indptr[row], scores.indptr[row + 1]
                cols, vals = scores.indices[lo:hi], scores.data[lo:hi]
                keep = vals > 0
                cols, vals = cols[keep], vals[keep]
                if len(vals) > k:  # keep the k-th value and everything tied with it, then order exactly
                    kth = np.partition(vals, len(vals) - k)[len(vals) - k]
                    keep = vals >= kth
                    cols, vals = cols[keep], vals[keep]
                order = np.lexsort((cols, -vals))[:k]
                results.append(
                    [(self.doc_ids[c], float(v)) for c, v in zip(cols[order], vals[order], strict=True)]
                )
        return results

    def search_run(
        self, query_ids: Sequence[str], queries: sp.spmatrix | np.ndarray, k: int, batch_size: int = 256
    ) -> dict[str, dict[str, float]]:
        """Like :meth:`search`, as a run ``{query_id: {doc_id: score}}`` for :func:`compute_metrics`."""
        hits = self.search(queries, k, batch_size)
        if len(hits) != len(query_ids):
            raise ValueError(f"{len(query_ids)} query ids for {len(hits)} query vectors")
        return {str(qid): dict(h) for qid, h in zip(query_ids, hits, strict=True)}

    def stats(self, queries: sp.spmatrix | np.ndarray) -> dict[str, float]:
        """``avg_query_terms``, ``avg_doc_terms`` and ``flops`` of ``queries`` against this index."""
        q = as_csr(queries, num_cols=self.vocab_size)
        return {
            "avg_query_terms": avg_terms(q),
            "avg_doc_terms": self.avg_doc_terms,
            "flops": flops(q, self.docs),
        }
