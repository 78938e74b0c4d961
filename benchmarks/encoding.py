"""Encoding latency/throughput of the sparse encoder on CPU: PyTorch eager vs TorchScript vs ONNX Runtime.

Measures, for the small local backbone (hidden 128, 2 layers, vocab 8k) and a bert-base-sized one (hidden 768,
12 layers, vocab 32k, random weights — speed does not depend on the weights):

* query latency p50/p99 at batch 1 on real Korean queries of 5–30 tokens (KLUE-MRC questions, MS MARCO-ko, Tatoeba),
  end to end from text (tokenization included) to the (1, V) vector;
* document throughput (docs/s) at batch 32 on real Korean passages truncated to 128 tokens;
* the inference-free query mode (tokenizer + IDF lookup, no transformer) for comparison;
* parity (max |exported - eager|) of each exported graph on the same texts.

Every ratio compares numbers measured in the same run on the same machine. Usage::

    python benchmarks/encoding.py                      # both configs, writes benchmarks/results/encoding.md
    python benchmarks/encoding.py --configs small --queries 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from raysparse.storage import portable  # noqa: E402  (no machine paths in the committed report)

CONFIGS = {
    # name: (hidden, layers, heads, intermediate, vocab)
    "small": (128, 2, 2, 512, 8000),
    "bert-base": (768, 12, 12, 3072, 32000),
}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def korean_texts(shared: Path) -> tuple[list[str], list[str]]:
    """Real Korean queries (KLUE-MRC questions, MS MARCO-ko queries, Tatoeba) and passages (KLUE-MRC contexts)."""
    queries, passages = [], []
    for line in (shared / "klue-mrc-odqa" / "validation.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            queries.append(rec["question"])
            passages.append(rec["context"])
    for rec in json.loads(
        (shared / "msmarco-ko-en" / "msmarco_kor.dev1000.json").read_text(encoding="utf-8")
    ):
        queries.append(rec["query"])
        passages.extend(str(p) for p in rec.get("positive", []))
    for line in (
        (shared / "bilingual" / "tatoeba" / "kor.txt").read_text(encoding="utf-8").splitlines()[-2000:]
    ):
        queries.append(line.split("\t")[1])
    return queries, list(dict.fromkeys(passages))


def build_encoder(name: str, tokenizer, idf):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from raysparse.model import SparseEncoder

    hidden, layers, heads, inter, vocab = CONFIGS[name]
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=max(vocab, len(tokenizer)),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    mlm = BertForMaskedLM(config).eval()
    weights = torch.zeros(config.vocab_size)
    weights[: idf.shape[0]] = idf
    return SparseEncoder(
        mlm, tokenizer, lexical_prior=5.0, query_mode="inference_free", query_weights=weights
    )


def time_queries(fn, queries: list[str], warmup: int = 5) -> tuple[float, float]:
    for q in queries[:warmup]:
        fn([q])
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn([q])
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def time_docs(fn, docs: list[str], batch: int, batches: int) -> float:
    fn(docs[: min(batch, 8)])  # warm-up (smaller: a bert-base batch of 32 takes tens of seconds here)
    t0 = time.perf_counter()
    for i in range(batches):
        fn(docs[i * batch : (i + 1) * batch])
    return batch * batches / (time.perf_counter() - t0)


def bench_config(name: str, tokenizer, idf, queries, docs, args, workdir: Path) -> list[dict]:
    import torch

    from raysparse.export import (
        OnnxTermEncoder,
        PyTorchTermEncoder,
        TermEncoder,
        TorchScriptTermEncoder,
        export_onnx,
        export_torchscript,
        onnx_parity,
        parity_batches,
        torchscript_parity,
        words_from_texts,
    )

    encoder = build_encoder(name, tokenizer, idf)
    vocab = encoder.vocab_size
    words = words_from_texts(queries[:300])
    pbatches = parity_batches(tokenizer, words, seed=1, max_length=64)
    example = pbatches[-1]
    t0 = time.perf_counter()
    pt = export_torchscript(encoder, example, workdir / f"{name}.pt")
    onnx = export_onnx(encoder, example, workdir / f"{name}.onnx", opset=17)
    export_s = time.perf_counter() - t0
    parity = {
        "torchscript": torchscript_parity(encoder, pt, pbatches[:3]),
        "onnx": onnx_parity(encoder, onnx, pbatches[:3]),
    }
    kw = {"max_query_length": 32, "max_doc_length": 128}
    eager = PyTorchTermEncoder(encoder, **kw)
    eager.query_weights = None  # time the transformer path; the inference-free row below times the IDF path
    runners: list[tuple[str, TermEncoder]] = [
        ("PyTorch eager", eager),
        ("TorchScript", TorchScriptTermEncoder(pt, tokenizer, vocab, **kw)),
        ("ONNX Runtime", OnnxTermEncoder(onnx, tokenizer, vocab, threads=args.threads, **kw)),
    ]
    rows = []
    n_queries = args.queries if name == "small" else max(20, args.queries // 4)
    doc_batches = args.doc_batches if name == "small" else max(1, args.doc_batches // 8)
    for label, runner in runners:
        p50, p99 = time_queries(lambda t, r=runner: r.reps(t, is_query=True), queries[:n_queries])
        dps = time_docs(lambda t, r=runner: r.reps(t), docs, 32, doc_batches)
        rows.append(
            {
                "config": name,
                "engine": label,
                "p50": p50,
                "p99": p99,
                "docs_s": dps,
                "parity": parity.get(label.split()[0].lower()),
            }
        )
        print(f"{name:<10} {label:<14} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  {dps:8.1f} docs/s", flush=True)
    if args.compare_threads and args.compare_threads != args.threads:
        # Same engines at another thread count, queries only: on a shared, oversubscribed machine torch's OpenMP
        # threads can lose 10x or more, so the report shows both rather than a silently chosen setting.
        torch.set_num_threads(args.compare_threads)
        extra = [
            (f"PyTorch eager ({args.compare_threads} threads)", eager),
            (
                f"ONNX Runtime ({args.compare_threads} threads)",
                OnnxTermEncoder(onnx, tokenizer, vocab, threads=args.compare_threads, **kw),
            ),
        ]
        for label, runner in extra:
            p50, p99 = time_queries(
                lambda t, r=runner: r.reps(t, is_query=True), queries[: max(20, n_queries // 2)]
            )
            rows.append(
                {"config": name, "engine": label, "p50": p50, "p99": p99, "docs_s": None, "parity": None}
            )
            print(f"{name:<10} {label:<14} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms", flush=True)
        torch.set_num_threads(args.threads)
    free = TermEncoder(tokenizer, vocab, query_weights=encoder.query_weights.detach().numpy(), **kw)
    p50, p99 = time_queries(lambda t: free.reps(t, is_query=True), queries[: args.queries])
    rows.append(
        {
            "config": name,
            "engine": "inference-free query (IDF)",
            "p50": p50,
            "p99": p99,
            "docs_s": None,
            "parity": None,
        }
    )
    print(f"{name:<10} inference-free p50 {p50:7.2f} ms  p99 {p99:7.2f} ms", flush=True)
    params = sum(p.numel() for p in encoder.parameters())
    for r in rows:
        r.update(params=params, export_s=export_s, n_queries=n_queries, doc_batches=doc_batches)
    del encoder
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return rows


def write_report(rows: list[dict], path: Path, meta: dict) -> None:
    lines = [
        "# Encoding latency and throughput (CPU)",
        "",
        f"Machine: {meta['cpu']}, {meta['cores']} cores visible. Main rows: torch threads {meta['threads']}, "
        f"ONNX Runtime intra-op threads {meta['threads']}; rows marked (N threads) use N. torch {meta['torch']}, onnxruntime {meta['ort']}, "
        f"Python {meta['python']}. Load average at start / end: {meta['load_start']} / {meta['load_end']} "
        "(the machine is shared with other engineers' jobs; absolute numbers are noisy, ratios within one run less so).",
        "",
        "Queries: batch 1, real Korean queries of 5–30 tokens (KLUE-MRC questions, MS MARCO-ko, Tatoeba), timed from text",
        "(tokenization included) to the (1, V) vector. Documents: batch 32, real Korean passages truncated to 128 tokens.",
        "Speed-ups are PyTorch eager ÷ engine for latency and engine ÷ eager for throughput, from the same run.",
        "Parity: max |exported − eager| on padded random-word batches. Weights are random (speed does not depend on them).",
        "",
        "| config | params | engine | query p50 ms | query p99 ms | p50 speed-up | docs/s | docs/s ratio | parity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for config in dict.fromkeys(r["config"] for r in rows):
        group = [r for r in rows if r["config"] == config]
        base = group[0]
        for r in group:
            speed = base["p50"] / r["p50"] if r["p50"] else float("nan")
            docs = f"{r['docs_s']:.1f}" if r["docs_s"] else "—"
            ratio = f"{r['docs_s'] / base['docs_s']:.2f}×" if r["docs_s"] else "—"
            parity = f"{r['parity']:.1e}" if r["parity"] is not None else "—"
            lines.append(
                f"| {config} | {r['params'] / 1e6:.1f} M | {r['engine']} | {r['p50']:.2f} | {r['p99']:.2f} | "
                f"{speed:.2f}× | {docs} | {ratio} | {parity} |"
            )
    lines += ["", "Samples per config (queries timed / document batches of 32):", ""]
    for config in dict.fromkeys(r["config"] for r in rows):
        r = next(x for x in rows if x["config"] == config)
        lines.append(
            f"- {config}: {r['n_queries']} queries, {r['doc_batches']} batches; export (trace + ONNX) {r['export_s']:.1f} s"
        )
    lines += ["", "## Against the < 50 ms per query target", ""]
    for config in dict.fromkeys(r["config"] for r in rows):
        group = [r for r in rows if r["config"] == config]
        best = min((r for r in group if r["docs_s"] is not None), key=lambda r: r["p50"])
        verdict = "meets" if best["p99"] < 50 else ("meets at p50 only" if best["p50"] < 50 else "misses")
        lines.append(
            f"- {config}: best engine {best['engine']} p50 {best['p50']:.1f} ms / p99 {best['p99']:.1f} ms — {verdict} "
            f"the target; inference-free queries p50 {group[-1]['p50']:.2f} ms."
        )
    lines += [
        "",
        "## Reading the numbers",
        "",
        "- The 2-core machine was shared with other engineers' test runs (load averages above): each timed process got",
        "  a fraction of a core, so absolute latencies are pessimistic; rerun on an idle machine for absolute figures.",
        "- torch with 2 intra-op threads on an oversubscribed machine is far slower than with 1 (OpenMP threads wait",
        "  for a core): serving processes that share CPUs should use `torch.set_num_threads(1)` or ONNX Runtime.",
        "- The inference-free p99 is scheduler preemption, not work (its p50 is a tokenizer call plus a lookup).",
        "- Document throughput of the small model barely changes between engines: with hidden 128 the cost is the",
        "  L×V output layer and the (B, L, V) logits tensor (32×128×8000 floats per batch), not the transformer.",
        "- Not measured here: int8 dynamic quantization of the ONNX graph, GPUs.",
    ]
    lines += [
        "",
        f"Generated by `python benchmarks/encoding.py {portable(' '.join(meta['argv']))}` in {meta['wall_s']:.0f} s.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared-data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument(
        "--configs", default="small,bert-base", help=f"comma-separated subset of {','.join(CONFIGS)}"
    )
    parser.add_argument(
        "--queries", type=int, default=200, help="queries timed for the small config (base: 1/4)"
    )
    parser.add_argument(
        "--doc-batches", type=int, default=8, help="batches of 32 docs for the small config (base: 1/4)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch / ONNX Runtime intra-op threads for the main rows (default 1)",
    )
    parser.add_argument(
        "--compare-threads", type=int, default=2, help="extra query rows at this thread count (0 = none)"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "encoding.md"))
    args = parser.parse_args(argv)
    t_start = time.perf_counter()

    import onnxruntime
    import torch

    from raysparse.backbone import backbone_texts_from_shared, train_tokenizer
    from raysparse.model import idf_weights

    torch.set_num_threads(args.threads)
    shared = Path(args.shared_data)
    if not (shared / "README.md").is_file():
        parser.error(f"--shared-data {shared} is not the shared data directory")
    load_start = " ".join(f"{x:.1f}" for x in os.getloadavg())
    queries, passages = korean_texts(shared)
    corpus = backbone_texts_from_shared(shared)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
            if name not in CONFIGS:
                parser.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
            tokenizer = train_tokenizer(corpus, vocab_size=CONFIGS[name][4])
            lengths = [len(ids) for ids in tokenizer(queries)["input_ids"]]
            qs = [q for q, n in zip(queries, lengths, strict=True) if 5 <= n <= 30]
            rng = np.random.default_rng(0)
            qs = [qs[i] for i in rng.permutation(len(qs))]
            docs = [passages[i] for i in rng.permutation(len(passages))]
            print(f"{name}: tokenizer {len(tokenizer)} tokens, {len(qs)} queries of 5-30 tokens", flush=True)
            idf = idf_weights(tokenizer, passages)
            rows += bench_config(name, tokenizer, idf, qs, docs, args, Path(tmp))
    meta = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "ort": onnxruntime.__version__,
        "python": platform.python_version(),
        "load_start": load_start,
        "load_end": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "argv": argv if argv is not None else sys.argv[1:],
        "wall_s": time.perf_counter() - t_start,
    }
    write_report(rows, Path(args.out), meta)
    print(Path(args.out).read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
