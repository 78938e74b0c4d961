"""Write the Korean<->English MS MARCO dev sets (ko-en, en-ko, ko-ko) as BEIR directories.

Usage: ``python scripts/make_dev_sets.py OUT [--msmarco-dir DIR] [--first-id 801] [--last-id 1000] [--distractors N]``
then ``raysparse evaluate --bm25 kiwi --beir OUT/ko-en --out results/ko-en``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import raysparse  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from raysparse.data import write_beir
    from raysparse.evaluation.devsets import crosslingual_dev_sets

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", help="output directory (one BEIR directory per set inside)")
    parser.add_argument(
        "--msmarco-dir",
        default=str(ROOT.parent / "shared" / "data" / "msmarco-ko-en"),
        help="msmarco_*.json dir",
    )
    parser.add_argument("--first-id", type=int, default=801)
    parser.add_argument("--last-id", type=int, default=1000)
    parser.add_argument("--distractors", type=int, default=0, help="passages of ids outside the range to add")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    try:
        sets = crosslingual_dev_sets(
            args.msmarco_dir, args.first_id, args.last_id, args.distractors, args.seed
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"make_dev_sets: {err}", file=sys.stderr)
        return 2
    for name, data in sets.items():
        path = write_beir(data, Path(args.out) / name)
        print(f"{path}: {data.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
