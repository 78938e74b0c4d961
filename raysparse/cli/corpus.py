"""``raysparse corpus``: build retrieval corpora (Wikipedia dumps -> passages; dated corpora -> time splits)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from raysparse.cli import (
    add_allow_empty_arg,
    add_config_args,
    config_from_args,
    flag_overrides,
    setup_logging,
)
from raysparse.errors import InputError

_WIKI_DESCRIPTION = """\
Turn Wikipedia into passages in the corpus schema (doc_id, title, text, date, lang + page_id, passage_no, section,
content_hash) as one Parquet file that `raysparse mine`, `generate-queries` and training read as they are
(data.format=parquet; the doc_id column is recognised without data.id_field).

Inputs (files or directories, any mix; every file is one shard):
  MediaWiki XML dumps      kowiki-YYYYMMDD-pages-articles.xml.bz2, -multistream.xml.bz2, or the split shards
                           kowiki-YYYYMMDD-pages-articles1.xml-p1p82407.bz2 ... (streamed: memory stays flat)
  WikiExtractor output     a directory of AA/wiki_00, AB/wiki_00.bz2, ... files, in --json form
                           ({"id","url","title","text"} per line) or the default <doc id url title> form

Cleaning: templates (nested), tables, references, comments, HTML, file/category/interlanguage links and the
navigation sections of corpus.drop_sections are removed; links keep their label; headings are section boundaries.
Skipped pages are counted by reason (non-article namespace, redirect, disambiguation, no text after cleaning).
Passages pack paragraphs up to corpus.passage_max_chars (long paragraphs split at sentence ends); doc_id is
{page_id}-{passage_no}.

Cache: the output lives in <cache_dir>/<sha256 of the inputs>-<settings hash>/passages.parquet with build.json.
A re-run with the same inputs and settings only hashes the inputs and prints "cached: true". --checksums verifies
every input against the official kowiki-YYYYMMDD-sha1sums.txt (or md5sums) while hashing.

Shards are parsed on Ray Data, one task per file (corpus.num_workers at a time) on the cluster of RAY_ADDRESS /
ray.address or a local one; on a multi-node cluster cache_dir must be shared storage. --no-ray parses here.

Examples:
  raysparse corpus wikipedia dumps/kowiki-20240101-pages-articles-multistream.xml.bz2 \\
      --checksums dumps/kowiki-20240101-sha1sums.txt --out outputs/kowiki
  raysparse corpus wikipedia extracted/ --max-chars 600 --no-ray --out outputs/kowiki-small
  raysparse mine --data-format parquet --data-path outputs/kowiki/passages.parquet
  raysparse mine --beir outputs/kowiki/beir      # with --title-queries: titles as (weak) queries"""

