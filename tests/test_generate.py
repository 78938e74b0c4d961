"""Synthetic queries: real HTTP against tests/llm_server.py (Ollama + OpenAI wire formats, streaming and not, faults),
real KLUE-MRC passages from ../shared/data, real bm25s round trips, real Ray Data, and the output read by mining.

No language model runs here; the test server answers deterministically from the document in the prompt (see its
docstring), so every filter has real work and the counts below follow from the data, not from constants in code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from llm_server import ENGLISH_QUERY, GENERIC_QUERY, LLMServer, document_of, queries_for, reply_for

from raysparse.config import GenerateConfig
from raysparse.data import read_beir, read_squad
from raysparse.generate import (
    FILTERS,
    LLMRequestError,
    OllamaClient,
    OpenAIChatClient,
    apply_filters,
    generate_for_batch,
    generate_queries,
    korean_ratio,
    load_prompt,
    make_client,
    parse_queries,
    read_raw,
)
from raysparse.generate.clients import backoff_delay, parse_retry_after
from raysparse.schemas import RetrievalData

MODEL = "test-ko-llm"


@pytest.fixture(scope="module")
def klue(shared_data: Path) -> RetrievalData:
    """KLUE-MRC ODQA validation passages (235 Korean Wikipedia passages; its questions are not used)."""
    return read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")


def _subset(data: RetrievalData, n: int) -> RetrievalData:
    """The first ``n`` passages as a corpus-only collection."""
    return RetrievalData(data.corpus.slice(0, n), data.queries.slice(0, 0), data.qrels.slice(0, 0))


@pytest.fixture
def server():
    with LLMServer(model=MODEL) as s:
        yield s


def _cfg(server: LLMServer, **kw) -> GenerateConfig:
    base = {
        "url": server.url,
        "model": MODEL,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "read_timeout": 10.0,
    }
    return GenerateConfig(**{**base, **kw})


def _prompt(text: str, title: str = "제목") -> str:
    return load_prompt("doc2query_ko_v1").render(title, text, 5)


PASSAGE = "서울특별시는 대한민국의 수도이며 한강이 도시를 가로질러 흐른다. 조선 시대부터 수도였고 인구는 약 천만 명이다."


# ----------------------------------------------------------------------------------------------- prompts, parsing
def test_parse_queries_understands_lists_json_and_reports_malformed():
    assert parse_queries("다음은 질의입니다:\n1. 서울의 인구는?\n2) 한강 길이\n- '부산 여행'") == (
        ["서울의 인구는?", "한강 길이", "부산 여행"],
        None,
    )
    assert parse_queries('```json\n["서울 인구", "한강 다리"]\n```') == (["서울 인구", "한강 다리"], None)
    assert parse_queries('{"queries": [{"query": "서울 인구"}]}') == (["서울 인구"], None)
    assert parse_queries("서울 인구\n\n부산 인구") == (["서울 인구", "부산 인구"], None)
    assert parse_queries("1. 3.1 운동은 언제 일어났나?") == (["3.1 운동은 언제 일어났나?"], None)
    assert parse_queries("   ") == ([], "empty reply")
    assert parse_queries('["깨진 JSON') == ([], "invalid JSON reply")
    assert parse_queries('{"answer": 3}') == ([], "JSON without a query list")
    assert parse_queries("질의:") == ([], "no queries in reply")


def test_prompt_templates_version_and_user_files(tmp_path):
    shipped = load_prompt("doc2query_ko_v1")
    assert shipped.version.startswith("doc2query_ko_v1@") and len(shipped.sha) == 12
    rendered = shipped.render("서울", PASSAGE, 4)
    assert PASSAGE in rendered and "4개" in rendered and "{text}" not in rendered
    assert document_of(rendered) == PASSAGE  # the test server finds the document where a model would read it
    own = tmp_path / "my_prompt.txt"
    own.write_text(
        '# my prompt v2\n질문 {num_queries}개를 JSON {"queries": [...]}로.\n본문: {text}\n', "utf-8"
    )
    mine = load_prompt(str(own))
    assert mine.name == "my_prompt" and mine.body.startswith("질문")  # the comment header is not sent
    assert '{"queries": [...]}' in mine.render(None, "본문", 3)  # braces are not format fields
    own.write_text('질문 {num_queries}개를 JSON {"queries": [...]}로.\n본문: {text}\n', "utf-8")
    assert load_prompt(str(own)).version == mine.version  # the header is not part of the version
    own.write_text("질문 {num_queries}개를 만드세요\n", "utf-8")
    with pytest.raises(ValueError, match=r"my_prompt\.txt.*\{text\}"):
        load_prompt(str(own))
    with pytest.raises(FileNotFoundError, match="doc2query_ko_v1"):
        load_prompt("no_such_prompt")


# ---------------------------------------------------------------------------------------------- wire protocols
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", ["ollama-chat", "ollama-generate", "openai"])
def test_clients_speak_both_wire_formats(server, api, stream):
    server.api_key = "sk-test" if api == "openai" else None
    if api == "openai":
        client = OpenAIChatClient(server.url, MODEL, stream=stream, api_key="sk-test", seed=7, max_tokens=99)
    else:
        client = OllamaClient(
            server.url, MODEL, endpoint=api.split("-")[1], stream=stream, seed=7, max_tokens=99
        )
    completion = client.complete(_prompt(PASSAGE), doc_id="d1")
    assert completion.text == reply_for(PASSAGE)  # streamed pieces reassembled exactly
    assert completion.model == MODEL and completion.attempts == 1
    assert completion.meta.get("done_reason", completion.meta.get("finish_reason")) == "stop"
    request = server.served()[-1]["request"]
    assert request["stream"] is stream and request["model"] == MODEL
    if api == "openai":
        assert (
            request["messages"][0]["role"] == "user" and request["max_tokens"] == 99 and request["seed"] == 7
        )
    else:
        assert request["options"] == {"temperature": 0.7, "num_predict": 99, "seed": 7}
        assert ("messages" in request) == (api == "ollama-chat")
    assert client.list_models() == [MODEL]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("fault", ["429", "500", "malformed", "truncate"])
@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_retries_with_backoff_then_succeed(server, api, fault, stream):
    delays: list[float] = []
    server.add_fault(fault, times=2, retry_after="3")
    cls = OllamaClient if api == "ollama" else OpenAIChatClient
    client = cls(server.url, MODEL, stream=stream, backoff_base=0.01, backoff_max=0.05, sleep=delays.append)
    completion = client.complete(_prompt(PASSAGE), doc_id="d1")
    assert completion.attempts == 3 and completion.text == reply_for(PASSAGE)
    assert [r["fault"] for r in server.requests] == [fault, fault, None]
    assert len(delays) == 2
    if fault == "429":
        assert delays == [3.0, 3.0]  # Retry-After is honoured (it exceeds the back-off cap)
    else:
        assert all(0.0 <= d <= 0.05 for d in delays)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_clients_reuse_one_connection(api, stream):
    """Keep-alive: five completions and a model listing over one TCP connection; a reply cut short costs one more."""
    cls = OllamaClient if api == "ollama" else OpenAIChatClient
    with (
        LLMServer(model=MODEL) as server,
        cls(server.url, MODEL, stream=stream, sleep=lambda s: None) as client,
    ):
        for i in range(5):
            assert client.complete(_prompt(PASSAGE), doc_id=f"d{i}").text == reply_for(PASSAGE)
        assert client.list_models() == [MODEL]
        assert server.connections == 1 and len(server.served()) == 5
        server.add_fault("truncate", times=1)
        assert client.complete(_prompt(PASSAGE), doc_id="d5").attempts == 2
        # a body cut short closes its connection; Ollama's truncated stream ends cleanly (a complete chunked body
        # without its "done" line), so that connection stays usable
        assert server.connections == (1 if api == "ollama" and stream else 2)
    # a server that closes every connection shows what the count measures: one connection per request
    with LLMServer(model=MODEL, keep_alive=False) as server, cls(server.url, MODEL, stream=stream) as client:
        for i in range(3):
            client.complete(_prompt(PASSAGE), doc_id=f"d{i}")
        assert server.connections == 3


def test_clients_take_proxies_from_the_environment(server, monkeypatch):
    """HTTP_PROXY is honoured (the request reaches the proxy with the absolute URL) and NO_PROXY bypasses it."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    target = "http://127.0.0.1:9"  # nothing listens there: only a proxy can answer
    monkeypatch.setenv("HTTP_PROXY", server.url)
    with OllamaClient(target, MODEL, max_retries=0) as client:
        assert client.complete(_prompt(PASSAGE), doc_id="d1").text == reply_for(PASSAGE)
    assert server.proxied == [f"{target}/api/chat"]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with (
        OllamaClient(target, MODEL, max_retries=0) as client,
        pytest.raises(LLMRequestError, match="connection"),
    ):
        client.complete(_prompt(PASSAGE), doc_id="d2")
    assert len(server.proxied) == 1


