"""Evaluate BM25, a sparse encoder, or any retriever's run on a :class:`RetrievalData`, and write ``metrics.json``.

Every system goes through the same two steps so their numbers are comparable:

1. vectors -> :class:`SparseIndex` -> run (exact top-k, ties by doc_id), plus the sparsity stats of those vectors;
2. run + qrels -> :func:`compute_metrics` -> :class:`EvalResult` (:func:`evaluate_run` is this step alone: the seam
   for retrievers that produce a run elsewhere, e.g. OpenSearch).

BM25 is expressed in the same vector form: a document's vector holds the BM25 weight of each of its terms (bm25s
computes them with Lucene's formula and ``MiningConfig``'s k1/b), a query's vector holds the count of each analysed
term, and their dot product *is* the BM25 score. So ``avg_*_terms`` and ``flops`` mean the same thing for BM25 and
for the model (for BM25: distinct analysed terms per text).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from raysparse.evaluation.index import SparseIndex, terms_to_csr
from raysparse.evaluation.metrics import DEFAULT_KS, Qrels, Run, compute_metrics, qrels_from_table
from raysparse.schemas import RetrievalData

TermWeights = dict[str, float]


class Encoder(Protocol):
    """What :func:`evaluate_model` needs from a model (``SparseEncoder`` has it; so can a plain test encoder)."""

    def encode_queries(self, texts: Sequence[str], batch_size: int = ...) -> Any: ...

    def encode_documents(self, texts: Sequence[str], batch_size: int = ...) -> Any: ...


@dataclass
class EvalResult:
    """Metrics of one system on one collection, with what the report needs to explain them."""

    system: str
    metrics: dict[
        str, float
    ]  # ndcg@k, mrr@k, recall@k, precision@k, avg_query_terms, avg_doc_terms, flops, num_queries
    per_query: dict[str, dict[str, float]]
    run: dict[str, dict[str, float]]
    query_terms: dict[str, TermWeights] = field(default_factory=dict)  # top terms of each query's vector
    info: dict[str, Any] = field(default_factory=dict)  # skipped queries, data summary, settings

    def to_json(self) -> dict[str, Any]:
        return {"system": self.system, **self.metrics, "info": self.info}


def latency_queries(eval_cfg: Any = None) -> int:
    """How many queries to time at batch 1 (``eval.latency_queries``; 0 = none, the default without a config)."""
    return int(getattr(eval_cfg, "latency_queries", 0) or 0)


def metric_cutoffs(eval_cfg: Any = None) -> tuple[int, ...]:
    """The default cut-offs plus the configured ``k`` and ``recall_k``."""
    extra = (getattr(eval_cfg, "k", 10), getattr(eval_cfg, "recall_k", 100)) if eval_cfg is not None else ()
    return tuple(sorted({*DEFAULT_KS, *extra}))


def document_texts(data: RetrievalData) -> list[str]:
    """``title + " " + text`` when a title exists (the BEIR convention, also what mining indexes)."""
    titles = data.corpus.column("title").to_pylist()
    texts = data.corpus.column("text").to_pylist()
    return [f"{t} {x}" if t else x for t, x in zip(titles, texts, strict=True)]


def evaluate_run(
    run: Run,
    qrels: Qrels | pa.Table | RetrievalData,
    *,
    system: str = "run",
    stats: dict[str, float] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    query_terms: dict[str, TermWeights] | None = None,
) -> EvalResult:
    """Metrics of an existing run; ``stats`` (avg_query_terms, avg_doc_terms, flops) are copied into the metrics.

    This is the seam for retrievers outside this process (OpenSearch): produce ``{qid: {doc_id: score}}``, pass
    the stats you can measure, write with :func:`write_metrics`.
    """
    if isinstance(qrels, RetrievalData):
        qrels = qrels.qrels
    if isinstance(qrels, pa.Table):
        qrels = qrels_from_table(qrels)
    result = compute_metrics(run, qrels, ks)
    metrics: dict[str, float] = dict(result.metrics)
    metrics.update(stats or {})
    metrics["num_queries"] = result.num_queries
    info = {
        "queries_without_results": len(result.queries_without_results),
        "run_queries_without_qrels": result.run_queries_without_qrels,
        "tie_break": "score desc, doc_id asc",
    }
    return EvalResult(
        system, metrics, result.per_query, {q: dict(d) for q, d in run.items()}, query_terms or {}, info
    )


def _evaluate_vectors(
    data: RetrievalData,
    system: str,
    doc_matrix: sp.csr_matrix | np.ndarray,
    query_matrix: sp.csr_matrix | np.ndarray,
    ks: Sequence[int],
    batch_size: int = 64,
    extra_stats: dict[str, float] | None = None,
    query_terms: dict[str, TermWeights] | None = None,
    encode_one: Callable[[str], Any] | None = None,
    latency_queries: int = 0,
) -> EvalResult:
    """Index the documents (a :class:`SparseIndex` for a sparse matrix, a :class:`~raysparse.dense.DenseIndex` for
    dense (N, H) vectors), search every query, compute the metrics, and add the cost columns: index bytes per
    document and, when ``encode_one`` (one query text -> its query vector) and ``latency_queries`` are given, the
    batch-1 latency of encode + search (:mod:`raysparse.evaluation.latency`)."""
    doc_ids = data.corpus.column("doc_id").to_pylist()
    query_ids = data.queries.column("query_id").to_pylist()
    k = max(ks)
    dense = not sp.issparse(doc_matrix)
    if dense:
        from raysparse.dense import DenseIndex

        index: Any = DenseIndex(doc_ids, doc_matrix)
        stats: dict[str, float] = {"index_bytes_per_doc": index.bytes_per_document(), "dim": index.dim}
    else:
        index = SparseIndex(doc_ids, doc_matrix)
        stats = index.stats(query_matrix)
        docs = index.docs
        stats["index_bytes_per_doc"] = float(
            docs.data.nbytes + docs.indices.nbytes + docs.indptr.nbytes
        ) / max(index.num_docs, 1)
    run = index.search_run(query_ids, query_matrix, k=k, batch_size=batch_size)
    stats.update(extra_stats or {})
    latency: dict[str, Any] = {}
    if encode_one is not None and latency_queries > 0:
        from raysparse.evaluation.latency import measure_latency, threads_info

        latency = measure_latency(
            lambda text: index.search(encode_one(text), k),
            data.queries.column("text").to_pylist(),
            latency_queries,
        )
        if latency:
            stats.update({name: latency[name] for name in ("latency_p50_ms", "latency_p99_ms")})
            latency.update(threads_info())
    result = evaluate_run(run, data.qrels, system=system, stats=stats, ks=ks, query_terms=query_terms)
    result.info.update(
        {"data": data.summary(), "reports": [str(r) for r in data.reports], "num_docs": index.num_docs}
    )
    if latency:
        result.info["latency"] = latency
    return result


# ------------------------------------------------------------------------------------------------ BM25
def bm25_document_matrix(
    doc_tokens: Sequence[Sequence[str]], k1: float, b: float
) -> tuple[sp.csr_matrix, dict[str, int]]:
    """(num_docs, vocab) BM25 weights (Lucene variant, bm25s' float operations) and its term -> column vocabulary:
    the index construction mining uses (:func:`raysparse.mining.index.bm25_csc`), so both score alike."""
    from raysparse.mining.index import bm25_csc

    data, indices, indptr, terms = bm25_csc(doc_tokens, k1, b)
    vocab = {str(t): i for i, t in enumerate(terms.to_pylist())}
    csc = sp.csc_matrix((data, indices, indptr), shape=(len(doc_tokens), len(vocab)))
    return csc.tocsr(), vocab


def evaluate_bm25(
    data: RetrievalData,
    analyzer: str = "kiwi",
    eval_cfg: Any = None,
    *,
    k1: float | None = None,
    b: float | None = None,
    show_progress: bool = True,
    analyze: Callable[[Sequence[str]], list[list[str]]] | None = None,
    translate: Callable[[list[list[str]]], list[dict[str, float]]] | None = None,
    system: str | None = None,
) -> EvalResult:
    """BM25 (bm25s, ``raysparse.analyzers``; k1/b default to ``MiningConfig``'s) on ``data``.

    ``analyze`` replaces the named analyzer (e.g. a model's word pieces, :func:`model_piece_analyzer`);
    ``translate`` maps each query's analysed terms to weighted terms in the documents' language (BM25 over
    dictionary-translated queries, :mod:`raysparse.evaluation.translated`).
    """
    from tqdm.auto import tqdm

    from raysparse.analyzers import get_analyzer
    from raysparse.config import MiningConfig

    defaults = MiningConfig()
    k1 = defaults.bm25_k1 if k1 is None else k1
    b = defaults.bm25_b if b is None else b
    if analyze is None:
        analyze = get_analyzer(analyzer)
    docs = document_texts(data)
    doc_tokens: list[list[str]] = []
    for start in tqdm(
        range(0, len(docs), 512), desc=f"analyse corpus ({analyzer})", disable=not show_progress
    ):
        doc_tokens.extend(analyze(docs[start : start + 512]))
    query_tokens = analyze(data.queries.column("text").to_pylist())
    doc_matrix, vocab = bm25_document_matrix(doc_tokens, k1, b)
    query_ids = data.queries.column("query_id").to_pylist()
    query_terms: dict[str, TermWeights] = {}
    if translate is not None:
        weighted = translate(query_tokens)
        query_matrix = terms_to_csr(weighted, vocab, grow=False)
        avg_q = float(np.mean([len(w) for w in weighted])) if weighted else 0.0
        query_terms = dict(zip(query_ids, weighted, strict=True))
    else:
        query_matrix = terms_to_csr(query_tokens, vocab, grow=False)
        # Distinct analysed terms, including those no document has (they cost a lookup, even if they score nothing).
        avg_q = float(np.mean([len(set(t)) for t in query_tokens])) if query_tokens else 0.0
        for qid, tokens in zip(query_ids, query_tokens, strict=True):
            counts: TermWeights = {}
            for t in tokens:
                counts[t] = counts.get(t, 0.0) + 1.0
            query_terms[qid] = counts

    def encode_one(text: str) -> sp.csr_matrix:
        tokens = analyze([text])
        return terms_to_csr(translate(tokens) if translate is not None else tokens, vocab, grow=False)

    result = _evaluate_vectors(
        data,
        system or f"bm25-{analyzer}",
        doc_matrix,
        query_matrix,
        metric_cutoffs(eval_cfg),
        extra_stats={"avg_query_terms": avg_q},
        query_terms=query_terms,
        encode_one=encode_one,
        latency_queries=latency_queries(eval_cfg),
    )
    result.info.update({"analyzer": analyzer, "k1": k1, "b": b})
    return result


def model_piece_analyzer(model: Any) -> Callable[[Sequence[str]], list[list[str]]]:
    """The model's own terms as a BM25 analyzer: its pre-tokenisation and word pieces, only the pieces its lexical
    part counts (function morphemes, punctuation and special tokens out). BM25 over these, with the evaluated
    corpus's own statistics, is what the untrained encoder's lexical part approximates."""
    import torch

    from raysparse.encoding import pretokenize

    encoder = load_encoder(model)
    tokenizer = encoder.tokenizer
    lexical = getattr(encoder, "lexical", None)
    keep = lexical.piece_mask.cpu() > 0 if lexical is not None else encoder.keep_mask.cpu() > 0

    def analyze(texts: Sequence[str]) -> list[list[str]]:
        pieces = tokenizer(pretokenize(list(texts), encoder.spec.pretokenize), add_special_tokens=False)
        out = []
        for ids in pieces["input_ids"]:
            kept = [i for i in ids if i < len(keep) and bool(keep[i])]
            out.append([str(i) for i in torch.as_tensor(kept, dtype=torch.long).tolist()])
        return out

    return analyze


# ------------------------------------------------------------------------------------------------ sparse encoder
def _to_csr(reps: Any) -> sp.csr_matrix:
    if sp.issparse(reps):
        return sp.csr_matrix(reps, dtype=np.float32)
    if hasattr(reps, "detach"):
        reps = reps.detach().float().cpu()
        if reps.is_sparse:
            reps = reps.to_dense()
        reps = reps.numpy()
    return sp.csr_matrix(np.asarray(reps, dtype=np.float32))


def encode_sparse(
    encode: Callable[..., Any],
    texts: Sequence[str],
    batch_size: int,
    chunk: int = 1024,
    desc: str = "encode",
    **encode_kwargs: Any,
) -> sp.csr_matrix:
    """Encode in chunks and keep only the non-zeros, so a (N, V) dense matrix never exists for a large corpus."""
    from tqdm.auto import tqdm

    texts = list(texts)
    parts = [
        _to_csr(encode(texts[start : start + chunk], batch_size=batch_size, **encode_kwargs))
        for start in tqdm(range(0, len(texts), chunk), desc=desc, disable=len(texts) <= chunk)
    ]
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, 0), dtype=np.float32)


def load_encoder(model_or_dir: Encoder | str | Path) -> Encoder:
    """A model object as is; a directory as a :class:`~raysparse.dense.DenseEncoder` when it is a dense one
    (``raysparse.json`` kind dense, or a sentence-transformers layout), else a ``SparseEncoder``."""
    if isinstance(model_or_dir, str | Path):
        from raysparse.dense import DenseEncoder, is_dense_dir

        if Path(model_or_dir).is_dir() and is_dense_dir(model_or_dir):
            return DenseEncoder.from_pretrained(model_or_dir)
        from raysparse.model import SparseEncoder

        return SparseEncoder.from_pretrained(model_or_dir)
    return model_or_dir


def is_dense(model: Any) -> bool:
    """Whether an encoder returns dense vectors (scored by :class:`~raysparse.dense.DenseIndex`)."""
    return getattr(model, "kind", "sparse") == "dense"


def term_names(model: Any, reps: sp.csr_matrix, top_k: int = 20) -> list[TermWeights]:
    """Each row's ``top_k`` terms by weight, named by the model's tokenizer (ids as strings without one)."""
    tokenizer = getattr(model, "tokenizer", None)
    out: list[TermWeights] = []
    for row in range(reps.shape[0]):
        lo, hi = reps.indptr[row], reps.indptr[row + 1]
        cols, vals = reps.indices[lo:hi], reps.data[lo:hi]
        order = np.lexsort((cols, -vals))[:top_k]
        ids = [int(c) for c in cols[order]]
        names = tokenizer.convert_ids_to_tokens(ids) if tokenizer is not None else [str(i) for i in ids]
        out.append({str(n): float(v) for n, v in zip(names, vals[order], strict=True)})
    return out


def evaluate_model(
    model_or_dir: Encoder | str | Path,
    data: RetrievalData,
    eval_cfg: Any = None,
    *,
    system: str = "model",
    max_query_length: int | None = None,
    max_doc_length: int | None = None,
) -> EvalResult:
    """A sparse encoder (a ``SparseEncoder`` directory or any object with ``encode_queries``/``encode_documents``).

    ``max_*_length`` (tokens) are passed to the encoder only when given, so encoders without that option work too;
    use the lengths the model was trained with (``ModelConfig.max_query_length`` / ``max_doc_length``).
    """
    model = load_encoder(model_or_dir)
    if is_dense(model):
        return _evaluate_dense_model(
            model, model_or_dir, data, eval_cfg, system, max_query_length, max_doc_length
        )
    spec = getattr(model, "spec", None)
    if spec is not None and spec.lexical_statistics == "corpus":  # BM25 statistics of the searched corpus
        model = model.with_corpus_statistics(document_texts(data))
    batch_size = int(getattr(eval_cfg, "batch_size", 32))
    doc_kwargs = {} if max_doc_length is None else {"max_length": max_doc_length}
    query_kwargs = {} if max_query_length is None else {"max_length": max_query_length}
    doc_matrix = encode_sparse(
        model.encode_documents, document_texts(data), batch_size, desc="encode corpus", **doc_kwargs
    )
    query_matrix = encode_sparse(
        model.encode_queries,
        data.queries.column("text").to_pylist(),
        batch_size,
        desc="encode queries",
        **query_kwargs,
    )
    width = max(doc_matrix.shape[1], query_matrix.shape[1])
    doc_matrix.resize((doc_matrix.shape[0], width))
    query_matrix.resize((query_matrix.shape[0], width))
    query_ids = data.queries.column("query_id").to_pylist()
    query_terms = dict(zip(query_ids, term_names(model, query_matrix), strict=True))
    result = _evaluate_vectors(
        data,
        system,
        doc_matrix,
        query_matrix,
        metric_cutoffs(eval_cfg),
        query_terms=query_terms,
        encode_one=lambda text: _resized(
            _to_csr(model.encode_queries([text], batch_size=1, **query_kwargs)), width
        ),
        latency_queries=latency_queries(eval_cfg),
    )
    if isinstance(model_or_dir, str | Path):
        result.info["model_dir"] = str(model_or_dir)
    return result


def _resized(matrix: sp.csr_matrix, width: int) -> sp.csr_matrix:
    matrix.resize((matrix.shape[0], width))
    return matrix


def _evaluate_dense_model(
    model: Any,
    model_or_dir: Any,
    data: RetrievalData,
    eval_cfg: Any,
    system: str,
    max_query_length: int | None,
    max_doc_length: int | None,
) -> EvalResult:
    """:func:`evaluate_model` for a dense encoder: the same data, cut-offs, metrics and cost columns, exact inner
    product over (N, H) vectors instead of posting lists (no term statistics: a dense vector has no terms)."""
    batch_size = int(getattr(eval_cfg, "batch_size", 32))
    doc_kwargs = {} if max_doc_length is None else {"max_length": max_doc_length}
    query_kwargs = {} if max_query_length is None else {"max_length": max_query_length}
    docs = model.encode_documents(document_texts(data), batch_size=batch_size, **doc_kwargs).numpy()
    queries = model.encode_queries(
        data.queries.column("text").to_pylist(), batch_size=batch_size, **query_kwargs
    )
    result = _evaluate_vectors(
        data,
        system,
        docs,
        queries.numpy(),
        metric_cutoffs(eval_cfg),
        encode_one=lambda text: model.encode_queries([text], batch_size=1, **query_kwargs).numpy(),
        latency_queries=latency_queries(eval_cfg),
    )
    result.info.update({"kind": "dense", "pooling": model.pooling, "normalize": model.normalize})
    if isinstance(model_or_dir, str | Path):
        result.info["model_dir"] = str(model_or_dir)
    return result


# ------------------------------------------------------------------------------------------------ output
def write_metrics(result: EvalResult | dict[str, Any], path: str | Path, **extra: Any) -> Path:
    """Write ``metrics.json`` (``path`` is the file, or a directory to put it in); returns the file's path."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = result.to_json() if isinstance(result, EvalResult) else dict(result)
    payload.update(extra)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_run(result: EvalResult, path: str | Path, depth: int = 100) -> Path:
    """The run in TREC format (``qid Q0 doc_id rank score system``), ranked with the same tie rule as the metrics."""
    from raysparse.evaluation.metrics import rank_documents

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for qid in sorted(result.run):
            scores = result.run[qid]
            for rank, doc_id in enumerate(rank_documents(scores)[:depth], 1):
                fh.write(f"{qid} Q0 {doc_id} {rank} {scores[doc_id]:.6f} {result.system}\n")
    return path
