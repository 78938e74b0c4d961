"""Mining throughput: ``raysparse.mining.mine`` on Ray Data vs plain bm25s (numba) vs rank_bm25, on pooled Korean data.

Not a test: run ``python benchmarks/mining.py`` (``--help`` for sizes). The pooled collection is built from
``../shared/data``: documents = petition passages + news paragraphs + KLUE-MRC contexts + MS MARCO (ko) passages +
Korean Python-docs segments; queries = paraKQC + question-pairs questions + KLUE-MRC questions + MS MARCO (ko)
queries. Queries from KLUE/MS MARCO keep their real positive; the others get a deterministic pseudo-positive (the
point here is queries per second, not quality).

What is timed (all in one run, same machine, same analyzer, same top-K):
  (a)  ``mine(ray=True)``, mining phase: Ray Data actor pool start, query tokenisation, BM25 top-K, positive and
       near-duplicate filtering, random negatives, gathering texts, collecting Arrow results on the driver.
       The index is built once beforehand (timed separately) and Ray is already initialised.
  (a') the same ``mine`` with ``ray=False`` (one process, one thread): what Ray adds or saves.
  (b)  bm25s alone, numba backend: tokenise the queries with the same analyzer, ``BM25.retrieve(k=top_k)`` on a
       pre-tokenised index; JIT compilation excluded (warm-up call). 1 thread and all threads.
  (c)  rank_bm25 ``BM25Okapi.get_top_n`` on a subset of queries (it scores every document in Python/numpy).
  Tokenisation docs/s per analyzer (kiwi, bigram, hf when ``--hf-tokenizer`` is given).
The last line printed is ``ray/bm25s ratio: R`` with R = (a) q/s / (b, all threads) q/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from raysparse.schemas import RetrievalData  # noqa: E402

SHARED = Path(os.environ.get("RAYSPARSE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _passages(text: str, size: int = 600) -> list[str]:
    """Split long text into ~size-character passages on sentence ends."""
    sentences = re.split(r"(?<=[.!?다])\s+", text.strip())
    out, cur = [], ""
    for s in sentences:
        if cur and len(cur) + len(s) > size:
            out.append(cur)
            cur = ""
        cur = f"{cur} {s}".strip()
    if cur:
        out.append(cur)
    return [p for p in out if len(p) >= 20]


def pooled_collection(max_docs: int, max_queries: int, seed: int = 0) -> RetrievalData:
    docs: dict[str, str] = {}  # text -> doc_id (deduplicated)
    queries: list[tuple[str, str]] = []
    qrels: list[tuple[str, str]] = []

    def add_doc(text: str, prefix: str) -> str:
        text = " ".join(text.split())
        if text not in docs:
            docs[text] = f"{prefix}-{len(docs)}"
        return docs[text]

    for line in (SHARED / "klue-mrc-odqa" / "validation.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        queries.append((f"klue-{r['id']}", r["question"]))
        qrels.append((queries[-1][0], add_doc(f"{r['title']} {r['context']}", "klue")))
    for r in json.loads((SHARED / "msmarco-ko-en" / "msmarco_kor.dev1000.json").read_text(encoding="utf-8")):
        queries.append((f"msko-{r['id']}", r["query"]))
        for p in r["positive"]:
            qrels.append((queries[-1][0], add_doc(p, "msko")))
    for path in sorted((SHARED / "corpora" / "petitions-dated").glob("petitions_*")):
        for line in path.open(encoding="utf-8"):
            for p in _passages(json.loads(line).get("content", "")):
                add_doc(p, "pet")
    for line in (SHARED / "corpora" / "soynlp-news-2016-10-20" / "doublespace_line_corpus_sample.txt").open(
        encoding="utf-8"
    ):
        for p in _passages(line):
            add_doc(p, "news")
    for line in (SHARED / "bilingual" / "python-docs-glossary" / "pairs_en_ko.jsonl").open(encoding="utf-8"):
        if len(docs) >= max_docs:
            break
        ko = json.loads(line).get("ko", "")
        if len(ko) >= 40:
            add_doc(ko, "pydoc")
    for line in (SHARED / "corpora" / "paraKQC" / "paraKQC_v1.txt").open(encoding="utf-8"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 3 and parts[2].strip():
            queries.append((f"pkqc-{len(queries)}", parts[2].strip()))
    import csv

    for name in ("kor_pair_train.csv", "kor_Pair_test.csv"):
        with (SHARED / "corpora" / "question-pairs" / name).open(encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                for key in ("question1", "question2"):
                    if row.get(key, "").strip():
                        queries.append((f"qp-{len(queries)}", row[key].strip()))
    doc_items = list(docs.items())[:max_docs]
    doc_ids = [d for _, d in doc_items]
    kept_docs = set(doc_ids)
    queries = queries[:max_queries]
    judged = {q for q, d in qrels if d in kept_docs}
    rng = np.random.default_rng(seed)
    qrels = [(q, d) for q, d in qrels if d in kept_docs]
    for qid, _ in queries:  # pseudo-positives for queries without a real one
        if qid not in judged:
            qrels.append((qid, doc_ids[int(rng.integers(len(doc_ids)))]))
    corpus = pa.table(
        {
            "doc_id": doc_ids,
            "title": pa.nulls(len(doc_items), pa.string()),
            "text": [t for t, _ in doc_items],
            "date": pa.nulls(len(doc_items), pa.timestamp("s")),
            "lang": ["ko"] * len(doc_items),
        }
    )
    q = pa.table(
        {"query_id": [x[0] for x in queries], "text": [x[1] for x in queries], "lang": ["ko"] * len(queries)}
    )
    r = pa.table(
        {
            "query_id": [x[0] for x in qrels],
            "doc_id": [x[1] for x in qrels],
            "score": pa.array([1] * len(qrels), pa.int32()),
        }
    )
    return RetrievalData(corpus, q, r)


def docs_per_second(analyze, texts: list[str]) -> float:
    analyze(texts[:8])  # load models / warm up
    t0 = time.perf_counter()
    analyze(texts)
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=20000)
    parser.add_argument("--analyzer", default="bigram", choices=["bigram", "kiwi", "hf"])
    parser.add_argument("--hf-tokenizer", help="a local Hugging Face tokenizer for the hf analyzer rows")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--rank-bm25-queries", type=int, default=100)
    parser.add_argument("--kiwi-sample", type=int, default=300, help="documents for the Kiwi docs/s row")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mining.md"))
    args = parser.parse_args()

    import tempfile

    import bm25s
    import ray

    from raysparse.analyzers import get_analyzer
    from raysparse.config import MiningConfig
    from raysparse.mining import Bm25Index, mine, triples_files

    cfg = MiningConfig(
        analyzer=args.analyzer, hf_tokenizer=args.hf_tokenizer, top_k=args.top_k, batch_size=args.batch_size
    )
    t0 = time.perf_counter()
    data = pooled_collection(args.docs, args.queries)
    print(f"pooled: {data.summary()} ({time.perf_counter() - t0:.1f} s)", flush=True)
    doc_texts = data.corpus.column("text").to_pylist()
    query_texts = data.queries.column("text").to_pylist()
    n_q = len(query_texts)
    rows: list[tuple[str, str, float, str]] = []  # (what, unit, value, note)

    # Tokenisation speed per analyzer (documents).
    sample = doc_texts[:2000]
    rows.append(("tokenise: bigram", "docs/s", docs_per_second(get_analyzer("bigram"), sample), "2,000 docs"))
    kiwi_sample = doc_texts[: args.kiwi_sample]
    rows.append(
        (
            "tokenise: kiwi",
            "docs/s",
            docs_per_second(get_analyzer("kiwi"), kiwi_sample),
            f"{len(kiwi_sample)} docs",
        )
    )
    if args.hf_tokenizer:
        rows.append(
            (
                "tokenise: hf",
                "docs/s",
                docs_per_second(get_analyzer("hf", args.hf_tokenizer), sample),
                "2,000 docs",
            )
        )
    else:
        rows.append(
            ("tokenise: hf", "docs/s", float("nan"), "skipped: no local tokenizer (pass --hf-tokenizer)")
        )
    print("tokenisation done", flush=True)

    # Index once (ours); the bm25s baseline gets its own index over the same tokens.
    analyze = get_analyzer(cfg.analyzer, cfg.hf_tokenizer)
    t0 = time.perf_counter()
    index = Bm25Index.build(data.corpus, cfg, show_progress=False)
    build_s = time.perf_counter() - t0
    rows.append(
        (
            "index build (tokenise + bm25s)",
            "s",
            build_s,
            f"{index.num_docs} docs, {index.nbytes() / 1e6:.0f} MB",
        )
    )

    corpus_tokens = analyze(doc_texts)
    retriever = bm25s.BM25(k1=cfg.bm25_k1, b=cfg.bm25_b, backend="numba")
    retriever.index(corpus_tokens, show_progress=False)
    retriever.retrieve(
        analyze(query_texts[:10]), k=args.top_k, show_progress=False, n_threads=1
    )  # JIT warm-up
    retriever.retrieve(analyze(query_texts[:10]), k=args.top_k, show_progress=False, n_threads=-1)
    bm25s_qps = {}
    for threads in (1, -1):
        t0 = time.perf_counter()
        retriever.retrieve(analyze(query_texts), k=args.top_k, show_progress=False, n_threads=threads)
        bm25s_qps[threads] = n_q / (time.perf_counter() - t0)
    print("bm25s done", flush=True)

    # rank_bm25 on a subset (it scores every document per query).
    from rank_bm25 import BM25Okapi

    okapi = BM25Okapi(corpus_tokens, k1=cfg.bm25_k1, b=cfg.bm25_b)
    subset = query_texts[: args.rank_bm25_queries]
    t0 = time.perf_counter()
    for tokens in analyze(subset):
        okapi.get_top_n(tokens, doc_texts, n=args.top_k)
    rank_qps = len(subset) / (time.perf_counter() - t0)
    print("rank_bm25 done", flush=True)

    # Ours: in-process and on Ray Data (index prebuilt, Ray initialised; actor start-up is inside the timing).
    with tempfile.TemporaryDirectory() as tmp:
        local = mine(data, cfg, Path(tmp) / "local", ray=False, index=index, show_progress=False)
        ray.init(include_dashboard=False, log_to_driver=False)
        import ray.data

        distributed = mine(data, cfg, Path(tmp) / "ray", ray=True, index=index, show_progress=False)
        same = triples_files(Path(tmp) / "local") == triples_files(Path(tmp) / "ray")
        ray.shutdown()
    ray_qps = distributed.queries_mined / distributed.timings["mining"]
    local_qps = local.queries_mined / local.timings["mining"]
    base = bm25s_qps[-1]

    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Machine: {os.cpu_count()} CPU cores ({cpu}), {platform.python_version()}, load average {load:.1f} at the end "
        "(the machine is shared; absolute numbers move with load, ratios are from the same run).",
        f"Data: {data.summary()}; analyzer `{cfg.analyzer}`, top-K {cfg.top_k}, {cfg.num_hard_negatives} hard + "
        f"{cfg.num_random_negatives} random negatives, batch {cfg.batch_size}, {distributed.workers} Ray workers.",
        "",
        "| what | queries/s | vs bm25s (all threads) | note |",
        "|---|---|---|---|",
        f"| (a) mine, Ray Data | {ray_qps:,.0f} | {ray_qps / base:.2f} | {distributed.queries_mined} queries incl. actor start-up; byte-identical to (a'): {same} |",
        f"| (a') mine, in-process | {local_qps:,.0f} | {local_qps / base:.2f} | one process, one thread |",
        f"| (b) bm25s numba, all threads | {base:,.0f} | 1.00 | tokenise queries + retrieve; JIT excluded |",
        f"| (b) bm25s numba, 1 thread | {bm25s_qps[1]:,.0f} | {bm25s_qps[1] / base:.2f} | |",
        f"| (c) rank_bm25 BM25Okapi | {rank_qps:,.1f} | {rank_qps / base:.4f} | subset of {len(subset)} queries |",
        "",
        "| stage | value | unit | note |",
        "|---|---|---|---|",
        *[f"| {what} | {value:,.1f} | {unit} | {note} |" for what, unit, value, note in rows],
        "",
        f"Mining phase timings (s): Ray {distributed.timings['mining']:.2f}, in-process {local.timings['mining']:.2f}.",
    ]
    table = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    shown, skip = [], False
    for arg in sys.argv[1:]:  # the options that shape the numbers; --out is where, not what
        if skip or arg.startswith("--out"):
            skip = arg == "--out"
            continue
        shown.append(arg)
    command = " ".join(["python benchmarks/mining.py", *shown])
    Path(args.out).write_text(
        f"# Mining benchmark\n\nCommand: `{command}` (1M passages: scale.md)\n\n" + table + "\n"
    )
    print(table)
    print(f"ray/bm25s ratio: {ray_qps / base:.2f}")


if __name__ == "__main__":
    main()
