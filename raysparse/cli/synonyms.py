"""``raysparse synonyms``: Korean-English term pairs discovered from a trained encoder (discover, evaluate, loop)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from raysparse.cli import add_config_args, config_from_args, setup_logging


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synonyms",
        help="discover Korean-English term pairs from a trained encoder; score them against a glossary",
        description=(
            "Mine Korean-English dictionary candidates from a trained sparse encoder with three signals (which "
            "English terms a Korean term activates and vice versa; co-activation over aligned sentence pairs; "
            "output-embedding neighbours), combined into one score with a threshold and a cap per term "
            "(synonyms.* in the config). The candidates are written in the dictionary format the augmentation "
            "stage reads (augment.dictionaries), with scores and provenance. See docs/synonyms.md."
        ),
    )
    sub = parser.add_subparsers(dest="synonyms_command", metavar="ACTION")

    discover = sub.add_parser(
        "discover",
        help="model dir -> OUT/candidates.json (dictionary) + OUT/discovery_report.json",
        description=(
            "Read aligned sentence pairs (--parallel, else synonyms.parallel_text, else augment.parallel_text), "
            "extract Korean (Kiwi) and English word lists from them, score every Korean/English term pair with "
            "the encoder in --model, and write OUT/candidates.json (a JSON list of {korean, english, score, "
            "signals, source}; add it to augment.dictionaries), OUT/ranked_<signal>.json (top terms per "
            "signal, for evaluation) and OUT/discovery_report.json. With --glossary, precision@k of each signal "
            "against each glossary is added to the report; the glossary must not have been used to build or "
            "train the model (augment.use_shared_glossaries=false), or the number is leaked."
        ),
    )
    discover.add_argument("--model", required=True, metavar="DIR", help="a SparseEncoder directory")
    discover.add_argument("--out", required=True, metavar="DIR", help="output directory")
    discover.add_argument(
        "--parallel",
        action="append",
        default=[],
        metavar="FILE",
        help="sentence-pair file (tatoeba TSV, X.ko/X.en, ko/en JSONL; repeatable; sets synonyms.parallel_text)",
    )
    discover.add_argument(
        "--glossary", action="append", default=[], metavar="TSV", help="held-aside glossary (repeatable)"
    )
    discover.add_argument("--threshold", type=float, help="synonyms.threshold: minimum combined score")
    discover.add_argument("--cap", type=int, help="synonyms.cap_per_term: translations kept per term")
    add_config_args(discover)
    discover.set_defaults(func=run_discover)

    evaluate = sub.add_parser(
        "evaluate",
        help="precision@k of a candidates file against a glossary",
        description=(
            "Score a candidates file (written by `synonyms discover`) against one or more glossaries "
            "(TSV/JSON read by BilingualDictionary). precision@k is the fraction of Korean terms, among those "
            "that have candidates and glossary entries, with a correct English term in their k best candidates; "
            "pair precision@k is correct pairs / all listed pairs. Prints JSON (and writes it with --out)."
        ),
    )
    evaluate.add_argument(
        "--candidates", required=True, metavar="JSON", help="candidates.json / ranked_*.json"
    )
    evaluate.add_argument("--glossary", required=True, action="append", metavar="TSV", help="repeatable")
    evaluate.add_argument("-k", type=int, action="append", metavar="K", help="cut-offs (default 1, 5, 10)")
    evaluate.add_argument("--out", metavar="FILE", help="write the JSON result here too")
    evaluate.set_defaults(func=run_evaluate)

    loop = sub.add_parser(
        "loop",
        help="discover -> add to dictionary -> augment -> retrain, and both arms on dev sets",
        description=(
            "One closed round: run the main job (OUT/baseline), discover pairs from its trained model "
            "(OUT/discovery), run the same job again with the candidates added to augment.dictionaries and the "
            "baseline's backbone (OUT/discovered), and evaluate both trained models on every --dev BEIR directory "
            "(OUT/loop_results.md/json). Stages are cached: re-running resumes."
        ),
    )
    loop.add_argument("--out", required=True, metavar="DIR", help="output directory")
    loop.add_argument("--dev", action="append", default=[], metavar="DIR", help="BEIR dev set (repeatable)")
    loop.add_argument(
        "--glossary", action="append", default=[], metavar="TSV", help="held-aside glossary (repeatable)"
    )
    loop.add_argument("--force", action="store_true", help="re-run every stage even when cached")
    add_config_args(loop)
    loop.set_defaults(func=run_loop)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _setup() -> None:
    setup_logging()


def run_discover(args: argparse.Namespace) -> int:
    from raysparse.synonyms import precision_table, run_discovery

    _setup()
    overrides = []
    if args.parallel:
        overrides.append(f"synonyms.parallel_text=[{','.join(args.parallel)}]")
    if args.threshold is not None:
        overrides.append(f"synonyms.threshold={args.threshold}")
    if args.cap is not None:
        overrides.append(f"synonyms.cap_per_term={args.cap}")
    cfg = config_from_args(args, overrides)
    if not (cfg.synonyms.parallel_text or cfg.augment.parallel_text):
        print(
            "raysparse synonyms discover: no sentence pairs; give --parallel FILE (or set synonyms.parallel_text)",
            file=sys.stderr,
        )
        return 2
    report = run_discovery(args.model, cfg, args.out, args.glossary)
    print(
        f"{report['candidates']} pairs for {report['korean_terms_with_candidates']} of {report['korean_terms']} "
        f"Korean terms -> {args.out}/candidates.json"
    )
    for glossary, p in report.get("precision", {}).items():
        print(f"\n{glossary}:\n{precision_table(p['by_signal'], cfg.synonyms.eval_k)}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raysparse.augment import BilingualDictionary
    from raysparse.synonyms import precision_at_k, read_candidates

    candidates = read_candidates(args.candidates)
    ks = args.k or [1, 5, 10]
    result = {}
    for g in args.glossary:
        glossary = BilingualDictionary.from_sources([g])
        result[g] = {f"p@{k}": precision_at_k(candidates, glossary, k) for k in ks}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


def run_loop(args: argparse.Namespace) -> int:
    from raysparse.ray_utils import init_ray
    from raysparse.synonyms import loop_table
    from raysparse.synonyms import run_loop as loop

    _setup()
    cfg = config_from_args(args)
    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        init_ray(cfg.ray.address)
    else:  # a fresh local instance: never attach to a `ray start` cluster someone else runs on this machine
        init_ray(num_cpus=os.cpu_count() or 1)
    if not args.dev:
        print("raysparse synonyms loop: give at least one --dev BEIR directory", file=sys.stderr)
        return 2
    result = loop(cfg, args.out, args.dev, args.glossary, force=args.force)
    print(loop_table(result["dev"], result["paired"]))
    return 0
