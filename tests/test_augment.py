"""Cross-lingual augmentation on real Korean text: dictionary merge, particle rule, variants, Ray Data parity, CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysparse.augment import (
    VARIANT_MARK,
    AugmentReport,
    BilingualDictionary,
    augment_triples,
    augment_triples_file,
    code_switch_batch,
    code_switch_variants,
    english_final_sound,
    korean_final_sound,
    normalize_en_senses,
    normalize_ko,
    particle_for,
    read_sentence_pairs,
    sentence_pairs,
    term_pairs,
)
from raysparse.config import AugmentConfig
from raysparse.data.errors import DataFormatError
from raysparse.schemas import SENTENCE_PAIRS, TERM_PAIRS, TRIPLES

KENGDIC = "bilingual/kengdic/ezcorean_6000.tsv"
PY_GLOSSARY = "bilingual/python-docs-glossary/glossary_terms_en_ko.tsv"


@pytest.fixture(scope="module")
def shared_dictionary(shared_data: Path) -> BilingualDictionary:
    return BilingualDictionary.from_sources([], use_shared=True, shared_dir=shared_data)


@pytest.fixture(scope="module")
def kiwi():
    from raysparse.analyzers import get_kiwi

    return get_kiwi()


@pytest.fixture
def plan_dictionary() -> BilingualDictionary:
    """The plan's own example pairs (검색 -> search, 모델 -> model)."""
    d = BilingualDictionary()
    for ko, en in [("검색", "search"), ("모델", "model"), ("시스템", "system"), ("데이터", "data")]:
        d.add(ko, en, "plan")
    return d


def _msmarco_queries(shared_data: Path, n: int | None = None) -> list[dict]:
    items = json.loads(
        (shared_data / "msmarco-ko-en" / "msmarco_kor.dev1000.json").read_text(encoding="utf-8")
    )
    return items[:n] if n else items


def _klue_questions(shared_data: Path, n: int) -> list[str]:
    lines = (shared_data / "klue-mrc-odqa" / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines[:n]]


def _triples_from_msmarco(shared_data: Path, n: int) -> pa.Table:
    """A real TRIPLES table: MS MARCO Korean queries with their positive passage and a neighbour's as negative."""
    items = _msmarco_queries(shared_data, n + 1)
    rows = []
    for item, other in itertools.pairwise(items):
        pos = item["positive"][0]
        neg = other["positive"][0]
        pos_text = pos["text"] if isinstance(pos, dict) else str(pos)
        neg_text = neg["text"] if isinstance(neg, dict) else str(neg)
        rows.append(
            {
                "query_id": str(item["id"]),
                "query": item["query"],
                "positive_ids": [f"p{item['id']}"],
                "positive_texts": [pos_text],
                "positive_scores": [1.0],
                "negative_ids": [f"p{other['id']}"],
                "negative_texts": [neg_text],
                "negative_scores": [0.5],
                "negative_ranks": [1],
                "negative_kinds": ["hard"],
            }
        )
    return pa.Table.from_pylist(rows, schema=TRIPLES)


def _has_hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


# --- dictionary --------------------------------------------------------------------------------------------------


def test_normalisation_rules():
    assert normalize_ko("베이징(북경)") == ("베이징", ["북경"])
    assert normalize_ko("먹다(동)") == ("먹다", [])  # one-syllable POS mark is an annotation, not an alias
    assert normalize_en_senses("To prevent, check")[0] == ["prevent", "check"]
    assert normalize_en_senses("To cook (food)")[0] == ["cook"]
    assert normalize_en_senses("A utensil or tool")[0] == ["utensil", "tool"]
    assert normalize_en_senses("Seoul’s old south gate")[0] == ["seoul's old south gate"]
    senses, skipped = normalize_en_senses("Mountain in south central seoul area")
    assert senses == [] and sum(skipped.values()) == 1
    senses, skipped = normalize_en_senses("What? 무엇")
    assert senses == [] and "english sense contains Hangul" in skipped


