"""Build the quality recipe's training collection, parallel text and dev sets from ../shared/data.

Layout written under OUT (all BEIR sets use ``qrels/test.tsv``)::

    OUT/train/                  MS MARCO ids 1-800: Korean and English passages; query ``ko-<id>`` and ``en-<id>``
                                each judge BOTH language versions of the passage, so one collection covers the four
                                directions (ko->ko, ko->en, en->en, en->ko). One query per language (not one per
                                direction) on purpose: BM25 mining must never pick the other-language positive of the
                                same id as a "hard negative".
    OUT/parallel/msmarco_1_800.jsonl   ko/en pairs: the 800 aligned queries + their aligned passages (same count).
    OUT/dev/msmarco-{ko-en,en-ko,ko-ko}/        ids 801-1000, the 200 positives of the target language only.
    OUT/dev/msmarco-{...}-distractors/          the same + DISTRACTORS passages from other corpora (never MS MARCO
                                                ids 1-800, which are training passages): KLUE-MRC contexts and petition
                                                paragraphs for Korean targets, python-docs English segments (>= 200
                                                characters) for English targets.
    OUT/dev/klue-odqa-distractors/   KLUE-MRC ODQA: 240 questions, 235 passages + 2,000 petition paragraphs.
    OUT/build.json              counts and what was skipped, with reasons.

KLUE is a dev set only; the python-docs English segments used as distractors are also (as sentence pairs, not as
judged passages) in the parallel text the model trains on — that does not leak any judgement, and is documented.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
TRAIN_IDS = (1, 800)
DEV_IDS = (801, 1000)


def _write_beir(
    root: Path, corpus: list[dict[str, Any]], queries: list[dict[str, Any]], qrels: list[tuple]
) -> None:
    """A BEIR directory (corpus.jsonl, queries.jsonl, qrels/test.tsv) that raysparse.data.read_beir reads."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for doc in corpus:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for q in queries:
            fh.write(json.dumps(q, ensure_ascii=False) + "\n")
    with (root / "qrels" / "test.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, did, score in qrels:
            fh.write(f"{qid}\t{did}\t{score}\n")


def _load_msmarco(data: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Both MS MARCO files by id, failing with the file and record index on a malformed record."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for lang, name in (("ko", "msmarco_kor.dev1000.json"), ("en", "msmarco_eng.dev1000.json")):
        path = data / "msmarco-ko-en" / name
        records = json.loads(path.read_text(encoding="utf-8"))
        by_id: dict[int, dict[str, Any]] = {}
        for i, rec in enumerate(records):
            for field in ("id", "query", "positive"):
                if field not in rec:
                    raise ValueError(f"{path}: record {i} has no field {field!r}")
            by_id[int(rec["id"])] = rec
        out[lang] = by_id
    return out


def build_training(msmarco: dict[str, dict[int, dict[str, Any]]], out: Path, stats: dict[str, Any]) -> None:
    """The four-direction training collection and the MS MARCO parallel pairs (ids 1-800)."""
    lo, hi = TRAIN_IDS
    ids = sorted(i for i in set(msmarco["ko"]) & set(msmarco["en"]) if lo <= i <= hi)
    corpus, queries, qrels, pairs = [], [], [], []
    skipped: dict[str, int] = {}
    for i in ids:
        doc_ids = []
        for lang in ("ko", "en"):
            for j, text in enumerate(msmarco[lang][i]["positive"]):
                if not str(text).strip():
                    skipped["empty passage"] = skipped.get("empty passage", 0) + 1
                    continue
                doc_id = f"{lang}-{i}-{j}"
                corpus.append({"_id": doc_id, "title": "", "text": text, "lang": lang})
                doc_ids.append(doc_id)
        for lang in ("ko", "en"):
            queries.append({"_id": f"{lang}-{i}", "text": msmarco[lang][i]["query"], "lang": lang})
            qrels += [(f"{lang}-{i}", d, 1) for d in doc_ids]
        pairs.append({"ko": msmarco["ko"][i]["query"], "en": msmarco["en"][i]["query"]})
        ko_pos, en_pos = msmarco["ko"][i]["positive"], msmarco["en"][i]["positive"]
        if len(ko_pos) == len(en_pos):
            pairs += [{"ko": k, "en": e} for k, e in zip(ko_pos, en_pos, strict=True)]
        else:
            skipped["passage lists of different length (not paired)"] = (
                skipped.get("passage lists of different length (not paired)", 0) + 1
            )
    _write_beir(out / "train", corpus, queries, qrels)
    (out / "parallel").mkdir(parents=True, exist_ok=True)
    with (out / "parallel" / "msmarco_1_800.jsonl").open("w", encoding="utf-8") as fh:
        for p in pairs:
            fh.write(json.dumps(p, ensure_ascii=False) + "\n")
    stats["train"] = {"ids": len(ids), "documents": len(corpus), "queries": len(queries), "qrels": len(qrels)}
    stats["parallel_msmarco_pairs"] = len(pairs)
    stats["train_skipped"] = skipped


def _petition_paragraphs(data: Path, limit: int, seed: int) -> list[str]:
    """Paragraphs (>= 80 characters) of the dated petitions, a seeded sample of ``limit``."""
    paragraphs: list[str] = []
    for path in sorted((data / "corpora" / "petitions-dated").glob("petitions_*")):
        with path.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} line {line_no}: not JSON ({err})") from None
                for para in str(rec.get("content", "")).split("\n"):
                    para = " ".join(para.split())
                    if len(para) >= 80:
                        paragraphs.append(para[:1000])
    rng = random.Random(seed)
    return rng.sample(paragraphs, min(limit, len(paragraphs)))


def _klue(data: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple]]:
    """KLUE-MRC ODQA as BEIR rows: one document per distinct context."""
    path = data / "klue-mrc-odqa" / "validation.jsonl"
    doc_by_text: dict[str, str] = {}
    corpus, queries, qrels = [], [], []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            for field in ("id", "context", "question"):
                if not rec.get(field):
                    raise ValueError(f"{path} line {line_no}: field {field!r} is missing or empty")
            ctx = rec["context"]
            if ctx not in doc_by_text:
                doc_by_text[ctx] = f"klue-{len(doc_by_text)}"
                corpus.append(
                    {"_id": doc_by_text[ctx], "title": rec.get("title", ""), "text": ctx, "lang": "ko"}
                )
            queries.append({"_id": rec["id"], "text": rec["question"], "lang": "ko"})
            qrels.append((rec["id"], doc_by_text[ctx], 1))
    return corpus, queries, qrels