def test_backoff_and_retry_after_parsing():
    import random

    rng = random.Random(0)
    caps = [min(8.0, 1.0 * 2 ** (a - 1)) for a in range(1, 7)]
    for attempt, cap in enumerate(caps, 1):
        for _ in range(50):
            assert 0.0 <= backoff_delay(attempt, 1.0, 8.0, None, rng) <= cap
    assert backoff_delay(1, 1.0, 8.0, 5.0, rng) == 5.0
    assert (
        parse_retry_after("7") == 7.0
        and parse_retry_after(None) is None
        and parse_retry_after("soon") is None
    )
    assert 0.0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0  # a date in the past: no wait


def test_final_errors_name_document_url_and_status(server):
    delays: list[float] = []
    server.add_fault("500", times=None)
    client = OllamaClient(server.url, MODEL, max_retries=2, sleep=delays.append)
    with pytest.raises(LLMRequestError) as info:
        client.complete(_prompt(PASSAGE), doc_id="klue-17")
    err = info.value
    assert (err.doc_id, err.status, err.attempts, err.kind) == ("klue-17", 500, 3, "HTTP 500")
    assert "klue-17" in str(err) and f"{server.url}/api/chat" in str(err) and "HTTP 500" in str(err)
    server.clear_faults()

    server.add_fault("delay", times=None, delay=1.0)  # never answers within the read timeout
    client = OpenAIChatClient(server.url, MODEL, read_timeout=0.3, max_retries=1, sleep=delays.append)
    with pytest.raises(LLMRequestError, match=r"'klue-3'.*/v1/chat/completions.*timeout") as info:
        client.complete(_prompt(PASSAGE), doc_id="klue-3")
    assert info.value.kind == "timeout" and info.value.attempts == 2
    server.clear_faults()

    n = len(server.requests)
    server.api_key = "sk-right"
    with pytest.raises(LLMRequestError, match=r"HTTP 401: Incorrect API key") as info:
        OpenAIChatClient(server.url, MODEL, api_key="sk-wrong", sleep=delays.append).complete("본문: x", "d")
    assert info.value.attempts == 1 and len(server.requests) == n + 1  # 4xx other than 429 is not retried
    with pytest.raises(LLMRequestError, match=r"HTTP 404: model 'other' not found"):
        OllamaClient(server.url, "other", sleep=delays.append).complete("본문: x", "d")
    with pytest.raises(LLMRequestError, match=r"connection"):
        OllamaClient("http://127.0.0.1:9", MODEL, max_retries=0).complete("본문: x", "d")


