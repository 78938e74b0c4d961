"""A secured cluster as users run it: a real node with the OpenSearch security plugin (scripts/opensearch.sh start
--secure: HTTPS only, a throw-away CA made at start, internal users with and without index rights), reached by
raysparse's client and CLI with the CA, user and password from the environment or the config.

Checks: index + search over TLS with CA verification as the user with rights (driver and Ray-worker bulk paths);
a wrong password, a user without index rights and a missing CA are each one line naming the URL (and index) with
exit code 2, raised at once (one request, no retries); no password ever shows up in any output.

The node: port $RAYSPARSE_OPENSEARCH_SECURE_PORT, else 9254, started here (and stopped when this module is done)
unless one already runs there. Under CI=true a node that cannot start fails the tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from opensearch_node import opensearch_node

from raysparse.config import OpenSearchConfig
from raysparse.opensearch import (
    AccessDenied,
    TLSFailure,
    bulk_index,
    check_reachable,
    create_index,
    document_body,
    index_documents,
    index_mapping,
    lexical_term_weights,
    make_client,
    search,
)

pytestmark = [pytest.mark.opensearch, pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "opensearch.sh"
SECURE_PORT = int(os.environ.get("RAYSPARSE_OPENSEARCH_SECURE_PORT", "9254"))
AUTH_ENV = (
    "RAYSPARSE_OPENSEARCH_USERNAME",
    "RAYSPARSE_OPENSEARCH_PASSWORD",
    "RAYSPARSE_OPENSEARCH_PASSWORD_FILE",
    "RAYSPARSE_OPENSEARCH_CA_CERTS",
    "RAYSPARSE_OPENSEARCH_CLIENT_CERT",
    "RAYSPARSE_OPENSEARCH_CLIENT_KEY",
)


@pytest.fixture(scope="module")
def secure():
    """``scripts/opensearch.sh secure-env`` of a running --secure node (URL, CA file, users, password files)."""
    with opensearch_node(SECURE_PORT, "--secure") as url:
        info = subprocess.run(
            ["bash", str(SCRIPT), "secure-env", "--port", str(SECURE_PORT)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        env = dict(line.split("=", 1) for line in info.strip().splitlines())
        assert env["RAYSPARSE_OPENSEARCH_URL"] == url.replace("http:", "https:")
        env["writer_password"] = Path(env["RAYSPARSE_OPENSEARCH_PASSWORD_FILE"]).read_text().strip()
        env["noaccess_password"] = Path(env["NOACCESS_PASSWORD_FILE"]).read_text().strip()
        assert len(env["writer_password"]) >= 20 and len(env["noaccess_password"]) >= 20
        yield env


@pytest.fixture
def no_auth_env(monkeypatch):
    """Tests set the auth variables themselves; none leak in from the calling shell."""
    for var in AUTH_ENV:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def klue(shared_data):
    from raysparse.data.readers import read_squad

    return read_squad(shared_data / "klue-mrc-odqa" / "validation.jsonl")


def _writer_env(secure) -> dict[str, str]:
    return {var: secure[var] for var in AUTH_ENV if var in secure}


def _writer_cfg(secure, **kw) -> OpenSearchConfig:
    return OpenSearchConfig(
        url=secure["RAYSPARSE_OPENSEARCH_URL"],
        ca_certs=secure["RAYSPARSE_OPENSEARCH_CA_CERTS"],
        username=secure["RAYSPARSE_OPENSEARCH_USERNAME"],
        password_file=secure["RAYSPARSE_OPENSEARCH_PASSWORD_FILE"],
        **kw,
    )


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def _cli(capfd, monkeypatch, env: dict[str, str], *args: str) -> Run:
    """``raysparse ARGS`` in this process with only ``env``'s auth variables set; fd-level output captured (logging
    and anything a library prints included)."""
    from raysparse.cli import main

    for var in AUTH_ENV:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    capfd.readouterr()
    code = main(list(args))
    out = capfd.readouterr()
    return Run(code, out.out, out.err)


def _no_secret(secure, *outputs: str) -> None:
    for text in outputs:
        for key in ("writer_password", "noaccess_password"):
            assert secure[key] not in text, f"the {key} shows up in the output"


def _one_line(proc: Run) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-2000:])
    return lines[0]


def _requests(client) -> list[str]:
    """Count the requests the client's (only) connection sends: a refused one must not be retried."""
    sent: list[str] = []
    conn = client.transport.connection_pool.connections[0]
    original = conn.perform_request

    def counting(method, url, *args, **kwargs):
        sent.append(f"{method} {url}")
        return original(method, url, *args, **kwargs)

    conn.perform_request = counting
    return sent


