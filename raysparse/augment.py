"""Cross-lingual (Korean<->English) augmentation: a bilingual dictionary, code-switched queries, term/sentence pairs.

Three products feed training:

- **Code-switched query variants** ("검색 모델" -> "search 모델", "검색 model", "search model"): extra TRIPLES rows
  with the same positives/negatives, so the encoder learns that 검색 and search should fire on the same documents.
- **Term pairs** (TERM_PAIRS) from the merged dictionary, for the cross-lingual term-alignment loss.
- **Sentence pairs** (SENTENCE_PAIRS) from parallel text, for the same loss at sentence level.

Everything here is a plain function over Python lists / Arrow tables; :func:`augment_dataset` only wraps
:func:`augment_triples` in Ray Data ``map_batches`` (one Kiwi per actor), so the in-process and the Ray path give the
same rows.

Particle rule (decided here, tested in tests/test_augment.py). Korean particles with two forms (을/를, 이/가, 은/는,
과/와, 으로/로, 이나/나, ...) depend on whether the preceding word *as pronounced* ends in a consonant (받침). Korean
writers pick the form by how the English word is read aloud in Korean ("model을" because 모델 ends in ㄹ, "search를"
because 서치 ends in a vowel). We approximate that pronunciation from spelling with :func:`english_final_sound`:

- ends in ``m``, ``n``, ``ng``, ``me``, ``ne`` -> consonant (system을, online은, game이);
- ends in ``l`` or ``le`` -> ㄹ (model을, google로 — ㄹ takes the vowel form of 으로/로);
- ``p``/``t``/``k``/``b`` after a single vowel letter -> consonant (chat이, web은, app을 — doubled letters count once);
- everything else -> vowel, because Korean adds a vowel after the sound (search를, test는, data가, computer를,
  check를, news는, service를); digits use their Sino-Korean reading (3 -> 삼 -> consonant).

Known misses of the spelling heuristic: ``book`` (북, consonant) reads as vowel; ``seat``-like double vowels are treated
as vowel-final (correct for 시트). For English -> Korean switching the Korean word's last syllable gives the exact
answer. A copula (이다) after the switched noun is left as written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from raysparse.data.common import iter_lines, load_json
from raysparse.data.errors import DataFormatError
from raysparse.ray_utils import placement_args
from raysparse.schemas import SENTENCE_PAIRS, TERM_PAIRS, TRIPLES, ReadReport

if TYPE_CHECKING:  # pragma: no cover
    from raysparse.config import AugmentConfig

log = logging.getLogger(__name__)

VARIANT_MARK = "#cs"  # variant query ids are "<query_id>#cs<k>"

# The shared glossaries under ../shared/data (merged when use_shared=True).
SHARED_GLOSSARIES = (
    "bilingual/kengdic/ezcorean_6000.tsv",
    "bilingual/python-docs-glossary/glossary_terms_en_ko.tsv",
)

MAX_GLOSS_WORDS = 4  # longer English glosses are descriptions ("Mountain in south central seoul"), not terms
MAX_SPAN_TOKENS = 3  # longest compound (in morphemes / English words) looked up as one term

_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_PARENS = re.compile(r"\(([^()]*)\)|\[([^\[\]]*)\]")
_EN_KEEP = re.compile(r"[^a-z0-9 '&+#.\-]")
_SPACES = re.compile(r"\s+")
_EN_LEADING = re.compile(r"^(?:to |a |an |the )+")
_EN_WORD = re.compile(r"[a-z]+")

# Kiwi tags of the morphemes we switch: common and proper nouns (bound nouns 것/수/때 and pronouns are left alone).
KOREAN_NOUN_TAGS = frozenset({"NNG", "NNP"})
# Question and deictic nouns Kiwi tags NNG: "얼마" -> "how many" only garbles a question.
KOREAN_STOP_NOUNS = frozenset(
    ("얼마", "무엇", "누구", "어디", "언제", "여기", "거기", "저기", "이것", "그것", "저것", "무슨", "어느")
)
LATIN_TAG = "SL"

# English words never switched to Korean: function words that the glossaries happen to contain ("one", "he").
_STOPWORD_TEXT = (
    "a an the of to in on at for by with from and or but not is are was were be been being do does did "
    "have has had what which who whom whose when where why how this that these those it its he she they "
    "we you i me my your our their his her them one can will would should could may might must as if "
    "than then so no yes"
)
ENGLISH_STOPWORDS = frozenset(_STOPWORD_TEXT.split())

# Two-form particles: (form after a consonant, form after a vowel). ㄹ-final words take the vowel form of the
# 으로 family (model로) and the consonant form of the rest (model을).
_PARTICLE_PAIRS: tuple[tuple[str, str], ...] = (
    ("을", "를"),
    ("은", "는"),
    ("과", "와"),
    ("으로", "로"),
    ("으로서", "로서"),
    ("으로써", "로써"),
    ("으로부터", "로부터"),
    ("이나", "나"),
    ("이랑", "랑"),
    ("이며", "며"),
    ("이라도", "라도"),
    ("이든지", "든지"),
    ("이든", "든"),
)
_SUBJECT_PAIR = ("이", "가")  # only when Kiwi tags it as a particle (JKS/JKC); 이 is also the copula
_PARTICLE_FORMS: dict[str, tuple[str, str]] = {f: pair for pair in _PARTICLE_PAIRS for f in pair}
_RO_FAMILY = frozenset(p for p in _PARTICLE_PAIRS if p[0].startswith("으로"))

# Sino-Korean reading of a final digit: 영 일 이 삼 사 오 육 칠 팔 구.
_DIGIT_SOUND = dict(
    zip(
        "0123456789",
        (
            "consonant",
            "rieul",
            "vowel",
            "consonant",
            "vowel",
            "vowel",
            "consonant",
            "rieul",
            "rieul",
            "vowel",
        ),
        strict=True,
    )
)

FinalSound = Literal["vowel", "consonant", "rieul"]


class DictionaryFormatError(DataFormatError):
    """A dictionary or parallel-text file that cannot be read; the message names the file, record and field."""


# --------------------------------------------------------------------------------------------------------------
# Normalisation


def normalize_ko(term: str) -> tuple[str, list[str]]:
    """NFKC Korean headword without annotations; returns (headword, Korean aliases found in parentheses).

    "베이징(북경)" -> ("베이징", ["북경"]); "(명)"-style part-of-speech marks and "~" placeholders are dropped.
    """
    text = unicodedata.normalize("NFKC", term).replace("~", " ")
    aliases: list[str] = []
    for match in _PARENS.finditer(text):
        inner = (match.group(1) or match.group(2) or "").strip()
        if len(inner) >= 2 and _HANGUL.search(inner) and not re.search(r"[a-zA-Z]", inner):
            aliases.append(_SPACES.sub(" ", inner))
    text = _PARENS.sub(" ", text)
    return _SPACES.sub(" ", text).strip(), aliases


def normalize_en_senses(gloss: str) -> tuple[list[str], dict[str, int]]:
    """Split an English gloss into normalised senses; returns (senses, skipped counts by reason).

    "To prevent, check" -> ["prevent", "check"]; "A utensil or tool" -> ["utensil", "tool"]; parentheticals
    ("To cook (food)") and leading "to"/articles are removed; glosses over MAX_GLOSS_WORDS words are descriptions,
    and glosses containing Hangul are mixed annotations — both are skipped and counted.
    """
    text = unicodedata.normalize("NFKC", gloss).replace("\u2019", "'").replace("\u2018", "'")
    text = _PARENS.sub(" ", text)
    senses: list[str] = []
    skipped: dict[str, int] = {}
    for piece in re.split(r"[,;]| / | or ", text):
        sense = piece.strip().lower()
        if not sense:
            continue
        if _HANGUL.search(sense):
            skipped["english sense contains Hangul"] = skipped.get("english sense contains Hangul", 0) + 1
            continue
        sense = sense.replace("e.g.", " ")
        sense = _SPACES.sub(" ", _EN_KEEP.sub(" ", sense)).strip(" .'-")
        sense = _EN_LEADING.sub("", sense).strip()
        if not sense:
            continue
        if len(sense.split()) > MAX_GLOSS_WORDS:
            reason = f"english gloss longer than {MAX_GLOSS_WORDS} words (a description)"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        if sense not in senses:
            senses.append(sense)
    return senses, skipped


def _en_key(term: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", term).lower()).strip()


def _ko_key(term: str) -> str:
    return _SPACES.sub("", unicodedata.normalize("NFKC", term))


# --------------------------------------------------------------------------------------------------------------
# Dictionary


def find_shared_data(start: str | Path | None = None) -> Path | None:
    """../shared/data: $RAYSPARSE_SHARED_DATA, else next to the repository or any parent of ``start``/cwd."""
    env = os.environ.get("RAYSPARSE_SHARED_DATA")
    candidates = [Path(env)] if env else []
    for base in (Path(start) if start else Path.cwd(), Path(__file__).resolve().parents[1]):
        for parent in [base, *base.parents]:
            candidates.append(parent / "shared" / "data")
    for c in candidates:
        if (c / "README.md").is_file() and (c / "bilingual").is_dir():
            return c
    return None


class BilingualDictionary:
    """Korean<->English term dictionary merged from TSV glossaries and synonym JSON, with provenance per pair.

    Each Korean term keeps its English senses in first-seen order (the first is the one used for code-switching),
    and vice versa. Lookups are normalised the same way as the files (NFKC, lower-case English, Korean spacing
    ignored), so "검색 모델" finds an entry written "검색모델".
    """

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], dict[str, Any]] = {}
        # Best score per (lookup key, sense): lookups list senses by it, first-seen order breaking ties.
        self._ko_score: dict[tuple[str, str], float] = {}
        self._en_score: dict[tuple[str, str], float] = {}
        self._ko: dict[str, list[str]] = {}
        self._en: dict[str, list[str]] = {}
        self.reports: list[ReadReport] = []
        # Korean headwords glossed "to ..." and ending in 다 (방지하다, 씻다): never put into an English query.
        self._predicates: set[str] = set()

    # --- building ------------------------------------------------------------------------------------------
    def add(self, ko: str, en: str, source: str = "user", score: float = 1.0) -> bool:
        """Add one already-normalised pair; returns False when it was already present (provenance is merged)."""
        key = (ko, en)
        entry = self._pairs.get(key)
        is_new = entry is None
        if entry is None:
            entry = self._pairs[key] = {"sources": [source], "score": float(score)}
        elif source not in entry["sources"]:
            entry["sources"].append(source)
        entry["score"] = max(entry["score"], float(score))
        for index, scores, lookup_key, sense in (
            (self._ko, self._ko_score, _ko_key(ko), en),
            (self._en, self._en_score, _en_key(en), ko),
        ):
            senses = index.setdefault(lookup_key, [])
            if sense not in senses:
                senses.append(sense)
            scores[(lookup_key, sense)] = max(scores.get((lookup_key, sense), 0.0), float(score))
            senses.sort(key=lambda s, k=lookup_key, sc=scores: -sc[(k, s)])  # stable: ties keep file order
        return is_new

    def add_raw(self, ko: str, en: str, source: str, report: ReadReport, score: float = 1.0) -> int:
        """Normalise a raw (Korean, English gloss) record and add every sense; returns the pairs added."""
        headword, aliases = normalize_ko(ko)
        senses, skipped = normalize_en_senses(en)
        for reason, n in skipped.items():
            report.skip(reason, n)
        if not headword or not _HANGUL.search(headword):
            report.skip("korean field has no Hangul after normalisation")
            return 0
        if not senses:
            report.skip("no usable english sense")
            return 0
        if headword.endswith("다") and re.match(r"\s*to\s", unicodedata.normalize("NFKC", en), re.IGNORECASE):
            self._predicates.add(headword)
        added = 0
        for ko_term in [headword, *aliases]:
            for sense in senses:
                added += self.add(ko_term, sense, source, score)
        report.read += 1
        return added

    def add_table(self, table: pa.Table) -> None:
        """Merge a TERM_PAIRS-like table (ko, en[, source, score]); values are normalised like file entries."""
        rows = table.to_pylist()
        report = ReadReport("term-pairs table")
        for i, row in enumerate(rows):
            ko, en = row.get("ko"), row.get("en")
            if not isinstance(ko, str) or not isinstance(en, str):
                raise DictionaryFormatError(f"term-pairs table row {i}: fields 'ko' and 'en' must be strings")
            score = row.get("score")
            self.add_raw(ko, en, row.get("source") or "table", report, 1.0 if score is None else float(score))
        self.reports.append(report)

    def add_file(self, path: str | Path) -> ReadReport:
        """Merge one term file read by :func:`raysparse.data.read_term_file` (TSV glossary, JSON or JSONL).

        The file's report counts every record once: ``read`` = records that gave at least one pair here, skipped
        = the reader's skips (no Hangul, duplicates, empty sides) plus what normalisation could not use.
        """
        from raysparse.data.bilingual import read_term_file

        table, report = read_term_file(path)
        report.read = 0  # counted again below, after normalisation
        for row in table.to_pylist():
            score = row.get("score")
            self.add_raw(row["ko"], row["en"], row["source"], report, 1.0 if score is None else float(score))
        self.reports.append(report)
        log.info("%s", report)
        return report

    @classmethod
    def from_sources(
        cls,
        paths: Iterable[str | Path] = (),
        use_shared: bool = False,
        shared_dir: str | Path | None = None,
    ) -> BilingualDictionary:
        """Merge user files and, with ``use_shared``, the shared glossaries (kengdic, Python-docs glossary)."""
        dictionary = cls()
        files = [Path(p) for p in paths]
        if use_shared:
            root = Path(shared_dir) if shared_dir else find_shared_data()
            if root is None:
                report = ReadReport("shared glossaries")
                report.skip("../shared/data not found (set RAYSPARSE_SHARED_DATA)")
                dictionary.reports.append(report)
                log.warning("%s", report)
            else:
                files += [root / rel for rel in SHARED_GLOSSARIES]
        for f in files:
            dictionary.add_file(f)
        return dictionary

    # --- queries -------------------------------------------------------------------------------------------
    def lookup_ko(self, term: str) -> list[str]:
        """English senses of a Korean term (spacing and NFKC differences ignored); [] when unknown."""
        return list(self._ko.get(_ko_key(normalize_ko(term)[0]), ()))

    def lookup_en(self, term: str) -> list[str]:
        """Korean senses of an English term (case-insensitive; a plural "models" falls back to "model")."""
        key = _en_key(term)
        found = self._en.get(key)
        if found is None and len(key) > 3 and key.endswith("s") and not key.endswith("ss"):
            found = self._en.get(key[:-2] if key.endswith("es") and key[:-2] in self._en else key[:-1])
        return list(found or ())

    def is_predicate(self, ko: str) -> bool:
        """True for Korean verbs/adjectives (dictionary form in 다, glossed "to ...")."""
        return ko in self._predicates

    def sources_of(self, ko: str, en: str) -> list[str]:
        entry = self._pairs.get((ko, en))
        return list(entry["sources"]) if entry else []

    def __len__(self) -> int:
        return len(self._pairs)

    @property
    def num_ko_terms(self) -> int:
        return len(self._ko)

    @property
    def num_en_terms(self) -> int:
        return len(self._en)

    # --- export --------------------------------------------------------------------------------------------
    def to_table(self) -> pa.Table:
        """All pairs as schemas.TERM_PAIRS; ``source`` lists every file that contributed the pair ("a; b")."""
        rows = {
            "ko": [k for k, _ in self._pairs],
            "en": [e for _, e in self._pairs],
            "source": ["; ".join(v["sources"]) for v in self._pairs.values()],
            "score": [v["score"] for v in self._pairs.values()],
        }
        return pa.Table.from_pydict(rows, schema=TERM_PAIRS)

    def to_state(self) -> dict[str, Any]:
        """Plain JSON-able state (what save() writes and Ray actors receive)."""
        return {
            "format": "raysparse-bilingual-dictionary",
            "version": 1,
            "pairs": [{"ko": k, "en": e, **v} for (k, e), v in self._pairs.items()],
            "predicates": sorted(self._predicates),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], where: str = "<state>") -> BilingualDictionary:
        if state.get("format") != "raysparse-bilingual-dictionary":
            raise DictionaryFormatError(f"{where}: not a raysparse dictionary (field 'format')")
        dictionary = cls()
        for i, pair in enumerate(state.get("pairs", [])):
            try:
                for source in pair["sources"]:
                    dictionary.add(pair["ko"], pair["en"], source, pair.get("score", 1.0))
            except (KeyError, TypeError) as err:
                raise DictionaryFormatError(f"{where}: pair {i}: missing or invalid field {err}") from None
        dictionary._predicates = set(state.get("predicates", []))
        return dictionary

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_state(), ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> BilingualDictionary:
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DictionaryFormatError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
        return cls.from_state(state, str(path))


def term_pairs(dictionary: BilingualDictionary) -> pa.Table:
    """TERM_PAIRS for the cross-lingual loss (one row per Korean/English pair, provenance in ``source``)."""
    return dictionary.to_table()


# --------------------------------------------------------------------------------------------------------------
# Sentence pairs


def read_sentence_pairs(path: str | Path) -> tuple[pa.Table, ReadReport]:
    """Parallel text -> SENTENCE_PAIRS through the raysparse.data readers, picking the reader from the file.

    ``X.ko``/``X.en`` line-aligned files (give either), JSONL with ko/en fields, Tatoeba's en<TAB>ko<TAB>attribution
    (recognised by an English first column) or ko<TAB>en TSV with an optional header.
    """
    from raysparse.data.bilingual import (
        read_parallel_jsonl,
        read_parallel_text,
        read_parallel_tsv,
        read_tatoeba,
    )

    path = Path(path)
    if path.suffix in (".ko", ".en"):
        ko_path, en_path = path.with_suffix(".ko"), path.with_suffix(".en")
        for p in (ko_path, en_path):
            if not p.is_file():
                raise FileNotFoundError(f"parallel text {path}: missing the aligned file {p}")
        return read_parallel_text(ko_path, en_path)
    if not path.is_file():
        raise FileNotFoundError(f"parallel text file not found: {path}")
    if path.suffix == ".jsonl":
        return read_parallel_jsonl(path)
    first = next((line for _, line in iter_lines(path) if line.strip()), "")
    cols = first.split("\t")
    if len(cols) >= 2 and not _HANGUL.search(cols[0]) and _HANGUL.search(cols[1]):
        return read_tatoeba(path)
    return read_parallel_tsv(path)


def sentence_pairs(paths: Iterable[str | Path]) -> tuple[pa.Table, list[ReadReport]]:
    """SENTENCE_PAIRS from every parallel-text file, with one ReadReport per file."""
    tables, reports = [], []
    for p in paths:
        table, report = read_sentence_pairs(p)
        log.info("%s", report)
        tables.append(table)
        reports.append(report)
    if not tables:
        return SENTENCE_PAIRS.empty_table(), reports
    return pa.concat_tables(tables), reports


def sentence_pairs_table(paths: Iterable[str | Path]) -> pa.Table:
    """:func:`sentence_pairs` without the reports (the main job logs them)."""
    return sentence_pairs(paths)[0]


# --------------------------------------------------------------------------------------------------------------
# Particles


def english_final_sound(word: str) -> FinalSound:
    """How an English word ends when read in Korean: "vowel", "consonant" (받침) or "rieul" (ㄹ 받침).

    A spelling heuristic documented in the module docstring; it decides the particle after a switched word.
    """
    letters = re.sub(r"[^a-z0-9]", "", word.lower())
    if not letters:
        return "vowel"
    last = letters[-1]
    if last.isdigit():
        return _DIGIT_SOUND[last]  # type: ignore[return-value]
    if letters.endswith("ng") or last in "mn" or letters.endswith(("me", "ne")):
        return "consonant"
    if last == "l" or letters.endswith("le"):
        return "rieul"
    if last in "ptkb":
        stem = letters[:-1] if len(letters) >= 2 and letters[-2] == last else letters  # app -> ap
        if len(stem) >= 2 and stem[-2] in "aeiou" and (len(stem) < 3 or stem[-3] not in "aeiou"):
            return "consonant"
    return "vowel"


def korean_final_sound(word: str) -> FinalSound:
    """Exact final sound of a Korean word from its last Hangul syllable's 받침."""
    for ch in reversed(word):
        if "\uac00" <= ch <= "\ud7a3":
            jong = (ord(ch) - 0xAC00) % 28
            return "vowel" if jong == 0 else ("rieul" if jong == 8 else "consonant")
        if ch.isalnum():
            return english_final_sound(ch)
    return "vowel"