# ------------------------------------------------------------------------------------------------------ filters
def test_korean_ratio_counts_letters_only():
    assert korean_ratio("1987년 6월 항쟁은?") == 1.0
    assert korean_ratio("BTS의 노래") == 0.5
    assert korean_ratio(ENGLISH_QUERY) == 0.0 and korean_ratio("123 ?") == 0.0


def test_apply_filters_one_verdict_per_query_and_counts(klue):
    corpus = klue.corpus.slice(0, 40)
    docs = corpus.column("doc_id").to_pylist()[:3]
    texts = corpus.column("text").to_pylist()[:3]
    specific = [" ".join(t.split()[:6]) for t in texts]  # the passage's own opening words: retrievable
    queries = [
        [specific[0], ENGLISH_QUERY, "서울", specific[0] + " ?", GENERIC_QUERY],
        [specific[1], GENERIC_QUERY, "가" * 150],
        [specific[2], "한국어 질문이지만 이 문서와 무관한 고양이 사료 가격"],
    ]
    cfg = GenerateConfig(min_chars=4, max_chars=100, round_trip_k=5)
    verdicts, report = apply_filters(docs, queries, corpus, cfg)
    by_query = {q: v for qs, vs in zip(queries, verdicts, strict=True) for q, v in zip(qs, vs, strict=True)}
    assert by_query[ENGLISH_QUERY] == "korean_ratio"
    assert by_query["서울"] == "length" and by_query["가" * 150] == "length"
    assert by_query[specific[0] + " ?"] == "duplicate_in_doc"
    # the generic question: its copy in the later document (doc_id order) is the duplicate
    later, first = ((1, 1), (0, 4)) if docs[0] < docs[1] else ((0, 4), (1, 1))
    assert verdicts[later[0]][later[1]] == "duplicate_across_docs"
    assert by_query["한국어 질문이지만 이 문서와 무관한 고양이 사료 가격"] == "round_trip"
    assert [verdicts[i][0] for i in range(3)] == ["kept"] * 3
    assert report.generated == 10 and report.kept + sum(report.dropped.values()) == 10
    assert report.dropped["length"] == 2 and report.kept == 3 + (verdicts[first[0]][first[1]] == "kept")
    table = report.table()
    assert all(name in table for name in FILTERS)
    # switching filters off
    off = GenerateConfig(dedup=False, round_trip="none", min_korean_ratio=0.0, min_chars=1, max_chars=200)
    verdicts_off, report_off = apply_filters(docs, queries, corpus, off)
    assert report_off.kept == 10 and all(v == "kept" for vs in verdicts_off for v in vs)


