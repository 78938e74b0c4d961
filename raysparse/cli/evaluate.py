"""``raysparse evaluate``: a sparse or dense encoder and/or BM25 on any BEIR directory or the ko<->en MS MARCO dev sets.

Every system's metrics.json carries nDCG/MRR/recall/precision, the index size per document in bytes and, for the
first ``eval.latency_queries`` queries (default 100), the batch-1 latency p50/p99 of encode + search on this CPU.

Writes ``OUT/metrics.json`` (the first system: the model when ``--model`` is given), one ``OUT/<system>/metrics.json``
+ ``run.trec`` per system, and with ``--model`` and a baseline ``OUT/report.md`` with PNG plots.
``--crosslingual`` does the same in ``OUT/<set>/`` for ko-en, en-ko and ko-ko and writes ``OUT/summary.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from raysparse.cli import add_allow_empty_arg, add_config_args, config_from_args, print_locations

SAMPLE_GLOSSARY = Path(__file__).resolve().parents[1] / "resources" / "sample" / "glossary.tsv"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="nDCG@10 / MRR@10 / recall@100 of a model and/or BM25 on a BEIR-layout directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        metavar="DIR|URI",
        help="a SparseEncoder directory (save_pretrained layout), a dense bi-encoder directory (model.kind dense, or "
        "any sentence-transformers directory: exact inner-product search), or its storage URI (s3://, gs://, file://)",
    )
    parser.add_argument(
        "--bm25",
        action="append",
        choices=["kiwi", "bigram", "pieces", "translated"],
        help="BM25 baseline (repeatable): kiwi / bigram analyzers; pieces = BM25 over the --model's own word "
        "pieces (what its untrained lexical part approximates); translated = BM25-Kiwi over dictionary-translated "
        "queries (word-level Dice table from augment.parallel_text + glossaries, see --translator); with --model "
        "the first is the report's baseline, default eval.bm25_analyzer",
    )
    parser.add_argument(
        "--translator",
        metavar="FILE",
        help="word translation table (JSON) for --bm25 translated: loaded when it exists, else learned from the "
        "config's augment.parallel_text / dictionaries / use_shared_glossaries and written there",
    )
    parser.add_argument(
        "--spec",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override the model's saved encoding spec (repeatable, logged), e.g. doc_top_k=100, max_windows=1",
    )
    parser.add_argument("--no-baseline", action="store_true", help="with --model: skip BM25 and the report")
    parser.add_argument(
        "--st-evaluator",
        action="store_true",
        help="with --model: also export it to sentence-transformers (a temporary copy) and report that library's "
        "SparseInformationRetrievalEvaluator figures on the same set next to ours (OUT/model/st_evaluator.json, "
        "metrics.json 'sentence_transformers'; needs sentence-transformers, see docs/interop.md)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--beir", metavar="DIR", help="BEIR directory: corpus.jsonl, queries.jsonl, qrels/<split>.tsv"
    )
    source.add_argument(
        "--crosslingual",
        action="store_true",
        help="the ko-en / en-ko / ko-ko MS MARCO dev sets (--msmarco-dir)",
    )
    parser.add_argument("--split", default="test", help="qrels split of --beir (default test)")
    parser.add_argument("--msmarco-dir", metavar="DIR", help="directory with msmarco_{kor,eng}.dev1000.json")
    parser.add_argument("--first-id", type=int, default=801, help="first MS MARCO query id of the dev sets")
    parser.add_argument("--last-id", type=int, default=1000, help="last MS MARCO query id of the dev sets")
    parser.add_argument(
        "--sets",
        nargs="+",
        default=["ko-en", "en-ko", "ko-ko"],
        choices=["ko-en", "en-ko", "ko-ko", "en-en"],
        help="which --crosslingual sets (default: ko-en en-ko ko-ko)",
    )
    parser.add_argument(
        "--distractors", type=int, default=0, help="passages of other ids added to each corpus"
    )
    parser.add_argument(
        "--dictionary",
        metavar="FILE",
        help="ko<TAB>en term pairs for the synonym section (default: sample glossary)",
    )
    parser.add_argument("--max-pairs", type=int, default=300, help="dictionary pairs used in the report")
    parser.add_argument(
        "--opensearch",
        metavar="URL",
        help="compute the metrics from OpenSearch's own results for --beir (needs --index; see raysparse index)",
    )
    parser.add_argument("--index", metavar="NAME", help="the OpenSearch index holding the --beir corpus")
    parser.add_argument(
        "--os-mode",
        choices=["sparse", "bm25", "hybrid"],
        default=None,
        help="OpenSearch query form (default: sparse with --model, bm25 without)",
    )
    parser.add_argument(
        "--out", metavar="DIR|URI", required=True, help="output directory (or s3:// / gs:// / file:// URI)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="--out holds an earlier evaluation: remove its results (metrics, runs, report, plots, summaries; "
        "nothing else) before writing; without it such a directory is refused (exit 2)",
    )
    add_allow_empty_arg(parser, "no query has a judged document in the corpus (every metric would be 0)")
    add_config_args(parser)
    parser.set_defaults(func=run)


EVALUATE_FILES = ("metrics.json", "report.md", "delta_ndcg.png", "synonyms.png", "summary.md", "summary.json")
CROSSLINGUAL_SETS = ("ko-en", "en-ko", "ko-ko", "en-en")


def earlier_outputs(out: Path) -> list[Path]:
    """What an earlier ``evaluate`` left in ``out``: its top-level files, system folders (metrics.json / run.trec)
    and cross-lingual set folders. Anything else in ``out`` is the user's and stays."""
    found = [out / name for name in EVALUATE_FILES if (out / name).exists()]
    for sub in out.iterdir():
        if not sub.is_dir():
            continue
        if (
            (sub / "metrics.json").is_file()
            or (sub / "run.trec").is_file()
            or (sub.name in CROSSLINGUAL_SETS and any(sub.rglob("metrics.json")))
        ):
            found.append(sub)
    return found