def particle_for(form: str, final: FinalSound, tag: str = "") -> str | None:
    """The allomorph of particle ``form`` that follows a word ending in ``final``; None when ``form`` has none."""
    pair = _PARTICLE_FORMS.get(form)
    if pair is None and form in _SUBJECT_PAIR and tag in ("JKS", "JKC"):
        pair = _SUBJECT_PAIR
    if pair is None:
        return None
    if final == "vowel" or (final == "rieul" and pair in _RO_FAMILY):
        return pair[1]
    return pair[0]


# --------------------------------------------------------------------------------------------------------------
# Code-switching


@dataclass(frozen=True)
class SwitchSpan:
    """One switchable term in a query: replace text[start:end] and fix the particle at [p_start:p_end]."""

    start: int
    end: int
    source: str
    replacement: str
    direction: Literal["ko->en", "en->ko"]
    p_start: int = -1
    p_end: int = -1
    particle: str = ""


def _final_sound_of(replacement: str, direction: str) -> FinalSound:
    return english_final_sound(replacement) if direction == "ko->en" else korean_final_sound(replacement)


def find_switch_spans(query: str, tokens: Sequence[Any], dictionary: BilingualDictionary) -> list[SwitchSpan]:
    """Non-overlapping switchable terms of ``query`` from its Kiwi tokens, longest dictionary match first.

    Korean nouns (and compounds of up to MAX_SPAN_TOKENS adjacent nouns, spaced or not) switch to their first
    English sense; Latin words (Kiwi tag SL, stopwords excluded) switch to their first Korean sense.
    """
    spans: list[SwitchSpan] = []
    i = 0
    n_tok = len(tokens)
    while i < n_tok:
        tok = tokens[i]
        kind = "ko" if tok.tag in KOREAN_NOUN_TAGS else ("en" if tok.tag == LATIN_TAG else None)
        if kind is None or query[tok.start : tok.start + tok.len] != tok.form:
            i += 1
            continue
        # Longest run of same-kind tokens separated by nothing or whitespace.
        run = [tok]
        while len(run) < MAX_SPAN_TOKENS and i + len(run) < n_tok:
            nxt, prev = tokens[i + len(run)], run[-1]
            same = nxt.tag in KOREAN_NOUN_TAGS if kind == "ko" else nxt.tag == LATIN_TAG
            gap = query[prev.start + prev.len : nxt.start]
            if not same or (gap and not gap.isspace()) or query[nxt.start : nxt.start + nxt.len] != nxt.form:
                break
            run.append(nxt)
        matched = None
        for n in range(len(run), 0, -1):
            start, end = run[0].start, run[n - 1].start + run[n - 1].len
            surface = query[start:end]
            if kind == "ko":
                if n == 1 and surface in KOREAN_STOP_NOUNS:
                    continue
                senses = dictionary.lookup_ko(surface)
            else:
                if n == 1 and surface.lower() in ENGLISH_STOPWORDS:
                    continue
                # A Korean verb/adjective ("cleanse" -> 씻다) does not fit a noun slot in an English query.
                senses = [k for k in dictionary.lookup_en(surface) if not dictionary.is_predicate(k)]
            if senses:
                matched = (n, start, end, surface, senses[0])
                break
        if matched is None:
            i += 1
            continue
        n, start, end, surface, replacement = matched
        if kind == "ko" and i + n < n_tok and _blocks_switch(tokens[i + n], end):
            i += n
            continue
        direction: Literal["ko->en", "en->ko"] = "ko->en" if kind == "ko" else "en->ko"
        p_start = p_end = -1
        particle = ""
        if i + n < n_tok:
            nxt = tokens[i + n]
            if (
                nxt.start == end
                and nxt.tag.startswith("J")
                and query[nxt.start : nxt.start + nxt.len] == nxt.form
            ):
                new = particle_for(nxt.form, _final_sound_of(replacement, direction), nxt.tag)
                if new is not None:
                    p_start, p_end, particle = nxt.start, nxt.start + nxt.len, new
        spans.append(SwitchSpan(start, end, surface, replacement, direction, p_start, p_end, particle))
        i += n
    return spans


