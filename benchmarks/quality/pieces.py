"""Korean-aware pieces, measured: BM25 over the encoder's own word pieces for each tokenizer choice.

The lexical part of the encoder is BM25 over its pieces (docs/encoding.md), so the tokenizer decides how close the
untrained encoder can get to BM25-Kiwi. For each variant this trains the tokenizer on the recipe's training-side text
(the same texts the pipeline's backbone stage uses: training corpus, training queries, parallel text, glossaries;
no dev text) and evaluates BM25 over the pieces, with each dev corpus's own statistics, on the Korean dev sets:

- pre-tokenisation: ``none`` (BERT's whitespace/punctuation split) or ``kiwi`` (Korean morphemes first);
- vocabulary size;
- which pieces count: all, content pieces (function-morpheme pieces, punctuation, specials out), or content pieces +
  a function piece that begins a longer word (the encoder's ``LexicalPrior``).

    python benchmarks/quality/pieces.py OUT [--vocab 16000 32000]    # OUT = a run.sh output (needs OUT/data)

Prints a Markdown table and writes it to OUT/pieces.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SETS = ("klue-odqa-distractors", "msmarco-ko-ko-distractors")


def training_texts(out: Path, data_dir: Path) -> list[str]:
    """The backbone stage's texts, rebuilt from OUT/data the way run.sh configures the pipeline."""
    from raysparse.augment import BilingualDictionary, sentence_pairs_table
    from raysparse.config import load_config
    from raysparse.data import load_source
    from raysparse.pipeline import split_queries

    parallel = [
        str(data_dir / "bilingual" / "tatoeba" / "kor.txt"),
        str(data_dir / "bilingual" / "news-parallel-dev" / "korean-english-park.dev.ko"),
        str(data_dir / "bilingual" / "news-parallel-dev" / "jhe-koen-dev.ko"),
        str(out / "data" / "parallel" / "python_docs_train.jsonl"),
        str(out / "data" / "parallel" / "msmarco_1_800.jsonl"),
    ]
    cfg = load_config(
        REPO / "benchmarks" / "quality" / "config.yaml",
        [f"data.path={out / 'data' / 'train'}", "augment.parallel_text=[" + ",".join(parallel) + "]"],
    )
    data = load_source(cfg.data)
    train, _ = split_queries(data, cfg.data.dev_fraction, cfg.data.seed)
    terms = BilingualDictionary.from_sources(cfg.augment.dictionaries, use_shared=True).to_table()
    sentences = sentence_pairs_table(cfg.augment.parallel_text)
    texts = data.corpus.column("text").to_pylist() + train.queries.column("text").to_pylist()
    texts += sentences.column("ko").to_pylist() + sentences.column("en").to_pylist()
    return texts + terms.column("ko").to_pylist() + terms.column("en").to_pylist()


def make_analyzer(tokenizer, prior, mode: str, terms: str):
    """BM25 analyzer over ``tokenizer``'s pieces keeping ``terms`` (all / content / content + word starts)."""
    from raysparse.encoding import pretokenize

    mask = prior.piece_mask > 0

    def analyze(batch: list[str]) -> list[list[str]]:
        ids = tokenizer(pretokenize(list(batch), mode), add_special_tokens=False)["input_ids"]
        if terms == "all pieces":
            return [[str(i) for i in row] for row in ids]
        if terms == "content pieces":
            return [[str(i) for i in row if mask[i]] for row in ids]
        return [[str(i) for i in prior.term_ids(row)] for row in ids]

    return analyze


def main(argv: list[str] | None = None) -> int:
    from raysparse.backbone import train_tokenizer
    from raysparse.data import read_beir
    from raysparse.encoding import kiwi_segment_with_tags
    from raysparse.evaluation import evaluate_bm25
    from raysparse.model import fit_lexical_prior

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "out", type=Path, help="a benchmarks/quality/run.sh output directory (reads OUT/data)"
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="../shared/data")
    parser.add_argument("--vocab", type=int, nargs="+", default=[16000, 32000])
    args = parser.parse_args(argv)
    t0 = time.time()
    texts = training_texts(args.out, args.data)
    devs = {name: read_beir(args.out / "data" / "dev" / name) for name in SETS}
    rows = []
    reference = {
        name: {a: evaluate_bm25(d, a, show_progress=False).metrics["ndcg@10"] for a in ("kiwi", "bigram")}
        for name, d in devs.items()
    }
    segmented, content, function = kiwi_segment_with_tags(texts)
    for mode in ("none", "kiwi"):
        tok_texts = segmented if mode == "kiwi" else texts
        for vocab in args.vocab:
            tokenizer = train_tokenizer(tok_texts, vocab_size=vocab)
            counts = {"function_counts": function, "content_counts": content} if mode == "kiwi" else {}
            prior = fit_lexical_prior(tokenizer, tok_texts, **counts)
            for terms in ("all pieces", "content pieces", "content + word-start pieces"):
                analyze = make_analyzer(tokenizer, prior, mode, terms)
                scores = [
                    evaluate_bm25(d, "pieces", analyze=analyze, show_progress=False).metrics["ndcg@10"]
                    for d in devs.values()
                ]
                rows.append((mode, vocab, terms, scores))
                print(f"{mode} {vocab} {terms}: " + " ".join(f"{s:.4f}" for s in scores), file=sys.stderr)
    lines = [
        "# Korean-aware pieces: BM25 over the encoder's own pieces (nDCG@10, each dev corpus's statistics)",
        "",
        f"Machine: {platform.machine()} CPU VM, no GPU; Python {platform.python_version()}; "
        f"{time.time() - t0:.0f} s. Command: `python benchmarks/quality/pieces.py OUT "
        f"--vocab {' '.join(map(str, args.vocab))}` (OUT from `benchmarks/quality/run.sh OUT`).",
        "",
        "| pre-tokenisation | vocabulary | terms | " + " | ".join(SETS) + " |",
        "|---|---|---|" + "---|" * len(SETS),
    ]
    for name in ("kiwi", "bigram"):
        lines.append(
            f"| BM25-{name} (reference) | – | – | "
            + " | ".join(f"{reference[s][name]:.4f}" for s in SETS)
            + " |"
        )
    for mode, vocab, terms, scores in rows:
        lines.append(f"| {mode} | {vocab} | {terms} | " + " | ".join(f"{s:.4f}" for s in scores) + " |")
    table = "\n".join(lines) + "\n"
    (args.out / "pieces.md").write_text(table, encoding="utf-8")
    (args.out / "pieces.json").write_text(json.dumps(rows) + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
