"""``raysparse demo`` in a real headless Chromium against a real OpenSearch, on real Korean and English text.

The model is built here (small local BERT, BM25 lexical part, a Korean<->English translation table learned from the
shared parallel text), the index holds KLUE-MRC passages plus English and Korean news sentences from ../shared/data,
and the page is driven through Debian's chromium + chromedriver with selenium (no browser download). Set
RAYSPARSE_DEMO_SCREENSHOT=PATH to keep the screenshot (docs/demo.png is made that way).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from raysparse.demo import highlight_spans, script_of, snippet, surface
from raysparse.fusion import fuse_min_max
from tests.conftest import parallel_pairs

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DEMO_CMD = (sys.executable, "-m", "raysparse", "demo")
QUERY = "북한 핵 실험"  # "North Korea nuclear test": the table translates 핵 -> nuclear, 북한 -> north


# ------------------------------------------------------------------------------------------ no server
def test_highlights_prefer_longer_terms_and_skip_single_letter_pieces():
    text = "Search models: 검색 모델과 검색엔진 (search)."
    spans = highlight_spans(text, ["검색", "검색엔진", "search", "##s", "모델"])
    assert [(text[s:e], t) for s, e, t in spans] == [
        ("Search", "search"),
        ("검색", "검색"),
        ("모델", "모델"),
        ("검색엔진", "검색엔진"),
        ("search", "search"),
    ]
    assert surface("##엔진") == "엔진" and surface("3\u202414") == "3.14"
    assert (script_of("president"), script_of("대통령"), script_of("14")) == ("latin", "hangul", "other")


def test_snippet_keeps_the_first_highlight_and_marks_cuts():
    text = "가" * 500 + "대통령" + "나" * 500
    segs = snippet(text, highlight_spans(text, ["대통령"]), width=100)
    assert segs[0] == {"text": "…", "term": None} and segs[-1] == {"text": "…", "term": None}
    assert {"text": "대통령", "term": "대통령"} in segs
    assert sum(len(s["text"]) for s in segs[1:-1]) == 100


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def demo_model(shared_data, tmp_path_factory) -> Path:
    """A small encoder whose query vectors carry English translations of Korean pieces (and back)."""
    import torch

    from raysparse.backbone import build_encoder, build_local_backbone
    from raysparse.config import ModelConfig
    from raysparse.data.readers import read_squad

    klue = read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")
    pairs = parallel_pairs(shared_data)
    en = [e for _, e in pairs[:1000]]  # the news half: IDF background in English
    docs = [f"{r['title']} {r['text']}" for r in klue.corpus.to_pylist()]
    cfg = ModelConfig(
        vocab_size=8000,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        lexical_weighting="bm25",
        translation_prior=2.0,  # the demo should show cross-lingual hits prominently
        translation_top_k=3,
        translation_min_score=0.1,
        output_bias=-1.5,
    )
    out = tmp_path_factory.mktemp("demo-model")
    torch.manual_seed(0)
    backbone = build_local_backbone(docs + [t for pair in pairs for t in pair], cfg, out / "backbone")
    model_dir, info = build_encoder(
        backbone, cfg, out / "model", background_texts=docs + en[:500], documents=docs, sentence_pairs=pairs
    )
    assert info["translation_entries"] > 1000, info
    return Path(model_dir)


@pytest.fixture(scope="module")
def demo_index(client, shared_data, demo_model):
    """KLUE-MRC passages (Korean Wikipedia) + 300 English news sentences, indexed with the demo model: a Korean query
    about the news can only reach those through its English expansions."""
    from raysparse.data.readers import read_squad
    from raysparse.opensearch import (
        create_index,
        encoder_identity,
        index_documents,
        index_mapping,
        model_encoder_factory,
    )

    klue = read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")
    news = shared_data / "bilingual" / "news-parallel-dev"
    rows = klue.corpus.to_pylist()
    lines = (news / "korean-english-park.dev.en").read_text(encoding="utf-8").splitlines()
    rows += [
        {"doc_id": f"news-en-{i}", "title": "", "text": line, "lang": "en"}
        for i, line in enumerate(lines[:300])
        if line.strip()
    ]
    name = f"raysparse-demo-{uuid.uuid4().hex[:8]}"
    create_index(client, name, index_mapping(encoder=encoder_identity(demo_model)))
    report = index_documents(client, name, rows, model_encoder_factory(demo_model)())
    assert report.indexed == len(rows) and not report.failed, str(report)
    yield name
    client.indices.delete(index=name, ignore_unavailable=True)


def _start_demo(os_url: str, index: str, model: Path) -> tuple[subprocess.Popen, str]:
    """`raysparse demo ... --port 0` as users run it; returns the process and the URL it printed last."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [*DEMO_CMD, "--url", os_url, "--index", index, "--model", str(model), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    err_lines: list[str] = []
    threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True).start()
    while True:  # the URL line comes once the server is bound; poll so a crash is reported, not waited out
        try:
            line = lines.get(timeout=1.0).strip()
        except queue.Empty:
            if proc.poll() is not None:
                stderr = "".join(err_lines)[-2000:]
                raise AssertionError(f"raysparse demo exited {proc.returncode}: {stderr}") from None
            continue
        if line.startswith("http://"):
            return proc, line


