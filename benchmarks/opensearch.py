"""OpenSearch benchmark: index size vs BM25, bulk docs/s, query p50/p99 + QPS from a second process, nDCG@10 per mode.

    python benchmarks/opensearch.py --url http://127.0.0.1:9200 --model OUT/model [--dense OUT/dense/model]

Corpus: the 235 KLUE-MRC ODQA passages pooled with distractors (soynlp news lines, dated petitions) from
../shared/data; dev set: the 240 KLUE questions (qrels -> their passage). Every variant has its own index, built
from vectors encoded once in this process, so sizes compare like for like (every index keeps the text in _source):

- BM25: the pre-analysed BM25 field (char bigrams), no vectors.
- bi-encoder sparse: documents and queries through the trained SparseEncoder (``--model``); the query latency
  includes encoding the query with the transformer, in the query process.
- inference-free sparse: the same model in inference-free mode (``query_mode=inference_free``): queries are the
  query's own pieces weighted by the corpus IDF (no transformer at search time); documents carry the term-frequency
  part, the transformer part and the translations (``translation_side`` moves to the documents).
- pruned variants: documents pruned to their top-k terms at indexing (``--doc-top-k``); queries pruned to their
  top-k terms (``--query-top-k``); a two-phase query (core OpenSearch ``rescore``): the top ``--first-phase-terms``
  query terms retrieve, then the ``--rescore-window`` best are re-scored with the full query vector.
- hybrid: 0.3 x min-max BM25 + 0.7 x min-max sparse (raysparse.fusion.fuse_min_max, 2 requests per query).
- dense (``--dense DIR``, a raysparse.dense model): a ``knn_vector`` field searched by the k-NN plugin's Lucene
  HNSW engine (inner product; start the node with ``scripts/opensearch.sh start --with-knn``), the same vectors
  searched exactly in process (``DenseIndex``) so HNSW's own loss shows, and the BM25 + dense hybrid. Without the
  plugin the table says so instead of a row.

Without ``--model`` the sparse rows use the model-free ``lexical_term_weights`` (char bigrams, no IDF: a plumbing
check) and the inference-free rows are left out. nDCG@10 is computed from OpenSearch's own top-100 for every row;
latency/QPS from one request per query (top-10) sent by a *separate* (spawned) process with ``--concurrency`` threads.

Writes benchmarks/results/opensearch.md (a table; all numbers from one run on one machine) with the command.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opensearch_common import add_common_args, load_average, load_corpus, machine_line, server_version

# goal of issue 15: inference-free p99 <= 1.2x BM25, index <= 3x BM25, at <= 0.01 nDCG@10 loss
GOAL_P99 = 1.2
GOAL_SIZE = 3.0
GOAL_LOSS = 0.01
DENSE_FIELD = "vector"


@dataclass(frozen=True)
class Row:
    """One benchmark row: which index, which query encoder, how the query is built."""

    label: str
    index: str | None  # sparse index key ("bi", "if", ...); None for BM25 alone
    encoder: str | None = None  # "bi" or "if" query encoder
    bm25: bool = False  # BM25 list (alone, or fused with the sparse list = hybrid)
    query_top_k: int | None = None
    first_phase: int | None = None  # two-phase: terms of the first phase
    window: int = 100  # two-phase: rescore window


# --------------------------------------------------------------------------------------------- request bodies
def request_bodies(
    row: Row, text: str, encoders: dict[str, Callable], indices: dict[str, str], size: int
) -> list[tuple[str, dict[str, Any]]]:
    """The (index, body) requests of one query for ``row``: BM25 and/or sparse (pruned / two-phase)."""
    from raysparse.opensearch import bm25_query, prune_query, sparse_query

    out: list[tuple[str, dict[str, Any]]] = []
    if row.encoder == "dense":
        vector = encoders["dense"]([text])[0]
        out.append((indices["dense"], {"size": size, "_source": False, "query": knn_query(vector, size)}))
    elif row.index is not None:
        weights = encoders[row.encoder]([text])[0]
        if row.query_top_k:
            weights = prune_query(weights, max_terms=row.query_top_k)
        body: dict[str, Any] = {"size": size, "_source": False}
        if row.first_phase:
            body["query"] = sparse_query(prune_query(weights, max_terms=row.first_phase))
            body["rescore"] = {
                "window_size": max(row.window, size),
                "query": {
                    "rescore_query": sparse_query(weights),
                    "query_weight": 0.0,
                    "rescore_query_weight": 1.0,
                },
            }
        else:
            body["query"] = sparse_query(weights)
        out.append((indices[row.index], body))
    if row.bm25:
        out.append((indices["bm25"], {"size": size, "_source": False, "query": bm25_query(text)}))
    return out


def dense_mapping(dim: int) -> dict[str, Any]:
    """A ``knn_vector`` field in the k-NN plugin's Lucene HNSW (inner product: the model's own score; the faiss
    engine needs a native library the Maven zip lacks, measured in scripts/opensearch.sh)."""
    method = {
        "name": "hnsw",
        "space_type": "innerproduct",
        "engine": "lucene",
        "parameters": {"m": 16, "ef_construction": 100},
    }
    return {
        "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {
            "properties": {
                "doc_id": {"type": "keyword"},
                "text": {"type": "text", "index": False},
                DENSE_FIELD: {"type": "knn_vector", "dimension": dim, "method": method},
            }
        },
    }


def knn_query(vector: Sequence[float], k: int) -> dict[str, Any]:
    return {"knn": {DENSE_FIELD: {"vector": list(vector), "k": k}}}


def top10_overlap(run: dict[str, dict[str, float]], exact: dict[str, dict[str, float]]) -> float:
    """Mean fraction of exact search's top 10 that ``run``'s top 10 holds (HNSW recall@10 against exact)."""

    def top(hits: dict[str, float]) -> set[str]:
        return set(sorted(hits, key=lambda d: (-hits[d], d))[:10])

    shares = [len(top(run.get(q, {})) & top(hits)) / max(1, len(top(hits))) for q, hits in exact.items()]
    return sum(shares) / max(1, len(shares))


def combine(row: Row, responses: Sequence[dict[str, Any]]) -> dict[str, float]:
    """One query's hit list from its responses (hybrid: the one fusion function)."""
    from raysparse.fusion import fuse_min_max

    lists = []
    for r in responses:
        if "error" in r:
            raise RuntimeError(f"{row.label}: search failed: {r['error']}")
        lists.append({h["_id"]: float(h["_score"]) for h in r["hits"]["hits"]})
    if len(lists) == 2:
        sparse, bm25 = lists
        return fuse_min_max(bm25, sparse, 0.3)
    return lists[0]