def test_shared_glossaries_merge(shared_data: Path, shared_dictionary: BilingualDictionary):
    d = shared_dictionary
    assert d.lookup_ko("호주") == ["australia"]
    assert d.lookup_ko("방지하다") == ["prevent", "check"]  # "To prevent, check" split and "to" stripped
    assert "beijing" in d.lookup_ko("북경")  # alias from "베이징(북경)"
    assert d.lookup_en("Decorator") == ["데코레이터"]  # Python-docs glossary, case-insensitive
    assert d.lookup_en("decorators") == ["데코레이터"]  # plural falls back to the singular
    assert d.lookup_ko("의사")[0] == "doctor"  # kengdic level A sense before level C ("intention")
    assert d.lookup_ko("없는말") == []
    assert d.is_predicate("방지하다") and not d.is_predicate("호주")
    # Many senses, both directions, provenance per pair.
    assert len(d.lookup_ko("성")) >= 3
    assert d.sources_of("데코레이터", "decorator") == ["glossary_terms_en_ko.tsv"]
    # Every kengdic line is read or counted as skipped, never dropped silently.
    kengdic_report = next(r for r in d.reports if r.source.endswith(KENGDIC.split("/")[-1]))
    data_lines = len((shared_data / KENGDIC).read_text(encoding="utf-8").splitlines()) - 1
    assert kengdic_report.read + kengdic_report.skipped["no usable english sense"] <= data_lines
    assert kengdic_report.read > 5000 and kengdic_report.num_skipped > 0
    table = term_pairs(d)
    assert table.schema == TERM_PAIRS and table.num_rows == len(d)
    assert set(table.column("source").to_pylist()) >= {"ezcorean_6000.tsv", "glossary_terms_en_ko.tsv"}


def test_synonym_json_formats_and_roundtrip(tmp_path: Path, shared_data: Path):
    (tmp_path / "map_list.json").write_text(json.dumps({"검색": ["search", "retrieval"], "모델": "model"}))
    (tmp_path / "map_str.json").write_text(json.dumps({"검색": "Search"}, ensure_ascii=False))
    (tmp_path / "records.json").write_text(
        json.dumps(
            [{"korean": "희소 벡터", "english": "sparse vector"}, {"korean": "모델", "english": ["model"]}]
        )
    )
    (tmp_path / "user.tsv").write_text("ko\ten\n색인\tindex\n\n# a comment\n호주\tAustralia (country)\n")
    d = BilingualDictionary.from_sources(
        [*sorted(tmp_path.glob("*.json")), tmp_path / "user.tsv", shared_data / KENGDIC]
    )
    assert d.lookup_ko("검색") == ["search", "retrieval"]
    assert sorted(d.sources_of("검색", "search")) == ["map_list.json", "map_str.json"]
    assert d.sources_of("모델", "model") == ["map_list.json", "records.json", "ezcorean_6000.tsv"]
    assert d.lookup_ko("희소벡터") == ["sparse vector"]  # Korean spacing ignored in lookups
    assert d.lookup_en("sparse vector") == ["희소 벡터"]
    assert d.sources_of("호주", "australia") == ["user.tsv", "ezcorean_6000.tsv"]
    user_report = next(r for r in d.reports if r.source.endswith("user.tsv"))
    assert user_report.read == 2 and user_report.skipped == {"comment line": 1}
    d.save(tmp_path / "dict.json")
    loaded = BilingualDictionary.load(tmp_path / "dict.json")
    assert loaded.to_table().equals(d.to_table())
    assert loaded.lookup_ko("의사") == d.lookup_ko("의사")
    assert loaded.is_predicate("방지하다")


