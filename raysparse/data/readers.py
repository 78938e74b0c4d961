"""Readers for retrieval collections: every input format becomes a :class:`RetrievalData` in BEIR shape.

Each reader checks its records as it goes: malformed input raises :class:`DataFormatError` naming the file, the
record and the field; records that are legitimately unusable (empty text, repeated id, a judgement pointing at a
missing document) are skipped and counted by reason in the :class:`ReadReport` returned in ``data.reports``.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysparse.data.common import (
    CorpusBuilder,
    concat_data,
    detect_lang,
    get_field,
    iter_jsonl,
    iter_lines,
    iter_parquet,
    load_json,
    log,
    make_data,
    normalize_text,
    parse_date,
    stable_id,
)
from raysparse.data.errors import DataFormatError
from raysparse.data.safe_pickle import safe_load_pickle
from raysparse.schemas import ReadReport, RetrievalData


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: {what} not found")
    return p


class _QueryBuilder:
    """Queries + judgements; a repeated (query, doc) judgement is counted, not duplicated."""

    def __init__(self, report: ReadReport) -> None:
        self.report = report
        self.queries: dict[str, dict[str, Any]] = {}
        self.qrels: list[dict[str, Any]] = []
        self._pairs: set[tuple[str, str]] = set()

    def add(self, query_id: str, text: str, doc_id: str, score: int = 1, lang: str | None = None) -> None:
        if (query_id, doc_id) in self._pairs:
            self.report.skip("duplicate query-document pair")
            return
        self._pairs.add((query_id, doc_id))
        self.queries.setdefault(
            query_id, {"query_id": query_id, "text": text, "lang": lang or detect_lang(text)}
        )
        self.qrels.append({"query_id": query_id, "doc_id": doc_id, "score": score})


# ------------------------------------------------------------------------------------------------------------ BEIR
def read_beir(beir_dir: str | Path, split: str = "test") -> RetrievalData:
    """A BEIR directory: ``corpus.jsonl`` {_id, title, text}, ``queries.jsonl`` {_id, text}, ``qrels/<split>.tsv``.

    Only queries judged in ``qrels/<split>.tsv`` are kept (BEIR's queries.jsonl lists every split); the others are
    counted as ``query not in qrels/<split>.tsv``. Optional ``date``/``lang`` fields (written by :func:`write_beir`)
    are read back so the round trip is exact.
    """
    root = _existing(beir_dir, "BEIR directory")
    paths = {
        "corpus": root / "corpus.jsonl",
        "queries": root / "queries.jsonl",
        "qrels": root / "qrels" / f"{split}.tsv",
    }
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: missing (a BEIR directory has corpus.jsonl, queries.jsonl, qrels/)"
            )
    report = ReadReport(str(root))
    corpus = CorpusBuilder(report)
    for where, rec in iter_jsonl(paths["corpus"]):
        doc_id = get_field(rec, "_id", where)
        corpus.add(
            doc_id,
            get_field(rec, "text", where, required=False),
            get_field(rec, "title", where, required=False),
            parse_date(rec.get("date"), where, "date"),
            get_field(rec, "lang", where, required=False),
        )
    query_text: dict[str, tuple[str, str | None]] = {}
    for where, rec in iter_jsonl(paths["queries"]):
        query_id = get_field(rec, "_id", where)
        text = get_field(rec, "text", where, required=False)
        if text is None or not text.strip():
            report.skip("empty query text")
            continue
        if query_id in query_text:
            report.skip("duplicate query id")
            continue
        query_text[query_id] = (text, get_field(rec, "lang", where, required=False))

    qrels: list[dict[str, Any]] = []
    judged: set[str] = set()
    seen_pairs: set[tuple[str, str]] = set()
    # one line is one judgement (BEIR qrels have no quoting), so line numbers are exact
    for line_no, line in iter_lines(paths["qrels"]):
        fields = line.split("\t")
        where = f"{paths['qrels']} line {line_no}"
        if not fields or not "".join(fields).strip():
            continue
        if line_no == 1 and fields[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(fields) < 3:
            raise DataFormatError(f"{where}: expected 3 tab-separated fields (query-id corpus-id score)")
        query_id, doc_id, score_text = (f.strip() for f in fields[:3])
        try:
            score = int(float(score_text))
        except ValueError:
            raise DataFormatError(f"{where}: field 'score' is not a number: {score_text!r}") from None
        if query_id not in query_text:
            report.skip("qrel query not in queries.jsonl")
            continue
        if doc_id not in corpus.ids:
            report.skip("qrel doc not in corpus.jsonl")
            continue
        if (query_id, doc_id) in seen_pairs:
            report.skip("duplicate qrel")
            continue
        seen_pairs.add((query_id, doc_id))
        qrels.append({"query_id": query_id, "doc_id": doc_id, "score": score})
        judged.add(query_id)
    queries = []
    for query_id, (text, lang) in query_text.items():
        if query_id not in judged:
            report.skip(f"query not in qrels/{split}.tsv")
            continue
        queries.append({"query_id": query_id, "text": text, "lang": lang or detect_lang(text)})
    return make_data(corpus.rows, queries, qrels, [report])


def write_beir(data: RetrievalData, out_dir: str | Path, split: str = "test") -> Path:
    """Write ``data`` as a BEIR directory that :func:`read_beir` reads back unchanged (dates/langs included)."""
    root = Path(out_dir)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for row in data.corpus.to_pylist():
            rec: dict[str, Any] = {"_id": row["doc_id"], "title": row["title"] or "", "text": row["text"]}
            if row["date"] is not None:
                rec["date"] = row["date"].isoformat()
            if row["lang"] is not None:
                rec["lang"] = row["lang"]
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for row in data.queries.to_pylist():
            rec = {"_id": row["query_id"], "text": row["text"]}
            if row["lang"] is not None:
                rec["lang"] = row["lang"]
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with (root / "qrels" / f"{split}.tsv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["query-id", "corpus-id", "score"])
        for row in data.qrels.to_pylist():
            writer.writerow([row["query_id"], row["doc_id"], row["score"]])
    return root


# ----------------------------------------------------------------------------------------------------------- SQuAD
def _squad_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Flatten SQuAD JSON ({data:[{title, paragraphs:[{context, qas}]}]}) or JSONL into question records."""
    if path.suffix == ".jsonl":
        yield from iter_jsonl(path)
        return
    doc = load_json(path)
    if isinstance(doc, list):  # a JSON array of flat records, like the JSONL form
        for i, rec in enumerate(doc):
            if not isinstance(rec, dict):
                raise DataFormatError(f"{path} record {i}: expected an object, got {type(rec).__name__}")
            yield f"{path} record {i}", rec
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataFormatError(
            f"{path}: field 'data' is missing (expected SQuAD JSON {{data: [...]}} or JSONL)"
        )
    for a, article in enumerate(doc["data"]):
        where_a = f"{path} data[{a}]"
        paragraphs = get_field(article, "paragraphs", where_a, kind=list)
        for p, para in enumerate(paragraphs):
            where_p = f"{where_a}.paragraphs[{p}]"
            if not isinstance(para, dict):
                raise DataFormatError(f"{where_p}: expected an object")
            context = get_field(para, "context", where_p)
            for q, qa in enumerate(get_field(para, "qas", where_p, kind=list)):
                where_q = f"{where_p}.qas[{q}]"
                if not isinstance(qa, dict):
                    raise DataFormatError(f"{where_q}: expected an object")
                yield where_q, {**qa, "context": context, "title": article.get("title")}


def read_squad(path: str | Path) -> RetrievalData:
    """SQuAD-style QA (JSON or JSONL with id/title/context/question) -> question -> context retrieval pairs.

    Contexts are deduplicated: a context's doc id is a hash of its normalised text, so the many questions asked of
    one paragraph point at one document. SQuAD 2.0 ``is_impossible`` questions are skipped (their context does not
    answer them) and counted.
    """
    path = _existing(path, "SQuAD file")
    report = ReadReport(str(path))
    corpus = CorpusBuilder(report)
    queries = _QueryBuilder(report)
    seen_questions: set[str] = set()
    for where, rec in _squad_records(path):
        qid = get_field(rec, "id", where)
        question = get_field(rec, "question", where)
        context = get_field(rec, "context", where)
        if rec.get("is_impossible"):
            report.skip("unanswerable question (is_impossible)")
            continue
        if not question.strip():
            report.skip("empty question")
            continue
        if not context.strip():
            report.skip("empty context")
            continue
        if qid in seen_questions:
            report.skip("duplicate question id")
            continue
        seen_questions.add(qid)
        doc_id = stable_id(context)
        if doc_id not in corpus.ids:
            corpus.add(doc_id, context, get_field(rec, "title", where, required=False))
        queries.add(qid, question, doc_id)
    return make_data(corpus.rows, list(queries.queries.values()), queries.qrels, [report])


# --------------------------------------------------------------------------------------------------------- MS MARCO
def _msmarco_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    doc = load_json(path)
    if not isinstance(doc, list):
        raise DataFormatError(f"{path}: expected a JSON array of {{id, query, positive}} objects")
    out = []
    for i, rec in enumerate(doc):
        where = f"{path} record {i}"
        if not isinstance(rec, dict):
            raise DataFormatError(f"{where}: expected an object, got {type(rec).__name__}")
        get_field(rec, "id", where)
        get_field(rec, "query", where)
        positives = get_field(rec, "positive", where, kind=list)
        for j, passage in enumerate(positives):
            if passage is not None and not isinstance(passage, str):
                raise DataFormatError(f"{where}: field 'positive[{j}]' must be a string")
        out.append((where, rec))
    return out


def _file_lang(path: Path, records: list[tuple[str, dict[str, Any]]]) -> str:
    """The language of a whole MS MARCO file: the majority of its queries' detected languages."""
    votes = [detect_lang(str(rec["query"])) for _, rec in records[:200]]
    ko = votes.count("ko")
    return "ko" if ko * 2 >= len([v for v in votes if v]) and ko else "en"


def read_msmarco(path: str | Path, lang: str | None = None) -> RetrievalData:
    """``[{id, query, positive: [...]}]`` JSON -> RetrievalData; ``lang`` (``ko``/``en``) detected if not given.

    Ids are language-prefixed (query ``ko-17``, passage ``ko-17-0``) so the Korean and English versions of one
    MS MARCO query can live in the same index.
    """
    path = _existing(path, "MS MARCO file")
    records = _msmarco_records(path)
    lang = lang or _file_lang(path, records)
    report = ReadReport(str(path))
    corpus = CorpusBuilder(report)
    queries = _QueryBuilder(report)
    seen: set[str] = set()
    for _, rec in records:
        rid = str(rec["id"])
        if rid in seen:
            report.skip("duplicate query id")
            continue
        seen.add(rid)
        query = str(rec["query"])
        if not query.strip():
            report.skip("empty query")
            continue
        added = [corpus.add(f"{lang}-{rid}-{j}", p, lang=lang) for j, p in enumerate(rec["positive"])]
        if not any(added):
            report.skip("query without a non-empty positive")
            continue
        for j, ok in enumerate(added):
            if ok:
                queries.add(f"{lang}-{rid}", query, f"{lang}-{rid}-{j}", lang=lang)
    return make_data(corpus.rows, list(queries.queries.values()), queries.qrels, [report])


class MsmarcoPair:
    """The Korean and English versions of the same MS MARCO queries, aligned by ``id``."""

    def __init__(self, ko: dict[int, dict[str, Any]], en: dict[int, dict[str, Any]], report: ReadReport):
        self.ko = ko
        self.en = en
        self.report = report
        self.ids: list[int] = sorted(set(ko) & set(en))

    def records(self, lang: str) -> dict[int, dict[str, Any]]:
        return self.ko if lang == "ko" else self.en

    def query_pairs(self) -> pa.Table:
        """The aligned queries as SENTENCE_PAIRS (a free Korean<->English parallel corpus)."""
        from raysparse.schemas import SENTENCE_PAIRS

        rows = [
            {"ko": self.ko[i]["query"], "en": self.en[i]["query"], "source": "msmarco-ko-en"}
            for i in self.ids
        ]
        return pa.Table.from_pylist(rows, schema=SENTENCE_PAIRS)


def _msmarco_id(rec: dict[str, Any], where: str) -> int:
    try:
        return int(rec["id"])
    except (TypeError, ValueError):
        raise DataFormatError(f"{where}: field 'id' must be an integer, got {rec['id']!r}") from None


def read_msmarco_pair(ko_path: str | Path, en_path: str | Path) -> MsmarcoPair:
    """Align ``msmarco_kor`` and ``msmarco_eng`` by id; ids present in only one file are counted in the report."""
    ko_path, en_path = _existing(ko_path, "Korean MS MARCO file"), _existing(en_path, "English MS MARCO file")
    report = ReadReport(f"{ko_path}+{en_path}")
    by_lang: dict[str, dict[int, dict[str, Any]]] = {}
    for lang, path in (("ko", ko_path), ("en", en_path)):
        recs: dict[int, dict[str, Any]] = {}
        for where, rec in _msmarco_records(path):
            rid = _msmarco_id(rec, where)
            if rid in recs:
                report.skip(f"duplicate id in {lang} file")
                continue
            recs[rid] = rec
        by_lang[lang] = recs
    pair = MsmarcoPair(by_lang["ko"], by_lang["en"], report)
    report.read = len(pair.ids)
    only_ko, only_en = len(set(pair.ko) - set(pair.en)), len(set(pair.en) - set(pair.ko))
    if only_ko:
        report.skip("id only in the Korean file", only_ko)
    if only_en:
        report.skip("id only in the English file", only_en)
    return pair


CROSSLINGUAL_SETS = ("ko-en", "en-ko", "ko-ko", "en-en")


def _resolve_msmarco_dir(root: Path) -> tuple[Path, Path]:
    ko = sorted(root.glob("*kor*.json"))
    en = sorted(root.glob("*eng*.json"))
    if len(ko) != 1 or len(en) != 1:
        raise FileNotFoundError(f"{root}: expected one *kor*.json and one *eng*.json MS MARCO file")
    return ko[0], en[0]


def build_crosslingual_sets(
    ko_path: str | Path,
    en_path: str | Path | None = None,
    id_range: tuple[int, int] | None = None,
    distractors: int = 0,
    seed: int = 13,
    *,
    first_id: int | None = None,
    last_id: int | None = None,
    sets: Iterable[str] = CROSSLINGUAL_SETS,
) -> dict[str, RetrievalData]:
    """Cross-lingual BEIR sets from aligned MS MARCO files, keyed ``"<query lang>-<passage lang>"``.

    ``ko-en``: Korean query -> English passages (where BM25 fails and a bilingual sparse model must win),
    ``en-ko`` the reverse, ``ko-ko``/``en-en`` monolingual controls. Queries are the ids in ``id_range`` (inclusive;
    default 801-1000, which the main job never trains on); the corpus holds their positives plus ``distractors``
    passages from ids outside the range (sampled with ``seed``), so every set has the same documents per language.
    ``ko_path`` may be the directory holding both files (then ``en_path`` is omitted).
    """
    ko_p = Path(ko_path)
    if en_path is None:
        ko_p, en_p = _resolve_msmarco_dir(_existing(ko_p, "MS MARCO directory"))
    else:
        en_p = Path(en_path)
    lo, hi = id_range if id_range is not None else (first_id or 801, last_id or 1000)
    sets = tuple(sets)
    unknown = set(sets) - set(CROSSLINGUAL_SETS)
    if unknown:
        raise ValueError(f"unknown cross-lingual sets {sorted(unknown)}; choose from {CROSSLINGUAL_SETS}")
    pair = read_msmarco_pair(ko_p, en_p)
    ids = [i for i in pair.ids if lo <= i <= hi]
    if not ids:
        raise DataFormatError(f"{ko_p}: no query id in [{lo}, {hi}] present in both languages")
    others = [i for i in pair.ids if not lo <= i <= hi]
    distractor_ids = sorted(random.Random(seed).sample(others, min(distractors, len(others))))
    in_range = set(ids)
    out: dict[str, RetrievalData] = {}
    for name in sets:
        q_lang, d_lang = name.split("-")
        report = ReadReport(f"{ko_p.parent}[{name}]")
        corpus = CorpusBuilder(report)
        queries = _QueryBuilder(report)
        for i in [*ids, *distractor_ids]:
            for j, passage in enumerate(pair.records(d_lang)[i]["positive"]):
                doc_id = f"{d_lang}-{i}-{j}"
                if corpus.add(doc_id, passage, lang=d_lang) and i in in_range:
                    queries.add(f"{q_lang}-{i}", str(pair.records(q_lang)[i]["query"]), doc_id, lang=q_lang)
        # corpus.add counted documents as "read"; the set's unit of interest is the query.
        report.read = len(queries.queries)
        missing = len(in_range) - len(queries.queries)
        if missing:
            report.skip("query without a non-empty positive", missing)
        out[name] = make_data(corpus.rows, list(queries.queries.values()), queries.qrels, [report])
    return out


# --------------------------------------------------------------------------------------------- JSONL / Parquet
def _records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    if path.suffix in (".parquet", ".pq"):
        return iter_parquet(path)
    return iter_jsonl(path)


def _corpus_from_records(
    path: Path,
    records: Iterable[tuple[str, dict[str, Any]]],
    id_field: str | None,
    text_field: str,
    title_field: str | None,
    date_field: str | None,
    lang_field: str | None = None,
) -> RetrievalData:
    report = ReadReport(str(path))
    corpus = CorpusBuilder(report)
    for where, rec in records:
        text = get_field(rec, text_field, where, required=False)
        if text_field not in rec:
            raise DataFormatError(
                f"{where}: field {text_field!r} is missing (set data.text_field; fields present: "
                f"{', '.join(sorted(map(str, rec))[:12])})"
            )
        if id_field:
            if id_field == "id" and "id" not in rec and "doc_id" in rec:
                # raysparse's own CORPUS tables (corpus builders, dated splits) name the column doc_id
                id_field = "doc_id"
            if id_field not in rec or rec[id_field] is None:
                raise DataFormatError(
                    f"{where}: field {id_field!r} is missing (set data.id_field to the id field, or to '' to "
                    "derive ids from the text)"
                )
            doc_id = get_field(rec, id_field, where)
            reason = "duplicate doc id"
        else:
            doc_id, reason = stable_id(text or ""), "duplicate text"
        corpus.add(
            doc_id,
            text,
            get_field(rec, title_field, where, required=False) if title_field else None,
            parse_date(rec.get(date_field), where, date_field) if date_field else None,
            get_field(rec, lang_field, where, required=False) if lang_field else None,
            dedupe_reason=reason,
        )
    return make_data(corpus.rows, [], [], [report])


def read_jsonl(
    path: str | Path,
    id_field: str | None = "id",
    text_field: str = "text",
    title_field: str | None = "title",
    date_field: str | None = None,
) -> RetrievalData:
    """A JSON-lines corpus with configurable field names (no queries). ``id_field=None``/``""``: ids from a text hash."""
    path = _existing(path, "JSONL file")
    return _corpus_from_records(path, iter_jsonl(path), id_field, text_field, title_field, date_field)


def read_parquet(
    path: str | Path,
    id_field: str | None = "id",
    text_field: str = "text",
    title_field: str | None = "title",
    date_field: str | None = None,
) -> RetrievalData:
    """A Parquet corpus with configurable column names (see :func:`read_jsonl`)."""
    path = _existing(path, "Parquet file")
    return _corpus_from_records(path, iter_parquet(path), id_field, text_field, title_field, date_field)


def _pairs_from_records(
    path: Path,
    records: Iterable[tuple[str, dict[str, Any]]],
    query_field: str,
    positive_field: str | None,
    positive_id_field: str | None,
    corpus: RetrievalData | None,
    query_id_field: str | None = None,
) -> RetrievalData:
    report = ReadReport(str(path))
    docs = CorpusBuilder(report)
    known_ids = set(corpus.corpus.column("doc_id").to_pylist()) if corpus is not None else set()
    queries = _QueryBuilder(report)
    for where, rec in records:
        query = get_field(rec, query_field, where)
        if not query.strip():
            report.skip("empty query")
            continue
        qid = get_field(rec, query_id_field, where) if query_id_field else stable_id(query, "q")
        if positive_id_field and rec.get(positive_id_field) is not None:
            ids = (
                rec[positive_id_field]
                if isinstance(rec[positive_id_field], list)
                else [rec[positive_id_field]]
            )
            for doc_id in map(str, ids):
                if doc_id not in known_ids:
                    report.skip("positive id not in corpus")
                    continue
                queries.add(qid, query, doc_id)
            continue
        if not positive_field:
            raise DataFormatError(f"{where}: field {positive_id_field!r} is missing")
        value = get_field(rec, positive_field, where, kind=object)
        positives = value if isinstance(value, list) else [value]
        for k, text in enumerate(positives):
            if not isinstance(text, str):
                raise DataFormatError(f"{where}: field '{positive_field}[{k}]' must be a string")
            if not text.strip():
                report.skip("empty positive")
                continue
            doc_id = stable_id(text)
            if doc_id not in docs.ids:
                docs.add(doc_id, text)
            queries.add(qid, query, doc_id)
    out = make_data(docs.rows, list(queries.queries.values()), queries.qrels, [report])
    if corpus is not None:
        # Documents given by text that are already in the corpus would be duplicates: keep the corpus copy.
        extra = out.corpus.filter(
            pa.compute.invert(pa.compute.is_in(out.corpus["doc_id"], pa.array(known_ids)))
        )
        out = RetrievalData(
            pa.concat_tables([corpus.corpus, extra]), out.queries, out.qrels, [*corpus.reports, report]
        )
    return out


def read_pairs(
    path: str | Path,
    query_field: str = "query",
    positive_field: str | None = "positive",
    positive_id_field: str | None = None,
    corpus: RetrievalData | None = None,
    query_id_field: str | None = None,
) -> RetrievalData:
    """Query-positive pairs from JSONL/Parquet: positive text (str or list) or positive doc id(s) into ``corpus``.

    Positives given as text become documents with hash ids (the same passage under two queries is one document);
    query ids are hashes of the query text unless ``query_id_field`` names a column.
    """
    path = _existing(path, "pair file")
    return _pairs_from_records(
        path, _records(path), query_field, positive_field, positive_id_field, corpus, query_id_field
    )


# ------------------------------------------------------------------------------------------------- dated corpora
def _files(path: Path) -> list[Path]:
    """A file, or the data files of a directory (README/SOURCE/LICENSE-style notes and hidden files left out)."""
    if not path.is_dir():
        return [path]
    notes = (".md", ".txt", ".rst")
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() not in notes
        and p.stem != "LICENSE"
    )
    if not files:
        raise FileNotFoundError(f"{path}: no data files in the directory")
    return files


