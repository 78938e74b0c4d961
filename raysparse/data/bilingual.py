"""Korean<->English resources as tables: glossaries and synonym files -> TERM_PAIRS, parallel text -> SENTENCE_PAIRS.

Korean is always the ``ko`` column whatever order a file uses; which column is which is read from the header when
there is one (kengdic: ``korean``/``english_gloss``; python-docs: ``en``/``ko``), else from which of the first two
columns holds Hangul. :func:`read_term_file` is the one glossary reader: the augmentation dictionary
(``raysparse.augment.BilingualDictionary``), the dev sets and the sample all read term files through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysparse.analyzers import hangul_ratio
from raysparse.data.common import get_field, iter_jsonl, iter_lines, load_json, log, read_text
from raysparse.data.errors import DataFormatError
from raysparse.schemas import SENTENCE_PAIRS, TERM_PAIRS, ReadReport

_KO_NAMES = ("ko", "korean", "kor", "kr", "hangul", "한국어")
_EN_NAMES = ("en", "english", "eng", "english_gloss", "gloss")
# Record keys accepted in JSON/JSONL term files.
_KO_KEYS = ("korean", "ko", "kor")
_EN_KEYS = ("english", "en", "eng", "synonyms")
# Kengdic's "level" column (A = most basic vocabulary ... D) as the pair's score: homographs are ranked by it, so
# 의사 reads "doctor" before "intention".
LEVEL_SCORES = {"A": 1.0, "B": 0.9, "C": 0.8, "D": 0.7}


class _PairCollector:
    """ko/en pairs with empty sides and exact repeats skipped and counted."""

    def __init__(self, report: ReadReport, source: str) -> None:
        self.report = report
        self.source = source
        self.rows: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, ko: Any, en: Any, source: str | None = None, score: float | None = None) -> None:
        ko, en = (str(ko).strip() if ko is not None else ""), (str(en).strip() if en is not None else "")
        if not ko or not en:
            self.report.skip("empty ko or en side")
            return
        if (ko, en) in self._seen:
            self.report.skip("duplicate pair")
            return
        self._seen.add((ko, en))
        self.rows.append({"ko": ko, "en": en, "source": source or self.source, "score": score})
        self.report.read += 1

    def table(self, schema: pa.Schema) -> pa.Table:
        log.info("%s", self.report)
        return pa.Table.from_pylist(self.rows, schema=schema)


def _tsv_rows(path: Path, report: ReadReport | None = None) -> Iterable[tuple[int, list[str]]]:
    """(line number, fields) of the non-blank, non-comment lines of a TSV (plain/gz/bz2/xz, BOM allowed; a
    non-UTF-8 byte is reported with its file and line by :func:`iter_lines`); comment lines are counted in
    ``report``."""
    for line_no, line in iter_lines(path):
        line = line.lstrip("\ufeff") if line_no == 1 else line
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            if report is not None:
                report.skip("comment line")
            continue
        yield line_no, line.split("\t")


def read_glossary_tsv(
    path: str | Path, ko_column: str | int | None = None, en_column: str | int | None = None
):
    """A term glossary TSV -> ``(TERM_PAIRS table, ReadReport)``.

    Columns come from ``ko_column``/``en_column`` (name or index), else from a header row (``ko``/``korean`` and
    ``en``/``english``/``english_gloss``), else from the first line: ``en<TAB>ko`` when only its second field holds
    Hangul, ``ko<TAB>en`` otherwise. A header ``level`` column (kengdic) becomes the pair's ``score``
    (:data:`LEVEL_SCORES`). Rows whose Korean side has no Hangul are skipped and counted (a swapped file shows up as
    every row skipped with that reason, not as a silently wrong dictionary).
    """
    path = Path(path)
    report = ReadReport(str(path))
    pairs = _PairCollector(report, path.name)
    ko_idx: int | None = ko_column if isinstance(ko_column, int) else None
    en_idx: int | None = en_column if isinstance(en_column, int) else None
    level_idx: int | None = None
    first = True
    for line_no, fields in _tsv_rows(path, report):
        if first:
            first = False
            names = [f.strip().lower() for f in fields]
            if any(n in _KO_NAMES for n in names) or isinstance(ko_column, str):
                want_ko = ko_column.lower() if isinstance(ko_column, str) else None
                want_en = en_column.lower() if isinstance(en_column, str) else None
                ko_idx = (
                    names.index(want_ko)
                    if want_ko in names
                    else next((i for i, n in enumerate(names) if n in _KO_NAMES), None)
                )
                en_idx = (
                    names.index(want_en)
                    if want_en in names
                    else next((i for i, n in enumerate(names) if n in _EN_NAMES), None)
                )
                if ko_idx is None or en_idx is None:
                    raise DataFormatError(
                        f"{path} line {line_no}: header {fields} has no Korean or English column"
                    )
                level_idx = names.index("level") if "level" in names else None
                continue
            if ko_idx is None and en_idx is None and len(fields) >= 2:
                # no header: whichever of the first two fields holds Hangul is Korean
                swapped = hangul_ratio(fields[0]) == 0.0 and hangul_ratio(fields[1]) > 0.0
                ko_idx, en_idx = (1, 0) if swapped else (0, 1)
            ko_idx = 0 if ko_idx is None else ko_idx
            en_idx = 1 if en_idx is None else en_idx
        assert ko_idx is not None and en_idx is not None
        if len(fields) <= max(ko_idx, en_idx):
            raise DataFormatError(
                f"{path} line {line_no}: expected at least {max(ko_idx, en_idx) + 1} tab-separated fields, "
                f"found {len(fields)} (field {'ko' if len(fields) <= ko_idx else 'en'} is missing)"
            )
        ko = fields[ko_idx].strip()
        if ko and hangul_ratio(ko) == 0.0:
            report.skip("ko side has no Hangul")
            continue
        level = fields[level_idx].strip().upper() if level_idx is not None and level_idx < len(fields) else ""
        pairs.add(ko, fields[en_idx], score=LEVEL_SCORES.get(level))
    table = pairs.table(TERM_PAIRS)
    return table, report


def read_synonym_json(path: str | Path):
    """The prototype's ``bilingual_synonyms.json`` / ``enhanced_synonyms.json`` -> ``(TERM_PAIRS, ReadReport)``.

    Accepted: ``{ko: [en, ...]}``, ``{ko: en}``, ``[{korean, english}]`` (``ko``/``kor`` and
    ``en``/``eng``/``synonyms`` also accepted, and ``english`` may be a list; other fields such as ``score`` are
    ignored), and a wrapper object ``{"synonyms": ...}``. A ``.jsonl`` file holds one such record per line.
    """
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        report = ReadReport(str(path))
        pairs = _PairCollector(report, path.name)
        for where, rec in iter_jsonl(path):
            _add_record(pairs, rec, where)
        return pairs.table(TERM_PAIRS), report
    doc = load_json(path)
    report = ReadReport(str(path))
    pairs = _PairCollector(report, path.name)
    if isinstance(doc, dict) and len(doc) == 1 and isinstance(next(iter(doc.values())), (list, dict)):
        key = next(iter(doc))
        if hangul_ratio(key) == 0.0:  # {"synonyms": ...} wrapper, not a Korean key
            doc = doc[key]
    if isinstance(doc, dict):
        for ko, value in doc.items():
            where = f"{path} key {ko!r}"
            values = value if isinstance(value, list) else [value]
            for en in values:
                if not isinstance(en, str):
                    raise DataFormatError(
                        f"{where}: field 'english' must hold strings, got {type(en).__name__}"
                    )
                pairs.add(ko, en)
    elif isinstance(doc, list):
        for i, rec in enumerate(doc):
            _add_record(pairs, rec, f"{path} record {i}")
    else:
        raise DataFormatError(f"{path}: expected an object {{ko: [en]}} or a list of {{korean, english}}")
    return pairs.table(TERM_PAIRS), report


def _add_record(pairs: _PairCollector, rec: Any, where: str) -> None:
    """One ``{korean, english}`` record (``english`` a string or a list of strings)."""
    if not isinstance(rec, dict):
        raise DataFormatError(f"{where}: expected an object {{korean, english}}")
    ko_key = next((k for k in _KO_KEYS if k in rec), "korean")
    en_key = next((k for k in _EN_KEYS if k in rec), "english")
    ko = get_field(rec, ko_key, where, kind=object)
    if not isinstance(ko, str):
        raise DataFormatError(f"{where}: field 'korean' must be a string, got {type(ko).__name__}")
    en_value = get_field(rec, en_key, where, kind=object)
    for en in en_value if isinstance(en_value, list) else [en_value]:
        if not isinstance(en, str):
            raise DataFormatError(
                f"{where}: field 'english' must be a string or a list of strings, got {en!r:.60}"
            )
        pairs.add(ko, en)


def read_term_file(path: str | Path):
    """Any term file -> ``(TERM_PAIRS, ReadReport)``: ``.json``/``.jsonl`` through :func:`read_synonym_json`,
    anything else as a TSV glossary (:func:`read_glossary_tsv`). Raises FileNotFoundError naming a missing file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"term file not found: {path}")
    if path.suffix.lower() in (".json", ".jsonl"):
        return read_synonym_json(path)
    return read_glossary_tsv(path)