def _memoized(encoder: Callable) -> Callable:
    """``encoder`` with a cache per text (nDCG runs send the same query through several rows)."""
    cache: dict[str, dict[str, float]] = {}

    def encode(texts):
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            cache.update(zip(missing, encoder(missing), strict=True))
        return [cache[t] for t in texts]

    return encode


def load_encoders(model_dirs: dict[str, str | None]) -> dict[str, Callable]:
    """Query encoders by key: a saved SparseEncoder dir each, or None for the model-free lexical weights; the key
    "dense" is a dense bi-encoder (texts -> lists of floats)."""
    import torch

    from raysparse.opensearch import lexical_term_weights, model_query_encoder

    torch.set_num_threads(1)  # two client threads share two cores with the server
    out: dict[str, Callable] = {}
    for key, d in model_dirs.items():
        if key == "dense":
            from raysparse.dense import DenseEncoder

            dense = DenseEncoder.from_pretrained(d).eval()
            out[key] = lambda texts, m=dense: m.encode_queries(list(texts), batch_size=1).tolist()
        else:
            out[key] = model_query_encoder(d) if d else lexical_term_weights
    return out


# --------------------------------------------------------------------------------------------- measurements
def run_row(client, row, queries: dict[str, str], encoders, indices) -> dict[str, dict[str, float]]:
    """{qid: {doc_id: score}} from OpenSearch's own top-100 (msearch, 32 queries per request)."""
    items = list(queries.items())
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(items), 32):
        chunk = items[start : start + 32]
        lines: list[dict[str, Any]] = []
        per_query = []
        for _, text in chunk:
            bodies = request_bodies(row, text, encoders, indices, size=100)
            per_query.append(len(bodies))
            for index, body in bodies:
                lines += [{"index": index}, body]
        responses = client.msearch(body=lines)["responses"]
        pos = 0
        for (qid, _), n in zip(chunk, per_query, strict=True):
            run[qid] = combine(row, responses[pos : pos + n])
            pos += n
    return run