def read_dated_jsonl(
    path: str | Path,
    date_field: str = "begin",
    text_field: str = "content",
    title_field: str | None = "title",
    id_field: str | None = None,
) -> RetrievalData:
    """Dated JSON lines (a file, or a directory of monthly files like the petitions archive) with a typed date.

    Defaults fit the petitions archive (``begin``, ``content``, ``title``; no id -> text-hash ids, so a petition
    repeated across monthly dumps is kept once and the repeats counted). A record without a date is kept with a
    null date and logged as a warning (kept, so not a skip).
    """
    root = _existing(path, "dated corpus")
    parts = []
    for file in _files(root):
        part = _corpus_from_records(file, iter_jsonl(file), id_field, text_field, title_field, date_field)
        undated = part.corpus.column("date").null_count
        if undated:
            # Kept (the text is still useful), but said out loud: date-aware features will ignore these.
            log.warning(
                "%s: %d documents have no %r and are kept with a null date", file, undated, date_field
            )
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    # Hash ids may repeat across files (the same petition in two dumps): keep the first, count the rest.
    seen: set[str] = set()
    kept = []
    for part in parts:
        ids = part.corpus.column("doc_id").to_pylist()
        mask = [i not in seen for i in ids]
        seen.update(ids)
        dropped = mask.count(False)
        if dropped:
            part.reports[0].skip("duplicate across files", dropped)
            part.reports[0].read -= dropped
        kept.append(RetrievalData(part.corpus.filter(pa.array(mask)), part.queries, part.qrels, part.reports))
    return concat_data(kept)