def _lines(path: Path) -> list[str]:
    """Lines split on ``\\n`` only: ``str.splitlines`` also splits on U+2028 and friends, which would shift one
    side of a parallel corpus against the other."""
    text = read_text(path)
    if text.endswith("\n"):
        text = text[:-1]
    return [line.rstrip("\r") for line in text.split("\n")] if text else []


def read_parallel_text(ko_path: str | Path, en_path: str | Path):
    """Line-aligned parallel text (``x.ko`` / ``x.en``) -> ``(SENTENCE_PAIRS, ReadReport)``; line counts must agree."""
    ko_path, en_path = Path(ko_path), Path(en_path)
    ko_lines, en_lines = _lines(ko_path), _lines(en_path)
    if len(ko_lines) != len(en_lines):
        raise DataFormatError(
            f"{ko_path} has {len(ko_lines)} lines but {en_path} has {len(en_lines)}: parallel files must be "
            "line-aligned"
        )
    report = ReadReport(f"{ko_path}+{en_path.name}")
    pairs = _PairCollector(report, ko_path.stem)
    for ko, en in zip(ko_lines, en_lines, strict=True):
        pairs.add(ko, en)
    return pairs.table(SENTENCE_PAIRS), report


def read_parallel_tsv(path: str | Path):
    """``ko<TAB>en`` sentence pairs (the shipped sample's ``parallel.tsv``) -> ``(SENTENCE_PAIRS, ReadReport)``."""
    path = Path(path)
    report = ReadReport(str(path))
    pairs = _PairCollector(report, path.name)
    for line_no, fields in _tsv_rows(path):
        if line_no == 1 and [f.strip().lower() for f in fields[:2]] == ["ko", "en"]:
            continue
        if len(fields) < 2:
            raise DataFormatError(f"{path} line {line_no}: field 'en' is missing (expected ko<TAB>en)")
        pairs.add(fields[0], fields[1])
    return pairs.table(SENTENCE_PAIRS), report


