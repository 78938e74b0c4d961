"""Every command on bad input: the one line it prints (file, line/record/field or URL), its exit code, and what it
leaves on disk. Inputs are the shipped Korean/English sample and ../shared/data files, copied and then broken the way
users break them (a non-UTF-8 byte, a truncated archive, qrels naming ids that are not in the corpus, ...).

Commands run in-process through ``raysparse.cli.main`` (the same entry point as the console script) with ``--no-ray``
where they have it, so the suite stays fast; the policy itself lives in raysparse/errors.py."""

from __future__ import annotations

import bz2
import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysparse.cli import main
from raysparse.data.sample import sample_dir


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture
def beir(tmp_path) -> Path:
    """A writable copy of the shipped BEIR sample (Korean and English)."""
    root = tmp_path / "beir"
    shutil.copytree(sample_dir(), root, ignore=shutil.ignore_patterns("*.md", "glossary.tsv", "parallel.tsv"))
    return root


def _break_line(path: Path, line_no: int) -> None:
    """Put a byte that is not UTF-8 into line ``line_no`` (1-based) of a text file."""
    lines = path.read_bytes().split(b"\n")
    lines[line_no - 1] = lines[line_no - 1][:20] + b"\xff\xfe" + lines[line_no - 1][20:]
    path.write_bytes(b"\n".join(lines))


# ---------------------------------------------------------------------------------------------------- data readers


def test_non_utf8_byte_is_reported_on_its_own_line(beir, capsys, tmp_path):
    _break_line(beir / "corpus.jsonl", 11)
    code, _, err = run_cli(capsys, "mine", "--beir", str(beir), "--no-ray", "--out", str(tmp_path / "mined"))
    assert code == 2
    assert last_line(err) == (
        f"raysparse mine: {beir / 'corpus.jsonl'} line 11: not UTF-8 text (byte 21 of the line: invalid start byte)"
    )
    assert "Traceback" not in err
    assert not (tmp_path / "mined" / "triples.parquet").exists()


def test_non_utf8_byte_deep_in_a_large_file_names_the_right_line(tmp_path):
    """A text stream decodes 8 KiB chunks: the error used to name the line where the chunk began (1968 for 2000)."""
    from raysparse.data.common import iter_jsonl
    from raysparse.data.errors import DataFormatError

    src = Path(__file__).resolve().parents[1] / "raysparse" / "resources" / "sample" / "corpus.jsonl"
    lines = [line for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(lines[i % len(lines)] for i in range(2000)) + "\n", encoding="utf-8")
    _break_line(big, 2000)
    with pytest.raises(DataFormatError, match=rf"^{big} line 2000: not UTF-8"):
        for _ in iter_jsonl(big):
            pass