_DATE_IN_NAME = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def read_line_corpus(path: str | Path, date: datetime | str | None = None) -> RetrievalData:
    """One document per line (e.g. the soynlp news sample); the date comes from ``date`` or the folder/file name.

    soynlp's ``doublespace_line_corpus`` separates sentences with two spaces; that is kept as is (it is whitespace).
    """
    path = _existing(path, "line corpus")
    if date is None:
        match = _DATE_IN_NAME.search(str(path.resolve()))
        when = datetime(*map(int, match.groups())) if match else None
    else:
        when = parse_date(date, str(path), "date")
    report = ReadReport(str(path))
    corpus = CorpusBuilder(report)
    for line_no, text in iter_lines(path):
        if not text.strip():
            report.skip("empty document text")
            continue
        corpus.add(f"{path.stem}-{line_no}", text.strip(), date=when)
    return make_data(corpus.rows, [], [], [report])


# ------------------------------------------------------------------------------------------ the users' prototype
_PROTO_TEXT_FIELDS = ("text", "content", "document", "body", "passage")


def read_prototype_documents(path: str | Path) -> RetrievalData:
    """``documents.json``: a list of {id?, title?, text|content|...} or strings, or a dict id -> text|{...}."""
    path = _existing(path, "documents.json")
    doc = load_json(path)
    report = ReadReport(str(path))
    corpus = CorpusBuilder(report)
    if isinstance(doc, dict) and isinstance(doc.get("documents"), list):
        doc = doc["documents"]
    items: Iterable[tuple[str, Any, Any]]
    if isinstance(doc, dict):
        items = ((f"{path} key {k!r}", k, v) for k, v in doc.items())
    elif isinstance(doc, list):
        items = ((f"{path} record {i}", None, v) for i, v in enumerate(doc))
    else:
        raise DataFormatError(f"{path}: expected a list of documents or an object id -> text")
    for where, key, value in items:
        if isinstance(value, str):
            corpus.add(
                str(key) if key is not None else stable_id(value), value, dedupe_reason="duplicate doc id"
            )
            continue
        if not isinstance(value, dict):
            raise DataFormatError(f"{where}: expected a string or an object, got {type(value).__name__}")
        field = next((f for f in _PROTO_TEXT_FIELDS if f in value), None)
        if field is None:
            raise DataFormatError(
                f"{where}: field 'text' is missing (also looked for {', '.join(_PROTO_TEXT_FIELDS[1:])})"
            )
        text = get_field(value, field, where, required=False)
        doc_id = get_field(value, "id", where, required=False) or (str(key) if key is not None else None)
        corpus.add(
            doc_id or stable_id(text or ""),
            text,
            get_field(value, "title", where, required=False),
            parse_date(value.get("date"), where, "date") if "date" in value else None,
        )
    return make_data(corpus.rows, [], [], [report])