def test_shipped_sample_glossary_through_data_package(kiwi):
    """The main job's path: raysparse.data's sample TERM_PAIRS merged with add_table, then code-switched."""
    from raysparse.data import load_sample, sample_bilingual

    terms, _ = sample_bilingual()
    d = BilingualDictionary()
    d.add_table(terms)
    assert len(d) == terms.num_rows and d.reports[-1].num_skipped == 0
    assert d.lookup_ko("검색엔진") == ["search engine"]  # multi-word Korean entry, spacing ignored
    assert code_switch_variants("검색 엔진을 만든다", d, kiwi) == [
        "search engine을 만든다"
    ]  # 엔진을: consonant
    queries = load_sample().queries.column("text").to_pylist()
    variants = code_switch_batch(queries, d, kiwi, max_variants=2)
    assert sum(1 for v in variants if v) > len(queries) // 2


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("short.tsv", "korean\tenglish\n검색\tsearch\n모델\n", ["short.tsv line 3", "field en is missing"]),
        (
            "rec.json",
            json.dumps([{"korean": "검색", "english": "search"}, {"korean": "모델"}]),
            ["record 1", "'english'"],
        ),
        ("rec2.json", json.dumps([{"korean": 3, "english": "x"}]), ["record 0", "'korean'"]),
        ("map.json", json.dumps({"검색": ["search", 7]}, ensure_ascii=False), ["'검색'", "'english'"]),
        ("broken.json", '{"검색": ["search",\n  "model"\n', ["broken.json", "line 3"]),
        (
            "lines.jsonl",
            '{"ko": "검색", "en": "search"}\n{"ko": "모델"}\n',
            ["lines.jsonl line 2", "'english'"],
        ),
        ("one_col.tsv", "검색 search\n", ["one_col.tsv line 1", "2 tab-separated fields"]),
    ],
)
def test_bad_dictionary_file_names_file_record_field(
    tmp_path: Path, name: str, content: str, expected: list[str]
):
    """Dictionary files are read by raysparse.data's one term-file reader: its errors name file, record and field."""
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        BilingualDictionary.from_sources([path])
    for part in expected:
        assert part in str(err.value)


def test_dictionary_reads_term_files_through_the_data_reader(tmp_path: Path):
    """Kengdic-style TSV (level column -> score), a headerless en<TAB>ko TSV and JSONL: every record counted once."""
    (tmp_path / "k.tsv").write_text(
        "wordid\tkorean\tenglish_gloss\tlevel\n1\t의사\tintention\tD\n2\t의사\tdoctor\tA\n3\t영어\tEnglish\tA\n"
        "4\tnope\tnope\tA\n",
        encoding="utf-8",
    )
    (tmp_path / "swapped.tsv").write_text("search\t검색\nmodel\t모델\n", encoding="utf-8")
    (tmp_path / "s.jsonl").write_text(
        '{"korean": "학교", "english": ["school"], "score": 0.4}\n', encoding="utf-8"
    )
    d = BilingualDictionary.from_sources([tmp_path / "k.tsv", tmp_path / "swapped.tsv", tmp_path / "s.jsonl"])
    assert d.lookup_ko("의사") == ["doctor", "intention"]  # level A outranks level D
    assert (
        d.lookup_ko("검색") == ["search"]
        and d.lookup_en("model") == ["모델"]
        and d.lookup_ko("학교") == ["school"]
    )
    k, swapped, jsonl = d.reports
    assert (k.read, k.skipped) == (3, {"ko side has no Hangul": 1})
    assert (swapped.read, jsonl.read) == (2, 1)


def test_missing_dictionary_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"nope\.tsv"):
        BilingualDictionary.from_sources([tmp_path / "nope.tsv"])


# --- particles ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "sound"),
    [
        ("search", "vowel"),  # 서치를
        ("model", "rieul"),  # 모델을, 모델로
        ("system", "consonant"),  # 시스템을
        ("data", "vowel"),  # 데이터를
        ("computer", "vowel"),  # 컴퓨터를
        ("test", "vowel"),  # 테스트를
        ("chat", "consonant"),  # 챗을
        ("app", "consonant"),  # 앱을
        ("web", "consonant"),  # 웹을
        ("file", "rieul"),  # 파일을
        ("google", "rieul"),  # 구글을
        ("online", "consonant"),  # 온라인을
        ("family name", "consonant"),  # 네임이
        ("ranking", "consonant"),  # 랭킹을
        ("service", "vowel"),  # 서비스를
        ("check", "vowel"),  # 체크를
        ("mp3", "consonant"),  # 엠피삼을
        ("top 2", "vowel"),  # 이를
    ],
)
def test_english_final_sound(word: str, sound: str):
    assert english_final_sound(word) == sound