def test_generate_for_batch_is_a_plain_function(server, klue):
    batch = klue.corpus.slice(0, 3)
    cfg = _cfg(server)
    columns = generate_for_batch(batch, make_client(cfg), cfg)
    table = pa.table(columns)
    assert table.column("doc_id").to_pylist() == batch.column("doc_id").to_pylist()
    texts = batch.column("text").to_pylist()
    assert table.column("reply").to_pylist() == [reply_for(t[: cfg.max_doc_chars].strip()) for t in texts]
    assert table.column("queries").to_pylist() == [queries_for(t[: cfg.max_doc_chars].strip()) for t in texts]
    assert set(table.column("prompt_version").to_pylist()) == {load_prompt("doc2query_ko_v1").version}
    # a dict of lists (what map_batches hands a function with batch_format="numpy"/"default") works the same
    as_dict = {k: batch.column(k).to_pylist() for k in ("doc_id", "title", "text")}
    assert pa.table(generate_for_batch(as_dict, make_client(cfg), cfg)).column("queries").to_pylist() == (
        table.column("queries").to_pylist()
    )


# ------------------------------------------------------------------------------------------- the whole stage
def _requested_docs(server: LLMServer) -> list[str]:
    return [r["document"] for r in server.requests if r.get("document") is not None]


