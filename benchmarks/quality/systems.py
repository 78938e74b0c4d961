"""Every system side by side per dev set: BM25-Kiwi, the sparse model, the dense bi-encoder, BM25+sparse, BM25+dense.

Reads what the quality recipe left in OUT: ``OUT/eval/<set>/{bm25-kiwi,model}/`` (run.sh) and
``OUT/dense/eval/<set>/model/`` (dense.sh), each ``metrics.json`` + ``run.trec``, and the dev sets'
BEIR directories ``OUT/data/dev/<set>``. The hybrids are :func:`raysparse.evaluation.hybrid.evaluate_hybrid`: the
one fusion (raysparse.fusion, per-query min-max) with the BM25 weight chosen on the validation half of the set's
queries and every row reported on the test half. Latency is batch 1 on this CPU (encode + search per query, from the
evaluation's own timing); a hybrid's is BM25's + the model's + the fusion's, per query, run one after the other.
Index size is bytes per document of the in-process index (sparse CSR: values + column ids + row pointers; dense:
one float32 vector).

    python benchmarks/quality/systems.py OUT            # prints the tables, writes OUT/systems.{md,json}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _path in (HERE.parents[1], HERE):  # raysparse from this checkout, report.py beside this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

ROW_KEYS = ("ndcg@10", "mrr@10", "recall@100")


def _read(system_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, float]]] | None:
    if not (system_dir / "metrics.json").is_file() or not (system_dir / "run.trec").is_file():
        return None
    from report import read_trec

    return json.loads((system_dir / "metrics.json").read_text()), read_trec(system_dir / "run.trec")


def set_rows(out: Path, name: str, seed: int = 13) -> dict[str, dict[str, Any]]:
    """``{system: {ndcg@10, mrr@10, recall@100, latency_p50_ms, latency_p99_ms, index_bytes_per_doc, weight}}``
    on the test half of dev set ``name``; systems whose files are missing are left out."""
    from raysparse.data import read_beir
    from raysparse.evaluation.hybrid import (
        combined_latency,
        evaluate_hybrid,
        fusion_latency_ms,
        metrics_on_test_half,
        validation_test_qrels,
    )

    data = read_beir(out / "data" / "dev" / name)
    sources = {
        "BM25-Kiwi": out / "eval" / name / "bm25-kiwi",
        "sparse": out / "eval" / name / "model",
        "dense": out / "dense" / "eval" / name / "model",
    }
    loaded = {s: r for s, d in sources.items() if (r := _read(d)) is not None}
    rows: dict[str, dict[str, Any]] = {}
    validation, test = validation_test_qrels(data, seed)
    for system, (metrics, run) in loaded.items():
        row = {k: v for k, v in metrics_on_test_half(run, data, seed).items() if k in ROW_KEYS}
        for key in ("latency_p50_ms", "latency_p99_ms", "index_bytes_per_doc"):
            row[key] = metrics.get(key)
        rows[system] = row
    if "BM25-Kiwi" in loaded:
        bm25_metrics, bm25_run = loaded["BM25-Kiwi"]
        for model in ("sparse", "dense"):
            if model not in loaded:
                continue
            model_metrics, model_run = loaded[model]
            hybrid = evaluate_hybrid(bm25_run, model_run, data, seed=seed)
            timed = data.queries.column("query_id").to_pylist()
            fusion = fusion_latency_ms(bm25_run, model_run, timed)
            row = {k: v for k, v in hybrid.test_metrics.items() if k in ROW_KEYS}
            row.update(
                combined_latency(
                    bm25_metrics.get("info", {}).get("latency"),
                    model_metrics.get("info", {}).get("latency"),
                    fusion,
                )
            )
            sizes = [bm25_metrics.get("index_bytes_per_doc"), model_metrics.get("index_bytes_per_doc")]
            row["index_bytes_per_doc"] = (
                sum(sizes) if all(isinstance(s, int | float) for s in sizes) else None
            )
            row["weight"] = hybrid.weight
            row["validation_curve"] = hybrid.validation
            rows[f"BM25 + {model}"] = row
    for row in rows.values():
        row["validation_queries"], row["test_queries"] = len(validation), len(test)
    return rows


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| system | nDCG@10 | MRR@10 | recall@100 | latency p50 (ms) | latency p99 (ms) | index bytes/doc "
        "| BM25 weight (chosen on validation) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def num(value: Any, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, int | float) else "–"

    for system, r in rows.items():
        lines.append(
            f"| {system} | {num(r.get('ndcg@10'), '.4f')} | {num(r.get('mrr@10'), '.4f')} | "
            f"{num(r.get('recall@100'), '.4f')} | {num(r.get('latency_p50_ms'), '.2f')} | "
            f"{num(r.get('latency_p99_ms'), '.2f')} | {num(r.get('index_bytes_per_doc'), ',.0f')} | "
            f"{num(r.get('weight'), '.1f')} |"
        )
    return "\n".join(lines)


def section(out: Path, seed: int = 13) -> tuple[str, dict[str, dict[str, dict[str, Any]]]]:
    """The Markdown section for every dev set with at least BM25 and one model evaluated, and its numbers."""
    parts = [
        "## Every system side by side (test half of each dev set)",
        "",
        "BM25-Kiwi, the sparse model, the dense bi-encoder (`model.kind: dense`, the same backbone, triples, loop "
        "and step budget) and both hybrids (`raysparse.fusion`, min-max; the BM25 weight chosen from 0.0-1.0 by "
        "nDCG@10 on the validation half of the queries, `raysparse.pipeline.split_validation_test`). Every row is "
        "measured on the test half only. Latency: one query at a time on this machine's CPU (encode + exact "
        "search over the in-process index; a hybrid adds both searches and the fusion); index: bytes per "
        "document of the in-process index.",
        "",
    ]
    everything: dict[str, dict[str, dict[str, Any]]] = {}
    for dev in sorted(p for p in (out / "data" / "dev").iterdir() if p.is_dir()):
        rows = set_rows(out, dev.name, seed)
        if "BM25-Kiwi" not in rows or not ({"sparse", "dense"} & set(rows)):
            continue
        everything[dev.name] = rows
        any_row = next(iter(rows.values()))
        parts += [
            f"### {dev.name} ({any_row['validation_queries']} validation / {any_row['test_queries']} test queries)",
            "",
            table(rows),
            "",
        ]
    if not everything:
        parts += ["(no dev set has BM25 and a model evaluated yet)", ""]
    return "\n".join(parts), everything


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="the run.sh / dense.sh output directory")
    parser.add_argument("--seed", type=int, default=13, help="seed of the validation/test split (data.seed)")
    args = parser.parse_args(argv)
    text, numbers = section(args.out, args.seed)
    (args.out / "systems.md").write_text(text + "\n", encoding="utf-8")
    (args.out / "systems.json").write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
