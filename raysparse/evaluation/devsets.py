"""Evaluation collections, read through :mod:`raysparse.data` (the one owner of input formats and their errors).

- any BEIR directory: :func:`raysparse.data.read_beir` / :func:`~raysparse.data.write_beir`;
- KLUE-MRC open-domain QA (``klue-mrc-odqa/validation.jsonl``): :func:`raysparse.data.read_squad` (questions ->
  their deduplicated Wikipedia passages);
- the Korean<->English MS MARCO dev sets: :func:`crosslingual_dev_sets` (ko-en, en-ko and the ko-ko control by
  default; ids 801-1000, which the main job never trains on);
- ko<->en term pairs for the report's synonym section: :func:`dictionary_pairs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from raysparse.schemas import ReadReport, RetrievalData

# The sets evaluated by default: the two cross-lingual directions and one monolingual control (``en-en`` is
# available from raysparse.data too).
EVAL_CROSSLINGUAL_SETS = ("ko-en", "en-ko", "ko-ko")


def crosslingual_dev_sets(
    msmarco_dir: str | Path,
    first_id: int = 801,
    last_id: int = 1000,
    distractors: int = 0,
    seed: int = 13,
    sets: Sequence[str] = EVAL_CROSSLINGUAL_SETS,
) -> dict[str, RetrievalData]:
    """``{"ko-en": RetrievalData, ...}`` from ``msmarco_{kor,eng}.dev1000.json`` aligned by query id."""
    from raysparse.data import build_crosslingual_sets

    return build_crosslingual_sets(
        msmarco_dir, first_id=first_id, last_id=last_id, distractors=distractors, seed=seed, sets=tuple(sets)
    )


def dictionary_pairs(path: str | Path, limit: int | None = None) -> tuple[list[tuple[str, str]], ReadReport]:
    """(ko, en) pairs of a glossary TSV (``ko<TAB>en``, or any header raysparse.data recognises), first ``limit``."""
    from raysparse.data import read_glossary_tsv

    table, report = read_glossary_tsv(path)
    pairs = list(zip(table.column("ko").to_pylist(), table.column("en").to_pylist(), strict=True))
    return (pairs if limit is None else pairs[:limit]), report