_DATED_DESCRIPTION = """\
Read a dated corpus with typed dates and split it in time: documents dated before --split-at go to OUT/older.parquet,
the others to OUT/newer.parquet (corpus schema), so that a model trained on the older part can be evaluated on the
newer one to measure drift. Undated documents go to neither side and are counted. OUT/summary.md lists the document
count per --period window and per side; OUT/split.json holds the same numbers.

Formats (--format auto picks by name):
  jsonl     dated JSON lines, a file or a directory of monthly files (the petitions archive: begin, content, title)
  lines     one document per line (soynlp news); the date comes from --date or a YYYY-MM-DD in the path
  parquet   a corpus Parquet written by raysparse (doc_id, text, title, date columns)

Examples:
  raysparse corpus dated --path ../shared/data/corpora/petitions-dated --split-at 2019-06-01 --out outputs/petitions
  raysparse corpus dated --path news.txt --date 2016-10-20 --period day --out outputs/news"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "corpus",
        help="build corpora: Wikipedia dumps -> cached passages Parquet; dated corpora -> time splits",
        description="Corpus builders. `raysparse corpus wikipedia --help` and `raysparse corpus dated --help`.",
    )
    sub = parser.add_subparsers(dest="corpus_command", metavar="SOURCE")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    wiki = sub.add_parser(
        "wikipedia",
        help="Wikipedia XML dumps / WikiExtractor output -> passages Parquet (cached)",
        description=_WIKI_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    wiki.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="dump files, shards or WikiExtractor directories"
    )
    wiki.add_argument(
        "--out",
        metavar="DIR",
        help="also copy passages.parquet and build.json here (the cache stays the source)",
    )
    wiki.add_argument("--cache-dir", metavar="DIR", help="corpus.cache_dir (default cache/corpus)")
    wiki.add_argument("--checksums", metavar="FILE", help="official *-sha1sums.txt / *-md5sums.txt to verify")
    wiki.add_argument("--max-chars", type=int, metavar="N", help="corpus.passage_max_chars (default 1000)")
    wiki.add_argument("--min-chars", type=int, metavar="N", help="corpus.passage_min_chars (default 40)")
    wiki.add_argument(
        "--namespaces", type=int, nargs="+", metavar="NS", help="corpus.namespaces kept (default 0: articles)"
    )
    wiki.add_argument(
        "--keep-disambiguation",
        action="store_true",
        help="keep disambiguation pages (corpus.skip_disambiguation)",
    )
    wiki.add_argument(
        "--workers", type=int, metavar="N", help="corpus.num_workers: shards parsed at once on Ray"
    )
    wiki.add_argument(
        "--no-ray", action="store_true", help="parse the shards in this process, one after another"
    )
    wiki.add_argument("--force", action="store_true", help="parse again even when the cache holds the output")
    wiki.add_argument(
        "--title-queries",
        action="store_true",
        help="with --out: also write OUT/beir with each title as a query judged against its page's first passage "
        "(weak supervision for a first mining run; synthetic queries come from generate-queries)",
    )
    add_config_args(wiki)
    wiki.set_defaults(func=run_wikipedia)

    dated = sub.add_parser(
        "dated",
        help="dated corpora (petitions, news) -> older/newer Parquet split at a date + per-window counts",
        description=_DATED_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dated.add_argument("--path", required=True, metavar="PATH", help="file or directory of the dated corpus")
    dated.add_argument("--format", choices=["auto", "jsonl", "lines", "parquet"], default="auto")
    dated.add_argument("--split-at", metavar="DATE", help="cutoff: older = date < DATE, newer = date >= DATE")
    dated.add_argument("--out", required=True, metavar="DIR", help="output directory")
    dated.add_argument(
        "--period",
        choices=["day", "week", "month", "year"],
        default="month",
        help="summary window (default month)",
    )
    dated.add_argument("--date-field", default="begin", help="JSON field with the date (default: begin)")
    add_allow_empty_arg(dated, "no document has a date (e.g. --date-field names a field the records lack)")
    dated.add_argument("--text-field", default="content", help="JSON field with the text (default: content)")
    dated.add_argument("--title-field", default="title", help="JSON field with the title (default: title)")
    dated.add_argument(
        "--id-field", default=None, help="JSON field with the id (default: ids from a text hash)"
    )
    dated.add_argument("--date", default=None, help="date of every document of a --format lines corpus")
    dated.set_defaults(func=run_dated)


def run_wikipedia(args: argparse.Namespace) -> int:
    import shutil

    from raysparse.corpus.wikipedia import build_wikipedia, title_queries

    setup_logging()
    overrides = flag_overrides(
        args,
        "corpus",
        (
            ("cache_dir", "cache_dir"),
            ("max_chars", "passage_max_chars"),
            ("min_chars", "passage_min_chars"),
            ("workers", "num_workers"),
        ),
    )
    if args.namespaces:
        overrides.append(f"corpus.namespaces=[{','.join(map(str, args.namespaces))}]")
    if args.keep_disambiguation:
        overrides.append("corpus.skip_disambiguation=false")
    if args.title_queries and not args.out:
        raise InputError("--title-queries needs --out")
    cfg = config_from_args(args, overrides)
    if not args.no_ray:
        from raysparse.ray_utils import init_ray

        init_ray(cfg.ray.address)
    build = build_wikipedia(
        args.inputs, cfg.corpus, ray=not args.no_ray, checksums=args.checksums, force=args.force
    )
    output = Path(build.output)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(output, out / "passages.parquet")
        (out / "build.json").write_text(build.to_json(), encoding="utf-8")
        output = out / "passages.parquet"
        if args.title_queries:
            import pyarrow.parquet as pq

            from raysparse.data import write_beir

            write_beir(title_queries(pq.read_table(output)), out / "beir")
    skipped = ", ".join(f"{n} {reason}" for reason, n in build.skipped.items()) or "none"
    print(
        f"cached: {str(build.cached).lower()}  passages: {build.passages}  pages: {build.pages_kept}  "
        f"skipped: {skipped}",
        file=sys.stderr,
    )
    print(
        json.dumps({"output": str(output), "cache": build.output, "cached": build.cached, "key": build.key})
    )
    return 0


def run_dated(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from raysparse.corpus.dated import count_undated, read_dated_source, split_by_time, window_summary

    setup_logging()
    data = read_dated_source(
        args.path,
        args.format,
        args.date_field,
        args.text_field,
        args.title_field or None,
        args.id_field or None,
        args.date,
    )
    for report in data.reports:
        print(report, file=sys.stderr)
    from raysparse.errors import require_nonempty

    undated = count_undated(data.corpus)
    require_nonempty(
        data.corpus.num_rows - undated,
        f"corpus dated {args.path}",
        f"{undated} of {data.corpus.num_rows} documents have no date in field {args.date_field!r}",
        args.allow_empty,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {
        "source": args.path,
        "documents": data.corpus.num_rows,
        "undated": undated,
        "period": args.period,
        "windows": window_summary(data.corpus, args.period),
    }
    sides = {}
    if args.split_at:
        older, newer = split_by_time(data, args.split_at)
        for name, side in (("older", older), ("newer", newer)):
            pq.write_table(side.corpus, out / f"{name}.parquet")
            sides[name] = side
            summary[name] = {
                "documents": side.corpus.num_rows,
                "windows": window_summary(side.corpus, args.period),
            }
        summary["split_at"] = args.split_at
    (out / "split.json").write_text(
        json.dumps(summary, ensure_ascii=False, indent=2, default=str), encoding="utf-8"
    )
    (out / "summary.md").write_text(_markdown(summary), encoding="utf-8")
    print(_markdown(summary))
    return 0


def _markdown(summary: dict) -> str:
    lines = [
        f"# Dated corpus: {summary['source']}",
        "",
        f"{summary['documents']} documents, {summary['undated']} undated (in no window and on neither side).",
        "",
    ]
    if "split_at" in summary:
        lines += [
            f"Split at {summary['split_at']}: {summary['older']['documents']} older (date < cutoff), "
            f"{summary['newer']['documents']} newer (date >= cutoff).",
            "",
        ]
    side_of: dict[str, set[str]] = {}
    for name in ("older", "newer"):
        for w in summary.get(name, {}).get("windows", []):
            side_of.setdefault(w["window"], set()).add(name)
    lines += [f"| {summary['period']} | documents | first | last | side |", "|---|---:|---|---|---|"]
    for w in summary["windows"]:
        names = side_of.get(w["window"], set())
        side = "both (straddles the cutoff)" if len(names) == 2 else next(iter(names), "")
        lines.append(
            f"| {w['window']} | {w['documents']} | {w['first']:%Y-%m-%d} | {w['last']:%Y-%m-%d} | {side} |"
        )
    return "\n".join(lines) + "\n"
