"""Where results go inside a Ray job, and `raysparse pull` (issue #18), without a cluster: the pieces the job test
(tests/test_job_submit.py) runs end to end. Real files, real pyarrow filesystems (local paths and file:// URIs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysparse.cli import main
from raysparse.config import ConfigError
from raysparse.storage import (
    RESULTS_SUBDIR,
    in_ray_job,
    local_model,
    portable,
    pull,
    resolve_output,
    storage_for_outputs,
)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fake_model(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab": "한국어"}), encoding="utf-8")
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (path / "sub" / "tokenizer.json").write_text('{"v": "검색"}', encoding="utf-8")
    return path


def test_relative_output_outside_a_job_stays_where_it_was(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loc = resolve_output("outputs/x", "runs", "raysparse run", on_cluster=False)
    assert loc.local == tmp_path / "outputs" / "x" and loc.remote is None
    assert loc.location("model") == str(tmp_path / "outputs" / "x" / "model")


def test_relative_output_inside_a_job_goes_to_storage_or_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = tmp_path / "shared"
    loc = resolve_output("outputs/x", str(storage), "raysparse run", on_cluster=True)
    assert loc.local == storage / RESULTS_SUBDIR / "outputs" / "x" and loc.remote is None
    # an absolute --out is the user's choice and is kept
    assert (
        resolve_output(str(tmp_path / "abs"), "runs", "raysparse run", on_cluster=True).local
        == tmp_path / "abs"
    )
    # a relative storage path would land in the working-dir copy too: one clear line naming both ways out
    with pytest.raises(ConfigError) as err:
        resolve_output("outputs/x", "runs", "raysparse run", on_cluster=True)
    message = str(err.value)
    assert "\n" not in message
    assert "'outputs/x'" in message and "absolute --out" in message and "ray.storage_path" in message
    # a relative ray.storage_path then follows the outputs instead of the working directory
    assert storage_for_outputs("runs", loc) == str(loc.local / "runs")
    assert storage_for_outputs("s3://b/p", loc) == "s3://b/p"


def test_job_detection_reads_the_job_supervisors_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.delenv("RAY_JOB_SUBMISSION_ID", raising=False)
    assert not in_ray_job()
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {}}')  # what Ray's job supervisor sets
    assert in_ray_job()
    with pytest.raises(ConfigError):
        resolve_output("outputs/x", "runs", "raysparse run")  # detection, not the test override


def test_uri_storage_writes_locally_then_publishes(tmp_path):
    bucket = tmp_path / "bucket"
    uri = f"file://{bucket}"
    loc = resolve_output("outputs/x", uri, "raysparse train", on_cluster=True)
    assert loc.remote == f"{uri}/{RESULTS_SUBDIR}/outputs/x"
    assert loc.location("model") == f"{uri}/{RESULTS_SUBDIR}/outputs/x/model"
    _fake_model(loc.local / "model")
    loc.publish()
    published = bucket / RESULTS_SUBDIR / "outputs" / "x" / "model"
    assert _tree(published) == _tree(loc.local / "model")


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_pull_round_trips_a_model(tmp_path, as_uri, capsys):
    src = _fake_model(tmp_path / "storage" / "results" / "m" / "model")
    location = f"file://{src}" if as_uri else str(src)
    dest = tmp_path / "laptop" / "model"
    assert main(["pull", location, "--to", str(dest)]) == 0
    assert capsys.readouterr().out.strip() == f"pulled: {dest}"
    assert _tree(dest) == _tree(src)
    # never over a user's non-empty directory silently
    assert main(["pull", location, "--to", str(dest)]) == 2
    assert "already exists" in capsys.readouterr().err
    (src / "config.json").write_text("{}")
    assert main(["pull", location, "--to", str(dest), "--force"]) == 0
    assert _tree(dest) == _tree(src)
    # a single file (what `metrics:` prints)
    assert pull(location + "/config.json", tmp_path / "one.json").read_text() == "{}"


def test_pull_of_nothing_is_one_line(tmp_path, capsys):
    assert main(["pull", f"file://{tmp_path}/missing", "--to", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysparse pull: nothing at file://") and "\n" not in err


def test_local_model_accepts_paths_and_uris(tmp_path):
    src = _fake_model(tmp_path / "m")
    assert local_model(str(src)) == str(src)
    assert local_model(f"file://{src}") == str(src)


def test_portable_rewrites_machine_paths():
    text = (
        "python jobs/x.py --out /tmp/syn/loop --data /work/shared/data/corpora/p --glossary "
        "/work/shared/data/bilingual/k.tsv --report /tmp/encoding_idle.md"
    )
    assert portable(text, {"/tmp/syn": "OUT"}) == (
        "python jobs/x.py --out OUT/loop --data ../shared/data/corpora/p --glossary ../shared/data/bilingual/k.tsv "
        "--report OUT/encoding_idle.md"
    )
    repo = Path(__file__).resolve().parents[1]
    assert portable(f"see {repo}/docs/training.md") == "see docs/training.md"


def test_multi_node_detection_never_starts_ray_for_a_local_run(monkeypatch):
    import ray

    from raysparse.storage import multi_node_cluster

    ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # exported for `ray job submit` on a laptop
    assert not multi_node_cluster(None)
    assert not multi_node_cluster("http://127.0.0.1:8265")
    assert not ray.is_initialized()


@pytest.mark.slow
def test_multi_node_cluster_counts_as_a_cluster(tmp_path, monkeypatch):
    """Attached to a real 2-node Ray cluster (ray.cluster_utils.Cluster) a relative output is treated as in a job."""
    import ray
    from ray.cluster_utils import Cluster

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        with pytest.raises(ConfigError, match="is relative"):
            resolve_output("outputs/x", "runs", "raysparse run")
        loc = resolve_output("outputs/x", str(tmp_path / "nfs"), "raysparse run")
        assert loc.local == tmp_path / "nfs" / RESULTS_SUBDIR / "outputs" / "x"
    finally:
        ray.shutdown()
        cluster.shutdown()