_PAIR_DOC_FIELDS = ("document", "positive", "doc", "passage", "context", "text", "positive_document")


def _prototype_pairs(path: Path) -> Iterator[tuple[str, str, list[str]]]:
    """(where, query, documents) from a restricted-unpickled pair file (tuples or dicts, see read_prototype)."""
    obj = safe_load_pickle(path)
    if isinstance(obj, dict):
        lists = [k for k in ("pairs", "data", "qd_pairs") if isinstance(obj.get(k), list)]
        if not lists:
            raise DataFormatError(f"{path}: expected a list of (query, document) pairs; got an object")
        obj = obj[lists[0]]
    if not isinstance(obj, (list, tuple)):
        raise DataFormatError(f"{path}: expected a list of (query, document) pairs, got {type(obj).__name__}")
    for i, item in enumerate(obj):
        where = f"{path} record {i}"
        if isinstance(item, (tuple, list)):
            if len(item) < 2 or not isinstance(item[0], str) or not isinstance(item[1], str):
                raise DataFormatError(f"{where}: expected (query: str, document: str, ...), got {item!r:.80}")
            yield where, item[0], [item[1]]
        elif isinstance(item, dict):
            query = get_field(item, "query", where)
            field = next((f for f in _PAIR_DOC_FIELDS if f in item), None)
            if field is None:
                raise DataFormatError(f"{where}: field 'document' is missing (or 'positive')")
            value = item[field]
            docs = value if isinstance(value, list) else [value]
            if not all(isinstance(d, str) for d in docs):
                raise DataFormatError(f"{where}: field {field!r} must be a string or a list of strings")
            yield where, query, docs
        else:
            raise DataFormatError(f"{where}: expected a tuple or an object, got {type(item).__name__}")


