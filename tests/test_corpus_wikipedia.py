"""Wikipedia corpus builder: dump formats the tests write themselves around real Korean text (KLUE contexts).

Two bz2 MediaWiki XML shards (templates, links, refs, tables, files, categories, a redirect, a talk page, a
disambiguation page) and a WikiExtractor directory are written from ../shared/data/klue-mrc-odqa; the tests check the
cleaner, the skip counts, bad-input errors, the cache, Ray Data vs in-process equality and the flow into mining and
training.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import re
from pathlib import Path
from xml.sax.saxutils import escape

import pyarrow.parquet as pq
import pytest

from raysparse.config import CorpusConfig
from raysparse.corpus import wikipedia as wp
from raysparse.corpus.wikitext import clean_wikitext, split_passages
from raysparse.data.common import normalize_text
from raysparse.data.errors import DataFormatError

NS = "http://www.mediawiki.org/xml/export-0.11/"


def klue_pages(shared_data: Path, n: int = 10) -> list[dict[str, str]]:
    """``n`` distinct KLUE-MRC Wikipedia passages with their question and answer (real Korean text)."""
    pages, seen = [], set()
    with (shared_data / "klue-mrc-odqa" / "validation.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["title"] in seen or len(rec["context"]) > 1500:
                continue
            seen.add(rec["title"])
            paragraphs = [p.strip() for p in rec["context"].replace("\\n", "\n").split("\n\n") if p.strip()]
            answer = rec["answers"]["text"][0] if isinstance(rec["answers"], dict) else rec["answers"][0]
            pages.append(
                {
                    "title": rec["title"],
                    "paragraphs": paragraphs,
                    "question": rec["question"],
                    "answer": answer,
                }
            )
            if len(pages) == n:
                return pages
    raise AssertionError("not enough KLUE pages")


def wikitext_for(page: dict[str, str]) -> str:
    """Real text wrapped in the markup a Korean Wikipedia article carries."""
    first, *rest = page["paragraphs"]
    title = page["title"]
    body = "\n\n".join(rest)
    return (
        f"{{{{정보상자 인물|이름={title}|출생={{{{출생일|1950|1|1}}}}|직업=[[판사|법관]]}}}}\n"
        f"'''{title}'''({{{{llang|en|{title} Example}}}})<ref>{{{{웹 인용|url=http://x.org|제목=출처}}}}</ref>"
        f"에 관한 문서.<!-- 편집자 주석 -->\n\n"
        f'{first}<ref name="a"/>\n\n'
        f"[[파일:{title}.jpg|섬네일|[[사진]] 설명 {{{{작은글씨|캡션}}}}]]\n"
        "== 본문 ==\n"
        f"{body}\n\n"
        '{| class="wikitable"\n|-\n! 연도 !! 사건\n|-\n| 1990 || [[사건]]\n|}\n'
        "== 같이 보기 ==\n* [[다른 문서]]\n"
        "== 각주 ==\n{{각주}}\n"
        f"[[분류:{title}]]\n[[en:{title}]]\n"
    )


def page_xml(page_id: int, title: str, text: str, ns: int = 0, redirect: str | None = None) -> str:
    red = f'<redirect title="{escape(redirect)}" />' if redirect else ""
    return (
        f"<page><title>{escape(title)}</title><ns>{ns}</ns><id>{page_id}</id>{red}"
        f"<revision><id>{page_id * 10}</id><timestamp>2024-01-0{1 + page_id % 9}T12:00:00Z</timestamp>"
        f'<text bytes="{len(text)}" xml:space="preserve">{escape(text)}</text></revision></page>\n'
    )


def dump_xml(pages: list[str]) -> str:
    return (
        f'<mediawiki xmlns="{NS}" version="0.11" xml:lang="ko">\n'
        "<siteinfo><sitename>위키백과</sitename><dbname>kowiki</dbname></siteinfo>\n"
        + "".join(pages)
        + "</mediawiki>\n"
    )


@pytest.fixture(scope="module")
def dump(shared_data: Path, tmp_path_factory) -> dict[str, object]:
    """Two bz2 dump shards + sha1sums, a WikiExtractor directory (json, json.bz2, <doc> format), the KLUE pages."""
    root = tmp_path_factory.mktemp("kowiki")
    pages = klue_pages(shared_data, 10)
    xml_pages = [page_xml(i + 1, p["title"], wikitext_for(p)) for i, p in enumerate(pages)]
    extra = [
        page_xml(101, "대한민국 법원", "#넘겨주기 [[법원]]", redirect="법원"),
        page_xml(102, f"토론:{pages[0]['title']}", pages[0]["paragraphs"][0], ns=1),
        page_xml(103, "판사 (동음이의)", "{{동음이의}}\n'''판사'''는 다음을 가리킨다.\n* [[판사 (직업)]]"),
        page_xml(104, "다른 판사", "{{Disambig}}\n'''판사'''는 여러 뜻이 있다. " * 3),
    ]
    shard1 = root / "kowiki-20240101-pages-articles1.xml-p1p5.bz2"
    shard2 = root / "kowiki-20240101-pages-articles2.xml-p6p104.bz2"
    shard1.write_bytes(bz2.compress(dump_xml(xml_pages[:5] + extra[:2]).encode()))
    # shard 2 is multistream like *-pages-articles-multistream.xml.bz2: several bz2 streams split at page boundaries
    xml2 = dump_xml(xml_pages[5:] + extra[2:])
    cut = xml2.index("<page>", xml2.index("<page>") + 1)
    shard2.write_bytes(bz2.compress(xml2[:cut].encode()) + bz2.compress(xml2[cut:].encode()))
    sums = root / "kowiki-20240101-sha1sums.txt"
    sums.write_text(
        "".join(f"{hashlib.sha1(f.read_bytes()).hexdigest()}  {f.name}\n" for f in (shard1, shard2))
        + "0123456789abcdef0123456789abcdef01234567  kowiki-20240101-pages-meta-history.xml.bz2\n"
    )
    ext = root / "extracted"
    (ext / "AA").mkdir(parents=True)
    (ext / "AB").mkdir()
    (ext / "AC").mkdir()
    lines = [
        json.dumps(
            {
                "id": str(i + 1),
                "url": f"https://ko.wikipedia.org/wiki?curid={i + 1}",
                "title": p["title"],
                "text": p["title"] + "\n" + "\n".join(p["paragraphs"]),
            },
            ensure_ascii=False,
        )
        for i, p in enumerate(pages)
    ]
    (ext / "AA" / "wiki_00").write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    (ext / "AB" / "wiki_00.bz2").write_bytes(bz2.compress(("\n".join(lines[4:8]) + "\n").encode()))
    docs = "".join(
        f'<doc id="{i + 1}" url="https://ko.wikipedia.org/wiki?curid={i + 1}" title="{p["title"]}">\n'
        f"{p['title']}\n\n" + "\n".join(p["paragraphs"]) + "\n</doc>\n"
        for i, p in list(enumerate(pages))[8:]
    )
    (ext / "AC" / "wiki_00").write_text(docs, encoding="utf-8")
    return {"root": root, "shards": [shard1, shard2], "sums": sums, "extracted": ext, "pages": pages}


def cfg_for(tmp_path: Path, **kw) -> CorpusConfig:
    settings = {"cache_dir": str(tmp_path / "cache"), "passage_max_chars": 400, "passage_min_chars": 20, **kw}
    return CorpusConfig(**settings)


# ------------------------------------------------------------------------------------------------------- cleaner
def test_cleaner_keeps_prose_and_drops_markup():
    text = (
        "{{정보상자|a={{중첩|b}}|c=[[x|y]]}}'''서울'''({{lang|en|Seoul}})은 [[대한민국]]의 [[수도 (도시)|수도]]이다."
        "<ref>{{인용|url=http://a}}</ref> 인구는 [http://stat.kr 통계]로 &amp; 확인한다.<ref name=b/>\n"
        "[[File:S.jpg|thumb|[[남산]] 전경]]\n[[분류:서울]]\n<!-- 숨김 -->\n"
        "== 역사 ==\n조선의 ''도읍''이었다.\n"
        '{| class="wikitable"\n|-\n| 셀 {{표 안}} || 값\n|}\n'
        "=== 근대 ===\n* 목록 항목\n"
        "== 각주 ==\n<references />\n=== 주석 ===\n보이면 안 된다.\n"
    )
    sections = clean_wikitext(text, ["각주"])
    assert sections == [
        ("", ["서울(Seoul)은 대한민국의 수도이다. 인구는 통계로 & 확인한다."]),
        ("역사", ["조선의 도읍이었다."]),
        ("근대", ["목록 항목"]),
    ]
    # a line break between words keeps them apart; an unknown template goes, a link inside a label stays text
    assert clean_wikitext("첫째<br />둘째 {{미분류|x}}[[셋째]]") == [("", ["첫째 둘째 셋째"])]


@pytest.mark.parametrize(
    ("wikitext", "expected"),
    [
        # date templates carry prose: a birth/death date is kept as a Korean date (the regex cleaner dropped it)
        (
            "'''홍길동'''({{출생일|1950|1|2}} ~ {{사망일과 나이|2001|12|3|1950|1|2}})은 작가이다.",
            "홍길동(1950년 1월 2일 ~ 2001년 12월 3일)은 작가이다.",
        ),
        ("그는 {{Birth date and age|1988|7|30|df=y}}에 태어났다.", "그는 1988년 7월 30일에 태어났다."),
        # `|` of a template inside a link label (the regex cleaner split the label at the template's pipe)
        ("[[작가|{{lang|en|writer}} 겸 화가]]로 일했다.", "writer 겸 화가로 일했다."),
        # nested templates: prose inside prose templates is kept, an infobox goes with everything inside it
        ("{{lang|en|{{nowrap|New York}}}} 출신이다.", "New York 출신이다."),
        (
            "{{정보상자 인물|이름={{lang|en|X}}|출생={{출생일|1950|1|1}}|직업=[[판사|법관]]}}본문이다.",
            "본문이다.",
        ),
        # a link inside a template argument, and an interlanguage-link template keeps its Korean label
        (
            "{{llang|en|[[Seoul|서울 특별시]]}}와 {{ill|조선 왕조|en|Joseon}}를 다룬다.",
            "서울 특별시와 조선 왕조를 다룬다.",
        ),
        ("길이는 {{convert|5|km}}이고 {{#if:x|숨김}}끝.", "길이는 5 km이고 끝."),
    ],
)
def test_cleaner_keeps_prose_that_templates_carry(wikitext, expected):
    assert clean_wikitext(wikitext) == [("", [expected])]


def test_split_passages_respects_max_chars_and_sentences(dump):
    paragraphs = [p for page in dump["pages"] for p in page["paragraphs"]]
    passages = split_passages(paragraphs, 300)
    assert all(len(p) <= 300 for p in passages)
    # nothing lost or reordered: the passages are the paragraphs, re-spaced
    assert normalize_text(" ".join(passages)) == normalize_text(" ".join(paragraphs))
    # long paragraphs are cut after a sentence end, not mid-word
    cut = [p for p in passages if p not in paragraphs]
    assert cut and sum(p.endswith((".", "다", ")", '"')) for p in cut) >= len(cut) * 0.8


# ------------------------------------------------------------------------------------------------------ parsing
def test_xml_shards_parse_with_skips_counted(dump, tmp_path):
    cfg = cfg_for(tmp_path)
    t1, r1 = wp.parse_file(dump["shards"][0], cfg)
    t2, r2 = wp.parse_file(dump["shards"][1], cfg)
    assert r1.skipped["page: redirect"] == 1 and r1.skipped["page: non-article namespace"] == 1
    assert r2.skipped["page: disambiguation"] == 2
    rows = t1.to_pylist() + t2.to_pylist()
    assert r1.read + r2.read == len(rows)
    titles = [p["title"] for p in dump["pages"]]
    assert sorted({r["title"] for r in rows}) == sorted(titles)
    for r in rows:
        assert r["doc_id"] == f"{r['page_id']}-{r['passage_no']}"
        assert 20 <= len(r["text"]) <= 400
        assert not re.search(r"\{\{|\}\}|\[\[|\]\]|<ref|'''|\{\||분류:|파일:", r["text"]), r["text"]
        assert r["content_hash"] == hashlib.sha1(normalize_text(r["text"]).encode()).hexdigest()[:16]
        assert r["lang"] == "ko" and r["date"].year == 2024
        assert r["section"] in (None, "본문")
    # every real paragraph survives cleaning, in order, within its page
    for i, page in enumerate(dump["pages"]):
        text = normalize_text(" ".join(r["text"] for r in rows if r["page_id"] == str(i + 1)))
        expected = normalize_text(
            f"{page['title']}({page['title']} Example)에 관한 문서. " + " ".join(page["paragraphs"])
        )
        assert text == expected


def test_wikiextractor_dir_json_bz2_and_doc_formats(dump, tmp_path):
    files = wp.discover_inputs([dump["extracted"]])
    assert [f.parent.name for f in files] == ["AA", "AB", "AC"]
    assert [wp.sniff_format(f) for f in files] == ["jsonl", "jsonl", "doc"]
    cfg = cfg_for(tmp_path)
    rows = [r for f in files for r in wp.parse_file(f, cfg)[0].to_pylist()]
    for i, page in enumerate(dump["pages"]):
        text = " ".join(r["text"] for r in rows if r["page_id"] == str(i + 1))
        assert normalize_text(text) == normalize_text(" ".join(page["paragraphs"]))  # title line not repeated
        assert {r["title"] for r in rows if r["page_id"] == str(i + 1)} == {page["title"]}


def test_bad_inputs_name_file_record_and_field(dump, tmp_path):
    cfg = cfg_for(tmp_path)
    good = bz2.decompress(dump["shards"][0].read_bytes()).decode()
    broken = tmp_path / "broken.xml.bz2"
    cut = good.index("<page>", good.index("<page>") + 1)  # second page: its <title> is left unclosed
    broken.write_bytes(bz2.compress((good[:cut] + "<page><title>깨진 문서<ns>0</ns></page>").encode()))
    with pytest.raises(
        DataFormatError, match=r"broken\.xml\.bz2: malformed XML at line \d+ column \d+.*after page '"
    ):
        wp.parse_file(broken, cfg)

    no_id = tmp_path / "noid.xml"
    no_id.write_text(
        dump_xml(["<page><title>아이디 없음</title><ns>0</ns><revision><text>본문</text></revision></page>"])
    )
    with pytest.raises(DataFormatError, match=r"noid\.xml page '아이디 없음'.*<id> is missing"):
        wp.parse_file(no_id, cfg)

    bad_json = tmp_path / "wiki_01"
    bad_json.write_text('{"id": "1", "title": "가", "text": "본문"}\n{"id": "2", "title": "나", "text": \n')
    with pytest.raises(DataFormatError, match=r"wiki_01 line 2: invalid JSON"):
        wp.parse_file(bad_json, cfg)
    no_text = tmp_path / "wiki_02"
    no_text.write_text('{"id": "1", "title": "가", "text": "본문"}\n{"id": "2", "title": "나"}\n')
    with pytest.raises(DataFormatError, match=r"wiki_02 line 2: field 'text' is missing"):
        wp.parse_file(no_text, cfg)

    # checksum verification against the official sums file
    bad_sums = tmp_path / "sums.txt"
    bad_sums.write_text(f"{'0' * 40}  {dump['shards'][0].name}\n{'1' * 40}  {dump['shards'][1].name}\n")
    with pytest.raises(
        DataFormatError, match=r"pages-articles1\.xml-p1p5\.bz2: checksum mismatch against .*sums\.txt"
    ):
        wp.build_wikipedia(dump["shards"], cfg, ray=False, checksums=bad_sums)
    unlisted = tmp_path / "unlisted.txt"
    unlisted.write_text(f"{'0' * 40}  other.xml.bz2\n")
    with pytest.raises(DataFormatError, match="not listed in the checksum file"):
        wp.build_wikipedia(dump["shards"], cfg, ray=False, checksums=unlisted)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# ------------------------------------------------------------------------------------------- cache, Ray, flow
@pytest.mark.slow
def test_cache_hit_skips_parsing_and_ray_output_equals_in_process(dump, tmp_path, ray_local, monkeypatch):
    cfg = cfg_for(tmp_path)
    first = wp.build_wikipedia(dump["shards"], cfg, ray=False, checksums=dump["sums"], show_progress=False)
    out = Path(first.output)
    assert not first.cached and out.is_file() and out.parent.parent == tmp_path / "cache"
    pages_skipped = {k: v for k, v in first.skipped.items() if k.startswith("page:")}
    assert pages_skipped == {"page: disambiguation": 2, "page: non-article namespace": 1, "page: redirect": 1}
    assert first.pages_kept == 10
    mtime = out.stat().st_mtime_ns

    def must_not_parse(*args, **kwargs):
        raise AssertionError("parsed although the cache holds this dump")

    monkeypatch.setattr(wp, "parse_to_parquet", must_not_parse)
    second = wp.build_wikipedia(dump["shards"], cfg, ray=False, checksums=dump["sums"])
    assert second.cached and second.output == first.output and second.passages == first.passages
    assert out.stat().st_mtime_ns == mtime
    monkeypatch.undo()

    # another setting -> another key -> parsed again; Ray Data over the 2 shards gives the same table
    other = wp.build_wikipedia(
        dump["shards"], cfg_for(tmp_path, passage_max_chars=300), ray=False, show_progress=False
    )
    assert not other.cached and other.key != first.key and other.passages > first.passages
    # a relative cache_dir: the Ray workers (started elsewhere) must still write the parts where the driver reads
    monkeypatch.chdir(tmp_path)
    ray_cfg = CorpusConfig(**{**cfg.model_dump(), "cache_dir": "ray_cache"})
    on_ray = wp.build_wikipedia(dump["shards"], ray_cfg, ray=True)
    assert on_ray.mode == "ray" and on_ray.key == first.key and not on_ray.cached
    assert Path(on_ray.output).is_relative_to(tmp_path / "ray_cache")
    assert pq.read_table(on_ray.output).equals(pq.read_table(first.output))
    assert on_ray.skipped == first.skipped


@pytest.mark.slow
def test_passages_flow_into_mining_and_training(dump, tmp_path, shared_data):
    """The cached Parquet is a ``data.format=parquet`` source as is; KLUE questions + passages are mined and trained."""
    import pyarrow as pa

    from raysparse.config import DataConfig, load_config
    from raysparse.data import load_source
    from raysparse.mining import mine
    from raysparse.schemas import RetrievalData

    build = wp.build_wikipedia(dump["shards"], cfg_for(tmp_path), ray=False, show_progress=False)
    data = load_source(DataConfig(format="parquet", path=build.output, id_field="doc_id", date_field="date"))
    assert data.corpus.num_rows == build.passages and data.corpus["date"].null_count == 0
    corpus = data.corpus.to_pylist()
    queries, qrels = [], []
    for i, page in enumerate(dump["pages"]):
        hits = [
            r["doc_id"] for r in corpus if r["doc_id"].startswith(f"{i + 1}-") and page["answer"] in r["text"]
        ]
        if hits:
            queries.append({"query_id": f"q{i}", "text": page["question"], "lang": "ko"})
            qrels.append({"query_id": f"q{i}", "doc_id": hits[0], "score": 1})
    assert len(queries) >= 8
    paired = RetrievalData(data.corpus, pa.Table.from_pylist(queries), pa.Table.from_pylist(qrels))
    cfg = load_config(
        None, ["mining.top_k=20", "mining.num_hard_negatives=3", "mining.num_random_negatives=1"]
    )
    report = mine(paired, cfg.mining, tmp_path / "mined", ray=False, show_progress=False)
    triples = pq.read_table(report.output)
    assert triples.num_rows == len(queries)
    assert all(len(n) >= 1 for n in triples["negative_ids"].to_pylist())

    from raysparse.backbone import build_local_backbone
    from raysparse.training import train_single_process

    model = [
        "model.vocab_size=1000",
        "model.hidden_size=32",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.intermediate_size=64",
        "model.max_query_length=16",
        "model.max_doc_length=48",
    ]
    tcfg = load_config(
        None,
        [
            *model,
            "train.deepspeed.enabled=false",
            "train.batch_size=4",
            "train.max_steps=2",
            "train.checkpoint_every=2",
            "train.negatives_per_query=1",
            "loss.beta=0",
        ],
    )
    backbone = build_local_backbone(
        [r["text"] for r in corpus] + [q["text"] for q in queries], tcfg.model, tmp_path / "backbone"
    )
    result = train_single_process(tcfg, report.output, None, tmp_path / "train", backbone_dir=backbone)
    assert [h["step"] for h in result.history] == [1, 2] and Path(result.model_dir).is_dir()


def test_cli_wikipedia_cached_rerun_and_mine_on_title_queries(dump, tmp_path, capsys):
    """``raysparse corpus wikipedia`` (no Ray) twice: the second run is a cache hit; its BEIR output mines as is."""
    from raysparse.cli import main

    args = [
        "corpus",
        "wikipedia",
        *map(str, dump["shards"]),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--checksums",
        str(dump["sums"]),
        "--max-chars",
        "400",
        "--min-chars",
        "20",
        "--no-ray",
        "--out",
        str(tmp_path / "out"),
        "--title-queries",
    ]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "cached: false" in first.err and "1 page: redirect" in first.err
    record = json.loads(first.out.strip().splitlines()[-1])
    assert not record["cached"] and Path(record["cache"]).is_file()
    build = json.loads((tmp_path / "out" / "build.json").read_text())
    assert build["passages"] == pq.read_metadata(tmp_path / "out" / "passages.parquet").num_rows
    assert main(args) == 0
    second = capsys.readouterr()
    assert (
        "cached: true" in second.err
        and json.loads(second.out.strip().splitlines()[-1])["key"] == record["key"]
    )

    beir = tmp_path / "out" / "beir"
    assert (
        main(
            [
                "mine",
                "--beir",
                str(beir),
                "--no-ray",
                "--out",
                str(tmp_path / "mined"),
                "--hard",
                "2",
                "--random",
                "1",
                "--top-k",
                "10",
            ]
        )
        == 0
    )
    triples = pq.read_table(tmp_path / "mined" / "triples")
    assert triples.num_rows == 10  # one title query per kept page
    assert all(p[0].endswith("-0") for p in triples["positive_ids"].to_pylist())

    bad = tmp_path / "bad.xml"
    bad.write_text("<mediawiki><page><title>x</title>")
    assert (
        main(["corpus", "wikipedia", str(bad), "--no-ray", "--cache-dir", str(tmp_path / "c2")]) == 2
    )  # a user error: one line, exit 2
    assert "bad.xml: malformed XML" in capsys.readouterr().err


def test_corpus_help_and_job_entry_point(capsys):
    import subprocess
    import sys

    from raysparse.cli import main

    assert main(["corpus"]) == 2
    assert "corpus wikipedia --help" in capsys.readouterr().out
    for sub, phrase in (("wikipedia", "Cache:"), ("dated", "--split-at")):
        with pytest.raises(SystemExit) as exit_info:
            main(["corpus", sub, "--help"])
        assert exit_info.value.code == 0 and phrase in capsys.readouterr().out
    repo = Path(__file__).resolve().parents[1]
    job = subprocess.run(
        [sys.executable, str(repo / "jobs" / "corpus.py"), "wikipedia", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert job.returncode == 0 and "usage: raysparse corpus wikipedia" in job.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_parsing_runs_only_on_the_nodes_of_corpus_resources(dump, tmp_path):
    """``corpus.resources={cpu_pool: 1}``: every parsing task runs on the node carrying ``cpu_pool`` (a task asking
    for CPUs alone could make an autoscaler launch a GPU node for it); the output and cache key are those of the
    in-process build; a placement no node offers fails at once naming the key."""
    from test_failures import CPU_POOL_AND_PLAIN_NODES, start_cluster, stop_cluster, task_nodes

    local = wp.build_wikipedia(dump["shards"], cfg_for(tmp_path / "local"), ray=False, show_progress=False)
    placed_cfg = cfg_for(tmp_path / "placed", resources={"cpu_pool": 1})
    cluster, (pool_node, plain_node) = start_cluster(0, CPU_POOL_AND_PLAIN_NODES)
    try:
        placed = wp.build_wikipedia(dump["shards"], placed_cfg, ray=True, show_progress=False)
        nodes = task_nodes("_shard_task")
        assert nodes == {pool_node.node_id}, (nodes, pool_node.node_id, plain_node.node_id)
        with pytest.raises(ValueError, match=r"corpus\.resources=\{'gpu_pool': 1(\.0)?\}.*no alive Ray node"):
            wp.build_wikipedia(
                dump["shards"],
                cfg_for(tmp_path / "bad", resources={"gpu_pool": 1}),
                ray=True,
                show_progress=False,
            )
    finally:
        stop_cluster(cluster)
    assert placed.mode == "ray" and placed.key == local.key  # where tasks run is not part of the cache key
    assert pq.read_table(placed.output).equals(pq.read_table(local.output))
    assert not list((tmp_path / "bad").rglob("passages.parquet"))