def _blocks_switch(nxt: Any, end: int) -> bool:
    """A noun glued to 적 or an adjective suffix (예방적인, 성적으로, 행복한) is not switched: "prevention적인"
    is not how anyone writes. 하다 verbs (검색하다 -> search하다) and plural 들 (doctor들) are."""
    return nxt.start == end and (nxt.tag.startswith("XSA") or (nxt.tag == "XSN" and nxt.form == "적"))


def apply_switches(query: str, spans: Sequence[SwitchSpan]) -> str:
    """Splice the chosen spans into ``query`` (everything else — spacing, punctuation — kept verbatim).

    Two switched English words that were written together ("검색모델") get a space between them.
    """
    out: list[str] = []
    pos = 0
    prev_end, prev_en = -1, False
    for span in sorted(spans, key=lambda s: s.start):
        out.append(query[pos : span.start])
        is_en = span.direction == "ko->en"
        if is_en and prev_en and prev_end == span.start:
            out.append(" ")
        out.append(span.replacement)
        pos = span.end
        if span.p_start >= 0:
            out.append(span.particle)
            pos = span.p_end
        prev_end, prev_en = span.end, is_en and span.p_start < 0
    out.append(query[pos:])
    return "".join(out)


def _rng_for(query: str, seed: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{query}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


MAX_ENUMERATED_SPANS = 10  # 2^10 subsets; beyond that subsets are sampled


def variants_from_spans(query: str, spans: Sequence[SwitchSpan], max_variants: int, seed: int) -> list[str]:
    """Up to ``max_variants`` distinct code-switched variants (never the query itself), deterministic in seed.

    Candidates are the non-empty subsets of spans. The fully switched query is always kept when there is room
    (it is the strongest cross-lingual signal); the rest are a seeded sample of the partial switches.
    """
    if not spans or max_variants <= 0:
        return []
    rng = _rng_for(query, seed)
    full = apply_switches(query, spans)
    candidates: list[str] = []
    if len(spans) <= MAX_ENUMERATED_SPANS:
        for k in range(1, len(spans)):
            for subset in combinations(spans, k):
                candidates.append(apply_switches(query, subset))
    else:
        for _ in range(4 * max_variants):
            subset = [s for s in spans if rng.random() < 0.5]
            if 0 < len(subset) < len(spans):
                candidates.append(apply_switches(query, subset))
    seen = {query, full}
    partial = [c for c in dict.fromkeys(candidates) if c not in seen]
    chosen = [full] if full != query else []
    chosen += rng.sample(partial, min(len(partial), max_variants - len(chosen)))
    return chosen[:max_variants]


def code_switch_variants(
    query: str,
    dictionary: BilingualDictionary,
    kiwi: Any = None,
    max_variants: int = 3,
    seed: int = 13,
) -> list[str]:
    """Code-switched variants of one query ("검색 모델" -> "search 모델", "검색 model", "search model")."""
    return code_switch_batch([query], dictionary, kiwi, max_variants, seed)[0]


def code_switch_batch(
    queries: Sequence[str],
    dictionary: BilingualDictionary,
    kiwi: Any = None,
    max_variants: int = 3,
    seed: int = 13,
) -> list[list[str]]:
    """:func:`code_switch_variants` for many queries through Kiwi's multi-text API (one call per batch)."""
    if kiwi is None:
        from raysparse.analyzers import get_kiwi

        kiwi = get_kiwi()
    texts = [unicodedata.normalize("NFC", q) for q in queries]
    # One text at a time: the shared Kiwi (analyzers.get_kiwi) is single-threaded, where Kiwi's list API raises;
    # parallelism comes from Ray actors instead.
    token_lists = [kiwi.tokenize(t) for t in texts]
    return [
        variants_from_spans(q, find_switch_spans(q, toks, dictionary), max_variants, seed)
        for q, toks in zip(texts, token_lists, strict=True)
    ]


# --------------------------------------------------------------------------------------------------------------
# Triples


def _as_table(batch: pa.Table | Mapping[str, Any]) -> pa.Table:
    if isinstance(batch, pa.Table):
        table = batch
    else:  # dict of columns (lists or numpy arrays, as Ray Data's "numpy" batches)
        table = pa.Table.from_pydict(
            {
                k: [list(v) if hasattr(v, "tolist") and not isinstance(v, str) else v for v in col]
                for k, col in batch.items()
            }
        )
    missing = [f.name for f in TRIPLES if f.name not in table.column_names]
    if missing:
        raise ValueError(f"triples batch is missing column(s) {missing}; expected schemas.TRIPLES")
    return table.select(TRIPLES.names).cast(TRIPLES)


def augment_triples(
    batch: pa.Table | Mapping[str, Any],
    dictionary: BilingualDictionary,
    cfg: AugmentConfig | None = None,
    kiwi: Any = None,
) -> pa.Table:
    """Each TRIPLES row followed by its code-switched variants ("q1#cs1", ...) with the same positives/negatives.

    Plain and batch-local, so it runs unchanged inside Ray Data ``map_batches``.
    """
    from raysparse.config import AugmentConfig

    cfg = cfg or AugmentConfig()
    table = _as_table(batch)
    ids = table.column("query_id").to_pylist()
    for i, qid in enumerate(ids):
        if VARIANT_MARK in qid:
            raise ValueError(
                f"triples row {i}: field 'query_id' {qid!r} already contains {VARIANT_MARK!r} (augmented twice?)"
            )
    variants = code_switch_batch(
        table.column("query").to_pylist(), dictionary, kiwi, cfg.max_variants_per_query, cfg.seed
    )
    take: list[int] = []
    new_ids: list[str] = []
    new_queries: list[str] = []
    for i, (qid, vs) in enumerate(zip(ids, variants, strict=True)):
        take.append(i)
        new_ids.append(qid)
        new_queries.append(None)  # type: ignore[arg-type]  # keep the original text
        for k, v in enumerate(vs, 1):
            take.append(i)
            new_ids.append(f"{qid}{VARIANT_MARK}{k}")
            new_queries.append(v)
    out = table.take(pa.array(take, pa.int64()))
    originals = out.column("query").to_pylist()
    queries = [q if q is not None else o for q, o in zip(new_queries, originals, strict=True)]
    out = out.set_column(0, TRIPLES.field("query_id"), pa.array(new_ids, pa.string()))
    out = out.set_column(1, TRIPLES.field("query"), pa.array(queries, pa.string()))
    return out


@dataclass
class AugmentReport:
    """What augmentation did; ``queries_without_variant`` are the queries with no switchable dictionary term
    (when max_variants_per_query > 0)."""

    queries_in: int = 0
    variants_out: int = 0
    queries_with_variants: int = 0
    queries_without_variant: int = 0
    dictionary_pairs: int = 0
    sentence_pairs: int = 0
    sources: list[str] = field(default_factory=list)
    skipped_inputs: dict[str, int] = field(
        default_factory=dict
    )  # input files that were not TRIPLES, by reason

    @property
    def fraction_with_variants(self) -> float:
        return self.queries_with_variants / self.queries_in if self.queries_in else 0.0

    @classmethod
    def from_query_ids(cls, query_ids: Iterable[str]) -> AugmentReport:
        """Counts from an augmented table's ids alone, so the Ray path needs no side channel."""
        originals, with_variants, variants = set(), set(), 0
        for qid in query_ids:
            base, mark, _ = qid.partition(VARIANT_MARK)
            if mark:
                variants += 1
                with_variants.add(base)
            else:
                originals.add(qid)
        return cls(
            queries_in=len(originals),
            variants_out=variants,
            queries_with_variants=len(with_variants),
            queries_without_variant=len(originals - with_variants),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction_with_variants": round(self.fraction_with_variants, 4)}

    def __str__(self) -> str:
        return (
            f"augment: {self.queries_in} queries in, {self.variants_out} variants out, "
            f"{self.queries_with_variants} queries with >=1 variant ({self.fraction_with_variants:.1%}), "
            f"{self.queries_without_variant} with no switchable term"
        )


class _AugmentBatches:
    """Ray Data actor: builds the dictionary and one Kiwi once, then augments every batch it is given."""

    def __init__(self, dictionary_state: Any, cfg_state: dict[str, Any]) -> None:
        import ray

        from raysparse.analyzers import get_kiwi
        from raysparse.config import AugmentConfig

        if isinstance(dictionary_state, ray.ObjectRef):  # put once in the object store, fetched by each actor
            dictionary_state = ray.get(dictionary_state)
        self.dictionary = BilingualDictionary.from_state(dictionary_state)
        self.cfg = AugmentConfig(**cfg_state)
        self.kiwi = get_kiwi()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return augment_triples(batch, self.dictionary, self.cfg, self.kiwi)


def augment_dataset(
    ds: Any,
    dictionary: BilingualDictionary,
    cfg: AugmentConfig | None = None,
    num_actors: int | tuple[int, int] | None = None,
    num_cpus_per_actor: float = 0.5,
    batch_size: int = 256,
    resources: dict[str, float] | None = None,
) -> Any:
    """Ray Data wrapper of :func:`augment_triples`: an actor pool, one Kiwi per actor, fractional CPUs.

    Fractional CPUs matter on small nodes: two 1-CPU actors plus the Parquet read on a 2-CPU node wait forever.
    ``resources`` (``mining.resources``, e.g. ``{cpu_pool: 1}``) places the actors on that node pool
    (:func:`raysparse.ray_utils.placement_args`).
    """
    import ray

    from raysparse.config import AugmentConfig

    cfg = cfg or AugmentConfig()
    if num_actors is None:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        num_actors = (1, max(1, int(cpus / num_cpus_per_actor) - 1))
    state_ref = ray.put(dictionary.to_state())
    return ds.map_batches(
        _AugmentBatches,
        fn_constructor_kwargs={"dictionary_state": state_ref, "cfg_state": cfg.model_dump()},
        batch_format="pyarrow",
        batch_size=batch_size,
        concurrency=num_actors,
        num_cpus=num_cpus_per_actor,
        **placement_args(resources),
    )


def find_triples_files(path: str | Path) -> tuple[list[Path], ReadReport]:
    """Parquet files holding TRIPLES under ``path`` (a file or a directory, searched recursively).

    Parquet files with other schemas (e.g. a mining report table) are skipped and counted, never silently.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    report = ReadReport(str(path))
    if path.is_file():
        candidates = [path]
    elif path.is_dir():
        candidates = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    else:
        raise FileNotFoundError(f"triples not found: {path}")
    files = []
    for p in candidates:
        try:
            names = set(pq.read_schema(p).names)
        except (pa.ArrowInvalid, OSError) as err:
            # pyarrow's message ("magic bytes not found in footer") does not say which shard is broken
            raise DataFormatError(f"{p}: not a readable Parquet file ({err})") from err
        if {"query_id", "query", "positive_ids"} <= names:
            files.append(p)
            report.read += 1
        else:
            report.skip(f"not a triples file: {p.name}")
    if not files:
        raise FileNotFoundError(
            f"{path}: no Parquet file with TRIPLES columns (query_id, query, positive_ids)"
        )
    return files, report


def augment_triples_file(
    triples: str | Path,
    dictionary: BilingualDictionary,
    cfg: AugmentConfig | None = None,
    out_dir: str | Path = "augmented",
    use_ray: bool = True,
    num_actors: int | tuple[int, int] | None = None,
    batch_size: int = 256,
    resources: dict[str, float] | None = None,
) -> AugmentReport:
    """Augment TRIPLES Parquet (file or directory) into ``out_dir`` (Parquet) and return the counts.

    ``use_ray=False`` runs the same batch function in this process (small inputs, debugging). ``resources``: the
    custom Ray resources every read, augmentation and write task asks for (see :func:`augment_dataset`)."""
    import pyarrow.parquet as pq

    files, inputs_report = find_triples_files(triples)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.parquet"):
        old.unlink()  # a rerun must not mix old and new parts
    if use_ray:
        import ray

        from raysparse.ray_utils import init_ray

        init_ray()
        placed = {"ray_remote_args": placement_args(resources)} if resources else {}
        ds = ray.data.read_parquet([str(f) for f in files], **placed)
        augmented = augment_dataset(
            ds, dictionary, cfg, num_actors, batch_size=batch_size, resources=resources
        )
        augmented.write_parquet(str(out_dir), **placed)
        ids = pq.read_table(out_dir, columns=["query_id"]).column("query_id").to_pylist()
    else:
        from tqdm import tqdm

        ids = []
        for i, f in enumerate(tqdm(files, desc="augment", unit="file")):
            pf = pq.ParquetFile(f)
            with pq.ParquetWriter(out_dir / f"part-{i:05d}.parquet", TRIPLES) as writer:
                for rb in pf.iter_batches(batch_size=batch_size):
                    out = augment_triples(pa.Table.from_batches([rb]), dictionary, cfg)
                    writer.write_table(out)
                    ids += out.column("query_id").to_pylist()
    report = AugmentReport.from_query_ids(ids)
    report.dictionary_pairs = len(dictionary)
    report.sources = [str(f) for f in files]
    report.skipped_inputs = dict(inputs_report.skipped)
    log.info("%s", report)
    return report


def iter_query_file(path: str | Path) -> Iterator[str]:
    """Queries from a text file (one per line), JSON (list of strings or of {query|text}) or JSONL."""
    path = Path(path)
    if path.suffix in (".json", ".jsonl"):
        if path.suffix == ".json":
            items = load_json(path)  # names the file, line and column of bad JSON or a non-UTF-8 byte
            if not isinstance(items, list):
                raise DictionaryFormatError(f"{path}: expected a JSON list of queries")
        else:
            items = []
            for line_no, line in iter_lines(path):
                if not line.strip():
                    continue
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DictionaryFormatError(
                        f"{path} line {line_no}: invalid JSON at column {err.colno}: {err.msg}"
                    ) from None
        for i, item in enumerate(items):
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict) and isinstance(item.get("query", item.get("text")), str):
                yield item.get("query", item.get("text"))
            else:
                raise DictionaryFormatError(
                    f"{path}: record {i}: expected a string or an object with 'query'/'text'"
                )
    else:
        for _, line in iter_lines(path):
            if line.strip():
                yield line.strip()