def check_judged(data: Any, where: str, allow_empty: bool) -> None:
    """Refuse a collection whose qrels name no document of its corpus (all metrics would silently be 0)."""
    import pyarrow.compute as pc

    from raysparse.errors import require_nonempty

    qrels = data.qrels.filter(pc.greater(data.qrels.column("score"), 0))
    in_corpus = pc.is_in(qrels.column("doc_id"), value_set=data.corpus.column("doc_id"))
    judged = qrels.filter(in_corpus)
    asked = pc.is_in(judged.column("query_id"), value_set=data.queries.column("query_id"))
    usable = len(set(judged.filter(asked).column("query_id").to_pylist()))
    require_nonempty(
        usable,
        f"evaluate {where}",
        f"no query has a relevant document in the corpus ({qrels.num_rows} positive judgements, "
        f"{int(pc.sum(in_corpus).as_py() or 0)} naming a corpus document, {data.queries.num_rows} queries)",
        allow_empty,
    )


def _evaluate_collection(args: argparse.Namespace, cfg: Any, data: Any, out: Path, model: Any) -> list[Any]:
    """Evaluate every requested system on one collection into ``out``; returns their results (first = primary)."""
    from raysparse.evaluation import evaluate_bm25, evaluate_model, write_metrics, write_run

    analyzers = list(dict.fromkeys(args.bm25 or ([] if args.no_baseline else [cfg.eval.bm25_analyzer])))
    if args.model and args.no_baseline:
        analyzers = []
    results = []
    translator = _translator(args, cfg) if "translated" in analyzers else None
    if model is not None:
        results.append(
            evaluate_model(model, data, cfg.eval, system="model")  # the model's saved encoding spec
        )
    for analyzer in analyzers:
        if analyzer == "pieces":
            from raysparse.evaluation.core import model_piece_analyzer

            if model is None:
                raise ValueError("--bm25 pieces needs --model (BM25 over that model's word pieces)")
            analyze = model_piece_analyzer(model)
            results.append(evaluate_bm25(data, "pieces", cfg.eval, analyze=analyze, system="bm25-pieces"))
        elif analyzer == "translated":
            results.append(
                evaluate_bm25(
                    data, "kiwi", cfg.eval, translate=translator.translate_all, system="bm25-kiwi-translated"
                )
            )
        else:
            results.append(evaluate_bm25(data, analyzer, cfg.eval))
    for result in results:
        write_metrics(result, out / result.system / "metrics.json")
        write_run(result, out / result.system / "run.trec", depth=max(cfg.eval.recall_k, 100))
    primary = results[0]
    baseline = results[1] if len(results) > 1 else None
    extra = (
        {"baseline": {"system": baseline.system, **baseline.metrics}}
        if baseline and model is not None
        else {}
    )
    if model is not None and args.st_evaluator:
        extra["sentence_transformers"] = _st_evaluator(model, data, out, results[0])
    write_metrics(primary, out / "metrics.json", **extra)
    if model is not None and baseline is not None:
        from raysparse.evaluation.devsets import dictionary_pairs
        from raysparse.evaluation.report import write_report

        pairs: list[tuple[str, str]] = []
        source = args.dictionary or (str(SAMPLE_GLOSSARY) if SAMPLE_GLOSSARY.is_file() else None)
        if source:
            pairs, report = dictionary_pairs(source, limit=args.max_pairs)
            print(report, file=sys.stderr)
        path = write_report(out, data, primary, baseline, model=model, pairs=pairs, pairs_source=source)
        print(f"report: {path}")
    return results


