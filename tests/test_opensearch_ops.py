"""OpenSearch as an operator meets it: the encoder recorded in the index, a stopped server, a server dying mid-index,
data surviving a restart. Real servers on 127.0.0.1 (scripts/opensearch.sh), real Korean text."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from raysparse.opensearch import (
    EncoderMismatch,
    IndexInterrupted,
    bulk_index,
    check_encoder,
    create_index,
    document_body,
    encoder_identity,
    index_documents,
    index_mapping,
    index_meta,
    lexical_term_weights,
    make_client,
    prepare_index,
)

pytestmark = pytest.mark.opensearch
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "opensearch.sh"
OWN_NODE_PORT = 9253  # the restart/kill test needs a node of its own (it stops it)


@pytest.fixture(scope="module")
def klue(shared_data):
    from raysparse.data.readers import read_squad

    return read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _model_identity(tmp_path, name: str, payload: bytes, **kw):
    """An encoder record for a model directory (only the files' bytes matter for the hash)."""
    model = tmp_path / name
    model.mkdir()
    (model / "model.safetensors").write_bytes(payload)
    (model / "raysparse.json").write_text('{"query_mode": "inference_free"}')
    return encoder_identity(model, **kw)


def test_index_records_its_encoder_and_refuses_another_unless_forced(client, index_name, klue, tmp_path):
    a = _model_identity(tmp_path, "a", b"weights a", max_doc_length=256, max_query_length=32, doc_top_k=None)
    b = _model_identity(tmp_path, "b", b"weights b", max_doc_length=256, max_query_length=32, doc_top_k=None)
    assert a["model_sha256"] != b["model_sha256"] and a["query_mode"] == "inference_free"
    assert prepare_index(client, index_name, index_mapping(encoder=a), a) == []
    assert index_meta(client, index_name)["encoder"] == a
    rows = klue.corpus.slice(0, 10).to_pylist()
    index_documents(client, index_name, rows, lexical_term_weights)
    assert prepare_index(client, index_name, index_mapping(encoder=a), a) == []  # same encoder: fine

    with pytest.raises(EncoderMismatch) as err:
        prepare_index(client, index_name, index_mapping(encoder=b), b)
    assert index_name in str(err.value) and "model_sha256" in str(err.value) and "--force" in str(err.value)
    # a query encoder does not know the document-side top-k: that difference does not block searching
    assert check_encoder(client, index_name, {**a, "doc_top_k": 64}, for_search=True) == []
    with pytest.raises(EncoderMismatch, match="search"):
        check_encoder(client, index_name, {**a, "max_query_length": 64}, for_search=True)

    forced = prepare_index(client, index_name, index_mapping(encoder=b), b, force=True)
    assert forced and "model_sha256" in forced[0]
    meta = index_meta(client, index_name)
    assert meta["encoder"] == b and meta["replaced_encoder"] == a and meta["bm25_mode"] == "whitespace"


def test_cli_index_refuses_documents_of_an_unrecorded_encoder_unless_forced(
    os_url, client, klue, tmp_path, capsys
):
    from raysparse.cli import main
    from raysparse.data import write_beir

    beir = write_beir(klue, tmp_path / "beir")
    index = f"raysparse-ops-{uuid.uuid4().hex[:8]}"
    try:
        create_index(client, index, index_mapping())  # an index from before encoders were recorded
        body, _ = document_body({"doc_id": "old", "text": "예전 문서"}, {"예전": 1.0}, None)
        client.index(index=index, id="old", body=body, refresh=True)
        common = ["index", "--url", os_url, "--index", index, "--lexical", "--beir", str(beir), "--no-ray"]
        assert main(common) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) >= 1 and index in err[-1] and "records no encoder" in err[-1]
        assert client.count(index=index)["count"] == 1  # nothing written
        assert main([*common, "--force"]) == 0
        assert index_meta(client, index)["encoder"] == encoder_identity(lexical_analyzer="bigram")
        assert client.count(index=index)["count"] == klue.corpus.num_rows + 1
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)


def test_cli_index_against_a_stopped_server_is_one_line_naming_the_url(tmp_path, capsys):
    from raysparse.cli import main

    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    code = main(["index", "--url", url, "--index", "x", "--lexical", "--data-format", "sample"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and url in err[0] and "no OpenSearch answers" in err[0], err


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args, "--port", str(OWN_NODE_PORT)],
        capture_output=True,
        text=True,
        timeout=900,
    )