def test_index_and_search_over_tls_as_the_user_with_rights(
    secure, klue, shared_data, no_auth_env, capfd, monkeypatch
):
    """The CLI with CA + user + password file from the environment; the library with them from the config."""
    index = f"raysparse-secure-{uuid.uuid4().hex[:8]}"
    env = _writer_env(secure)
    url = secure["RAYSPARSE_OPENSEARCH_URL"]
    data = ["--data-format", "squad", "--data-path", str(shared_data / "klue-mrc-odqa" / "validation.jsonl")]
    client = make_client(_writer_cfg(secure))
    try:
        done = _cli(
            capfd,
            monkeypatch,
            env,
            "index",
            "--url",
            url,
            "--index",
            index,
            "--lexical",
            "--no-ray",
            "--json",
            *data,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert client.count(index=index)["count"] == klue.corpus.num_rows
        query = klue.queries.column("text").to_pylist()[0]
        found = _cli(
            capfd,
            monkeypatch,
            env,
            "search",
            query,
            "--url",
            url,
            "--index",
            index,
            "--lexical",
            "--json",
            "-k",
            "3",
        )
        assert found.returncode == 0 and len(found.stdout.strip().splitlines()) == 3, found.stderr[-2000:]
        _no_secret(secure, done.stdout, done.stderr, found.stdout, found.stderr)

        hits = search(client, index, query, lexical_term_weights, size=3)
        assert [h.doc_id for h in hits] == [
            json.loads(line)["doc_id"] for line in found.stdout.strip().splitlines()
        ]
        assert check_reachable(client, url)["version"]["number"]
        # a client certificate instead of a user: the admin certificate the script made (the node's admin DN)
        admin = make_client(
            OpenSearchConfig(
                url=url,
                ca_certs=secure["RAYSPARSE_OPENSEARCH_CA_CERTS"],
                client_cert=secure["ADMIN_CLIENT_CERT"],
                client_key=secure["ADMIN_CLIENT_KEY"],
            )
        )
        assert admin.count(index=index)["count"] == klue.corpus.num_rows
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)


def test_ray_workers_bulk_write_over_tls_with_the_configured_user(secure, klue, ray_local, no_auth_env):
    from raysparse.opensearch import encoder_identity, index_corpus_on_workers, lexical_encoder_factory

    index = f"raysparse-secure-{uuid.uuid4().hex[:8]}"
    cfg = _writer_cfg(secure, bulk_batch_size=50)
    client = make_client(cfg)
    try:
        report = index_corpus_on_workers(
            klue,
            lexical_encoder_factory("bigram"),
            cfg,
            index=index,
            encoder=encoder_identity(lexical_analyzer="bigram"),
            num_actors=2,
            batch_size=40,
        )
        assert report.indexed == report.doc_count == klue.corpus.num_rows and report.writers == 2
    finally:
        client.indices.delete(index=index, ignore_unavailable=True)


def test_wrong_password_is_one_clear_line_and_never_retried(
    secure, no_auth_env, tmp_path, capfd, monkeypatch
):
    url = secure["RAYSPARSE_OPENSEARCH_URL"]
    wrong = "not-the-password-" + uuid.uuid4().hex
    client = make_client(_writer_cfg(secure, password=wrong))
    sent = _requests(client)
    with pytest.raises(AccessDenied) as err:
        client.indices.create(index="raysparse-never")
    assert sent == ["PUT /raysparse-never"]  # one request: a 401 is not retried
    assert url in str(err.value) and "HTTP 401" in str(err.value) and "raysparse_writer" in str(err.value)
    assert wrong not in str(err.value)

    env = {**_writer_env(secure), "RAYSPARSE_OPENSEARCH_PASSWORD": wrong}
    del env["RAYSPARSE_OPENSEARCH_PASSWORD_FILE"]
    proc = _cli(
        capfd,
        monkeypatch,
        env,
        "--debug",
        "search",
        "서울",
        "--url",
        url,
        "--index",
        "raysparse-any",
        "--lexical",
    )
    line = proc.stderr.strip().splitlines()[-1]  # --debug: the traceback, then the line
    assert proc.returncode == 2 and url in line and "HTTP 401" in line
    assert wrong not in proc.stdout + proc.stderr  # not even in --debug's traceback
    proc = _cli(
        capfd, monkeypatch, env, "search", "서울", "--url", url, "--index", "raysparse-any", "--lexical"
    )
    line = _one_line(proc)
    assert url in line and "wrong user name or password" in line and wrong not in line
    _no_secret(secure, proc.stdout, proc.stderr)


