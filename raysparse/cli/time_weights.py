"""``raysparse time-weights``: recency IDF table and rising terms from a dated corpus (raysparse.timeweight)."""

from __future__ import annotations

import argparse
import json
import sys

from raysparse.cli import add_config_args, config_from_args, flag_overrides, setup_logging


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "time-weights",
        help="recency-aware IDF table and rising terms from a dated corpus",
        description=(
            "Read a dated corpus (dated JSON lines such as the petitions archive, a one-document-per-line text file "
            "with a date, or corpus Parquet), count document frequencies per time window (time.period), and write "
            "OUT/time_weights.parquet + OUT/time_weights.json: per term the recency IDF "
            "log(1 + (N_eff - df_eff + 0.5) / (df_eff + 0.5)) where each window's counts weigh "
            "2^(-|reference - window centre| / time.half_life_days), next to the plain IDF. Also writes "
            "OUT/rising_terms.json (every window against all earlier ones: smoothed log share ratio and "
            "two-proportion z-score, at least time.rising_min_count documents) and prints the top rising terms. "
            "Flags are shorthands for time.* config keys. See docs/time-aware.md."
        ),
    )
    parser.add_argument(
        "--corpus",
        action="append",
        metavar="PATH",
        help="dated corpus file or directory (repeatable; default: time.corpus)",
    )
    parser.add_argument("--out", metavar="DIR", help="output directory (default: <output_dir>/time_weights)")
    parser.add_argument("--date-field", metavar="NAME", help="time.date_field (JSON lines; petitions: begin)")
    parser.add_argument(
        "--text-field", metavar="NAME", help="time.text_field (JSON lines; petitions: content)"
    )
    parser.add_argument("--period", choices=["day", "week", "month", "year"], help="time.period")
    parser.add_argument("--half-life", type=float, metavar="DAYS", help="time.half_life_days")
    parser.add_argument(
        "--reference-date", metavar="YYYY-MM-DD", help="time.reference_date (default: newest)"
    )
    parser.add_argument("--analyzer", choices=["kiwi", "bigram"], help="time.analyzer")
    parser.add_argument("--top-k", type=int, metavar="K", help="time.rising_top_k: rising terms per window")
    add_config_args(parser)
    parser.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    return flag_overrides(
        args,
        "time",
        (
            ("date_field", "date_field"),
            ("text_field", "text_field"),
            ("period", "period"),
            ("half_life", "half_life_days"),
            ("reference_date", "reference_date"),
            ("analyzer", "analyzer"),
            ("top_k", "rising_top_k"),
        ),
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pyarrow as pa

    from raysparse.corpus.dated import read_dated_source
    from raysparse.timeweight import recency_idf, rising_terms_per_window, term_document_frequencies

    setup_logging()
    cfg = config_from_args(args, overrides_from_args(args))
    tc = cfg.time
    paths = args.corpus or ([tc.corpus] if tc.corpus else [])
    if not paths:
        print("error: give --corpus PATH (or set time.corpus)", file=sys.stderr)
        return 2
    corpora = []
    for path in paths:
        data = read_dated_source(path, date_field=tc.date_field, text_field=tc.text_field)
        for report in data.reports:
            print(report, file=sys.stderr)
        corpora.append(data.corpus.select(["doc_id", "title", "text", "date"]))
    corpus = pa.concat_tables(corpora, promote_options="permissive")
    titles = corpus["title"].to_pylist()
    texts = [f"{t} {b}" if t else b for t, b in zip(titles, corpus["text"].to_pylist(), strict=True)]
    stats = term_document_frequencies(texts, corpus["date"].to_pylist(), tc.analyzer, tc.period)
    if stats.undated:
        print(f"{stats.undated} undated documents are in no window (not counted)", file=sys.stderr)
    table = recency_idf(stats, tc.half_life_days, tc.reference_date)
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "time_weights"
    table.save(out)
    rising = rising_terms_per_window(
        stats, min_count=tc.rising_min_count, min_z=tc.rising_min_z, top_k=tc.rising_top_k
    )
    (out / "rising_terms.json").write_text(json.dumps(rising, ensure_ascii=False, indent=1), encoding="utf-8")
    for window, n in zip(stats.windows, stats.docs, strict=True):
        rows = rising.get(window)
        terms = ", ".join(f"{r['term']}({r['recent_df']}/{r['past_df']})" for r in rows or [])
        print(f"{window}  {int(n):6d} docs  {'(first window)' if rows is None else terms or '-'}")
    print(
        f"wrote {out / 'time_weights.parquet'}, {out / 'time_weights.json'}, {out / 'rising_terms.json'} "
        f"({len(table.terms)} terms, N_eff={table.n_eff:.1f})"
    )
    return 0