@pytest.mark.parametrize("kind", ["gzip", "bz2"])
def test_compressed_jsonl_reads_like_plain_and_a_truncated_one_names_the_file(
    kind, tmp_path, capsys, shared_data
):
    from raysparse.data.common import iter_jsonl

    src = shared_data / "corpora" / "petitions-dated" / "petitions_2017-08"
    data = src.read_bytes()
    packed = gzip.compress(data) if kind == "gzip" else bz2.compress(data)
    good = tmp_path / f"petitions.jsonl.{'gz' if kind == 'gzip' else 'bz2'}"
    good.write_bytes(packed)
    plain = [rec for _, rec in iter_jsonl(src)]
    assert [rec for _, rec in iter_jsonl(good)] == plain

    truncated = tmp_path / f"truncated.jsonl.{'gz' if kind == 'gzip' else 'bz2'}"
    truncated.write_bytes(packed[: len(packed) // 2])
    out = tmp_path / "dated"
    code, _, err = run_cli(
        capsys, "corpus", "dated", "--path", str(truncated), "--format", "jsonl", "--out", str(out)
    )
    assert code == 2, err
    line = last_line(err)
    assert line.startswith(f"raysparse corpus dated: {truncated} after line "), line
    assert f"truncated or corrupt {kind} data" in line
    assert "Traceback" not in err
    assert not out.exists()


def test_corrupt_parquet_page_names_the_file(tmp_path, capsys):
    from raysparse.data.common import iter_parquet
    from raysparse.data.errors import DataFormatError

    table = pa.table({"text": [f"한국어 문서 {i} " * 20 for i in range(5000)]})
    path = tmp_path / "docs.parquet"
    pq.write_table(table, path, compression="snappy", data_page_size=4096)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = b"\x00" * 64  # a damaged page in the middle; the footer stays readable
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match=rf"^{path} after row \d+: corrupt Parquet data"):
        for _ in iter_parquet(path, batch_size=256):
            pass
    # the trainer's reader: one line naming the file, exit 2
    code, _, err = run_cli(capsys, "train", "--triples", str(path), "--out", str(tmp_path / "out"))
    assert code == 2
    assert last_line(err).startswith(f"raysparse train: triples: {path} is not readable Parquet"), err
    assert "Traceback" not in err


def test_non_utf8_parallel_tsv_and_augment_queries_json_name_file_and_line(tmp_path, capsys):
    from raysparse.data.bilingual import read_parallel_tsv
    from raysparse.data.errors import DataFormatError

    tsv = tmp_path / "parallel.tsv"
    shutil.copy(sample_dir() / "parallel.tsv", tsv)
    _break_line(tsv, 7)
    with pytest.raises(DataFormatError, match=rf"^{tsv} line 7: not UTF-8"):
        read_parallel_tsv(tsv)

    queries = tmp_path / "queries.json"
    texts = [
        json.loads(line)["text"] for line in (sample_dir() / "queries.jsonl").read_text("utf-8").splitlines()
    ]
    queries.write_text(json.dumps(texts[:10], ensure_ascii=False, indent=1), encoding="utf-8")
    _break_line(queries, 5)
    glossary = str(sample_dir() / "glossary.tsv")
    code, _, err = run_cli(capsys, "augment", "--queries", str(queries), "--dictionary", glossary, "--no-ray")
    assert code == 2
    assert last_line(err).startswith(f"raysparse augment: {queries} line 5: not UTF-8 text"), err
    assert "Traceback" not in err


def test_mine_out_then_train_triples_reads_the_directory(beir, tmp_path, capsys):
    """The README's flow: `mine --out D` writes triples/ (Parquet shards) and mining_report.json; `train --triples D`
    must read the Parquet and ignore the JSON report (it used to read mining_report.json as Parquet and fail)."""
    from raysparse.mining import TRIPLES_FILE
    from raysparse.training import load_triples

    mined = tmp_path / "mined"
    code, _, err = run_cli(capsys, "mine", "--beir", str(beir), "--no-ray", "--out", str(mined))
    assert code == 0, err
    assert (mined / "mining_report.json").is_file()
    examples = load_triples(str(mined))
    assert len(examples) == pq.read_table(mined / TRIPLES_FILE).num_rows > 0


# ---------------------------------------------------------------------------------------------------- empty results


def test_qrels_naming_unknown_ids_is_an_empty_result_not_success(beir, tmp_path, capsys):
    qrels = beir / "qrels" / "test.tsv"
    rows = qrels.read_text(encoding="utf-8").splitlines()
    qrels.write_text(
        "\n".join([rows[0], *(r.replace("\ts", "\tunknown-s") for r in rows[1:])]) + "\n", encoding="utf-8"
    )
    code, _, err = run_cli(capsys, "mine", "--beir", str(beir), "--no-ray", "--out", str(tmp_path / "m"))
    assert code == 2
    assert "raysparse mine:" in last_line(err) and "empty result" in last_line(err) and "--allow-empty" in err
    code, _, _ = run_cli(
        capsys, "mine", "--beir", str(beir), "--no-ray", "--out", str(tmp_path / "m2"), "--allow-empty"
    )
    assert code == 0

    code, _, err = run_cli(
        capsys, "evaluate", "--beir", str(beir), "--bm25", "bigram", "--out", str(tmp_path / "e")
    )
    assert code == 2
    assert "no query has a relevant document in the corpus" in last_line(err), err
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_corpus_dated_with_a_wrong_date_field_is_an_empty_result(shared_data, tmp_path, capsys):
    src = shared_data / "corpora" / "petitions-dated" / "petitions_2017-08"
    out = tmp_path / "dated"
    code, _, err = run_cli(
        capsys,
        "corpus",
        "dated",
        "--path",
        str(src),
        "--format",
        "jsonl",
        "--date-field",
        "started",
        "--out",
        str(out),
    )
    assert code == 2
    assert "have no date in field 'started'" in last_line(err), err
    assert not out.exists()
    code, _, err = run_cli(
        capsys,
        "corpus",
        "dated",
        "--path",
        str(src),
        "--format",
        "jsonl",
        "--date-field",
        "begin",
        "--out",
        str(out),
    )
    assert code == 0, err


def test_empty_text_to_encode_or_query_to_search_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "encode", "--model", str(tmp_path / "no-model"), "  ")
    assert code == 2 and "is empty" in last_line(err), err
    # refused before any connection is tried (the URL points nowhere)
    code, _, err = run_cli(capsys, "search", "", "--url", "http://127.0.0.1:9", "--lexical")
    assert (
        code == 2 and last_line(err) == "raysparse search: the query is empty (give some text to search for)"
    )