def _st_evaluator(model: Any, data: Any, out: Path, ours: Any) -> dict[str, Any]:
    """sentence-transformers' evaluator on the same set (raysparse.interop), printed next to our figures."""
    import tempfile

    from raysparse.interop import st_evaluator_figures

    with tempfile.TemporaryDirectory(prefix="raysparse-st-") as tmp:
        figures = st_evaluator_figures(model, data, Path(tmp) / "model")
    (out / ours.system).mkdir(parents=True, exist_ok=True)
    (out / ours.system / "st_evaluator.json").write_text(
        json.dumps(figures, indent=2) + "\n", encoding="utf-8"
    )
    print(f"{'metric':<12} {'raysparse':>10} {'sentence-transformers':>22} {'|diff|':>9}")
    for name, theirs in figures["metrics"].items():
        if name in ours.metrics:
            mine = float(ours.metrics[name])
            print(f"{name:<12} {mine:>10.4f} {theirs:>22.4f} {abs(mine - theirs):>9.2e}")
    for note in figures["differences"]:
        print(f"note: {note}", file=sys.stderr)
    return {k: figures[k] for k in ("sentence_transformers_version", "queries", "metrics", "differences")}


def _translator(args: argparse.Namespace, cfg: Any) -> Any:
    """The word-level translation table for ``--bm25 translated``: ``--translator`` if it exists, else learned."""
    from raysparse.evaluation.translated import WordTranslator, learn_word_translator

    if args.translator and Path(args.translator).is_file():
        return WordTranslator.load(args.translator)
    from raysparse.augment import BilingualDictionary, sentence_pairs_table

    terms = BilingualDictionary.from_sources(
        cfg.augment.dictionaries, use_shared=cfg.augment.use_shared_glossaries
    ).to_table()
    sentences = sentence_pairs_table(cfg.augment.parallel_text)
    if terms.num_rows + sentences.num_rows == 0:
        raise ValueError(
            "--bm25 translated needs parallel text or a dictionary: set augment.parallel_text, "
            "augment.dictionaries or augment.use_shared_glossaries"
        )
    translator = learn_word_translator(
        zip(sentences.column("ko").to_pylist(), sentences.column("en").to_pylist(), strict=True),
        zip(terms.column("ko").to_pylist(), terms.column("en").to_pylist(), strict=True),
    )
    if args.translator:
        Path(args.translator).parent.mkdir(parents=True, exist_ok=True)
        translator.save(args.translator)
    print(f"word translation table: {len(translator.table)} terms", file=sys.stderr)
    return translator


