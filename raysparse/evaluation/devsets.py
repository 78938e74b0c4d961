"""Evaluation collections: BEIR directories, KLUE-MRC open-domain QA and the Korean<->English MS MARCO dev sets.

``raysparse.data`` owns the general readers; when it provides ``read_beir`` / ``write_beir`` /
``build_crosslingual_sets`` we use them, and the small fallbacks here keep evaluation usable on its own (and keep
this module importable while the data package evolves). Every reader reports bad records by file, line and field.

Cross-lingual sets (from ``msmarco_{kor,eng}.dev1000.json``, the same 1,000 MS MARCO dev queries in Korean (machine
translated) and English, aligned by ``id``):

- ``ko-en``: Korean query -> English passages; ``en-ko``: English query -> Korean passages; ``ko-ko``: monolingual
  control. Queries are the ids in ``[first_id, last_id]`` (default 801-1000, never used for training by the main job);
  the corpus holds their positives plus, optionally, ``distractors`` passages of ids outside the range.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysparse.analyzers import hangul_ratio
from raysparse.schemas import CORPUS, QRELS, QUERIES, ReadReport, RetrievalData

CROSSLINGUAL_SETS = ("ko-en", "en-ko", "ko-ko")


# ------------------------------------------------------------------------------------------------ BEIR directories
def _read_jsonl(path: Path, required: tuple[str, ...], report: ReadReport) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            for key in required:
                if key not in row or row[key] is None:
                    raise ValueError(f"{path}:{line_no}: missing field {key!r}")
            if not str(row.get("text", "x")).strip():
                report.skip(f"empty text ({path.name})")
                continue
            rows.append(row)
            report.read += 1
    return rows


def read_beir_dir(beir_dir: str | Path, split: str = "test") -> RetrievalData:
    """``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` -> :class:`RetrievalData` (``raysparse.data`` first).

    Only queries that have judgements are kept (BEIR's queries.jsonl lists every split's queries); the rest are
    counted in the report as ``query not in qrels/<split>.tsv``.
    """
    try:
        from raysparse.data import read_beir  # type: ignore[attr-defined]
    except ImportError:
        read_beir = None
    if read_beir is not None:
        return read_beir(beir_dir)
    root = Path(beir_dir)
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root / name}: missing (a BEIR directory has corpus.jsonl, queries.jsonl, qrels/)"
            )
    report = ReadReport(str(root))
    corpus_rows = _read_jsonl(root / "corpus.jsonl", ("_id", "text"), report)
    query_rows = _read_jsonl(root / "queries.jsonl", ("_id", "text"), report)
    doc_ids = {str(r["_id"]) for r in corpus_rows}
    qrels_path = root / "qrels" / f"{split}.tsv"
    qrel_rows: list[tuple[str, str, int]] = []
    with qrels_path.open(encoding="utf-8", newline="") as fh:
        for line_no, fields in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not fields or (line_no == 1 and fields[0] in ("query-id", "query_id", "qid")):
                continue
            if len(fields) != 3:
                raise ValueError(
                    f"{qrels_path}:{line_no}: expected 3 tab-separated fields, got {len(fields)}"
                )
            try:
                grade = int(fields[2])
            except ValueError:
                raise ValueError(
                    f"{qrels_path}:{line_no}: field 'score' is not an integer: {fields[2]!r}"
                ) from None
            if fields[1] not in doc_ids:
                report.skip("qrels doc_id not in corpus")
                continue
            qrel_rows.append((fields[0], fields[1], grade))
    judged = {q for q, _, _ in qrel_rows}
    queries = []
    for r in query_rows:
        if str(r["_id"]) in judged:
            queries.append(r)
        else:
            report.skip(f"query not in qrels/{split}.tsv")
    corpus = pa.Table.from_pylist(
        [
            {
                "doc_id": str(r["_id"]),
                "title": r.get("title") or None,
                "text": r["text"],
                "lang": r.get("lang"),
            }
            for r in corpus_rows
        ],
        schema=CORPUS,
    )
    qtable = pa.Table.from_pylist(
        [{"query_id": str(r["_id"]), "text": r["text"], "lang": r.get("lang")} for r in queries],
        schema=QUERIES,
    )
    qrels = pa.Table.from_pylist(
        [{"query_id": q, "doc_id": d, "score": g} for q, d, g in qrel_rows], schema=QRELS
    )
    return RetrievalData(corpus, qtable, qrels, [report])


def write_beir_dir(data: RetrievalData, out_dir: str | Path, split: str = "test") -> Path:
    """Write ``data`` as a BEIR directory (``lang`` kept as an extra field; BEIR readers ignore it)."""
    out = Path(out_dir)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for r in data.corpus.to_pylist():
            row = {"_id": r["doc_id"], "title": r["title"] or "", "text": r["text"]}
            if r.get("lang"):
                row["lang"] = r["lang"]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for r in data.queries.to_pylist():
            row = {"_id": r["query_id"], "text": r["text"]}
            if r.get("lang"):
                row["lang"] = r["lang"]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (out / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for r in data.qrels.to_pylist():
            fh.write(f"{r['query_id']}\t{r['doc_id']}\t{r['score']}\n")
    return out


# ------------------------------------------------------------------------------------------------ KLUE-MRC ODQA
def read_klue_mrc_odqa(path: str | Path, limit: int | None = None) -> RetrievalData:
    """KLUE-MRC-derived open-domain QA (``id, title, context, question``): questions -> their Wikipedia passages.

    Passages are deduplicated by their text (several questions share one passage); the doc_id is ``document_id``
    when present, else the first question id that used the passage.
    """
    path = Path(path)
    report = ReadReport(str(path))
    docs: dict[str, dict[str, Any]] = {}
    doc_of_context: dict[str, str] = {}
    queries, qrels = [], []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
            for key in ("id", "question", "context"):
                if not isinstance(row.get(key), str):
                    raise ValueError(f"{path}:{line_no}: field {key!r} missing or not a string")
            if not row["question"].strip() or not row["context"].strip():
                report.skip("empty question or context")
                continue
            context = row["context"]
            doc_id = doc_of_context.get(context)
            if doc_id is None:
                doc_id = str(row.get("document_id") or row["id"])
                if doc_id in docs:  # same document_id, different passage text: keep both, apart
                    doc_id = f"{doc_id}-{row['id']}"
                doc_of_context[context] = doc_id
                docs[doc_id] = {"doc_id": doc_id, "title": row.get("title"), "text": context, "lang": "ko"}
            queries.append({"query_id": row["id"], "text": row["question"], "lang": "ko"})
            qrels.append({"query_id": row["id"], "doc_id": doc_id, "score": 1})
            report.read += 1
            if limit is not None and len(queries) >= limit:
                break
    return RetrievalData(
        pa.Table.from_pylist(list(docs.values()), schema=CORPUS),
        pa.Table.from_pylist(queries, schema=QUERIES),
        pa.Table.from_pylist(qrels, schema=QRELS),
        [report],
    )


# ------------------------------------------------------------------------------------------------ MS MARCO ko/en
def _read_msmarco_dev(path: Path) -> dict[int, dict[str, Any]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of {{id, query, positive}} objects")
    out: dict[int, dict[str, Any]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: record {i}: expected an object")
        for key, kind in (("id", int), ("query", str), ("positive", list)):
            if not isinstance(row.get(key), kind):
                raise ValueError(f"{path}: record {i}: field {key!r} missing or not a {kind.__name__}")
        out[row["id"]] = row
    return out


def build_crosslingual_sets(
    msmarco_dir: str | Path,
    first_id: int = 801,
    last_id: int = 1000,
    distractors: int = 0,
    seed: int = 13,
    sets: tuple[str, ...] = CROSSLINGUAL_SETS,
) -> dict[str, RetrievalData]:
    """The ``ko-en`` / ``en-ko`` / ``ko-ko`` dev sets (see the module docstring), keyed by set name.

    Uses ``raysparse.data.build_crosslingual_sets`` when the data package provides it.
    """
    try:
        from raysparse.data import build_crosslingual_sets as data_builder  # type: ignore[attr-defined]
    except ImportError:
        data_builder = None
    if data_builder is not None:
        return data_builder(
            msmarco_dir, first_id=first_id, last_id=last_id, distractors=distractors, seed=seed
        )
    unknown = set(sets) - set(CROSSLINGUAL_SETS)
    if unknown:
        raise ValueError(f"unknown cross-lingual sets {sorted(unknown)}; choose from {CROSSLINGUAL_SETS}")
    root = Path(msmarco_dir)
    by_lang = {
        "ko": _read_msmarco_dev(root / "msmarco_kor.dev1000.json"),
        "en": _read_msmarco_dev(root / "msmarco_eng.dev1000.json"),
    }
    ids = sorted(i for i in by_lang["ko"] if first_id <= i <= last_id and i in by_lang["en"])
    if not ids:
        raise ValueError(f"{root}: no query id in [{first_id}, {last_id}] present in both languages")
    others = sorted(i for i in by_lang["ko"] if not first_id <= i <= last_id and i in by_lang["en"])
    distractor_ids = sorted(random.Random(seed).sample(others, min(distractors, len(others))))
    out: dict[str, RetrievalData] = {}
    for name in sets:
        q_lang, d_lang = name.split("-")
        report = ReadReport(f"{root}[{name}]")
        corpus, queries, qrels = [], [], []
        for i in [*ids, *distractor_ids]:
            for j, passage in enumerate(by_lang[d_lang][i]["positive"]):
                if not isinstance(passage, str) or not passage.strip():
                    report.skip(f"empty {d_lang} passage")
                    continue
                doc_id = f"{d_lang}-{i}-{j}"
                corpus.append({"doc_id": doc_id, "title": None, "text": passage, "lang": d_lang})
                if i in ids:
                    qrels.append({"query_id": f"{q_lang}-{i}", "doc_id": doc_id, "score": 1})
        judged = {r["query_id"] for r in qrels}
        for i in ids:
            qid = f"{q_lang}-{i}"
            if qid not in judged:
                report.skip("query without a non-empty positive")
                continue
            queries.append({"query_id": qid, "text": by_lang[q_lang][i]["query"], "lang": q_lang})
            report.read += 1
        out[name] = RetrievalData(
            pa.Table.from_pylist(corpus, schema=CORPUS),
            pa.Table.from_pylist(queries, schema=QUERIES),
            pa.Table.from_pylist(qrels, schema=QRELS),
            [report],
        )
    return out


# ------------------------------------------------------------------------------------------------ term-pair dictionary
def read_term_pairs(path: str | Path, limit: int | None = None) -> tuple[list[tuple[str, str]], ReadReport]:
    """``ko<TAB>en`` lines (``#`` comments, a header and blank lines allowed) -> pairs, with a report of skips.

    A line whose first column has no Hangul is skipped and counted (a swapped ``en<TAB>ko`` file shows up as all
    lines skipped, with that reason).
    """
    path = Path(path)
    report = ReadReport(str(path))
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise ValueError(f"{path}:{line_no}: expected 'ko<TAB>en', found no tab")
            ko, en = fields[0].strip(), fields[1].strip()
            if line_no == 1 and (ko.lower() in ("ko", "korean") or en.lower() in ("en", "english")):
                continue
            if not ko or not en:
                report.skip("empty ko or en column")
                continue
            if hangul_ratio(ko) == 0.0:
                report.skip("ko column has no Hangul")
                continue
            if (ko, en) in seen:
                report.skip("duplicate pair")
                continue
            seen.add((ko, en))
            pairs.append((ko, en))
            report.read += 1
            if limit is not None and len(pairs) >= limit:
                break
    return pairs, report
