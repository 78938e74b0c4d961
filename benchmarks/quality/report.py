"""OUT/results.md for the quality recipe: one table per dev set, a hybrid row, the learning curve, stage times.

Reads what run.sh left: ``OUT/eval/<set>/<system>/{metrics.json,run.trec}`` (and ``OUT/dense/eval/...`` for the
side-by-side section of :mod:`systems`), ``OUT/pipeline/train/history.jsonl``,
``OUT/pipeline/*/_stage.json``, ``OUT/stage_times.tsv``, ``OUT/command.txt``. The hybrid is
:func:`raysparse.fusion.fuse_runs` (per-query min-max, 0.5 model + 0.5 BM25-Kiwi) of the two top-100 runs: a
document missing from one run gets 0 there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # raysparse from this checkout when run as a script
    sys.path.insert(0, str(REPO))

ROWS = ("ndcg@10", "mrr@10", "recall@100", "avg_query_terms", "avg_doc_terms")
SYSTEM_ORDER = (
    "priors-only",
    "model",
    "bm25-pieces",
    "bm25-kiwi",
    "bm25-bigram",
    "bm25-kiwi-translated",
    "hybrid",
)
CROSS_LINGUAL = ("en-ko", "ko-en")  # dev-set name parts whose target is >= 3x BM25-Kiwi and > translated BM25


def read_trec(path: Path) -> dict[str, dict[str, float]]:
    """A TREC run file (``qid Q0 doc rank score system``) as ``{qid: {doc: score}}``; names the line on bad input."""
    run: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 6:
                raise ValueError(f"{path} line {line_no}: expected 6 fields, got {len(parts)}")
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run


def set_table(
    set_dir: Path, beir_dir: Path, priors_dir: Path | None = None
) -> tuple[str, dict[str, dict[str, Any]]]:
    """The Markdown table of every system evaluated on one dev set (+ hybrid), and the metrics by system.

    ``priors_dir/model/metrics.json`` (optional): the untrained backbone with its priors, the "step 0" row.
    """
    metrics: dict[str, dict[str, Any]] = {}
    if priors_dir is not None and (priors_dir / "model" / "metrics.json").is_file():
        metrics["priors-only"] = json.loads((priors_dir / "model" / "metrics.json").read_text())
    for sys_dir in sorted(p for p in set_dir.iterdir() if (p / "metrics.json").is_file()):
        metrics[sys_dir.name] = json.loads((sys_dir / "metrics.json").read_text())
    for variant in sorted(set_dir.parent.parent.glob(f"ablations/*/{set_dir.name}/model/metrics.json")):
        metrics[f"model, {variant.parents[2].name}"] = json.loads(variant.read_text())
    if (set_dir / "model" / "run.trec").is_file() and (set_dir / "bm25-kiwi" / "run.trec").is_file():
        from raysparse.data import read_beir
        from raysparse.evaluation import evaluate_run
        from raysparse.fusion import fuse_runs

        # the one fusion raysparse has (raysparse.fusion): per-query min-max, equal weights here
        fused = fuse_runs(
            read_trec(set_dir / "bm25-kiwi" / "run.trec"),
            read_trec(set_dir / "model" / "run.trec"),
            method="min_max",
            bm25_weight=0.5,
        )
        result = evaluate_run(fused, read_beir(beir_dir).qrels, system="hybrid")
        metrics["hybrid"] = dict(result.metrics)
    systems = [s for s in SYSTEM_ORDER if s in metrics] + sorted(set(metrics) - set(SYSTEM_ORDER))
    base = metrics.get("bm25-kiwi", {}).get("ndcg@10")
    lines = [
        "| system | nDCG@10 | MRR@10 | recall@100 | avg query terms | avg doc terms | nDCG@10 / BM25-kiwi |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in systems:
        m = metrics[s]
        cells = [f"{m[k]:.4f}" if isinstance(m.get(k), float) else "–" for k in ROWS[:3]]
        cells += [f"{m[k]:.1f}" if isinstance(m.get(k), int | float) else "–" for k in ROWS[3:]]
        ratio = f"{m['ndcg@10'] / base:.2f}" if base and isinstance(m.get("ndcg@10"), float) else "–"
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines), metrics


def summary_table(all_metrics: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One row per dev set: nDCG@10 of every system and the issue's targets, met or missed (by how much)."""
    header = (
        "| dev set | model | priors-only | BM25 pieces | BM25-Kiwi | translated BM25 | hybrid | model / BM25-Kiwi "
        "| model / translated | model doc terms | target |"
    )
    lines = [header, "|" + "---|" * 11]

    def val(metrics: dict[str, Any], system: str, key: str = "ndcg@10") -> float | None:
        v = metrics.get(system, {}).get(key)
        return float(v) if isinstance(v, int | float) else None

    for name, m in all_metrics.items():
        model, kiwi, trans = val(m, "model"), val(m, "bm25-kiwi"), val(m, "bm25-kiwi-translated")
        cells = [
            f"{x:.4f}" if x is not None else "–"
            for x in (model, val(m, "priors-only"), val(m, "bm25-pieces"), kiwi, trans, val(m, "hybrid"))
        ]
        r_kiwi = f"{model / kiwi:.2f}" if model is not None and kiwi else "–"
        r_trans = f"{model / trans:.2f}" if model is not None and trans else "–"
        terms = val(m, "model", "avg_doc_terms")
        target = "–"
        if model is not None and kiwi:
            if any(part in name for part in CROSS_LINGUAL):
                ok = model >= 3 * kiwi and (trans is None or model > trans)
                gap = [f"{model / kiwi:.2f}x of 3x"] if model < 3 * kiwi else []
                if trans is not None and model <= trans:
                    gap.append(f"{model - trans:+.4f} vs translated")
                target = "met" if ok else "missed (" + ", ".join(gap) + ")"
            else:
                target = "met" if model >= kiwi else f"missed ({model - kiwi:+.4f})"
        terms_cell = f"{terms:.1f}" if terms is not None else "–"
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {r_kiwi} | {r_trans} | {terms_cell} | {target} |"
        )
    return "\n".join(lines)


