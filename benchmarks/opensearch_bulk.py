"""Bulk indexing throughput: today's driver paths vs Ray Data workers writing straight into OpenSearch.

    python benchmarks/opensearch_bulk.py --url http://127.0.0.1:9200 [--petitions 1000] [--writers 2]

Same corpus and model-free lexical vectors for every row (benchmarks/opensearch.py's corpus: KLUE-MRC passages +
soynlp news + petitions); each row indexes into a fresh index and is timed from the first document to the checked
final count. Writes benchmarks/results/opensearch_bulk.md (ratios are from this one run, on this one machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opensearch_common import add_common_args, load_average, load_corpus, machine_line, server_version


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, petitions=1000, out_name="opensearch_bulk.md")
    ap.add_argument("--writers", type=int, default=2, help="Ray Data writer actors")
    args = ap.parse_args()

    import ray

    from raysparse.config import OpenSearchConfig
    from raysparse.opensearch import (
        create_index,
        index_corpus,
        index_corpus_on_workers,
        index_documents,
        index_mapping,
        lexical_encoder_factory,
        make_client,
    )

    data = load_corpus(Path(args.shared), args.petitions)
    client = make_client(url=args.url)
    version = server_version(client)
    cfg = OpenSearchConfig(url=args.url)
    factory = lexical_encoder_factory("bigram")
    load_before = load_average()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []

    def timed(label: str, fn) -> None:
        index = "raysparse-bulk-bench"
        client.indices.delete(index=index, ignore_unavailable=True)
        t0 = time.perf_counter()
        report = fn(index)
        seconds = time.perf_counter() - t0
        assert report.doc_count == data.corpus.num_rows, (label, report.doc_count)
        rows.append((label, report.indexed, seconds))
        print(
            f"{label}: {report.indexed} docs in {seconds:.1f} s = {report.indexed / seconds:.1f} docs/s",
            flush=True,
        )
        client.indices.delete(index=index, ignore_unavailable=True)

    def in_process(index: str):
        create_index(client, index, index_mapping(with_date=True))
        return index_documents(client, index, data.corpus.to_pylist(), factory())

    timed("in-process encode + driver bulk (index_documents)", in_process)
    timed(
        "Ray actors encode, driver bulk (index_corpus, 2 actors)",
        lambda index: index_corpus(data, factory, cfg, client=client, index=index, num_actors=2),
    )
    timed(
        f"Ray workers encode + write (index_corpus_on_workers, {args.writers} writers, bulk-load settings)",
        lambda index: index_corpus_on_workers(
            data, factory, cfg, client=client, index=index, num_actors=args.writers
        ),
    )
    timed(
        f"Ray workers encode + write ({args.writers} writers, index settings unchanged)",
        lambda index: index_corpus_on_workers(
            data, factory, cfg, client=client, index=index, num_actors=args.writers, bulk_settings=False
        ),
    )
    ray.shutdown()
    load_after = load_average()

    base = rows[0][1] / rows[0][2]
    lines = [
        "# OpenSearch bulk indexing: driver paths vs Ray Data workers writing directly",
        "",
        f"Command: `python benchmarks/opensearch_bulk.py --url URL --petitions {args.petitions} "
        f"--writers {args.writers}`",
        "",
        machine_line(version, load_before, load_after),
        f"Corpus: {data.corpus.num_rows} documents (KLUE-MRC + soynlp news + {args.petitions} petitions), model-free "
        "lexical vectors (char bigrams) + pre-analysed BM25 field; each row: fresh index, timed to the checked count.",
        "",
        "| path | docs | seconds | docs/s | vs in-process |",
        "|---|---|---|---|---|",
    ]
    for label, n, seconds in rows:
        lines.append(f"| {label} | {n} | {seconds:.1f} | {n / seconds:.1f} | {n / seconds / base:.2f}x |")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