def _query_worker(url, rows, indices, model_dirs, texts, concurrency, conn):
    """Runs in a second process: every query through every row, one request (or two: hybrid) per query and row.

    Rows are interleaved (each query visits the rows in a rotating order), so load from other jobs on the shared
    machine falls on every row alike instead of on whichever row happened to run during a busy minute.
    """
    from raysparse.opensearch import make_client

    client = make_client(url=url)
    encoders = load_encoders(model_dirs)

    def one(row, text):
        t0 = time.perf_counter()
        combine(
            row, [client.search(index=i, body=b) for i, b in request_bodies(row, text, encoders, indices, 10)]
        )
        return time.perf_counter() - t0

    def visit(item):
        n, text = item
        order = list(range(len(rows)))
        order = order[n % len(rows) :] + order[: n % len(rows)]
        return {i: one(rows[i], text) for i in order}

    for item in enumerate(texts[:5]):  # warm-up: caches, JIT, first model calls
        visit(item)
    with ThreadPoolExecutor(concurrency) as pool:
        timings = list(pool.map(visit, enumerate(texts)))
    conn.send([[t[i] for t in timings] for i in range(len(rows))])


def measure_latency(url, rows, indices, model_dirs, texts, concurrency) -> list[tuple[float, float, float]]:
    """(p50 ms, p99 ms, QPS) per row over ``texts``, from one spawned process.

    QPS is the closed-loop throughput ``concurrency / mean latency`` (Little's law): the rows share the run's wall
    time, so it cannot be read from the wall clock per row.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_query_worker, args=(url, rows, indices, model_dirs, texts, concurrency, child))
    proc.start()
    per_row = parent.recv()
    proc.join()
    out = []
    for latencies in per_row:
        lat = sorted(latencies)
        p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
        out.append((statistics.median(lat) * 1000, p99 * 1000, concurrency / statistics.mean(lat)))
    return out


# --------------------------------------------------------------------------------------------- models
def prepare_models(model_dir: str, texts: list[str], work: Path) -> dict[str, str]:
    """The trained model (BM25 statistics refitted on this corpus when its spec says so, as evaluation does) and its
    inference-free twin (query weights = the corpus IDF of the lexical part), saved under ``work``."""
    from raysparse.model import SparseEncoder

    model = SparseEncoder.from_pretrained(model_dir)
    if model.lexical is None:
        raise SystemExit(f"{model_dir}: the inference-free variant needs a model with a BM25 lexical part")
    if model.spec.lexical_statistics == "corpus":
        model = model.with_corpus_statistics(texts)
    model.save_pretrained(work / "bi")
    free = SparseEncoder.from_pretrained(
        work / "bi", query_mode="inference_free", query_weights=model.lexical.idf.detach().clone()
    )
    free.save_pretrained(work / "if")
    return {"bi": str(work / "bi"), "if": str(work / "if")}


def encode_documents_both(model_dirs: dict[str, str], texts: list[str], batch_size: int = 16):
    """Bi-encoder and inference-free document vectors from ONE transformer pass per batch.

    The two models share the transformer; only the lexical part differs (BM25 with IDF and no translations for the
    bi-encoder; term-frequency part plus document-side translations for inference-free), so the pooled transformer
    part is computed once and each model's own lexical part added to it, as ``SparseEncoder.encode_batch`` does.
    """
    import torch

    from raysparse.model import SparseEncoder, prune

    bi = SparseEncoder.from_pretrained(model_dirs["bi"]).eval()
    free = SparseEncoder.from_pretrained(model_dirs["if"]).eval()
    out: dict[str, list[dict[str, float]]] = {"bi": [], "if": []}
    lexical = bi.lexical
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = bi.tokenize_texts(texts[start : start + batch_size], is_query=False)
            bi.lexical = None  # encode_batch without a lexical part: the pooled transformer part alone
            try:
                pooled = bi.encode_batch(batch, is_query=False).float()
            finally:
                bi.lexical = lexical
            counts = bi.lexical_counts(batch.lexical_ids).float()
            for key, model in (("bi", bi), ("if", free)):
                reps = model.neural_weight * pooled + model._lexical_reps(counts, is_query=False)
                reps = prune(reps, model.spec.doc_top_k, model.spec.threshold)
                out[key] += model.to_term_weights(reps)
            print(f"encoded {min(start + batch_size, len(texts))}/{len(texts)} documents", flush=True)
    return out


# --------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, petitions=1500, out_name="opensearch.md")
    ap.add_argument(
        "--index", default="raysparse-bench", help="prefix of the benchmark's indices (deleted after)"
    )
    ap.add_argument(
        "--model", metavar="DIR", help="trained SparseEncoder dir (default: model-free lexical weights)"
    )
    ap.add_argument("--model-note", default="", help="how the model was made (printed in the table)")
    ap.add_argument(
        "--dense",
        metavar="DIR",
        help="a dense bi-encoder dir (raysparse.dense): adds knn_vector rows (node started with --with-knn)",
    )
    ap.add_argument("--doc-top-k", type=int, default=64, help="terms kept per document in the pruned index")
    ap.add_argument("--query-top-k", type=int, default=8, help="terms kept per query in the query-pruned row")
    ap.add_argument(
        "--first-phase-terms", type=int, default=4, help="two-phase: query terms of the first phase"
    )
    ap.add_argument(
        "--rescore-window", type=int, default=100, help="two-phase: hits re-scored with the full vector"
    )
    ap.add_argument("--concurrency", type=int, default=2, help="client threads in the query process")
    ap.add_argument(
        "--latency-queries", type=int, default=240, help="queries timed per row (all rows interleaved)"
    )
    ap.add_argument("--work", metavar="DIR", help="where the derived model copies go (default: a temp dir)")
    args = ap.parse_args()

    from raysparse.analyzers import bigram_analyzer
    from raysparse.evaluation import compute_metrics, qrels_from_table
    from raysparse.opensearch import (
        SPARSE_FIELD,
        bulk_index,
        create_index,
        document_body,
        index_mapping,
        installed_plugins,
        lexical_term_weights,
        make_client,
    )

    data = load_corpus(Path(args.shared), args.petitions)
    rows = data.corpus.to_pylist()
    texts = [f"{r['title']} {r['text']}" if r.get("title") else r["text"] for r in rows]
    client = make_client(url=args.url)
    version = server_version(client)
    load_before = load_average()
    work = Path(args.work or tempfile.mkdtemp(prefix="raysparse-bench-"))
    model_dirs: dict[str, str | None] = (
        prepare_models(args.model, texts, work) if args.model else {"bi": None}
    )

    # 1) encode once per document encoder (timed), 2) bulk each variant into its own index (timed)
    encode_rows: list[tuple[str, float]] = []
    doc_vectors: dict[str, list[dict[str, float]]] = {}
    t0 = time.perf_counter()
    tokens = bigram_analyzer(texts)
    encode_rows.append(("BM25 field (char bigrams)", time.perf_counter() - t0))
    t0 = time.perf_counter()
    if args.model:
        doc_vectors.update(encode_documents_both(model_dirs, texts))
        encode_rows.append(
            ("bi-encoder + inference-free documents (one transformer pass)", time.perf_counter() - t0)
        )
    else:
        doc_vectors["bi"] = lexical_term_weights(texts)
        encode_rows.append(("lexical weights (char bigrams)", time.perf_counter() - t0))
    if "if" in doc_vectors:
        k = args.doc_top_k
        doc_vectors[f"if-top{k}"] = [
            dict(sorted(v.items(), key=lambda kv: -kv[1])[:k]) for v in doc_vectors["if"]
        ]

    dense_note = ""
    dense_vectors = None
    if args.dense and "opensearch-knn" not in installed_plugins(client):
        dense_note = "not measured: the k-NN plugin is not loaded in this node (scripts/opensearch.sh start --with-knn)"
    elif args.dense:
        from raysparse.dense import DenseEncoder

        dense = DenseEncoder.from_pretrained(args.dense).eval()
        t0 = time.perf_counter()
        dense_vectors = dense.encode_documents(texts, batch_size=16)
        encode_rows.append((f"dense documents ({dense.dim} dimensions)", time.perf_counter() - t0))
        model_dirs["dense"] = args.dense

    indices = {"bm25": f"{args.index}-bm25", **{key: f"{args.index}-{key}" for key in doc_vectors}}
    index_rows: list[
        tuple[str, str, int, float, float, float]
    ] = []  # label, key, docs, seconds, MB, terms/doc
    labels = {
        "bm25": "BM25 (bigram field, no vectors)",
        "bi": "bi-encoder sparse" if args.model else "sparse (model-free lexical weights)",
        "if": "inference-free sparse",
        f"if-top{args.doc_top_k}": f"inference-free, documents pruned to top-{args.doc_top_k} terms",
    }
    for key, index in indices.items():
        if key == "bm25":
            bodies = [{**document_body(r, {}, t)[0]} for r, t in zip(rows, tokens, strict=True)]
            for b in bodies:
                b.pop(SPARSE_FIELD)
        else:
            bodies = [document_body(r, w, None)[0] for r, w in zip(rows, doc_vectors[key], strict=True)]
        create_index(client, index, index_mapping(with_date=True), recreate=True)
        report = bulk_index(client, index, bodies)
        client.indices.forcemerge(index=index, max_num_segments=1)
        size = (
            client.indices.stats(index=index)["indices"][index]["primaries"]["store"]["size_in_bytes"] / 1e6
        )
        terms = statistics.mean(len(b.get(SPARSE_FIELD, {})) for b in bodies)
        index_rows.append((labels[key], key, report.indexed, report.seconds, size, terms))
        print(f"indexed {key}: {report.indexed} docs in {report.seconds:.0f} s, {size:.1f} MB", flush=True)

    if dense_vectors is not None:
        indices["dense"] = f"{args.index}-dense"
        bodies = [
            {"doc_id": r["doc_id"], "text": t, DENSE_FIELD: v}
            for r, t, v in zip(rows, texts, dense_vectors.tolist(), strict=True)
        ]
        if client.indices.exists(index=indices["dense"]):
            client.indices.delete(index=indices["dense"])
        client.indices.create(index=indices["dense"], body=dense_mapping(int(dense_vectors.shape[1])))
        report = bulk_index(client, indices["dense"], bodies)
        client.indices.forcemerge(index=indices["dense"], max_num_segments=1)
        stats = client.indices.stats(index=indices["dense"])["indices"][indices["dense"]]
        size = stats["primaries"]["store"]["size_in_bytes"] / 1e6
        index_rows.append(("dense (knn_vector, Lucene HNSW; terms/doc = dimensions)", "dense", report.indexed,
                           report.seconds, size, float(dense_vectors.shape[1])))  # fmt: skip
        print(f"indexed dense: {report.indexed} docs in {report.seconds:.0f} s, {size:.1f} MB", flush=True)

    qk, fp, win = args.query_top_k, args.first_phase_terms, args.rescore_window
    sparse_name = "bi-encoder" if args.model else "sparse"
    bench: list[Row] = [
        Row("BM25 (bigram field)", None, bm25=True),
        Row(sparse_name, "bi", "bi"),
        Row(f"{sparse_name}, query pruned to top-{qk} terms", "bi", "bi", query_top_k=qk),
        Row(
            f"{sparse_name}, two-phase: top-{fp} terms, rescore top-{win}",
            "bi",
            "bi",
            first_phase=fp,
            window=win,
        ),
    ]
    if args.model:
        bench += [
            Row("inference-free", "if", "if"),
            Row(f"inference-free, documents pruned to top-{args.doc_top_k}", f"if-top{args.doc_top_k}", "if"),
            Row(
                f"inference-free, two-phase: top-{fp} terms, rescore top-{win}",
                "if",
                "if",
                first_phase=fp,
                window=win,
            ),
        ]
    bench.append(Row(f"hybrid 0.3·BM25 + 0.7·{sparse_name}", "bi", "bi", bm25=True))
    if args.model:
        bench.append(Row("hybrid 0.3·BM25 + 0.7·inference-free", "if", "if", bm25=True))

    if dense_vectors is not None:
        bench += [
            Row("dense (knn_vector, Lucene HNSW)", "dense", "dense"),
            Row("hybrid 0.3·BM25 + 0.7·dense", "dense", "dense", bm25=True),
        ]

    queries = dict(
        zip(data.queries.column("query_id").to_pylist(), data.queries.column("text").to_pylist(), strict=True)
    )
    qrels = qrels_from_table(data.qrels)
    if dense_vectors is not None:  # the same vectors searched exactly: what HNSW's approximation costs
        from raysparse.dense import DenseIndex

        q_vectors = dense.encode_queries(list(queries.values()))
        exact = DenseIndex([r["doc_id"] for r in rows], dense_vectors).search_run(
            list(queries), q_vectors, k=100
        )
        dense_note = (
            f"`--dense` model: {dense.dim} dimensions; HNSW m=16, ef_construction=100, k = size of the request. "
            f"The same vectors searched exactly in process (DenseIndex): nDCG@10 "
            f"{compute_metrics(exact, qrels).metrics['ndcg@10']:.4f}."
        )
    encoders = {k: _memoized(f) for k, f in load_encoders(model_dirs).items()}  # one encoding per query
    ndcgs = []
    for row in bench:
        run = run_row(client, row, queries, encoders, indices)
        ndcgs.append(compute_metrics(run, qrels).metrics["ndcg@10"])
        print(f"{row.label}: nDCG@10 {ndcgs[-1]:.4f}", flush=True)
        if row.encoder == "dense" and not row.bm25:
            dense_note += (
                f" HNSW's top 10 holds {top10_overlap(run, exact):.2f} of exact search's top 10 (mean over "
                "queries): a weakly trained encoder's vectors are close together (inner products within a few "
                "hundredths), which is where HNSW's graph search misses neighbours."
            )
    texts_q = list(queries.values())[: args.latency_queries]
    timings = measure_latency(args.url, bench, indices, model_dirs, texts_q, args.concurrency)
    results = [(row, ndcg, *t) for row, ndcg, t in zip(bench, ndcgs, timings, strict=True)]
    for row, _, p50, p99, qps in results:
        print(f"{row.label}: p50 {p50:.1f} ms p99 {p99:.1f} ms {qps:.1f} QPS", flush=True)
    load_after = load_average()
    for index in indices.values():
        client.indices.delete(index=index, ignore_unavailable=True)

    write_table(args, version, load_before, load_after, data, encode_rows, index_rows, results, dense_note)
    return 0


def write_table(
    args, version, load_before, load_after, data, encode_rows, index_rows, results, dense_note=""
) -> None:
    n_docs = data.corpus.num_rows
    command = f"python benchmarks/opensearch.py --url URL --petitions {args.petitions}"
    if args.model:
        command += (
            f" --model OUT/model --doc-top-k {args.doc_top_k} --query-top-k {args.query_top_k}"
            f" --first-phase-terms {args.first_phase_terms} --rescore-window {args.rescore_window}"
        )
    if args.dense:
        command += " --dense OUT/dense/model"
    command += f" --concurrency {args.concurrency} --latency-queries {args.latency_queries}"
    bm25_size = next(r[4] for r in index_rows if r[1] == "bm25")
    by_label = {row.label: (row, ndcg, p50, p99, qps) for row, ndcg, p50, p99, qps in results}
    base = results[0]
    lines = [
        "# OpenSearch benchmark",
        "",
        f"Command: `{command}`",
        "",
        machine_line(version, load_before, load_after),
        f"Corpus: {n_docs} documents (235 KLUE-MRC passages + soynlp news + {args.petitions} petitions from "
        f"../shared/data), {data.queries.num_rows} KLUE questions. Vectors: "
        + (
            f"trained SparseEncoder ({args.model_note or 'OUT/model'})"
            if args.model
            else "model-free lexical_term_weights (char bigrams, no IDF)"
        )
        + ".",
        "",
        "## Indexing (each variant in its own index, force-merged to one segment; every index keeps the text in "
        "_source, the sparse ones their vector too)",
        "",
        "| index | docs | terms/doc | bulk s | bulk docs/s | size MB | size vs BM25 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, _, docs, seconds, size, terms in index_rows:
        lines.append(
            f"| {label} | {docs} | {terms:.0f} | {seconds:.1f} | {docs / seconds:.0f} | {size:.1f} | "
            f"{size / bm25_size:.2f}x |"
        )
    lines += ["", "| encoding (in-process, this machine) | seconds | docs/s |", "|---|---|---|"]
    for label, seconds in encode_rows:
        lines.append(f"| {label} | {seconds:.1f} | {n_docs / seconds:.0f} |")
    lines += [
        "",
        f"## Queries (second process, {args.concurrency} client threads, top-10, the first {args.latency_queries} "
        "questions through every row, rows interleaved; QPS = threads / mean latency; nDCG@10 from OpenSearch's "
        "own top-100 for all questions)",
        "",
        "Latency is per query end to end in the client: query encoding (the bi-encoder runs its transformer; "
        "inference-free only tokenises) + the request(s); hybrid = 2 requests + client fusion.",
        "",
        "| mode | nDCG@10 | p50 ms | p99 ms | QPS | p99 vs BM25 | QPS vs BM25 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, ndcg, p50, p99, qps in results:
        lines.append(
            f"| {row.label} | {ndcg:.4f} | {p50:.1f} | {p99:.1f} | {qps:.1f} | {p99 / base[3]:.2f}x | "
            f"{qps / base[4]:.2f}x |"
        )
    if dense_note:
        lines += ["", f"Dense rows: {dense_note}"]
    if args.model:
        lines += [
            "",
            "## Goal (issue 15): inference-free p99 <= 1.2x BM25, index <= 3x BM25, <= 0.01 nDCG@10 loss",
            "",
        ]
        bi_ndcg = by_label["bi-encoder"][1]
        sizes = {r[1]: r[4] for r in index_rows}
        lines += [
            "| inference-free variant | p99 vs BM25 | index vs BM25 | nDCG@10 | loss vs bi-encoder | "
            "vs BM25 | goal |",
            "|---|---|---|---|---|---|---|",
        ]
        for row, ndcg, _, p99, _ in results:
            if row.encoder != "if" or row.bm25:
                continue
            p99_ratio, size_ratio = p99 / base[3], sizes[row.index] / bm25_size
            loss = bi_ndcg - ndcg
            misses = []
            if p99_ratio > GOAL_P99:
                misses.append(f"p99 {p99_ratio:.2f}x")
            if size_ratio > GOAL_SIZE:
                misses.append(f"index {size_ratio:.2f}x")
            if loss > GOAL_LOSS:
                misses.append(f"loss {loss:.4f}")
            verdict = "met" if not misses else "missed (" + ", ".join(misses) + ")"
            lines.append(
                f"| {row.label} | {p99_ratio:.2f}x | {size_ratio:.2f}x | {ndcg:.4f} | {loss:+.4f} | "
                f"{ndcg - base[1]:+.4f} | {verdict} |"
            )
        lines += [
            "",
            "The nDCG@10 loss is measured against the bi-encoder (the same trained model with transformer-encoded "
            "queries); the 'vs BM25' column is the difference to the BM25 row.",
        ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