def read_prototype(root: str | Path) -> RetrievalData:
    """The prototype's dataset folder: ``documents.json`` + query-document pair pickles (searched recursively).

    Pair documents that equal a ``documents.json`` text (after normalisation) link to that document's id; the rest
    become new documents with hash ids. Pickles are loaded only through the restricted unpickler
    (:mod:`raysparse.data.safe_pickle`). Synonym files are read by :func:`raysparse.data.read_prototype_synonyms`.
    """
    root = _existing(root, "prototype directory")
    if root.is_dir():
        doc_files = sorted(root.rglob("documents.json"))
        pair_files = sorted(root.rglob("*.pkl")) + sorted(root.rglob("*.pickle"))
    elif root.suffix == ".json":  # a single documents file
        doc_files, pair_files = [root], []
    else:  # a single pair pickle
        doc_files, pair_files = [], [root]
    if not doc_files and not pair_files:
        raise FileNotFoundError(f"{root}: no documents.json and no pair pickles (*.pkl) found")
    parts = [read_prototype_documents(f) for f in doc_files]
    base = concat_data(parts) if parts else make_data([], [], [], [])
    corpus_rows = base.corpus.to_pylist()
    by_text = {normalize_text(r["text"]): r["doc_id"] for r in corpus_rows}
    report = ReadReport(",".join(str(p) for p in pair_files) or str(root))
    docs = CorpusBuilder(report)
    docs.ids = {r["doc_id"] for r in corpus_rows}
    queries = _QueryBuilder(report)
    for file in pair_files:
        for _, query, texts in _prototype_pairs(file):
            if not query.strip():
                report.skip("empty query")
                continue
            for text in texts:
                if not text.strip():
                    report.skip("empty document text")
                    continue
                doc_id = by_text.get(normalize_text(text))
                if doc_id is None:
                    doc_id = stable_id(text)
                    by_text[normalize_text(text)] = doc_id
                    docs.add(doc_id, text)
                queries.add(stable_id(query, "q"), query, doc_id)
    return make_data(
        corpus_rows + docs.rows, list(queries.queries.values()), queries.qrels, [*base.reports, report]
    )