def test_generate_queries_end_to_end_in_process(server, klue, tmp_path):
    data = _subset(klue, 24)
    texts = data.corpus.column("text").to_pylist()
    ids = data.corpus.column("doc_id").to_pylist()
    server.add_fault("bad_content", times=1, match=texts[5][:40])  # a reply that is not a query list
    server.add_fault("500", times=None, match=texts[9][:40])  # a document whose request always fails
    server.add_fault("429", times=3, retry_after="0")
    cfg = _cfg(server, api="ollama", stream=True, concurrency=3, batch_size=4, max_retries=3)
    report = generate_queries(data, cfg, tmp_path, ray=False, show_progress=False)

    assert report.docs_in == 24 and report.docs_with_reply == 23
    assert report.docs_failed == {"HTTP 500": 1}
    assert report.malformed_replies == {"invalid JSON reply": 1}
    gens = pq.read_table(tmp_path / "generations.parquet")
    assert sorted(gens.column("doc_id").to_pylist()) == sorted(ids)
    rows = {r["doc_id"]: r for r in gens.to_pylist()}
    assert rows[ids[5]]["reply"] == '["깨진 JSON 응답' and rows[ids[5]]["parse_error"] == "invalid JSON reply"
    assert rows[ids[9]]["error_kind"] == "HTTP 500" and ids[9] in rows[ids[9]]["error"]
    assert rows[ids[0]]["reply"] == reply_for(texts[0][: cfg.max_doc_chars].strip())  # kept verbatim
    assert all(len(r["verdicts"]) == len(r["queries"]) for r in rows.values())

    f = report.filters
    # 22 replies (24 - one failed - one malformed) of the server's 7 queries each (every passage is long)
    assert f["generated"] == 22 * 7
    assert f["dropped"]["korean_ratio"] == 22  # the English question in every reply
    assert f["dropped"]["length"] == 22  # "뭐?"
    assert f["dropped"]["duplicate_in_doc"] == 22  # the repeated first query
    assert f["dropped"]["duplicate_across_docs"] == 21  # the generic question after its first copy
    assert f["dropped"]["round_trip"] > 0 and f["kept"] > 0
    assert f["kept"] + sum(f["dropped"].values()) == f["generated"]
    assert report.run["docs_skipped_done"] == 0 and report.run["request_errors"] == {"HTTP 500": 1}

    # every kept query finds its source in BM25's top k (checked here with mining's index directly)
    from raysparse.config import MiningConfig
    from raysparse.mining import Bm25Index

    beir = read_beir(tmp_path / "beir", split="train")
    assert beir.corpus.num_rows == 24 and beir.queries.num_rows == f["kept"] == beir.qrels.num_rows
    index = Bm25Index.build(data.corpus, MiningConfig(analyzer="bigram"), show_progress=False)
    rows_found, _ = index.search(beir.queries.column("text").to_pylist(), cfg.round_trip_k)
    qrels = beir.qrels
    source = dict(zip(qrels.column("query_id").to_pylist(), qrels.column("doc_id").to_pylist(), strict=True))
    for qid, found in zip(beir.queries.column("query_id").to_pylist(), rows_found, strict=True):
        assert index.row_of(source[qid]) in found.tolist()
    assert read_beir(tmp_path / "beir").queries.num_rows == f["kept"]  # the test split data.format=beir reads
    saved = json.loads((tmp_path / "generate_report.json").read_text())
    assert saved["filters"] == f and saved["prompt_version"] == load_prompt("doc2query_ko_v1").version
    assert (tmp_path / "prompts" / f"{saved['prompt_version'].replace('@', '-')}.txt").is_file()

    # re-run: only the failed document is requested again; it now succeeds
    server.clear_faults()
    before = len(_requested_docs(server))
    again = generate_queries(data, cfg, tmp_path, ray=False, show_progress=False)
    assert _requested_docs(server)[before:] == [texts[9][: cfg.max_doc_chars].strip()]
    assert again.run["docs_skipped_done"] == 23 and again.docs_with_reply == 24 and again.docs_failed == {}
    assert again.filters["generated"] == f["generated"] + 7
    # a new prompt version regenerates everything under the same output directory, the old rows stay in raw/
    own = tmp_path / "v2.txt"
    own.write_text("질의 {num_queries}개를 쓰세요.\n\n본문: {text}\n\n질의:\n", "utf-8")
    v2 = generate_queries(data, _cfg(server, prompt=str(own)), tmp_path, ray=False, show_progress=False)
    assert v2.run["docs_requested"] == 24 and v2.prompt_version.startswith("v2@")
    assert set(read_raw(tmp_path / "raw").column("prompt_version").to_pylist()) == {
        report.prompt_version,
        v2.prompt_version,
    }