def _wait_green(client, index: str, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while client.cluster.health(index=index)["status"] != "green":
        assert time.monotonic() < deadline, f"{index} not green after {seconds} s"
        time.sleep(1)


@pytest.mark.slow
def test_data_survives_restart_and_a_dying_server_stops_indexing_at_the_first_failed_batch(klue):
    """One node of the test's own: an index survives stop/start; killing the node mid-bulk stops indexing with the
    count written; ``--fresh`` starts empty."""
    start = _script("start", "--fresh")
    if start.returncode != 0:
        pytest.fail(f"opensearch.sh start failed: {start.stderr[-2000:]}")
    url = start.stdout.strip().splitlines()[-1]
    try:
        client = make_client(url=url)
        client.indices.create(index="kept", body=index_mapping())
        client.index(index="kept", id="1", body={"doc_id": "1", "text": "남는 문서"}, refresh=True)
        assert _script("stop").returncode == 0
        assert _script("start").returncode == 0  # no --fresh: same data directory
        _wait_green(client, "kept")
        assert client.count(index="kept")["count"] == 1

        create_index(client, "dying", index_mapping())
        rows = klue.corpus.to_pylist()
        weights = lexical_term_weights([r["text"] for r in rows])
        batch = 50

        def docs():
            for i, (row, w) in enumerate(zip(rows, weights, strict=True)):
                if i == 2 * batch + 1:  # two full batches were handed over: kill the server under the third
                    assert _script("stop").returncode == 0
                yield document_body(row, w, None)[0]

        client_fast = make_client(url=url, timeout=5)
        with pytest.raises(IndexInterrupted) as err:
            bulk_index(client_fast, "dying", docs(), batch_size=batch, max_retries=1, initial_backoff=0.1)
        assert err.value.report.indexed == 2 * batch
        assert "stopped at the first failed batch with 100 documents written" in str(err.value)
        assert "'dying'" in str(err.value)

        assert _script("start", "--fresh").returncode == 0
        assert not client.indices.exists(index="kept")
    finally:
        _script("stop")


@pytest.mark.slow
def test_workers_write_straight_into_opensearch_like_the_driver_path(client, index_name, klue, ray_local):
    from raysparse.config import OpenSearchConfig
    from raysparse.opensearch import (
        BULK_LOAD_SETTINGS,
        index_corpus_on_workers,
        lexical_encoder_factory,
        make_client,
    )

    url = "http://{host}:{port}".format(**client.transport.hosts[0])
    cfg = OpenSearchConfig(url=url, bulk_batch_size=40)
    identity = encoder_identity(lexical_analyzer="bigram")
    report = index_corpus_on_workers(
        klue,
        lexical_encoder_factory("bigram"),
        cfg,
        index=index_name,
        encoder=identity,
        num_actors=2,
        batch_size=30,
    )
    assert report.indexed == klue.corpus.num_rows == report.doc_count and not report.failed
    assert report.writers == 2  # both actors bulk-wrote (one table is one block: it fed one actor only)
    assert report.terms.kept > 0 and index_meta(client, index_name)["encoder"] == identity
    settings = client.indices.get_settings(index=index_name, flat_settings=True)[index_name]["settings"]
    assert settings.get("index.refresh_interval") != BULK_LOAD_SETTINGS["refresh_interval"]  # restored
    assert settings.get("index.translog.durability", "request").lower() == "request"

    # the same vectors as the in-process path writes
    reference = f"{index_name}-ref"
    try:
        create_index(client, reference, index_mapping())
        index_documents(
            make_client(url=url), reference, klue.corpus.slice(0, 5).to_pylist(), lexical_term_weights
        )
        for doc_id in klue.corpus.column("doc_id").to_pylist()[:5]:
            ours = client.get(index=index_name, id=doc_id)["_source"]
            ref = client.get(index=reference, id=doc_id)["_source"]
            assert ours["sparse"] == ref["sparse"] and ours["bm25"] == ref["bm25"]
    finally:
        client.indices.delete(index=reference, ignore_unavailable=True)


@pytest.mark.slow
def test_workers_index_a_corpus_where_only_some_documents_are_dated(
    client, index_name, klue, shared_data, ray_local
):
    """KLUE passages (no date) pooled with dated petitions: Ray Data hands the writers numpy batches where a missing
    date is NaT; every document is written, the dated ones with their date, the others without one."""
    import pyarrow as pa

    from raysparse.config import OpenSearchConfig
    from raysparse.data import read_dated_jsonl
    from raysparse.opensearch import index_corpus_on_workers, lexical_encoder_factory
    from raysparse.schemas import RetrievalData

    petitions = read_dated_jsonl(shared_data / "corpora" / "petitions-dated").corpus.slice(0, 40)
    corpus = pa.concat_tables([klue.corpus.slice(0, 40).cast(petitions.schema), petitions])
    data = RetrievalData(corpus, klue.queries.slice(0, 0), klue.qrels.slice(0, 0))
    url = "http://{host}:{port}".format(**client.transport.hosts[0])
    report = index_corpus_on_workers(
        data, lexical_encoder_factory("bigram"), OpenSearchConfig(url=url), index=index_name, num_actors=2
    )
    assert report.indexed == report.doc_count == 80 and not report.failed
    dated = petitions.to_pylist()[0]
    source = client.get(index=index_name, id=dated["doc_id"])["_source"]
    assert source["date"].startswith(dated["date"].isoformat()[:10])
    undated = client.get(index=index_name, id=klue.corpus.column("doc_id")[0].as_py())["_source"]
    assert "date" not in undated


def _marking_encoder_factory(marker_dir: str):
    """The lexical encoder, plus a file named after the node each time a writer encodes a batch: the test's signal
    that a node's writer is mid-indexing (local cluster nodes share this file system)."""
    from raysparse.opensearch import lexical_encoder_factory

    make_lexical = lexical_encoder_factory("bigram")

    def make():
        import ray

        node = ray.get_runtime_context().get_node_id()
        lexical = make_lexical()

        def encode(texts):
            (Path(marker_dir) / node).touch()
            return lexical(texts)

        return encode

    return make


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_indexing_on_workers_survives_losing_a_writer_node(client, index_name, shared_data, tmp_path):
    """Three 1-CPU worker nodes, two writers: the node of a writer that has started encoding is removed (SIGKILL,
    no grace); Ray Data restarts the writer on the spare node and retries its batches, and since a document's _id
    is its doc_id, nothing is lost or duplicated: every document is in the index exactly once."""
    import threading

    import ray
    from ray.cluster_utils import Cluster

    from raysparse.config import OpenSearchConfig
    from raysparse.data import read_dated_jsonl
    from raysparse.opensearch import index_corpus_on_workers
    from raysparse.schemas import RetrievalData

    petitions = read_dated_jsonl(shared_data / "corpora" / "petitions-dated")
    corpus = petitions.corpus.slice(0, 1500)
    data = RetrievalData(corpus, petitions.queries.slice(0, 0), petitions.qrels.slice(0, 0))
    url = "http://{host}:{port}".format(**client.transport.hosts[0])
    markers = tmp_path / "encoded-on"
    markers.mkdir()

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    outcome: dict = {}
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)

        def run() -> None:
            try:
                outcome["report"] = index_corpus_on_workers(
                    data, _marking_encoder_factory(str(markers)), OpenSearchConfig(url=url),
                    index=index_name, num_actors=2, num_cpus_per_actor=1, batch_size=8,
                )  # fmt: skip
            except Exception as err:  # reported by the assertions below
                outcome["error"] = err

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 300
        while not any(markers.iterdir()) and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.is_alive(), f"indexing ended before a node could be removed: {outcome}"
        victim_id = next(markers.iterdir()).name
        victim = next(n for n in nodes if n.node_id == victim_id)
        cluster.remove_node(victim, allow_graceful=False)
        worker.join(600)
        assert not worker.is_alive(), "indexing did not finish after the node loss"
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert report.indexed == report.doc_count == corpus.num_rows and not report.failed
    assert int(client.count(index=index_name)["count"]) == corpus.num_rows


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_index_writers_run_only_on_the_nodes_of_mining_resources(client, index_name, klue, tmp_path):
    """``raysparse index`` hands ``mining.resources`` to its actors: with ``{cpu_pool: 1}`` every encoder of the
    driver-bulk path and every writer of the worker-bulk path runs on the node carrying ``cpu_pool`` (a task asking
    for CPUs alone could make an autoscaler launch a GPU node), and every document is indexed."""
    from test_failures import CPU_POOL_AND_PLAIN_NODES, start_cluster, stop_cluster

    from raysparse.config import OpenSearchConfig
    from raysparse.opensearch import index_corpus, index_corpus_on_workers
    from raysparse.schemas import RetrievalData

    data = RetrievalData(klue.corpus.slice(0, 120), klue.queries.slice(0, 0), klue.qrels.slice(0, 0))
    url = "http://{host}:{port}".format(**client.transport.hosts[0])
    cluster, (pool_node, plain_node) = start_cluster(0, CPU_POOL_AND_PLAIN_NODES)
    try:
        for path, index_fn in (("driver-bulk", index_corpus), ("worker-bulk", index_corpus_on_workers)):
            markers = tmp_path / path
            markers.mkdir()
            report = index_fn(
                data, _marking_encoder_factory(str(markers)), OpenSearchConfig(url=url),
                index=f"{index_name}-{path}", num_actors=2, num_cpus_per_actor=1, batch_size=20,
                resources={"cpu_pool": 1},
            )  # fmt: skip
            assert report.indexed == report.doc_count == 120 and not report.failed, (path, report)
            encoded_on = {p.name for p in markers.iterdir()}
            assert encoded_on == {pool_node.node_id}, (
                path,
                encoded_on,
                pool_node.node_id,
                plain_node.node_id,
            )
    finally:
        stop_cluster(cluster)
        for path in ("driver-bulk", "worker-bulk"):
            client.indices.delete(index=f"{index_name}-{path}", ignore_unavailable=True)