# --------------------------------------------------------------------------------------------------- dispatching
def _limit(data: RetrievalData, max_records: int | None) -> RetrievalData:
    """The first ``max_records`` queries (with their judgements), or documents when there are no queries."""
    if max_records is None:
        return data
    if data.queries.num_rows == 0:
        if data.corpus.num_rows > max_records:
            data.reports[-1].skip("over data.max_records", data.corpus.num_rows - max_records)
        return RetrievalData(data.corpus.slice(0, max_records), data.queries, data.qrels, data.reports)
    if data.queries.num_rows <= max_records:
        return data
    queries = data.queries.slice(0, max_records)
    data.reports[-1].skip("over data.max_records", data.queries.num_rows - max_records)
    keep = pa.compute.is_in(data.qrels["query_id"], queries["query_id"])
    return RetrievalData(data.corpus, queries, data.qrels.filter(keep), data.reports)


def load_source(data_cfg: Any, dev: bool = False) -> RetrievalData:
    """Read the source a :class:`~raysparse.config.DataConfig` describes (``format``/``path`` or the dev ones).

    ``jsonl``/``parquet`` sources are a corpus, or query-positive pairs when their first record has
    ``data.query_field``. ``msmarco`` takes a file, or a directory whose Korean and English files are both read.
    """
    from raysparse.data.sample import load_sample

    fmt = (data_cfg.dev_format or data_cfg.format) if dev else data_cfg.format
    path = data_cfg.dev_path if dev else data_cfg.path
    if fmt == "sample":
        return _limit(load_sample(), data_cfg.max_records)
    if not path:
        raise ValueError(f"data.{'dev_' if dev else ''}path is required for data.format={fmt!r}")
    p = _existing(path, f"data source ({fmt})")
    if fmt == "beir":
        data = read_beir(p)
    elif fmt == "squad":
        data = read_squad(p)
    elif fmt == "msmarco":
        if p.is_dir():
            data = concat_data([read_msmarco(f) for f in sorted(p.glob("*.json"))])
        else:
            data = read_msmarco(p)
    elif fmt == "prototype":
        data = read_prototype(p)
    elif fmt in ("jsonl", "parquet"):
        first = next(iter(_records(p)), None)
        if first is not None and data_cfg.query_field in first[1]:
            data = read_pairs(p, query_field=data_cfg.query_field, positive_field=data_cfg.text_field)
        else:
            reader = read_parquet if fmt == "parquet" else read_jsonl
            data = reader(
                p,
                data_cfg.id_field or None,
                data_cfg.text_field,
                data_cfg.title_field or None,
                data_cfg.date_field,
            )
    else:
        raise ValueError(f"unknown data.format {fmt!r}")
    return _limit(data, data_cfg.max_records)