# ---------------------------------------------------------------------------------------------------- policy


def test_missing_file_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = tmp_path / "nope" / "triples.parquet"
    code, _, err = run_cli(capsys, "train", "--triples", str(missing), "--out", str(tmp_path / "o"))
    assert code == 2 and last_line(err) == f"raysparse train: triples: {missing} does not exist"
    assert "Traceback" not in err
    code, _, err = run_cli(
        capsys, "--debug", "train", "--triples", str(missing), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "Traceback" in err and last_line(err).endswith("does not exist")
    code, _, err = run_cli(
        capsys, "train", "--triples", str(missing), "--out", str(tmp_path / "o"), "--debug"
    )
    assert code == 2 and "Traceback" in err


def test_internal_errors_are_not_mistaken_for_user_errors():
    import numpy as np

    from raysparse.errors import InputError, user_error_message

    try:
        np.zeros(3).reshape(2, 2)  # a ValueError raised inside a library: our bug, keep the traceback
    except ValueError as err:
        assert user_error_message(err) is None
    assert user_error_message(RuntimeError("boom")) is None
    assert user_error_message(KeyError("x")) is None
    assert user_error_message(InputError("f.jsonl line 3: field 'text' is missing")) == (
        "f.jsonl line 3: field 'text' is missing"
    )
    assert user_error_message(ConnectionRefusedError(111, "Connection refused")).startswith("cannot reach")


def test_unreachable_llm_server_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "generate-queries",
        "--beir",
        str(sample_dir()),
        "--model",
        "qwen",
        "--url",
        "http://127.0.0.1:9",
        "--no-ray",
        "--out",
        str(tmp_path / "g"),
    )
    assert code == 2
    assert "http://127.0.0.1:9" in last_line(err) and "not reachable" in last_line(err), err
    assert "Traceback" not in err and not (tmp_path / "g").exists()


# ---------------------------------------------------------------------------------------------------- secrets


def test_a_password_never_shows_in_config_errors_logs_or_dumped_configs(tmp_path, capsys, monkeypatch):
    import logging

    from raysparse.cli import setup_logging
    from raysparse.config import dump_config, load_config

    secret = "hunter2-Kx9"
    code, _, err = run_cli(
        capsys,
        "search",
        "검색",
        "--lexical",
        "--set",
        f"opensearch.password={secret}",
        "--set",
        "opensearch.bulk_batch_size=-1",
    )
    assert code == 2 and "opensearch.bulk_batch_size" in err
    assert secret not in err, err

    cfg = load_config(None, [f"opensearch.password={secret}", "opensearch.username=admin"])
    assert cfg.opensearch.password.get_secret_value() == secret
    assert secret not in repr(cfg) and secret not in str(cfg.model_dump(mode="json"))
    dump_config(cfg, tmp_path / "config.yaml")
    dumped = (tmp_path / "config.yaml").read_text(encoding="utf-8")
    assert secret not in dumped and "password: null" in dumped

    # from a file or the environment instead of the command line
    pw = tmp_path / "pw"
    pw.write_text(secret + "\n", encoding="utf-8")
    assert (
        load_config(None, [f"opensearch.password_file={pw}"]).opensearch.password.get_secret_value() == secret
    )
    monkeypatch.setenv("RAYSPARSE_OPENSEARCH_PASSWORD", secret)
    assert load_config(None, []).opensearch.password.get_secret_value() == secret

    # a log line that happens to carry it (an exception text, a URL with credentials) is scrubbed
    setup_logging()
    handler = logging.getLogger().handlers[0]
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "connect %s as %s", (f"https://admin:{secret}@h", secret), None
    )
    for f in handler.filters:
        f.filter(record)
    assert secret not in record.getMessage(), record.getMessage()

    # a secret override is kept as text (YAML would make 1234 a number)
    assert load_config(None, ["opensearch.password=1234"]).opensearch.password.get_secret_value() == "1234"


# ---------------------------------------------------------------------------------------------------- outputs