def test_particle_rule():
    assert particle_for("을", "vowel") == "를" and particle_for("를", "consonant") == "을"
    assert particle_for("을", "rieul") == "을"  # model을
    assert (
        particle_for("으로", "rieul") == "로" and particle_for("로", "consonant") == "으로"
    )  # model로, system으로
    assert particle_for("은", "vowel") == "는" and particle_for("와", "consonant") == "과"
    assert particle_for("이", "vowel", "JKS") == "가" and particle_for("가", "consonant", "JKS") == "이"
    assert particle_for("이", "vowel", "VCP") is None  # the copula 이다 is left as written
    assert particle_for("에서", "vowel") is None  # one-form particles never change
    assert korean_final_sound("검색") == "consonant" and korean_final_sound("모델") == "rieul"
    assert korean_final_sound("데이터") == "vowel"


# --- code-switching ----------------------------------------------------------------------------------------------


def test_plan_example_and_particles(plan_dictionary: BilingualDictionary, kiwi):
    d = plan_dictionary

    def variants(q: str, n: int = 10) -> list[str]:
        return code_switch_variants(q, d, kiwi, max_variants=n)

    assert set(variants("검색 모델")) == {"search 모델", "검색 model", "search model"}
    assert variants("검색 모델")[0] == "search model"  # the full switch is always kept first
    long_query = variants("검색을 잘하는 모델로 검색하다")
    assert "search를 잘하는 model로 search하다" in long_query  # 서치를, 모델로, and 하다 verbs keep 하다
    assert not any("search을" in v or "model으로" in v for v in long_query)
    assert "system으로 data가 model을 만든다" in variants("시스템으로 데이터가 모델을 만든다")
    assert variants("검색모델")[0] == "search model"  # two switched words written together get a space
    assert variants("검색, 모델!  (검색)")[0] == "search, model!  (search)"  # spacing and punctuation kept
    # English -> Korean, with the particle chosen by the Korean word's real 받침.
    assert variants("search model")[0] == "검색 모델"
    assert "검색을 위한 모델" in variants("search를 위한 model")
    assert variants("아무것도 없는 문장") == []


def test_variants_cap_and_determinism_on_klue(
    shared_data: Path, shared_dictionary: BilingualDictionary, kiwi
):
    from kiwipiepy import Kiwi

    questions = _klue_questions(shared_data, 60)
    runs = [code_switch_batch(questions, shared_dictionary, kiwi, max_variants=2, seed=7) for _ in range(2)]
    fresh = code_switch_batch(questions, shared_dictionary, Kiwi(), max_variants=2, seed=7)
    assert runs[0] == runs[1] == fresh
    assert sum(1 for v in runs[0] if v) > len(questions) // 2
    for q, vs in zip(questions, runs[0], strict=True):
        assert len(vs) <= 2 and len(set(vs)) == len(vs) and q not in vs
    uncapped = code_switch_batch(questions, shared_dictionary, kiwi, max_variants=50, seed=7)
    assert max(len(v) for v in uncapped) > 2  # the cap actually bites on real questions
    assert code_switch_batch(questions, shared_dictionary, kiwi, max_variants=0) == [[] for _ in questions]


def test_real_queries_both_directions(shared_dictionary: BilingualDictionary, kiwi):
    """MS MARCO queries (Korean and English) with the shared glossaries: senses, stop nouns and predicates."""
    d = shared_dictionary
    assert code_switch_variants("의사들은 급여에서 보험료를 지불하나요?", d, kiwi)[0].startswith("doctor들은")
    assert all(
        "how many" not in v for v in code_switch_variants("디즈니랜드 운영 비용은 얼마인가요?", d, kiwi)
    )
    english = code_switch_variants("effects of detox juice cleanse", d, kiwi, max_variants=10)
    assert "효과 of detox 주스 cleanse" in english  # "cleanse" has only verb senses (씻다): left in English
    assert all("씻다" not in v for v in english)