def test_concurrency_bounds_requests_in_flight(klue, tmp_path):
    data = _subset(klue, 6)
    # every reply takes 0.4 s, like a model: long enough for the threads to overlap even on a loaded machine
    with LLMServer(model=MODEL, latency=0.4) as slow_server:
        for concurrency in (1, 3):
            slow_server.max_in_flight = slow_server.connections = 0
            cfg = _cfg(slow_server, concurrency=concurrency, batch_size=1, round_trip="none")
            report = generate_queries(data, cfg, tmp_path / str(concurrency), ray=False, show_progress=False)
            assert report.docs_with_reply == 6
            if concurrency == 1:
                assert slow_server.max_in_flight == 1
            else:
                assert 1 < slow_server.max_in_flight <= concurrency
            # the threads share one client whose pool keeps at most `concurrency` connections alive
            assert 1 <= slow_server.connections <= concurrency


def _ok_ids(raw: pa.Table) -> list[str]:
    """doc ids of the rows that hold a reply (failed requests are rows too, with ``error`` set)."""
    return [
        d
        for d, e in zip(raw.column("doc_id").to_pylist(), raw.column("error").to_pylist(), strict=True)
        if not e
    ]


def test_interrupted_run_resumes_each_document_exactly_once(server, klue, tmp_path):
    data = _subset(klue, 12)
    ids = data.corpus.column("doc_id").to_pylist()
    texts = [t[:2000].strip() for t in data.corpus.column("text").to_pylist()]
    server.add_fault("500", times=None, match=texts[7][:40])
    cfg = _cfg(server, on_error="raise", max_retries=1, concurrency=1, batch_size=2)
    with pytest.raises(LLMRequestError, match=rf"'{ids[7]}'.*/api/chat.*HTTP 500") as info:
        generate_queries(data, cfg, tmp_path, ray=False, show_progress=False)
    assert info.value.attempts == 2 and info.value.status == 500
    first = read_raw(tmp_path / "raw")
    # one thread, batches of 2: the batches up to the failing one are on disk (its finished reply included)
    assert _ok_ids(first) == ids[:7] and first.column("error_kind").to_pylist()[7] == "HTTP 500"
    assert not list((tmp_path / "raw").glob(".*.tmp"))
    server.clear_faults()
    n = len(_requested_docs(server))
    report = generate_queries(data, cfg, tmp_path, ray=False, show_progress=False)
    assert report.run["docs_skipped_done"] == 7 and report.docs_with_reply == 12
    assert sorted(_requested_docs(server)[n:]) == sorted(texts[7:])  # the finished ones were not asked again
    assert sorted(_ok_ids(read_raw(tmp_path / "raw"))) == sorted(ids)  # each document generated exactly once


@pytest.mark.slow
def test_ray_data_path_matches_in_process_and_resumes(ray_local, server, klue, tmp_path):
    data = _subset(klue, 16)
    ids = data.corpus.column("doc_id").to_pylist()
    texts = [t[:2000].strip() for t in data.corpus.column("text").to_pylist()]
    cfg = _cfg(
        server, api="openai", stream=True, concurrency=2, batch_size=2, on_error="raise", max_retries=0
    )
    server.add_fault("500", times=None, match=texts[11][:40])
    with pytest.raises(LLMRequestError, match=rf"'{ids[11]}'.*/v1/chat/completions.*HTTP 500"):
        generate_queries(data, cfg, tmp_path / "ray", ray=True, show_progress=False)
    done_first = set(_ok_ids(read_raw(tmp_path / "ray" / "raw")))
    assert ids[11] not in done_first and len(done_first) < 16
    server.clear_faults()
    n = len(_requested_docs(server))
    ray_report = generate_queries(data, cfg, tmp_path / "ray", ray=True, show_progress=False)
    assert ray_report.run["mode"] == "ray" and ray_report.run["docs_skipped_done"] == len(done_first)
    again = _requested_docs(server)[n:]
    assert sorted(again) == sorted(t for d, t in zip(ids, texts, strict=True) if d not in done_first)
    assert sorted(_ok_ids(read_raw(tmp_path / "ray" / "raw"))) == sorted(ids)  # each exactly once
    assert 1 <= server.max_in_flight <= cfg.concurrency  # one request per actor at a time

    local = generate_queries(data, cfg, tmp_path / "local", ray=False, show_progress=False)
    a = pq.read_table(tmp_path / "ray" / "generations.parquet").select(
        ["doc_id", "reply", "queries", "verdicts"]
    )
    b = pq.read_table(tmp_path / "local" / "generations.parquet").select(
        ["doc_id", "reply", "queries", "verdicts"]
    )
    assert a.equals(b) and ray_report.filters == local.filters


