"""The Markdown + PNG evaluation report: model vs BM25 per query, top terms, failure cases, ko<->en synonymy.

Plots are labelled in English with query ids only (no Hangul in figures): these machines have no Hangul font and
a plot must not depend on one being installed; Korean text goes in the Markdown tables, which any viewer renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from raysparse.evaluation.core import EvalResult, encode_sparse
from raysparse.evaluation.metrics import rank_documents
from raysparse.schemas import RetrievalData

SUMMARY_KEYS = (
    "ndcg@10",
    "mrr@10",
    "recall@100",
    "precision@10",
    "avg_query_terms",
    "avg_doc_terms",
    "flops",
    "num_queries",
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "–" if value is None else str(value)


def _cell(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _terms(weights: dict[str, float], n: int = 8) -> str:
    items = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return _cell(", ".join(f"{t} {w:.2f}" for t, w in items), 160) or "(none)"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def summary_table(results: Sequence[EvalResult]) -> str:
    """Metrics of several systems side by side, with model/first-baseline ratios when there are two."""
    header = (
        "| metric | " + " | ".join(r.system for r in results) + (" | ratio |" if len(results) == 2 else " |")
    )
    lines = [header, "|---" * (len(results) + 1 + (len(results) == 2)) + "|"]
    for key in SUMMARY_KEYS:
        values = [r.metrics.get(key) for r in results]
        row = f"| {key} | " + " | ".join(_fmt(v) for v in values) + " |"
        if len(results) == 2:
            a, b = values
            row += (
                f" {a / b:.2f} |"
                if isinstance(a, int | float) and isinstance(b, int | float) and b
                else " – |"
            )
        lines.append(row)
    return "\n".join(lines)


def per_query_deltas(model: EvalResult, baseline: EvalResult, metric: str = "ndcg@10") -> dict[str, float]:
    """model - baseline per judged query (both were evaluated on the same qrels, so the keys agree)."""
    return {
        q: model.per_query[q][metric] - baseline.per_query.get(q, {}).get(metric, 0.0)
        for q in model.per_query
    }


def plot_deltas(deltas: dict[str, float], path: Path, metric: str = "ndcg@10") -> Path:
    """Sorted per-query delta bar plot: wins above zero, losses below."""
    plt = _pyplot()
    values = np.array(sorted(deltas.values()))
    colors = ["tab:red" if v < 0 else "tab:green" if v > 0 else "tab:gray" for v in values]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(np.arange(len(values)), values, color=colors, width=1.0)
    ax.axhline(0, color="black", linewidth=0.6)
    wins, losses = int((values > 0).sum()), int((values < 0).sum())
    ax.set_title(
        f"per-query delta {metric} (model - BM25): {wins} wins, {losses} losses, {len(values)} queries"
    )
    ax.set_xlabel("queries, sorted by delta")
    ax.set_ylabel(f"delta {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def synonym_similarity(
    model: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 64
) -> tuple[list[tuple[str, str, float]], list[float]]:
    """Cosine of the sparse vectors of each (ko, en) pair, and of shuffled (mismatched) pairs as a control.

    Terms are encoded as documents: document-side expansion is where a model can put ``model`` into ``모델``'s vector
    (in inference-free mode queries have no expansion at all).
    """
    if not pairs:
        return [], []
    ko = encode_sparse(model.encode_documents, [p[0] for p in pairs], batch_size)
    en = encode_sparse(model.encode_documents, [p[1] for p in pairs], batch_size)
    width = max(ko.shape[1], en.shape[1])
    ko.resize((ko.shape[0], width))
    en.resize((en.shape[0], width))

    def cosines(a, b) -> np.ndarray:
        dots = np.asarray(a.multiply(b).sum(axis=1)).ravel()
        norms = np.sqrt(
            np.asarray(a.multiply(a).sum(axis=1)).ravel() * np.asarray(b.multiply(b).sum(axis=1)).ravel()
        )
        return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)

    matched = cosines(ko, en)
    # Control: rotate the English side by one, so every Korean term meets another pair's English term.
    control = cosines(ko, en[np.roll(np.arange(len(pairs)), 1)])
    return [(k, e, float(c)) for (k, e), c in zip(pairs, matched, strict=True)], [float(c) for c in control]


def plot_synonyms(matched: Sequence[float], control: Sequence[float], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 21)
    ax.hist(matched, bins=bins, alpha=0.7, label=f"ko-en translation pairs (mean {np.mean(matched):.3f})")
    ax.hist(control, bins=bins, alpha=0.7, label=f"mismatched pairs (mean {np.mean(control):.3f})")
    ax.set_xlabel("cosine of sparse vectors")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    out_dir: str | Path,
    data: RetrievalData,
    model_result: EvalResult,
    baseline: EvalResult | None = None,
    *,
    model: Any = None,
    pairs: Sequence[tuple[str, str]] = (),
    pairs_source: str | None = None,
    num_samples: int = 10,
    num_failures: int = 10,
) -> Path:
    """Write ``report.md`` (+ PNGs) into ``out_dir``; returns the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = dict(
        zip(data.queries.column("query_id").to_pylist(), data.queries.column("text").to_pylist(), strict=True)
    )
    systems = [model_result, *([baseline] if baseline else [])]
    lines = [
        f"# Evaluation: {model_result.system}" + (f" vs {baseline.system}" if baseline else ""),
        "",
        f"Data: {data.summary()}. " + " ".join(f"`{r}`." for r in data.reports),
        "Ties are ranked by doc_id ascending; queries without any result score 0 (they are not dropped).",
        "",
        summary_table(systems),
        "",
    ]
    deltas: dict[str, float] = {}
    if baseline is not None:
        deltas = per_query_deltas(model_result, baseline)
        plot_deltas(deltas, out / "delta_ndcg.png")
        values = np.array(list(deltas.values()))
        lines += [
            "## Per-query wins and losses (nDCG@10)",
            "",
            f"{int((values > 0).sum())} wins, {int((values < 0).sum())} losses, {int((values == 0).sum())} ties "
            f"over {len(values)} queries (mean delta {values.mean():+.4f}).",
            "",
            "![delta nDCG@10 per query](delta_ndcg.png)",
            "",
        ]
    # Top activated terms of an evenly spaced sample of queries.
    qids = sorted(model_result.per_query)
    sample = (
        [qids[i] for i in np.linspace(0, len(qids) - 1, min(num_samples, len(qids))).astype(int)]
        if qids
        else []
    )
    lines += [
        "## Top activated terms of sample queries",
        "",
        "| query | text | top terms (weight) |",
        "|---|---|---|",
    ]
    for qid in dict.fromkeys(sample):
        lines.append(
            f"| {qid} | {_cell(texts.get(qid, ''))} | {_terms(model_result.query_terms.get(qid, {}))} |"
        )
    lines.append("")
    if baseline is not None:
        worst = sorted(deltas, key=lambda q: (deltas[q], q))[:num_failures]
        worst = [q for q in worst if deltas[q] < 0]
        qrels = data.qrels.to_pylist()
        relevant: dict[str, set[str]] = {}
        for r in qrels:
            if r["score"] > 0:
                relevant.setdefault(r["query_id"], set()).add(r["doc_id"])
        lines += [
            "## Failure cases (largest nDCG@10 losses to BM25)",
            "",
            "| query | text | model | BM25 | first relevant rank (model / BM25) | model terms | BM25 terms |",
            "|---|---|---|---|---|---|---|",
        ]

        def first_rank(result: EvalResult, qid: str) -> str:
            ranking = rank_documents(result.run.get(qid, {}))
            hit = next((i for i, d in enumerate(ranking, 1) if d in relevant.get(qid, set())), None)
            return str(hit) if hit else f">{len(ranking)}"

        for qid in worst:
            lines.append(
                f"| {qid} | {_cell(texts.get(qid, ''), 60)} | {model_result.per_query[qid]['ndcg@10']:.3f} | "
                f"{baseline.per_query.get(qid, {}).get('ndcg@10', 0.0):.3f} | "
                f"{first_rank(model_result, qid)} / {first_rank(baseline, qid)} | "
                f"{_terms(model_result.query_terms.get(qid, {}), 6)} | {_terms(baseline.query_terms.get(qid, {}), 6)} |"
            )
        if not worst:
            lines.append("| – | the model loses on no query | | | | | |")
        lines.append("")
    if model is not None and pairs:
        scored, control = synonym_similarity(model, pairs)
        plot_synonyms([c for _, _, c in scored], control, out / "synonyms.png")
        lines += [
            "## Korean-English synonym similarity",
            "",
            f"Cosine of the sparse vectors of {len(scored)} dictionary pairs from `{pairs_source}` (each term encoded "
            f"as a document): mean {np.mean([c for *_, c in scored]):.4f}; mismatched pairs (control) mean "
            f"{np.mean(control):.4f}. A model that learned cross-lingual expansion puts the pairs well above the "
            "control.",
            "",
            "![synonym cosine histogram](synonyms.png)",
            "",
            "| ko | en | cosine |",
            "|---|---|---|",
        ]
        for ko, en, c in sorted(scored, key=lambda t: (-t[2], t[0]))[:15]:
            lines.append(f"| {_cell(ko, 30)} | {_cell(en, 30)} | {c:.3f} |")
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