# --- triples -----------------------------------------------------------------------------------------------------


def test_augment_triples_rows(shared_data: Path, shared_dictionary: BilingualDictionary, kiwi):
    triples = _triples_from_msmarco(shared_data, 30)
    cfg = AugmentConfig(max_variants_per_query=2, seed=3)
    out = augment_triples(triples, shared_dictionary, cfg, kiwi)
    assert out.schema == TRIPLES
    by_id = {r["query_id"]: r for r in out.to_pylist()}
    originals = {r["query_id"]: r for r in triples.to_pylist()}
    variants = [qid for qid in by_id if VARIANT_MARK in qid]
    assert variants and set(originals) <= set(by_id)
    for qid in variants:
        base = originals[qid.split(VARIANT_MARK)[0]]
        row = by_id[qid]
        assert row["query"] != base["query"]
        assert {k: v for k, v in row.items() if k not in ("query_id", "query")} == {
            k: v for k, v in base.items() if k not in ("query_id", "query")
        }
    report = AugmentReport.from_query_ids(out.column("query_id").to_pylist())
    assert report.queries_in == 30 and report.variants_out == len(variants)
    assert report.queries_with_variants + report.queries_without_variant == 30
    # The same batch as a dict of columns (Ray Data's numpy batches) gives the same table.
    as_dict = {name: triples.column(name).to_pylist() for name in triples.column_names}
    assert augment_triples(as_dict, shared_dictionary, cfg, kiwi).equals(out)
    with pytest.raises(ValueError, match=r"row \d+: field 'query_id'"):
        augment_triples(out, shared_dictionary, cfg, kiwi)


@pytest.mark.slow
def test_ray_data_path_equals_in_process(
    tmp_path: Path, shared_data: Path, shared_dictionary: BilingualDictionary
):
    import ray

    if not ray.is_initialized():
        # address="local": a private 2-CPU instance even when someone's `ray start --head` runs on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    triples = _triples_from_msmarco(shared_data, 60)
    src = tmp_path / "mined"
    src.mkdir()
    pq.write_table(triples.slice(0, 30), src / "a.parquet")
    pq.write_table(triples.slice(30), src / "b.parquet")
    pq.write_table(pa.table({"stat": [1]}), src / "mining_stats.parquet")  # not triples: skipped and counted
    cfg = AugmentConfig(max_variants_per_query=3, seed=11)
    local = augment_triples_file(src, shared_dictionary, cfg, tmp_path / "local", use_ray=False)
    distributed = augment_triples_file(
        src, shared_dictionary, cfg, tmp_path / "ray", use_ray=True, num_actors=1
    )
    assert local.to_dict() == distributed.to_dict()
    assert distributed.skipped_inputs == {"not a triples file: mining_stats.parquet": 1}
    assert distributed.queries_in == 60 and distributed.variants_out > 0
    expected = pq.read_table(tmp_path / "local").sort_by("query_id")
    got = pq.read_table(tmp_path / "ray").cast(TRIPLES).sort_by("query_id")
    assert expected.num_rows == got.num_rows > 60
    assert expected.to_pylist() == got.to_pylist()
    # Two blocks through two actors (batches of 8): the batch-local function gives the same rows in any split.
    from raysparse.augment import augment_dataset

    ds = ray.data.from_arrow([triples.slice(0, 30), triples.slice(30)])
    rows = augment_dataset(ds, shared_dictionary, cfg, num_actors=2, batch_size=8).take_all()

    def key(r: dict) -> tuple:
        return (r["query_id"], r["query"], list(r["positive_ids"]), list(r["negative_ids"]))

    assert sorted(key(r) for r in rows) == [key(r) for r in expected.to_pylist()]


# --- sentence pairs ----------------------------------------------------------------------------------------------