# ------------------------------------------------------------------------------------------ CLI and job entry
def test_cli_generate_queries_and_resume(server, shared_data, tmp_path, capsys):
    from raysparse.cli import main

    out = tmp_path / "out"
    args = [
        "generate-queries",
        "--api", "openai",
        "--url", server.url,
        "--model", MODEL,
        "--data-format", "squad",
        "--data-path", str(shared_data / "klue-mrc-odqa" / "validation.jsonl"),
        "--max-docs", "6",
        "--num-queries", "4",
        "--concurrency", "2",
        "--out", str(out),
        "--no-ray",
        "--set", "generate.backoff_base=0.01",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "round_trip" in printed and "kept" in printed
    report = json.loads((out / "generate_report.json").read_text())
    assert report["docs_in"] == 6 and report["docs_with_reply"] == 6 and report["api"] == "openai"
    assert "4개" in server.served()[0]["request"]["messages"][0]["content"]
    n = len(server.requests)
    assert main(args) == 0
    assert [r["path"] for r in server.requests[n:]] == ["/v1/models"]  # resumed: nothing left to generate
    assert read_beir(out / "beir").queries.num_rows == report["queries_kept"]
    # the documented next step, as printed in --help
    assert main(["mine", "--beir", str(out / "beir"), "--out", str(tmp_path / "mined"), "--no-ray"]) == 0
    mined = json.loads((tmp_path / "mined" / "mining_report.json").read_text())
    assert mined["queries_mined"] == report["queries_kept"] and mined["num_docs"] == 235

    # Parquet in the CORPUS schema (the corpus builder's output) is read without --set data.id_field=doc_id
    passages = tmp_path / "passages.parquet"
    pq.write_table(
        read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl").corpus.slice(0, 3), passages
    )
    source_args = ["--data-format", "parquet", "--data-path", str(passages), "--out", str(tmp_path / "out2")]
    assert main([*args[:7], *source_args, "--no-ray", "--set", "generate.backoff_base=0.01"]) == 0
    assert json.loads((tmp_path / "out2" / "generate_report.json").read_text())["docs_with_reply"] == 3

    assert main([a if a != server.url else "http://127.0.0.1:9" for a in args]) == 2  # a user error
    assert "not reachable" in capsys.readouterr().err
    no_model = [a for a in args if a not in ("--model", MODEL)]
    assert main(no_model) == 2


def test_job_entry_point_help():
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(repo / "jobs" / "generate_queries.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--concurrency" in out and "real model server is needed" in out and "vllm serve" in out


# ------------------------------------------------------------------------ the output feeds mining and training
@pytest.mark.slow
def test_generated_pairs_flow_into_mining_and_training(server, klue, tmp_path):
    """OUT/beir is read by data.format=beir, mined by raysparse.mining and trained on, with no conversion step."""
    from raysparse.config import load_config
    from raysparse.data import load_source
    from raysparse.mining import mine, read_triples
    from raysparse.training import train_single_process

    data = _subset(klue, 40)
    report = generate_queries(
        data, _cfg(server, api="openai"), tmp_path / "gen", ray=False, show_progress=False
    )
    assert report.queries_kept > 0
    tiny = [
        "model.vocab_size=1500",
        "model.hidden_size=32",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.intermediate_size=64",
        "model.max_query_length=16",
        "model.max_doc_length=48",
    ]
    cfg = load_config(
        None,
        [
            "data.format=beir",
            f"data.path={tmp_path / 'gen' / 'beir'}",
            "mining.num_hard_negatives=3",
            "mining.num_random_negatives=1",
            "train.max_steps=2",
            "train.batch_size=4",
            "train.eval_every=2",
            "train.checkpoint_every=2",
            *tiny,
        ],
    )
    generated = load_source(cfg.data)
    assert generated.queries.num_rows == report.queries_kept and generated.corpus.num_rows == 40
    mined = mine(generated, cfg.mining, tmp_path / "mined", ray=False, show_progress=False)
    triples = read_triples(tmp_path / "mined")
    assert mined.queries_mined == triples.num_rows == report.queries_kept
    qrels = generated.qrels
    sources = dict(zip(qrels.column("query_id").to_pylist(), qrels.column("doc_id").to_pylist(), strict=True))
    for row in triples.select(["query_id", "positive_ids", "negative_ids"]).to_pylist():
        assert row["positive_ids"] == [sources[row["query_id"]]] and row["negative_ids"]
        assert sources[row["query_id"]] not in row["negative_ids"]

    result = train_single_process(cfg, mined.output, generated, tmp_path / "train")  # triples.parquet as is
    assert [h["step"] for h in result.history] == [1, 2]
    assert (result.model_dir / "config.json").is_file()

    # the round trip can use the model just trained instead of BM25
    rows = pq.read_table(tmp_path / "gen" / "generations.parquet")
    gen_cfg = _cfg(server, round_trip="model", round_trip_model=str(result.model_dir), round_trip_k=10)
    verdicts, freport = apply_filters(
        rows.column("doc_id").to_pylist()[:10], rows.column("queries").to_pylist()[:10], data.corpus, gen_cfg
    )
    assert freport.generated == sum(len(v) for v in verdicts) and freport.kept > 0
    assert freport.kept + sum(freport.dropped.values()) == freport.generated


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_generation_actors_run_only_on_the_nodes_of_generate_resources(server, klue, tmp_path):
    """``generate.resources={cpu_pool: 1}``: every generation actor runs on the node carrying ``cpu_pool`` (as the
    mining actors do with mining.resources); the generations equal the in-process run; a placement no node offers
    fails at once naming the key."""
    from test_failures import CPU_POOL_AND_PLAIN_NODES, miner_actors, start_cluster, stop_cluster

    data = _subset(klue, 8)
    cfg = _cfg(server, concurrency=2, batch_size=2, on_error="raise", resources={"cpu_pool": 1})
    cluster, (pool_node, plain_node) = start_cluster(0, CPU_POOL_AND_PLAIN_NODES)
    try:
        placed = generate_queries(data, cfg, tmp_path / "placed", ray=True, show_progress=False)
        actors = [a for a in miner_actors() if "_GenerateActor" in a["ActorClassName"]]
        assert actors, "no generation actor in the GCS actor table"
        nodes = {a["Address"]["NodeID"] for a in actors}
        assert nodes == {pool_node.node_id}, (nodes, pool_node.node_id, plain_node.node_id)
        bad = cfg.model_copy(update={"resources": {"gpu_pool": 1}})
        with pytest.raises(
            ValueError, match=r"generate\.resources=\{'gpu_pool': 1(\.0)?\}.*no alive Ray node"
        ):
            generate_queries(data, bad, tmp_path / "bad", ray=True, show_progress=False)
    finally:
        stop_cluster(cluster)
    local = generate_queries(data, cfg, tmp_path / "local", ray=False, show_progress=False)
    columns = ["doc_id", "reply", "queries", "verdicts"]
    a = pq.read_table(tmp_path / "placed" / "generations.parquet").select(columns)
    b = pq.read_table(tmp_path / "local" / "generations.parquet").select(columns)
    assert placed.run["mode"] == "ray" and a.equals(b) and placed.filters == local.filters
