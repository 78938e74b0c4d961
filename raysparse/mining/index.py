"""The BM25 index: corpus analysis (pure, per batch) and index construction from analysed batches.

Two steps, so that the expensive one runs on many workers and the cheap one once:

1. :func:`analyze_documents` (any worker, any batch): ``title + " " + text`` → analyzer tokens (Kiwi morphemes,
   character bigrams or word pieces) → per document its distinct terms with their counts, its token count and a
   hash of its normalised text. Output rows follow :data:`ANALYSED`; no global state, so batches can be analysed in
   any order, on any node, and retried.
2. :class:`IndexBuilder` (one process): receives analysed batches in corpus order (streaming; it keeps only integer
   term ids per batch plus that batch's own small term dictionary), then merges the dictionaries into one sorted
   vocabulary, takes global document frequencies and computes the BM25 weights (Lucene variant, the same float
   operations as bm25s, so scores equal bm25s' to the last bit of float32) with numpy over all postings at once.

The vocabulary is sorted and term ids follow it, so the index depends only on the corpus rows and their order —
not on how the corpus was cut into batches or which worker analysed which batch.

:class:`Bm25Index` is shared read-only: its arrays are numpy/Arrow buffers that ``ray.put`` maps zero-copy into
every actor of a node; the term → id dict and the doc_id → row lookup are rebuilt lazily where needed.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raysparse.config import MiningConfig
from raysparse.mining.retrieve import score_flat, topk_batch

__all__ = [
    "ANALYSED",
    "Bm25Index",
    "IndexBuilder",
    "analyze_documents",
    "bm25_csc",
    "bm25_weights",
    "document_texts",
    "normalize_for_dedup",
    "token_postings",
]

# One row per document after analysis: its distinct terms (any order) with their counts, and its token count.
ANALYSED = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),  # title + " " + text: what is indexed and emitted
        pa.field("text_hash", pa.uint64(), nullable=False),
        pa.field("length", pa.int32(), nullable=False),  # number of tokens (BM25 document length)
        pa.field("terms", pa.list_(pa.string()), nullable=False),
        pa.field("tfs", pa.list_(pa.int32()), nullable=False),
    ]
)

_SPACES = re.compile(r"\s+")
_WEIGHT_CHUNK = 1 << 22  # postings per bm25_weights call in IndexBuilder.merge (4M: ~100 MB of temporaries)


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


def _list_array(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)


def token_postings(tokens: Sequence[Sequence[str]]) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Per document its distinct terms (list<string>), their counts (list<int32>) and its token count, with one
    ``np.unique`` over the batch's (document, term) keys rather than a Python Counter per document."""
    n = len(tokens)
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=n)
    flat = pa.array(itertools.chain.from_iterable(tokens), type=pa.string())
    encoded = pc.dictionary_encode(flat)
    local = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n_local = max(1, len(encoded.dictionary))
    keys = np.repeat(np.arange(n, dtype=np.int64), lengths) * n_local + local
    uniq, counts = np.unique(keys, return_counts=True)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(uniq // n_local, minlength=n), out=offsets[1:])
    terms = encoded.dictionary.take(pa.array(uniq % n_local))
    return (
        _list_array(offsets, terms),
        _list_array(offsets, pa.array(counts.astype(np.int32), pa.int32())),
        lengths,
    )


def analyze_documents(batch: pa.Table, analyzer: str, hf_tokenizer: str | None = None) -> pa.Table:
    """Analyse a batch of CORPUS rows (``doc_id``, ``text``, optional ``title``) into :data:`ANALYSED` rows."""
    from raysparse.analyzers import get_analyzer

    texts = document_texts(batch)
    text_list = texts.to_pylist()
    terms, tfs, lengths = token_postings(get_analyzer(analyzer, hf_tokenizer)(text_list))
    hashes = np.fromiter((_text_hash(t) for t in text_list), dtype=np.uint64, count=len(text_list))
    return pa.Table.from_arrays(
        [
            batch.column("doc_id").combine_chunks().cast(pa.string()),
            texts.cast(pa.string()),
            pa.array(hashes, pa.uint64()),
            pa.array(lengths.astype(np.int32), pa.int32()),
            terms,
            tfs,
        ],
        schema=ANALYSED,
    )


def bm25_csc(
    doc_tokens: Sequence[Sequence[str]], k1: float, b: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Array]:
    """BM25 weight matrix of token lists: CSC ``(data, indices, indptr)`` (one column per term, rows ascending)
    and the sorted vocabulary (a term's column is its position). The same code builds :class:`Bm25Index`, so
    mining, evaluation and the round-trip filter score with one index construction."""
    builder = IndexBuilder()
    terms, tfs, lengths = token_postings(doc_tokens)
    builder.add_postings(terms, tfs, lengths)
    vocab, csc, _ = builder.merge(k1, b)
    return (*csc, vocab)


def bm25_weights(
    term: np.ndarray,
    tf: np.ndarray,
    doc: np.ndarray,
    lengths: np.ndarray,
    df: np.ndarray,
    k1: float,
    b: float,
) -> np.ndarray:
    """BM25 weight of each posting (Lucene idf, Robertson tf), float32, with bm25s' exact float operations:
    idf rounded to float32, the tf component in float64, their product rounded to float32."""
    n_docs = len(lengths)
    avg_len = lengths.astype(np.int64).mean() if n_docs else 1.0
    idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    tf64 = tf.astype(np.float64)
    denom = k1 * ((1 - b) + b * lengths[doc].astype(np.float64) / avg_len) + tf64
    out = idf[term].astype(np.float64)
    out *= tf64 / denom
    return out.astype(np.float32)


@dataclass
class _Part:
    dictionary: pa.Array  # this batch's distinct terms
    local: np.ndarray  # int32 index into ``dictionary`` per posting
    tf: np.ndarray  # int32 per posting
    n_terms: np.ndarray  # int32 per document


class IndexBuilder:
    """Builds a :class:`Bm25Index` from :data:`ANALYSED` batches added in corpus order (see the module docstring).

    Memory: per posting 8 bytes (term id, count) until :meth:`build`, plus the documents' texts and ids, which the
    index keeps. Only this builder holds them — on a worker when the Ray path is used, never on the driver.
    """

    def __init__(self) -> None:
        self._parts: list[_Part] = []
        self._doc_ids: list[pa.Array] = []
        self._texts: list[pa.Array] = []
        self._hashes: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []

    @property
    def num_docs(self) -> int:
        return int(sum(len(x) for x in self._lengths))

    def add(self, analysed: pa.Table | pa.RecordBatch) -> None:
        if analysed.num_rows == 0:
            return
        table = analysed if isinstance(analysed, pa.Table) else pa.Table.from_batches([analysed])
        self.add_postings(
            table.column("terms").combine_chunks(),
            table.column("tfs").combine_chunks(),
            table.column("length").to_numpy(),
        )
        self._doc_ids.append(table.column("doc_id").combine_chunks())
        self._texts.append(table.column("text").combine_chunks())
        self._hashes.append(table.column("text_hash").to_numpy())

    def add_postings(self, terms: pa.Array, tfs: pa.Array, lengths: np.ndarray) -> None:
        """Documents given as distinct terms (list<string>), counts (list<int32>) and token counts."""
        encoded = pc.dictionary_encode(pc.list_flatten(terms))
        self._parts.append(
            _Part(
                dictionary=encoded.dictionary,
                local=encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32),
                tf=pc.list_flatten(tfs).to_numpy(zero_copy_only=False).astype(np.int32),
                n_terms=pc.list_value_length(terms).to_numpy(zero_copy_only=False).astype(np.int32),
            )
        )
        self._lengths.append(np.asarray(lengths).astype(np.int32))

    def merge(
        self, k1: float, b: float, with_terms: bool = False
    ) -> tuple[pa.Array, tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
        """One sorted vocabulary, global document frequencies, BM25 weights: (vocab, CSC, CSR term lists)."""
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        n_docs = len(lengths)
        all_terms = pa.chunked_array([p.dictionary for p in self._parts], type=pa.string())
        vocab = pc.unique(all_terms)
        vocab = vocab.take(pc.array_sort_indices(vocab))
        term = np.concatenate(
            [
                pc.index_in(p.dictionary, value_set=vocab).to_numpy().astype(np.int32)[p.local]
                for p in self._parts
            ]
            or [np.zeros(0, np.int32)]
        )
        tf = np.concatenate([p.tf for p in self._parts] or [np.zeros(0, np.int32)])
        n_terms = np.concatenate([p.n_terms for p in self._parts] or [np.zeros(0, np.int32)])
        self._parts.clear()
        doc = np.repeat(np.arange(n_docs, dtype=np.int32), n_terms)
        df = np.bincount(term, minlength=len(vocab))
        # in chunks: bm25_weights works in float64 (bm25s' float operations), three temporaries of 8 bytes per
        # posting that would otherwise be the builder's peak at a million passages
        weights = np.empty(len(term), dtype=np.float32)
        for s in range(0, len(term), _WEIGHT_CHUNK):
            e = s + _WEIGHT_CHUNK
            weights[s:e] = bm25_weights(term[s:e], tf[s:e], doc[s:e], lengths, df, k1, b)
        del tf
        # CSC (one column per term, rows ascending): a stable sort by term keeps rows in order within a column
        by_term = np.argsort(term, kind="stable")
        data = weights[by_term].astype(np.float32)
        indices = doc[by_term].astype(np.int32)
        del by_term, weights
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        csr = None
        if with_terms:  # CSR transpose for the near-duplicate check: each document's sorted unique term ids
            key = doc.astype(np.int64) * max(1, len(vocab)) + term
            del doc
            key.sort()
            terms = (key % max(1, len(vocab))).astype(np.int32)
            del key
            term_ptr = np.zeros(n_docs + 1, dtype=np.int64)
            np.cumsum(n_terms, out=term_ptr[1:])
            csr = (terms, term_ptr)
        return vocab, (data, indices, indptr), csr

    def build(self, cfg: MiningConfig) -> Bm25Index:
        if not self._lengths:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        doc_ids = pa.concat_arrays(self._doc_ids).cast(pa.string())
        _check_unique(doc_ids)
        texts = pa.concat_arrays(self._texts).cast(pa.string())
        text_hash = np.concatenate(self._hashes).astype(np.uint64)
        vocab, (data, indices, indptr), csr = self.merge(cfg.bm25_k1, cfg.bm25_b, with_terms=True)
        assert csr is not None
        return Bm25Index(
            analyzer=cfg.analyzer,
            hf_tokenizer=cfg.hf_tokenizer,
            vocab_terms=vocab,
            data=data,
            indices=indices,
            indptr=indptr,
            terms=csr[0],
            term_ptr=csr[1],
            text_hash=text_hash,
            doc_ids=doc_ids,
            texts=texts,
            k1=cfg.bm25_k1,
            b=cfg.bm25_b,
        )


def _check_unique(doc_ids: pa.Array) -> None:
    """Raise ValueError naming the rows of the first duplicate ``doc_id`` (positives would be ambiguous)."""
    if len(pc.unique(doc_ids)) == len(doc_ids):
        return
    first: dict[str, int] = {}
    for row, doc_id in enumerate(doc_ids.to_pylist()):
        if doc_id in first:
            raise ValueError(
                f"corpus row {row}: doc_id {doc_id!r} duplicates row {first[doc_id]} (doc_id must be unique)"
            )
        first[doc_id] = row


@dataclass
class Bm25Index:
    """A BM25 index over a corpus, built once and shared read-only with every worker.

    Arrays (all numpy/Arrow, so ``ray.put`` shares them zero-copy between the actors of a node):
    ``data/indices/indptr`` — CSC matrix of BM25 weights (one column per term, rows ascending);
    ``terms/term_ptr`` — its CSR transpose: each document's sorted unique term ids (near-duplicate check);
    ``text_hash`` — 64-bit hash of each normalised document text; ``doc_ids``/``texts``/``vocab_terms`` — Arrow
    string arrays (``vocab_terms`` sorted; a term's id is its position).
    """

    analyzer: str
    hf_tokenizer: str | None
    vocab_terms: pa.Array
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
    _vocab: dict[str, int] | None = field(default=None, repr=False, compare=False)
    _row_of: dict[str, int] | None = field(default=None, repr=False, compare=False)
    _analyze: Any = field(default=None, repr=False, compare=False)

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def vocab(self) -> dict[str, int]:
        """term → column id (built on first use in each process; not shipped with the index)."""
        if self._vocab is None:
            self._vocab = {t: i for i, t in enumerate(self.vocab_terms.to_pylist())}
        return self._vocab

    @classmethod
    def build(
        cls, corpus: pa.Table, cfg: MiningConfig, show_progress: bool = True, tokenize_batch: int = 1024
    ) -> Bm25Index:
        """Analyse ``corpus`` (CORPUS schema) with ``cfg.analyzer`` in this process and build the index.

        Raises ValueError naming the row of a duplicate ``doc_id``. The Ray path
        (:func:`raysparse.mining.stage.build_index_ray`) runs the same two steps on workers.
        """
        from tqdm.auto import tqdm

        if corpus.num_rows == 0:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        builder = IndexBuilder()
        for start in tqdm(
            range(0, corpus.num_rows, tokenize_batch),
            desc=f"analyse corpus ({cfg.analyzer})",
            unit="batch",
            disable=not show_progress,
        ):
            builder.add(
                analyze_documents(corpus.slice(start, tokenize_batch), cfg.analyzer, cfg.hf_tokenizer)
            )
        return builder.build(cfg)

    @classmethod
    def from_analysed(cls, batches: Iterable[pa.Table | pa.RecordBatch], cfg: MiningConfig) -> Bm25Index:
        """Build from :data:`ANALYSED` batches in corpus order (e.g. a Ray Data stream)."""
        builder = IndexBuilder()
        for batch in batches:
            builder.add(batch)
        return builder.build(cfg)

    def __getstate__(self) -> dict[str, Any]:
        # Lookups and the analyzer are cheap to rebuild and not needed by most workers: don't ship them.
        state = dict(self.__dict__)
        state["_vocab"] = None
        state["_row_of"] = None
        state["_analyze"] = None
        return state

    def row_of(self, doc_id: str) -> int | None:
        if self._row_of is None:
            self._row_of = {d: i for i, d in enumerate(self.doc_ids.to_pylist())}
        return self._row_of.get(doc_id)

    def rows_of(self, doc_ids: pa.Array) -> np.ndarray:
        """Corpus row of each id (-1 where not in the corpus), vectorised (one hash table over the corpus ids)."""
        rows = pc.index_in(doc_ids, value_set=self.doc_ids)
        return pc.fill_null(rows, -1).to_numpy(zero_copy_only=False).astype(np.int64)

    def analyze(self, texts: Sequence[str]) -> list[list[str]]:
        if self._analyze is None:
            from raysparse.analyzers import get_analyzer

            self._analyze = get_analyzer(self.analyzer, self.hf_tokenizer)
        return self._analyze(texts)

    def query_term_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tokenise queries and map tokens to term ids (unknown tokens dropped): flat ids + per-query offsets."""
        get = self.vocab.get
        tokens = self.analyze(texts)
        ids = [[i for i in map(get, t) if i is not None] for t in tokens]
        ptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in ids], out=ptr[1:])
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(ptr[-1]))
        return flat, ptr

    def search(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows and BM25 scores per query (rows -1 where fewer than k documents match)."""
        q_ids, q_ptr = self.query_term_ids(texts)
        return topk_batch(q_ids, q_ptr, self.data, self.indices, self.indptr, self.num_docs, k)

    def score(self, text: str, rows: Sequence[int]) -> np.ndarray:
        """BM25 scores of the given corpus rows for one query."""
        q_ids, q_ptr = self.query_term_ids([text])
        rows_arr = np.asarray(rows, dtype=np.int32)
        rows_ptr = np.asarray([0, len(rows_arr)], dtype=np.int64)
        return score_flat(q_ids, q_ptr, rows_arr, rows_ptr, self.data, self.indices, self.indptr)

    def is_near_duplicate(self, row: int, other: int, threshold: float) -> bool:
        """Same normalised text, or analyzer-term-set Jaccard >= threshold."""
        from raysparse.mining.negatives import jaccard

        if self.text_hash[row] == self.text_hash[other]:
            return True
        return jaccard(self.terms, self.term_ptr, row, other) >= threshold

    def nbytes(self) -> int:
        arrays = (self.data, self.indices, self.indptr, self.terms, self.term_ptr, self.text_hash)
        return int(
            sum(a.nbytes for a in arrays) + self.doc_ids.nbytes + self.texts.nbytes + self.vocab_terms.nbytes
        )