def _apply_spec_overrides(model: Any, overrides: list[str]) -> None:
    """``--spec key=value`` on the loaded model's encoding spec (typed by the spec's fields; logged)."""
    import dataclasses

    if not overrides:
        return
    fields = {f.name: f for f in dataclasses.fields(model.spec)}
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--spec {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        current = getattr(model.spec, key)
        if value.lower() in ("null", "none"):
            changes[key] = None
        elif isinstance(current, bool):
            changes[key] = value.lower() in ("1", "true", "yes")
        elif key in ("doc_top_k", "query_top_k") or isinstance(current, int):
            changes[key] = int(value)
        elif isinstance(current, float):
            changes[key] = float(value)
        else:
            changes[key] = value
    model.spec = dataclasses.replace(model.spec, **changes)
    print(f"encoding spec overridden: {changes}", file=sys.stderr)


def _evaluate_opensearch(args: argparse.Namespace, cfg: Any, data: Any, out: Path) -> Any:
    """metrics.json from OpenSearch's results for ``data``'s queries (the corpus must already be indexed)."""
    from raysparse.evaluation import evaluate_run, write_metrics, write_run
    from raysparse.opensearch import index_term_stats, make_client, model_query_encoder, opensearch_run

    mode = args.os_mode or ("sparse" if args.model else "bm25")
    encoder = model_query_encoder(args.model) if args.model else None
    run, _ = opensearch_run(
        args.opensearch, args.index, data, encoder, mode, size=cfg.eval.recall_k, os_cfg=cfg.opensearch
    )
    stats = {}
    if encoder is not None:
        query_terms = encoder(data.queries.column("text").to_pylist())
        stats = index_term_stats(make_client(cfg.opensearch, url=args.opensearch), args.index, query_terms)
    result = evaluate_run(run, data, system=f"opensearch-{mode}", stats=stats)
    write_metrics(
        result, out / "metrics.json", opensearch={"url": args.opensearch, "index": args.index, "mode": mode}
    )
    write_run(result, out / result.system / "run.trec", depth=cfg.eval.recall_k)
    return result


def run(args: argparse.Namespace) -> int:
    from raysparse.evaluation.report import summary_table
    from raysparse.storage import local_model, resolve_output

    if args.model:
        args.model = local_model(args.model)  # a storage URI is copied to a local cache first

    if args.opensearch and not (args.index and args.beir):
        print("raysparse evaluate: --opensearch needs --index NAME and --beir DIR", file=sys.stderr)
        return 2
    from raysparse.outputs import claim_output_dir

    if args.opensearch:
        from raysparse.data import read_beir

        cfg = config_from_args(args)
        location = resolve_output(
            args.out, cfg.ray.storage_path, "raysparse evaluate", address=cfg.ray.address
        )
        data = read_beir(args.beir, args.split)
        check_judged(data, args.beir, args.allow_empty)
        claim_output_dir(location.local, "evaluate", earlier_outputs, args.overwrite)
        result = _evaluate_opensearch(args, cfg, data, location.local)
        location.publish()
        print(summary_table([result]))
        print_locations(location, {"metrics": location.local / "metrics.json"})
        return 0
    if args.st_evaluator and not args.model:
        print("raysparse evaluate: --st-evaluator needs --model DIR", file=sys.stderr)
        return 2
    if not args.model and not args.bm25:
        print("raysparse evaluate: give --model DIR and/or --bm25 kiwi|bigram", file=sys.stderr)
        return 2
    if args.crosslingual and not args.msmarco_dir:
        print("raysparse evaluate: --crosslingual needs --msmarco-dir DIR", file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    location = resolve_output(args.out, cfg.ray.storage_path, "raysparse evaluate", address=cfg.ray.address)
    out = location.local
    # bad input raises ValueError/FileNotFoundError: cli.main makes it one line, exit 2
    from raysparse.data import read_beir
    from raysparse.evaluation.core import load_encoder
    from raysparse.evaluation.devsets import crosslingual_dev_sets

    model = load_encoder(args.model) if args.model else None
    if model is not None:
        _apply_spec_overrides(model, args.spec)
    if args.beir:
        data = read_beir(args.beir, args.split)
        for report in data.reports:
            print(report, file=sys.stderr)
        check_judged(data, args.beir, args.allow_empty)
        removed = claim_output_dir(out, "evaluate", earlier_outputs, args.overwrite)
        if removed:
            print(f"--overwrite: removed {len(removed)} earlier result(s) from {out}", file=sys.stderr)
        results = _evaluate_collection(args, cfg, data, out, model)
        location.publish()
        print(summary_table(results))
        print_locations(location, {"metrics": out / "metrics.json"})
        return 0
    sets = crosslingual_dev_sets(
        args.msmarco_dir, args.first_id, args.last_id, args.distractors, sets=args.sets
    )
    for name, data in sets.items():
        check_judged(data, f"{args.msmarco_dir} ({name})", args.allow_empty)
    removed = claim_output_dir(out, "evaluate", earlier_outputs, args.overwrite)
    if removed:
        print(f"--overwrite: removed {len(removed)} earlier result(s) from {out}", file=sys.stderr)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    lines = [f"# Cross-lingual dev sets (MS MARCO ids {args.first_id}-{args.last_id})", ""]
    for name, data in sets.items():
        results = _evaluate_collection(args, cfg, data, out / name, model)
        summary[name] = {r.system: dict(r.metrics) for r in results}
        lines += [f"## {name}: {data.summary()}", "", summary_table(results), ""]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text("\n".join(lines), encoding="utf-8")
    location.publish()
    print("\n".join(lines))
    print_locations(location, {"metrics": out / "summary.json"})
    return 0