def test_user_without_index_rights_is_one_clear_line(
    secure, klue, shared_data, no_auth_env, capfd, monkeypatch
):
    url = secure["RAYSPARSE_OPENSEARCH_URL"]
    index = f"raysparse-secure-{uuid.uuid4().hex[:8]}"
    writer = make_client(_writer_cfg(secure))
    noaccess = make_client(
        OpenSearchConfig(
            url=url,
            ca_certs=secure["RAYSPARSE_OPENSEARCH_CA_CERTS"],
            username=secure["NOACCESS_USERNAME"],
            password_file=secure["NOACCESS_PASSWORD_FILE"],
        )
    )
    assert check_reachable(noaccess, url)  # authenticated: the user exists, it only lacks index rights
    try:
        create_index(writer, index, index_mapping())
        index_documents(writer, index, klue.corpus.slice(0, 20).to_pylist(), lexical_term_weights)

        sent = _requests(noaccess)
        with pytest.raises(AccessDenied) as err:
            search(noaccess, index, "서울", lexical_term_weights, size=3)
        assert len(sent) == 1  # refused once, not retried
        message = str(err.value)
        assert url in message and f"index {index!r}" in message and "HTTP 403" in message
        assert "indices:data/read/" in message and "raysparse_noaccess" in message

        rows = klue.corpus.slice(20, 30).to_pylist()
        bodies = [
            document_body(r, w, None)[0]
            for r, w in zip(rows, lexical_term_weights([r["text"] for r in rows]), strict=True)
        ]
        with pytest.raises(AccessDenied, match="indices:data/write/bulk"):  # the whole bulk request, at once
            bulk_index(noaccess, index, bodies, batch_size=5)
        assert writer.count(index=index)["count"] == 20

        env = {
            "RAYSPARSE_OPENSEARCH_CA_CERTS": secure["RAYSPARSE_OPENSEARCH_CA_CERTS"],
            "RAYSPARSE_OPENSEARCH_USERNAME": secure["NOACCESS_USERNAME"],
            "RAYSPARSE_OPENSEARCH_PASSWORD_FILE": secure["NOACCESS_PASSWORD_FILE"],
        }
        proc = _cli(capfd, monkeypatch, env, "search", "서울", "--url", url, "--index", index, "--lexical")
        line = _one_line(proc)
        assert url in line and index in line and "raysparse_noaccess" in line and "HTTP 403" in line
        data = str(shared_data / "klue-mrc-odqa" / "validation.jsonl")
        new_index = f"{index}-new"
        proc = _cli(
            capfd,
            monkeypatch,
            env,
            "index",
            "--url",
            url,
            "--index",
            new_index,
            "--lexical",
            "--no-ray",
            "--data-format",
            "squad",
            "--data-path",
            data,
        )
        line = _one_line(proc)
        assert url in line and new_index in line and "HTTP 403" in line
        assert not writer.indices.exists(index=new_index)
        _no_secret(secure, proc.stdout, proc.stderr)
    finally:
        writer.indices.delete(index=index, ignore_unavailable=True)


def test_missing_ca_is_a_clear_tls_error(secure, no_auth_env, tmp_path, capfd, monkeypatch):
    url = secure["RAYSPARSE_OPENSEARCH_URL"]
    cfg = _writer_cfg(secure).model_copy(update={"ca_certs": None})
    client = make_client(cfg)
    sent = _requests(client)
    with pytest.raises(TLSFailure) as err:
        client.info()
    assert len(sent) == 1  # a failed handshake is not retried max_retries times
    assert url in str(err.value) and "certificate verify failed" in str(err.value)
    assert "RAYSPARSE_OPENSEARCH_CA_CERTS" in str(err.value)

    env = {k: v for k, v in _writer_env(secure).items() if k != "RAYSPARSE_OPENSEARCH_CA_CERTS"}
    proc = _cli(
        capfd, monkeypatch, env, "search", "서울", "--url", url, "--index", "raysparse-any", "--lexical"
    )
    line = _one_line(proc)
    assert url in line and "TLS handshake failed" in line and "certificate verify failed" in line

    env["RAYSPARSE_OPENSEARCH_CA_CERTS"] = str(tmp_path / "no-such-ca.pem")
    proc = _cli(
        capfd, monkeypatch, env, "search", "서울", "--url", url, "--index", "raysparse-any", "--lexical"
    )
    line = _one_line(proc)
    assert "opensearch.ca_certs" in line and "no-such-ca.pem" in line
    _no_secret(secure, proc.stdout, proc.stderr)
