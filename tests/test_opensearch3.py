"""OpenSearch 3.x: the core features raysparse relies on, on a real 3.x node (scripts/opensearch.sh start --version 3,
codelibs' newest 3.x runner on Maven Central, on a Java 21+ JDK), compared with the 2.19 node the other tests use.

Measured difference (asserted below so a change shows up): BM25 scores on 3.x are the 2.19 scores divided by
k1 + 1 = 2.2 (3.x scores with Lucene's BM25Similarity, 2.x with LegacyBM25Similarity, which multiplies by k1 + 1);
rankings are identical, and so are rank_feature (sparse) scores and min-max hybrid scores.

The node: $RAYSPARSE_OPENSEARCH3_URL, else one started here on $RAYSPARSE_OPENSEARCH3_PORT (default 9255) and stopped
when this module is done. Under CI=true a node that cannot start fails the tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from opensearch_node import opensearch_node

from raysparse.opensearch import (
    BULK_LOAD_SETTINGS,
    bulk_load_settings,
    create_index,
    encoder_identity,
    index_documents,
    index_mapping,
    index_meta,
    lexical_term_weights,
    make_client,
    prepare_index,
    search,
)

pytestmark = [pytest.mark.opensearch, pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "opensearch.sh"
PORT = int(os.environ.get("RAYSPARSE_OPENSEARCH3_PORT", "9255"))
BM25_K1 = 1.2  # OpenSearch's default k1 on both versions


@pytest.fixture(scope="module")
def os3_url():
    with opensearch_node(PORT, "--version", "3", url=os.environ.get("RAYSPARSE_OPENSEARCH3_URL")) as url:
        yield url


@pytest.fixture(scope="module")
def os3(os3_url):
    return make_client(url=os3_url)


@pytest.fixture(scope="module")
def klue(shared_data):
    from raysparse.data.readers import read_squad

    return read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")


def _index_klue(client, index: str, klue) -> dict:
    identity = encoder_identity(lexical_analyzer="bigram")
    assert prepare_index(client, index, index_mapping(encoder=identity), identity) == []
    report = index_documents(
        client, index, klue.corpus.to_pylist(), lexical_term_weights, bulk_batch_size=100
    )
    assert report.indexed == report.doc_count == klue.corpus.num_rows and not report.failed
    assert index_meta(client, index)["encoder"] == identity  # the encoder record (_meta) survives on both
    return identity


def test_rank_features_bulk_and_queries_on_3x_match_2x(client, os3, klue):
    version = os3.info()["version"]["number"]
    assert version.startswith("3."), version
    assert client.info()["version"]["number"].startswith("2.")
    index = f"raysparse-v3-{uuid.uuid4().hex[:8]}"
    queries = dict(
        zip(
            klue.queries.column("query_id").to_pylist()[:25],
            klue.queries.column("text").to_pylist()[:25],
            strict=True,
        )
    )
    try:
        for c in (client, os3):
            _index_klue(c, index, klue)
        mapping = os3.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        assert mapping["sparse"]["type"] == "rank_features"
        for mode in ("sparse", "bm25", "hybrid"):
            for qid, text in queries.items():
                old = search(client, index, text, lexical_term_weights, mode=mode, size=10)
                new = search(os3, index, text, lexical_term_weights, mode=mode, size=10)
                assert [h.doc_id for h in new] == [h.doc_id for h in old], (mode, qid)
                ratio = 1.0 + BM25_K1 if mode == "bm25" else 1.0  # 3.x: BM25 without the (k1 + 1) factor
                for a, b in zip(old, new, strict=True):
                    assert a.score == pytest.approx(b.score * ratio, rel=1e-5), (mode, qid, a.score, b.score)
                if mode == "sparse":  # the matched-term explanation (term weights) is read back the same way
                    assert [h.matched for h in new] == [h.matched for h in old]
    finally:
        for c in (client, os3):
            c.indices.delete(index=index, ignore_unavailable=True)


def test_bulk_load_settings_apply_and_restore_on_3x(os3):
    index = f"raysparse-v3-{uuid.uuid4().hex[:8]}"
    create_index(os3, index, index_mapping())
    try:

        def effective() -> dict:  # set values over defaults: "restored" means the same effective value
            got = os3.indices.get_settings(index=index, include_defaults=True, flat_settings=True)[index]
            return {**got["defaults"], **got["settings"]}

        keys = [f"index.{k}" for k in BULK_LOAD_SETTINGS]
        before = effective()
        with bulk_load_settings(os3, index):
            during = effective()
            assert during["index.refresh_interval"] == BULK_LOAD_SETTINGS["refresh_interval"]
            assert during["index.translog.durability"].lower() == "async"
        after = effective()
        assert {k: str(after[k]).lower() for k in keys} == {k: str(before[k]).lower() for k in keys}
    finally:
        os3.indices.delete(index=index, ignore_unavailable=True)


def test_cli_index_and_search_on_3x(os3_url, os3, shared_data, capsys):
    from raysparse.cli import main

    index = f"raysparse-v3-{uuid.uuid4().hex[:8]}"
    data = str(shared_data / "klue-mrc-odqa" / "validation.jsonl")
    try:
        code = main(
            [
                *("index", "--url", os3_url, "--index", index, "--lexical", "--no-ray", "--json"),
                *("--data-format", "squad", "--data-path", data),
            ]
        )
        out = capsys.readouterr()
        assert code == 0, out.err[-2000:]
        assert json.loads(out.out)["doc_count"] == 235
        code = main(
            ["search", "한국의 수도", "--url", os3_url, "--index", index, "--lexical", "--json", "-k", "3"]
        )
        hits = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
        assert code == 0 and [h["rank"] for h in hits] == [1, 2, 3] and all(h["matched"] for h in hits)
    finally:
        os3.indices.delete(index=index, ignore_unavailable=True)