def test_evaluate_refuses_a_directory_with_earlier_results_and_overwrite_removes_only_its_own(
    beir, tmp_path, capsys
):
    out = tmp_path / "eval"
    code, _, err = run_cli(capsys, "evaluate", "--beir", str(beir), "--bm25", "bigram", "--out", str(out))
    assert code == 0, err
    (out / "report.md").write_text("stale report of an earlier model run\n", encoding="utf-8")
    (out / "model").mkdir()
    (out / "model" / "metrics.json").write_text("{}", encoding="utf-8")
    (out / "notes.txt").write_text("the user's own file\n", encoding="utf-8")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    code, _, err = run_cli(capsys, "evaluate", "--beir", str(beir), "--bm25", "bigram", "--out", str(out))
    assert code == 2
    assert "holds the results of an earlier run" in last_line(err) and "--overwrite" in last_line(err)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing touched

    code, _, err = run_cli(
        capsys, "evaluate", "--beir", str(beir), "--bm25", "bigram", "--out", str(out), "--overwrite"
    )
    assert code == 0, err
    assert not (out / "report.md").exists() and not (out / "model").exists()  # the stale ones are gone
    assert (out / "notes.txt").read_text(encoding="utf-8") == "the user's own file\n"
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def test_a_write_that_dies_leaves_no_file_that_looks_complete(tmp_path):
    """Outputs are written under a temporary name and renamed: a run killed mid-write (here: an exception while
    writing) leaves the earlier result intact, or nothing, never a truncated file under the final name."""
    from raysparse.mining import TRIPLES_FILE
    from raysparse.outputs import atomic_target

    target = tmp_path / TRIPLES_FILE
    table = pa.table({"query": ["서울 날씨", "부산 맛집"]})
    with atomic_target(target) as tmp:
        pq.write_table(table, tmp)
    assert pq.read_table(target).equals(table)

    with pytest.raises(RuntimeError), atomic_target(target) as tmp:
        tmp.write_bytes(b"PAR1 half a file")
        raise RuntimeError("killed")
    assert pq.read_table(target).equals(table)  # the earlier result, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [TRIPLES_FILE]  # no partial left behind

    model_dir = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_target(model_dir) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed")
    assert not model_dir.exists() and not any(p.name.startswith(".model") for p in tmp_path.iterdir())


def test_a_directory_that_is_not_a_model_is_one_line_naming_it(beir, tmp_path, capsys):
    """Before: transformers' own errors (a traceback about sentencepiece, or "Repo id must be in the form ...")."""
    not_model = tmp_path / "not-a-model"
    not_model.mkdir()
    (not_model / "config.json").write_text("{}", encoding="utf-8")
    missing = tmp_path / "no-such-model"
    for argv, expected in (
        (["encode", "--json", "--model", str(not_model), "검색"], f"{not_model}: not a model directory (no tokenizer"),
        (["evaluate", "--model", str(missing), "--beir", str(beir), "--out", str(tmp_path / "ev")],
         f"{missing}: no such model directory"),
    ):  # fmt: skip
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, err
        assert last_line(err) == f"raysparse {argv[0]}: " + last_line(err).split(": ", 1)[1]
        assert expected in last_line(err) and "Traceback" not in err, err


def test_invalid_yaml_is_one_line_with_its_position(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  lr: [1,\n", encoding="utf-8")
    code, _, err = run_cli(
        capsys, "train", "--config", str(config), "--triples", "x", "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert (
        err.strip()
        == f"raysparse train: {config} line 3, column 1: not valid YAML: "
        + err.strip().split("not valid YAML: ", 1)[1]
    )
    assert "\n" not in err.strip()


def test_an_unreachable_opensearch_prints_no_library_traceback(tmp_path):
    """opensearch-py logs each failed request with urllib3's traceback; the command's one line is all a user sees."""
    import socket
    import subprocess
    import sys

    from raysparse.data.sample import sample_dir

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", "raysparse", "index", "--url", f"http://127.0.0.1:{port}", "--index", "x",
         "--model", str(sample_dir()), "--beir", str(sample_dir())],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().endswith(")"), done.stderr
    assert f"http://127.0.0.1:{port}" in done.stderr.strip().splitlines()[-1]


def test_a_password_in_the_url_never_reaches_the_console(tmp_path, capsys):
    """Before: `raysparse search --url http://admin:PW@host` printed the URL with its password in the error line."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run_cli(
        capsys,
        "search",
        "--url",
        f"http://admin:hunter2-secret@127.0.0.1:{port}",
        "--index",
        "x",
        "--lexical",
        "검색",
    )
    assert code == 2
    assert "hunter2-secret" not in out + err and f"http://admin:***@127.0.0.1:{port}" in err, err