@pytest.fixture(scope="module")
def demo_url(os_url, demo_index, demo_model):
    proc, url = _start_demo(os_url, demo_index, demo_model)
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# ------------------------------------------------------------------------------------------ server
@pytest.mark.opensearch
@pytest.mark.slow
def test_api_lists_come_from_opensearch_and_fuse_with_the_one_fusion_function(
    demo_url, client, demo_index, demo_model
):
    from urllib.parse import quote

    from raysparse.opensearch import model_query_encoder, search_run

    status, data = _get(demo_url + "api/search?q=" + quote(QUERY))
    assert status == 200, data
    bm25 = search_run(client, demo_index, {"q": QUERY}, mode="bm25", size=10)["q"]
    sparse = search_run(client, demo_index, {"q": QUERY}, model_query_encoder(demo_model), size=10)["q"]
    fused = sorted(fuse_min_max(bm25, sparse).items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    results = data["results"]
    assert [h["doc_id"] for h in results["bm25"]] == sorted(bm25, key=lambda d: (-bm25[d], d))
    assert [h["doc_id"] for h in results["sparse"]] == sorted(sparse, key=lambda d: (-sparse[d], d))
    assert [h["doc_id"] for h in results["hybrid"]] == [d for d, _ in fused]
    # the terms are the model's query vector; the English ones are marked as translations of the Korean pieces
    terms = {t["term"]: t for t in data["terms"]}
    assert terms["핵"]["kind"] == "query"
    assert terms["nuclear"]["kind"] == "translation" and "핵" in terms["nuclear"]["from"]
    assert terms["nuclear"]["direction"] == "ko→en"
    # a sparse hit's matched terms explain its score (query weight x stored weight, Lucene's ~9-bit precision)
    top = results["sparse"][0]
    assert top["score"] == pytest.approx(
        sum(m["query_weight"] * m["doc_weight"] for m in top["matched"]), rel=0.02
    )
    # English documents are reached through the translations (the index has no parallel copy of them)
    assert any(h["doc_id"].startswith("news-en-") for h in results["sparse"])
    assert _get(demo_url + "api/search?q=%20")[0] == 400


@pytest.mark.opensearch
def test_cli_refuses_a_missing_index_in_one_line(os_url, demo_model):
    from raysparse.cli import main

    proc = subprocess.run(
        [
            *DEMO_CMD,
            "--url",
            os_url,
            "--index",
            "no-such-index-h15b",
            "--model",
            str(demo_model),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"raysparse demo: no index 'no-such-index-h15b' at {os_url} (build it with `raysparse index`)"
    )
    assert main(["demo", "--url", os_url, "--model", str(demo_model), "--bm25-weight", "2"]) == 2


@pytest.mark.opensearch
@pytest.mark.slow
def test_page_in_headless_chromium_shows_three_columns_and_english_expansions(demo_url, tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        msg = "chromium / chromedriver not installed (apt-get install chromium chromium-driver; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1250"):
        options.add_argument(arg)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not try to download anything
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(demo_url)
        box = driver.find_element(By.ID, "q")
        box.send_keys(QUERY)
        box.send_keys(Keys.ENTER)
        wait = WebDriverWait(driver, 180, poll_frequency=0.2)
        # the status line says how many terms came back once the page has rendered everything
        wait.until(lambda d: "query terms" in d.find_element(By.ID, "status").text)
        assert driver.find_element(By.ID, "status").get_attribute("class") != "error"
        for column in ("bm25", "sparse", "hybrid"):
            hits = driver.find_elements(By.CSS_SELECTOR, f"#hits-{column} li.hit")
            assert hits, column
            assert all(h.get_attribute("data-doc-id") for h in hits)
        chips = driver.find_elements(By.CSS_SELECTOR, "#term-chips .chip.translation")
        english = [
            c.get_attribute("data-term") for c in chips if script_of(c.get_attribute("data-term")) == "latin"
        ]
        assert "nuclear" in english, english
        assert all(c.is_displayed() for c in chips)
        # matched terms are highlighted inside the hits, with the term's kind as the mark's class
        marks = driver.find_elements(By.CSS_SELECTOR, "#hits-sparse mark")
        assert marks and any(m.text == "북한" for m in marks)
        assert driver.find_elements(By.CSS_SELECTOR, "#hits-bm25 mark.bm25")
        assert driver.find_elements(By.CSS_SELECTOR, "#hits-sparse mark.translation")
        shot = tmp_path / "demo.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        keep = os.environ.get("RAYSPARSE_DEMO_SCREENSHOT")
        if keep:
            shutil.copyfile(shot, keep)
    finally:
        driver.quit()