def read_tatoeba(path: str | Path):
    """Tatoeba's ``kor.txt`` (``en<TAB>ko<TAB>attribution``) -> ``(SENTENCE_PAIRS, ReadReport)``.

    The attribution (CC BY) is kept in ``source`` so whatever ships derived data can credit the authors.
    """
    path = Path(path)
    report = ReadReport(str(path))
    pairs = _PairCollector(report, path.name)
    for line_no, fields in _tsv_rows(path):
        if len(fields) < 2:
            raise DataFormatError(
                f"{path} line {line_no}: field 'ko' is missing (expected en<TAB>ko<TAB>attribution)"
            )
        attribution = fields[2].strip() if len(fields) > 2 else ""
        pairs.add(fields[1], fields[0], f"tatoeba: {attribution}" if attribution else path.name)
    return pairs.table(SENTENCE_PAIRS), report


def read_parallel_jsonl(path: str | Path, ko_field: str = "ko", en_field: str = "en"):
    """JSON lines with a Korean and an English field (python-docs ``pairs_en_ko.jsonl``) -> SENTENCE_PAIRS."""
    path = Path(path)
    report = ReadReport(str(path))
    pairs = _PairCollector(report, path.name)
    for where, rec in iter_jsonl(path):
        pairs.add(get_field(rec, ko_field, where), get_field(rec, en_field, where))
    return pairs.table(SENTENCE_PAIRS), report


def read_prototype_synonyms(root: str | Path):
    """Every ``*synonyms*.json`` under the prototype folder -> one TERM_PAIRS table and the reports."""
    root = Path(root)
    files = sorted(root.rglob("*synonyms*.json")) if root.is_dir() else [root]
    tables, reports = [], []
    for file in files:
        table, report = read_synonym_json(file)
        tables.append(table)
        reports.append(report)
    return (pa.concat_tables(tables) if tables else TERM_PAIRS.empty_table()), reports