def portable(text: str, replacements: dict[str, str]) -> str:
    """:func:`raysparse.storage.portable`, keeping the repository-relative part of a path from another checkout
    (a worktree) instead of reducing it to its last component."""
    import re

    from raysparse.storage import portable as portable_paths

    text = re.sub(r"(?<![\w.])/\S*?/(benchmarks/quality/)", r"\1", text)
    return portable_paths(text, {k: v for k, v in replacements.items() if k})


def learning_curve(history: Path, png: Path) -> list[dict[str, Any]]:
    """Plot val nDCG@10 (and the ranking loss) against the step; returns the evaluated points."""
    rows = (
        [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
        if history.is_file()
        else []
    )
    points = [r for r in rows if "val/ndcg@10" in r]
    if not points:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p["step"] for p in points], [p["val/ndcg@10"] for p in points], marker="o", label="val nDCG@10")
    ax.set_xlabel("step")
    ax.set_ylabel("val nDCG@10 (held-out training queries)")
    loss_key = next((k for k in ("loss/ranking", "loss/total") if k in rows[0]), None)
    if loss_key:
        ax2 = ax.twinx()
        ax2.plot(
            [r["step"] for r in rows], [r[loss_key] for r in rows], color="gray", alpha=0.4, label=loss_key
        )
        ax2.set_ylabel(loss_key)
    ax.set_title("quality recipe: learning curve")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="the run.sh output directory")
    parser.add_argument("--config", default="benchmarks/quality/config.yaml")
    parser.add_argument(
        "--priors", type=Path, help="evaluations of the untrained backbone: PRIORS/<set>/model/metrics.json"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    repo = str(Path(__file__).resolve().parents[2])
    data = os.environ.get("QUALITY_DATA_DIR", "")
    paths = {str(out.resolve()): "OUT", data: "../shared/data", repo: "."}
    parts = ["# Quality recipe: results", ""]
    parts.append(
        f"Machine: {platform.machine()} {os.cpu_count()}-core CPU VM, no GPU; "
        f"{platform.python_implementation()} {platform.python_version()}. "
        f"{os.environ.get('QUALITY_MACHINE_NOTE', '')} Config: `{portable(args.config, paths)}`."
    )
    command = portable((out / "command.txt").read_text().strip(), paths)
    parts += [
        "",
        "Produced by `benchmarks/quality/run.sh OUT`; the pipeline command it ran:",
        "",
        "```",
        command,
    ]
    parts += ["```", ""]
    all_metrics = {}
    tables = []
    for set_dir in sorted(p for p in (out / "eval").iterdir() if p.is_dir()):
        priors = args.priors / set_dir.name if args.priors else None
        table, metrics = set_table(set_dir, out / "data" / "dev" / set_dir.name, priors)
        all_metrics[set_dir.name] = metrics
        tables += [f"## {set_dir.name}", "", table, ""]
    parts += [
        "## Summary (nDCG@10)",
        "",
        "Targets (issue 12): the model alone >= BM25-Kiwi on Korean sets; >= 3x BM25-Kiwi and above BM25 over "
        "dictionary-translated queries across languages. BM25 pieces = BM25 over the model's own pieces with the dev "
        "corpus's statistics (what the untrained lexical part approximates with the training corpus's IDF).",
        "",
        summary_table(all_metrics),
        "",
        *tables,
    ]
    # BM25, sparse, dense and both hybrids on each set's test half (benchmarks/quality/systems.py, issue 20)
    from systems import section as systems_section

    systems_text, systems_numbers = systems_section(out)
    parts += [systems_text, ""]
    (out / "systems.json").write_text(json.dumps(systems_numbers, indent=2) + "\n")
    (out / "results.json").write_text(json.dumps(all_metrics, indent=2) + "\n")
    points = learning_curve(out / "pipeline" / "train" / "history.jsonl", out / "learning_curve.png")
    parts += ["## Learning curve", ""]
    if points:
        parts += [
            "Val nDCG@10 on the validation half of the held-out training queries (groups of twin queries held out "
            "together; 1.6k-document training corpus; checkpoint selection only, never reported as a result):",
            "",
            "| step | val nDCG@10 |",
            "|---|---|",
        ]
        parts += [f"| {p['step']} | {p['val/ndcg@10']:.4f} |" for p in points]
        parts += ["", "![learning curve](learning_curve.png)", ""]
    else:
        parts += ["(no evaluation points in history.jsonl)", ""]
    parts += ["## Wall time per stage", "", "| stage | seconds |", "|---|---|"]
    for stage_json in sorted((out / "pipeline").glob("*/_stage.json")):
        rec = json.loads(stage_json.read_text())
        parts.append(f"| pipeline/{stage_json.parent.name} | {rec.get('seconds', 0):.0f} |")
    times = out / "stage_times.tsv"
    if times.is_file():
        for line in times.read_text().splitlines():
            name, sec = line.split("\t")
            parts.append(f"| {name} | {sec} |")
    (out / "results.md").write_text("\n".join(parts) + "\n")
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
