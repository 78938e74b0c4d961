"""How much of the recipe model's vectors the transformer carries, before and after training.

The recipe's encoder is ``w = neural_weight * splade(transformer) + lexical (BM25 pieces) + translations``
(raysparse/model.py). Its validation nDCG@10 is the same at step 0 and after training (results.md), so this
measures the transformer part on each Korean / cross-lingual dev set: how many terms it activates per text, and its
share of the total term mass, for the untrained backbone (OUT/pipeline/backbone/model) and the trained model
(OUT/model). A share near 0 means the model ranks with its priors alone.

    python benchmarks/quality/neural_share.py OUT [--texts 256]    # OUT = a run.sh output

Prints a Markdown table and writes it to OUT/neural_share.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SETS = ("klue-odqa-distractors", "msmarco-ko-ko-distractors", "msmarco-en-ko-distractors")


def transformer_share(encoder, texts: list[str], *, is_query: bool, batch_size: int = 32) -> dict[str, float]:
    """Mean active transformer terms per text, their mean weight, and the transformer's share of all term mass."""
    import torch

    active = mass = total_mass = 0.0
    weights: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = encoder.tokenize_texts(texts[start : start + batch_size], is_query=is_query)
            windows = encoder.neural(batch.input_ids, batch.attention_mask)
            neural = torch.zeros(batch.num_texts, windows.shape[1], dtype=windows.dtype)
            neural = neural.scatter_reduce(
                0, batch.text_index.unsqueeze(1).expand_as(windows), windows, reduce="amax", include_self=True
            )
            if not is_query or encoder.query_mode == "encoder":
                neural = encoder.neural_weight * neural
            else:  # inference-free queries never call the transformer
                neural = torch.zeros_like(neural)
            full = encoder.encode_batch(batch, is_query=is_query)
            active += float((neural > 0).sum())
            mass += float(neural.sum())
            total_mass += float(full.sum())
            weights.append(neural[neural > 0])
    nonzero = torch.cat(weights) if weights else torch.zeros(0)
    return {
        "active": active / max(len(texts), 1),
        "mean_weight": float(nonzero.mean()) if nonzero.numel() else 0.0,
        "share": mass / total_mass if total_mass else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="a benchmarks/quality/run.sh output directory")
    parser.add_argument("--texts", type=int, default=256, help="documents and queries per dev set (first N)")
    args = parser.parse_args(argv)

    from raysparse.data import read_beir
    from raysparse.encoding import join_title
    from raysparse.model import SparseEncoder

    out: Path = args.out
    models = {
        "untrained (step 0)": out / "pipeline" / "backbone" / "model",
        "trained": out / "model",
    }
    for name, path in models.items():
        if not (path / "raysparse.json").is_file():
            print(f"neural_share.py: {path}: no raysparse model ({name}); run benchmarks/quality/run.sh OUT first",
                  file=sys.stderr)  # fmt: skip
            return 2
    t0 = time.perf_counter()
    rows = []
    for name, path in models.items():
        encoder = SparseEncoder.from_pretrained(path).eval()
        for dev in SETS:
            data = read_beir(out / "data" / "dev" / dev)
            rows_in = data.corpus.slice(0, args.texts).to_pylist()
            docs = [join_title(r["title"], r["text"], encoder.spec) for r in rows_in]
            queries = [r["text"] for r in data.queries.slice(0, args.texts).to_pylist()]
            for side, texts in (("documents", docs), ("queries", queries)):
                s = transformer_share(encoder, texts, is_query=side == "queries")
                rows.append(
                    f"| {name} | {dev} | {side} | {len(texts)} | {s['active']:.1f} | {s['mean_weight']:.3f} | "
                    f"{100 * s['share']:.3f}% |"
                )
    lines = [
        "# The transformer's part of the recipe model's vectors",
        "",
        f"Machine: {platform.machine()} CPU, {platform.python_implementation()} {platform.python_version()}; "
        f"{time.perf_counter() - t0:.0f} s. Command: `python benchmarks/quality/neural_share.py OUT "
        f"--texts {args.texts}` (OUT from `benchmarks/quality/run.sh OUT`).",
        "",
        "Active terms: terms the transformer part gives a weight > 0, per text; share: its part of the summed term "
        "weights of the whole vector (transformer + BM25 pieces, with the statistics saved in the model, + "
        "translations). The first N documents and queries of each dev set.",
        "",
        "| model | dev set | side | texts | transformer active terms / text | mean active weight | transformer share |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "neural_share.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
