"""Exact inner-product search over dense document vectors, in process: batched ``Q @ D.T`` and top-k.

The counterpart of :class:`raysparse.evaluation.index.SparseIndex` for dense vectors, with the same contract so the
evaluation code treats both alike: rows sorted by doc_id (ties go to the smaller doc_id), ``search`` returns the
best ``k`` ``(doc_id, score)`` per query, ``search_run`` a run ``{query_id: {doc_id: score}}``. Unlike the sparse
index every document is a candidate (a dense vector "matches" every query), so ``k`` hits always come back when the
corpus has ``k`` documents.

Exact (brute force): ``N x H`` float32 multiply-adds per query. At the dev sets' sizes (<= a few thousand documents,
H = 256) that is a fraction of a millisecond; an approximate index (HNSW) only pays off far beyond that, and would
make the dense numbers depend on its recall.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class DenseIndex:
    """Exact top-k by inner product over (N, H) float32 document vectors."""

    def __init__(self, doc_ids: Sequence[str], doc_vectors: np.ndarray | torch.Tensor) -> None:
        doc_ids = [str(d) for d in doc_ids]
        vectors = torch.as_tensor(np.asarray(doc_vectors, dtype=np.float32))
        if vectors.dim() != 2 or len(doc_ids) != vectors.shape[0]:
            raise ValueError(f"{len(doc_ids)} doc_ids for document vectors of shape {tuple(vectors.shape)}")
        seen: dict[str, int] = {}
        for row, doc_id in enumerate(doc_ids):
            if doc_id in seen:
                raise ValueError(f"document {row}: doc_id {doc_id!r} duplicates document {seen[doc_id]}")
            seen[doc_id] = row
        if not torch.isfinite(vectors).all():
            raise ValueError("document vectors contain NaN or infinite values")
        order = np.argsort(np.asarray(doc_ids, dtype=object), kind="stable")
        self.doc_ids: list[str] = [doc_ids[i] for i in order]
        self.docs = vectors[torch.as_tensor(order, dtype=torch.long)].contiguous()

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def dim(self) -> int:
        return int(self.docs.shape[1])

    def bytes_per_document(self) -> float:
        """Stored bytes per document: one float32 vector (doc ids are not counted, as for the sparse index)."""
        return float(self.dim * self.docs.element_size())

    def search(
        self, queries: np.ndarray | torch.Tensor, k: int, batch_size: int = 256
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(doc_id, score)`` per query row, best first (ties by doc_id ascending)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = torch.as_tensor(np.asarray(queries, dtype=np.float32))
        if q.dim() != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (M, {self.dim}), got {tuple(q.shape)}")
        k = min(k, self.num_docs)
        results: list[list[tuple[str, float]]] = []
        if k == 0:
            return [[] for _ in range(q.shape[0])]
        for start in range(0, q.shape[0], batch_size):
            scores = (q[start : start + batch_size] @ self.docs.T).numpy()  # (B, N)
            for row in scores:
                # the k-th value and everything tied with it, then an exact order: score desc, row (= doc_id) asc
                kth = np.partition(row, row.size - k)[row.size - k]
                cols = np.flatnonzero(row >= kth)
                order = np.lexsort((cols, -row[cols]))[:k]
                results.append([(self.doc_ids[c], float(row[c])) for c in cols[order]])
        return results

    def search_run(
        self, query_ids: Sequence[str], queries: np.ndarray | torch.Tensor, k: int, batch_size: int = 256
    ) -> dict[str, dict[str, float]]:
        hits = self.search(queries, k, batch_size)
        if len(hits) != len(query_ids):
            raise ValueError(f"{len(query_ids)} query ids for {len(hits)} query vectors")
        return {str(qid): dict(h) for qid, h in zip(query_ids, hits, strict=True)}
