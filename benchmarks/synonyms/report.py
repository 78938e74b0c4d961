"""Markdown report of a benchmarks/synonyms/run.sh output directory (stdout): precision@k tables, loop table.

python benchmarks/synonyms/report.py OUT > OUT/results.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from raysparse.storage import portable
from raysparse.synonyms import loop_table, precision_table


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="the run.sh output directory")
    args = parser.parse_args()
    loop = json.loads((args.out / "loop" / "loop_results.json").read_text(encoding="utf-8"))
    disc = json.loads((args.out / "loop" / "discovery" / "discovery_report.json").read_text(encoding="utf-8"))
    ks = disc["config"]["eval_k"]
    seconds = (args.out / "seconds.txt").read_text().strip() if (args.out / "seconds.txt").is_file() else "?"
    command = (args.out / "command.txt").read_text().strip() if (args.out / "command.txt").is_file() else "?"
    command = portable(command, {str(args.out.resolve()): "OUT"})  # no machine paths in committed results
    print("# Synonym discovery: measured results\n")
    print(
        f"Machine: {os.cpu_count()} CPU cores ({_cpu_model()}), shared with other jobs; wall clock {seconds}.\n"
    )
    print(f"Command (benchmarks/synonyms/run.sh): `{command}`\n")
    print(
        f"Discovery input: {disc['sentence_pairs']} sentence pairs -> {disc['korean_terms']} Korean and "
        f"{disc['english_terms']} English terms; {disc['candidates']} pairs emitted for "
        f"{disc['korean_terms_with_candidates']} Korean terms (threshold {disc['config']['threshold']}, cap "
        f"{disc['config']['cap_per_term']}); signal seconds {disc['seconds']}. Glossaries held aside: "
        f"{loop['glossaries_held_aside']}.\n"
    )
    print("## Precision@k against the held-aside glossaries\n")
    print(
        "P@k: fraction of evaluated Korean terms with a correct English term among their k best candidates "
        "(bilingual-lexicon-induction convention); pair P@k: correct pairs / listed pairs. Evaluated = Korean "
        "terms of the discovery vocabulary that have both candidates and glossary entries.\n"
    )
    for glossary, p in disc.get("precision", {}).items():
        print(
            f"### {Path(glossary).name}\n\n{p['glossary_korean_terms']} glossary Korean terms, "
            f"{p['glossary_terms_in_discovery_vocab']} of them in the discovery vocabulary.\n"
        )
        print(precision_table(p["by_signal"], ks))
        dic = p["dictionary"]
        print(
            "\nEmitted dictionary (after threshold and cap): "
            + ", ".join(
                f"P@{k} {dic[f'p@{k}']['precision']:.3f} (pair {dic[f'p@{k}']['pair_precision']:.3f}, "
                f"{dic[f'p@{k}']['evaluated']} terms)"
                for k in ks
            )
            + "\n"
        )
    print("## Closed loop: baseline dictionary vs + discovered pairs\n")
    print(
        f"Translation-table entries: baseline {loop['baseline_translation_entries']}, with discovered pairs "
        f"{loop['discovered_translation_entries']}; {loop['discovered_pairs']} discovered pairs added.\n"
    )
    print(loop_table(loop["dev"], loop.get("paired")))
    print("\n## Examples (first emitted pairs)\n")
    print("| korean | english | score | activation | coactivation | embedding |\n|---|---|---|---|---|---|")
    for e in disc["examples"]:
        s = e["signals"]
        print(
            f"| {e['korean']} | {e['english']} | {e['score']:.3f} | {s.get('activation', 0):.3f} | "
            f"{s.get('coactivation', 0):.3f} | {s.get('embedding', 0):.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
