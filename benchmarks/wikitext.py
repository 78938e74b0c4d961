"""Wikitext cleaning throughput: the mwparserfromhell cleaner vs the regular-expression cleaner it replaced.

Both cleaners run on the same synthetic dump, built here from real Korean text (KLUE-MRC Wikipedia passages under
../shared/data/klue-mrc-odqa) wrapped in the markup a Korean Wikipedia article carries: an infobox with nested
templates and a birth-date template, inline language templates, piped links (some with a template in the label),
references with citation templates, a file link with a captioned link, a table, a list, a date template in running
text, categories and interlanguage links. Timed per cleaner: ``clean_wikitext`` + ``split_passages`` over every page
(what ``raysparse corpus wikipedia`` does per page), best of ``--repeats`` passes, in this one process.

The regex cleaner is read from git history (``--baseline-rev``, default the last commit that had it) and loaded as a
module, so the repository keeps one cleaner. Besides speed the table counts what each kept: characters of prose and
dates rendered from date templates. Usage::

    python benchmarks/wikitext.py                       # writes benchmarks/results/wikitext.md
    python benchmarks/wikitext.py --pages 100 --repeats 2 --out -
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BASELINE_REV = (
    "d0b23ff"  # main before the mwparserfromhell cleaner (raysparse/corpus/wikitext.py, regex version)
)
DROP_SECTIONS = ["같이 보기", "각주", "외부 링크", "참고 문헌"]


def klue_paragraphs(shared: Path) -> list[tuple[str, list[str]]]:
    """(title, paragraphs) of the KLUE-MRC validation passages, one per distinct title."""
    pages, seen = [], set()
    with (shared / "klue-mrc-odqa" / "validation.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["title"] in seen:
                continue
            seen.add(rec["title"])
            paragraphs = [p.strip() for p in rec["context"].replace("\\n", "\n").split("\n\n") if p.strip()]
            pages.append((rec["title"], paragraphs))
    return pages


def page_wikitext(i: int, title: str, paragraphs: list[str]) -> str:
    """One article: real paragraphs inside typical Korean Wikipedia markup (deterministic in ``i``)."""
    first, *rest = paragraphs
    year, month, day = 1900 + i % 120, 1 + i % 12, 1 + i % 28
    body = "\n\n".join(rest) or first
    return (
        f"{{{{정보상자 인물|이름={title}|원어 이름={{{{lang|en|{title}}}}}|출생일={{{{출생일과 나이|{year}|{month}|{day}}}}}"
        f"|국적={{{{국기나라|대한민국}}}}|직업=[[판사|법관]]}}}}\n"
        f"'''{title}'''({{{{llang|en|{title} Example}}}}, {{{{출생일|{year}|{month}|{day}}}}} ~ )"
        f"<ref>{{{{웹 인용|url=http://example.org/{i}|제목=출처 {i}|확인날짜=2024-01-01}}}}</ref>은 "
        f"[[대한민국]]의 [[인물 (동음이의)|{{{{lang|ko|인물}}}}]]이다.<!-- 편집자 주석 -->\n\n"
        f'{first}<ref name="n{i}"/>\n\n'
        f"[[파일:{title}.jpg|섬네일|[[사진]] 설명 {{{{작은글씨|캡션}}}}]]\n"
        "== 생애 ==\n"
        f"{body}\n\n"
        f"그는 {{{{Birth date and age|{year}|{month}|{day}|df=y}}}}에 태어나 {{{{ill|조선 왕조|en|Joseon}}}}의 "
        "역사를 [[역사학|연구]]하였다.\n\n"
        '{| class="wikitable"\n|-\n! 연도 !! 사건\n|-\n'
        f"| {year} || [[사건]] {{{{각주 필요}}}}\n|}}\n"
        "=== 활동 ===\n* [[저서]] 목록\n* ''대표작''\n"
        "== 같이 보기 ==\n* [[다른 문서]]\n"
        "== 각주 ==\n{{각주}}\n"
        f"[[분류:{title}]]\n[[en:{title}]]\n"
    )


def load_baseline(rev: str) -> ModuleType:
    """The regex cleaner as it was at ``rev`` (read with git, loaded from a temporary file)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:raysparse/corpus/wikitext.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False, encoding="utf-8") as fh:
        fh.write(source)
    spec = importlib.util.spec_from_file_location("wikitext_regex_baseline", fh.name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(fh.name)
    return module


def run_cleaner(module: ModuleType, pages: list[str]) -> tuple[float, float, int, int, int]:
    """(CPU seconds, wall seconds, passages, characters kept, date strings kept) for one pass over ``pages``."""
    dates = re.compile(r"\d{3,4}년 \d{1,2}월 \d{1,2}일")
    c0, t0 = time.process_time(), time.perf_counter()
    passages: list[str] = []
    for text in pages:
        for _, paragraphs in module.clean_wikitext(text, DROP_SECTIONS):
            passages.extend(module.split_passages(paragraphs, 1000))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return cpu, wall, len(passages), sum(map(len, passages)), sum(len(dates.findall(p)) for p in passages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"), help="../shared/data")
    parser.add_argument(
        "--pages", type=int, default=1000, help="pages in the synthetic dump (KLUE text reused)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="passes per cleaner; the best is reported")
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision holding the regex cleaner")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "wikitext.md"), help="'-' = stdout"
    )
    args = parser.parse_args(argv)

    import mwparserfromhell

    from raysparse.corpus import wikitext as current

    source = klue_paragraphs(Path(args.shared))
    pages = [page_wikitext(i, *source[i % len(source)]) for i in range(args.pages)]
    megabytes = sum(len(p.encode("utf-8")) for p in pages) / 1e6
    baseline = load_baseline(args.baseline_rev)
    load_start = os.getloadavg()
    cleaners = {"regex (before)": baseline, "mwparserfromhell (now)": current}
    runs: dict[str, list[tuple[float, float, int, int, int]]] = {label: [] for label in cleaners}
    for _ in range(args.repeats):  # interleaved, so that load changes hit both cleaners alike
        for label, module in cleaners.items():
            runs[label].append(run_cleaner(module, pages))
    results = {label: min(r, key=lambda x: x[0]) for label, r in runs.items()}
    load_end = os.getloadavg()

    base_cpu = results["regex (before)"][0]
    base_wall = min(r[1] for r in runs["regex (before)"])
    lines = [
        "| cleaner | pages/s (CPU) | MB/s (CPU) | CPU time ÷ regex | wall time ÷ regex | passages | characters kept "
        "| dates kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, (cpu, _, n_passages, chars, dates) in results.items():
        wall = min(r[1] for r in runs[label])
        lines.append(
            f"| {label} | {len(pages) / cpu:,.0f} | {megabytes / cpu:.2f} | {cpu / base_cpu:.2f}× | "
            f"{wall / base_wall:.2f}× | {n_passages:,} | {chars:,} | {dates:,} |"
        )
    cpu = platform.processor() or platform.machine()
    header = [
        "# Wikitext cleaning throughput",
        "",
        f"Command: `python benchmarks/wikitext.py --pages {args.pages} --repeats {args.repeats}` "
        f"(baseline: the regex cleaner at `{args.baseline_rev}`).",
        "",
        f"Machine: {os.cpu_count()} cores visible ({cpu}), Python {platform.python_version()}, "
        f"mwparserfromhell {mwparserfromhell.__version__} (C tokenizer: {mwparserfromhell.parser.use_c}). "
        f"Load average at start / end: {' '.join(f'{x:.1f}' for x in load_start)} / "
        f"{' '.join(f'{x:.1f}' for x in load_end)}. One process, one thread; best of {args.repeats} interleaved passes. "
        "Rates are per CPU second of this process (`time.process_time`): the machine is shared, and CPU time is what "
        "a cleaner costs whatever the load; the wall-time ratio is shown next to it.",
        "",
        f"Synthetic dump: {len(pages):,} pages, {megabytes:.2f} MB of wikitext, real Korean paragraphs (KLUE-MRC) "
        "in Korean Wikipedia markup (see the module docstring). Timed: `clean_wikitext` + `split_passages` "
        "(1000 chars) per page. Each page has two date templates in its prose (the infobox's one is dropped by "
        "both cleaners).",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(text)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