def test_sentence_pairs_formats(tmp_path: Path, shared_data: Path):
    bilingual = shared_data / "bilingual"
    table, reports = sentence_pairs(
        [bilingual / "tatoeba" / "kor.txt", bilingual / "news-parallel-dev" / "korean-english-park.dev.ko"]
    )
    assert table.schema == SENTENCE_PAIRS
    tatoeba, news = reports
    assert tatoeba.read + tatoeba.num_skipped == 5749 and news.read + news.num_skipped == 1000
    assert table.num_rows == tatoeba.read + news.read
    first = table.slice(0, 1).to_pylist()[0]
    assert (first["ko"], first["en"]) == ("가.", "Go.")  # Tatoeba's en<TAB>ko<TAB>attribution, Korean first
    assert "tatoeba.org" in first["source"]  # CC BY attribution kept
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"en": "Hello", "ko": "안녕"}\n{"en": "", "ko": "빈"}\n', encoding="utf-8")
    t, r = read_sentence_pairs(jsonl)
    assert t.num_rows == 1 and r.num_skipped == 1
    sample, _ = read_sentence_pairs(
        Path(__file__).resolve().parents[1] / "raysparse/resources/sample/parallel.tsv"
    )
    assert sample.num_rows > 100 and all(_has_hangul(k) for k in sample.column("ko").to_pylist())
    (tmp_path / "x.ko").write_text("하나\n둘\n", encoding="utf-8")
    (tmp_path / "x.en").write_text("one\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"x\.ko has 2 lines but .*x\.en has 1"):
        read_sentence_pairs(tmp_path / "x.en")


# --- CLI ---------------------------------------------------------------------------------------------------------


def test_cli_triples_and_queries(tmp_path: Path, shared_data: Path, capsys):
    from raysparse.cli import main

    triples_file = tmp_path / "triples.parquet"
    pq.write_table(_triples_from_msmarco(shared_data, 20), triples_file)
    user_dict = tmp_path / "user.json"
    user_dict.write_text(json.dumps({"정의": ["definition"]}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out"
    rc = main(
        [
            "augment",
            "--triples",
            str(triples_file),
            "--out",
            str(out),
            "--dictionary",
            str(user_dict),
            "--shared-glossaries",
            "--parallel",
            str(shared_data / "bilingual" / "tatoeba" / "kor.txt"),
            "--max-variants",
            "2",
            "--no-ray",
        ]
    )
    assert rc == 0
    report = json.loads((out / "augment_report.json").read_text())
    assert report["queries_in"] == 20 and report["config"]["max_variants_per_query"] == 2
    assert report["variants_out"] == pq.read_table(out / "triples").num_rows - 20
    assert pq.read_table(out / "term_pairs.parquet").schema == TERM_PAIRS
    assert pq.read_table(out / "sentence_pairs.parquet").num_rows == report["sentence_pairs"] > 5000

    queries = tmp_path / "q.txt"
    queries.write_text("보툴리눔 정의\n현대 의학의 아버지는 누구인가?\n", encoding="utf-8")
    capsys.readouterr()
    assert (
        main(["augment", "--queries", str(queries), "--dictionary", str(user_dict), "--max-variants", "1"])
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"query": "보툴리눔 정의", "variants": ["보툴리눔 definition"]}
    assert lines[1]["variants"] == []

    # The Ray job entry point runs from a plain checkout.
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(repo / "jobs" / "augment.py"), "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "--shared-glossaries" in done.stdout

    bad = tmp_path / "bad.tsv"
    bad.write_text("ko\ten\n검색\n", encoding="utf-8")
    assert main(["augment", "--queries", str(queries), "--dictionary", str(bad)]) == 2
    assert "bad.tsv line 2" in capsys.readouterr().err


def test_msmarco_coverage_with_shared_glossaries(
    shared_data: Path, shared_dictionary: BilingualDictionary, kiwi
):
    """Quality guard: most MS MARCO Korean queries have a switchable term in the shared glossaries (73% measured)."""
    queries = [item["query"] for item in _msmarco_queries(shared_data, 300)]
    variants = code_switch_batch(queries, shared_dictionary, kiwi, max_variants=3)
    assert sum(1 for v in variants if v) / len(queries) > 0.6