def _python_docs_english(data: Path, limit: int, seed: int) -> list[str]:
    path = data / "bilingual" / "python-docs-glossary" / "pairs_en_ko.jsonl"
    texts = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                en = str(json.loads(line).get("en", ""))
                if len(en) >= 200:
                    texts.append(" ".join(en.split()))
    return random.Random(seed).sample(texts, min(limit, len(texts)))


def _python_docs_training_pairs(data: Path, held_out: set[str], out: Path, stats: dict[str, Any]) -> None:
    """OUT/parallel/python_docs_train.jsonl: the python-docs pairs minus the English segments used as dev
    distractors, so no dev text reaches the tokenizer, the lexical statistics or the translation table."""
    path = data / "bilingual" / "python-docs-glossary" / "pairs_en_ko.jsonl"
    kept = dropped = 0
    (out / "parallel").mkdir(parents=True, exist_ok=True)
    with (
        path.open(encoding="utf-8") as src,
        (out / "parallel" / "python_docs_train.jsonl").open("w", encoding="utf-8") as dst,
    ):
        for line in src:
            if not line.strip():
                continue
            rec = json.loads(line)
            if " ".join(str(rec.get("en", "")).split()) in held_out:
                dropped += 1
                continue
            dst.write(
                json.dumps({"ko": rec.get("ko", ""), "en": rec.get("en", "")}, ensure_ascii=False) + "\n"
            )
            kept += 1
    stats["parallel_python_docs"] = {"kept": kept, "dropped_dev_distractors": dropped}


def build_dev(
    msmarco: dict[str, dict[int, dict[str, Any]]],
    data: Path,
    out: Path,
    distractors: int,
    klue_distractors: int,
    stats: dict[str, Any],
) -> None:
    """MS MARCO 801-1000 in three directions (with and without distractors) and KLUE ODQA + petitions."""
    lo, hi = DEV_IDS
    ids = sorted(i for i in set(msmarco["ko"]) & set(msmarco["en"]) if lo <= i <= hi)
    klue_corpus, klue_queries, klue_qrels = _klue(data)
    petitions = _petition_paragraphs(data, klue_distractors + distractors, seed=13)
    ko_distract = [d["text"] for d in klue_corpus][: distractors // 5] + petitions[klue_distractors:]
    ko_distract = ko_distract[:distractors]
    en_distract = _python_docs_english(data, distractors, seed=13)
    _python_docs_training_pairs(data, set(en_distract), out, stats)
    for name in ("ko-en", "en-ko", "ko-ko"):
        q_lang, d_lang = name.split("-")
        corpus, queries, qrels = [], [], []
        for i in ids:
            for j, text in enumerate(msmarco[d_lang][i]["positive"]):
                doc_id = f"{d_lang}-{i}-{j}"
                corpus.append({"_id": doc_id, "title": "", "text": text, "lang": d_lang})
                qrels.append((f"{q_lang}-{i}", doc_id, 1))
            queries.append({"_id": f"{q_lang}-{i}", "text": msmarco[q_lang][i]["query"], "lang": q_lang})
        _write_beir(out / "dev" / f"msmarco-{name}", corpus, queries, qrels)
        extra = ko_distract if d_lang == "ko" else en_distract
        padded = corpus + [
            {"_id": f"distractor-{d_lang}-{k}", "title": "", "text": t, "lang": d_lang}
            for k, t in enumerate(extra)
        ]
        _write_beir(out / "dev" / f"msmarco-{name}-distractors", padded, queries, qrels)
        stats[f"dev/msmarco-{name}"] = {
            "queries": len(queries),
            "documents": len(corpus),
            "distractors": len(extra),
        }
    klue_padded = klue_corpus + [
        {"_id": f"petition-{k}", "title": "", "text": t, "lang": "ko"}
        for k, t in enumerate(petitions[:klue_distractors])
    ]
    _write_beir(out / "dev" / "klue-odqa-distractors", klue_padded, klue_queries, klue_qrels)
    stats["dev/klue-odqa-distractors"] = {
        "queries": len(klue_queries),
        "documents": len(klue_corpus),
        "distractors": len(klue_padded) - len(klue_corpus),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="the shared data (default ../shared/data)"
    )
    parser.add_argument(
        "--distractors", type=int, default=1000, help="distractor passages per MS MARCO dev set"
    )
    parser.add_argument(
        "--klue-distractors", type=int, default=2000, help="petition paragraphs added to KLUE ODQA"
    )
    args = parser.parse_args(argv)
    if not (args.data / "msmarco-ko-en").is_dir():
        print(f"build_data: {args.data} has no msmarco-ko-en/ (give --data)", file=sys.stderr)
        return 2
    stats: dict[str, Any] = {"data": str(args.data.resolve())}
    msmarco = _load_msmarco(args.data)
    build_training(msmarco, args.out, stats)
    build_dev(msmarco, args.data, args.out, args.distractors, args.klue_distractors, stats)
    (args.out / "build.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
