"""Run identity of training: a run's storage and name come from its output directory and a hash of its data and
settings, so training other triples (or into another --out) from the same working directory never resumes an
unrelated earlier run; the same run resumes, says so, and ``--resume never|auto|must`` makes it explicit."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_train import session_inputs


@pytest.fixture(scope="module")
def inputs(shared_data, tmp_path_factory) -> dict[str, object]:
    return session_inputs(shared_data, tmp_path_factory)


@pytest.fixture(scope="module")
def other_triples(inputs, tmp_path_factory) -> str:
    """Other training data: the same rows in another order, minus the first ten (another mining run)."""
    table = pq.read_table(inputs["triples"])
    table = table.take(list(reversed(range(10, table.num_rows))))
    out = tmp_path_factory.mktemp("other_triples") / "triples.parquet"
    pq.write_table(table, out)
    return str(out)


def _train_args(inputs: dict[str, object], triples: str, out: Path, max_steps: int = 2) -> list[str]:
    sets = [
        *inputs["model_overrides"],
        "train.num_workers=1",
        "train.cpus_per_worker=1",
        "train.deepspeed.enabled=false",
        "train.batch_size=4",
        "train.negatives_per_query=1",
        f"train.max_steps={max_steps}",
        "train.checkpoint_every=2",
        "train.eval_every=100",
        "train.max_failures=0",
        "loss.beta=0",
    ]
    args = ["train", "--triples", triples, "--out", str(out), "--backbone", str(inputs["backbone"])]
    for s in sets:
        args += ["--set", s]
    return args


@pytest.fixture
def own_ray(monkeypatch):
    """One private local Ray for the whole test (``address="local"``: never join a cluster someone else started)."""
    import ray

    ray.shutdown()
    # a loaded 2-core machine can take longer than Ray's defaults to register the raylet and its agents
    monkeypatch.setenv("RAY_raylet_start_wait_time_s", "300")
    monkeypatch.setenv("RAY_agent_register_timeout_ms", "300000")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _cli(args: list[str], caplog, capsys) -> tuple[int, str]:
    """Run ``raysparse ARGS`` in this process; return the exit code and what it said (stderr + log records)."""
    from raysparse.cli import main

    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main(args)
    err = capsys.readouterr().err
    return code, err + "\n".join(r.getMessage() for r in caplog.records)


def _progress_steps(out: Path) -> list[int]:
    path = out / "progress" / "rank0.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def test_identity_follows_data_and_settings_but_not_the_schedule(inputs, other_triples):
    from raysparse.config import load_config
    from raysparse.training import run_identity

    cfg = load_config(None, [*inputs["model_overrides"], "train.max_steps=2"])
    base = run_identity(cfg, inputs["triples"], str(inputs["backbone"]))
    assert base == run_identity(cfg, inputs["triples"], str(inputs["backbone"]))
    assert base != run_identity(cfg, other_triples, str(inputs["backbone"]))
    assert base != run_identity(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": 1e-3})}),
        inputs["triples"],
        str(inputs["backbone"]),
    )
    # a longer schedule of the same training is the same run (it may resume and go on)
    longer = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"max_steps": 8, "checkpoint_every": 4})}
    )
    assert base == run_identity(longer, inputs["triples"], str(inputs["backbone"]))


def test_relative_storage_lives_under_the_output_directory(tmp_path):
    from raysparse.training import resolve_storage

    assert Path(resolve_storage("runs", tmp_path / "out")) == (tmp_path / "out" / "runs").resolve()
    assert resolve_storage(str(tmp_path / "nfs"), tmp_path / "out") == str((tmp_path / "nfs").resolve())
    assert resolve_storage("s3://bucket/runs/", tmp_path) == "s3://bucket/runs"


def test_resume_must_without_a_checkpoint_is_one_line_exit_2(inputs, tmp_path, caplog, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code, err = _cli([*_train_args(inputs, inputs["triples"], out), "--resume", "must"], caplog, capsys)
    assert code == 2, err[-3000:]
    assert "raysparse train: --resume must: no checkpoint of training run raysparse-" in err, err[-3000:]
    assert "Traceback" not in err
    assert not (out / "model").exists()


@pytest.mark.slow
def test_new_triples_into_a_new_out_from_the_same_cwd_do_not_resume_the_old_run(
    inputs, other_triples, tmp_path, own_ray, caplog, capsys, monkeypatch
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code, err = _cli(_train_args(inputs, inputs["triples"], cwd / "out-a"), caplog, capsys)
    assert code == 0, err[-3000:]
    assert _progress_steps(cwd / "out-a") == [1, 2]
    assert not (cwd / "runs").exists(), "checkpoints landed in the working directory, shared by every run"

    # other triples, a new --out, the same working directory: a fresh run that trains every step on the new data
    code, err = _cli(_train_args(inputs, other_triples, cwd / "out-b"), caplog, capsys)
    assert code == 0, err[-3000:]
    assert "resuming" not in err, err[-3000:]
    assert _progress_steps(cwd / "out-b") == [1, 2]
    runs_b = list((cwd / "out-b" / "runs").iterdir())
    assert len(runs_b) == 1 and runs_b[0].name.startswith("raysparse-"), runs_b

    # the same training again with a longer schedule: the same run, resumed at step 2 and announced on the console
    code, err = _cli(_train_args(inputs, other_triples, cwd / "out-b", max_steps=4), caplog, capsys)
    assert code == 0, err[-3000:]
    assert "resuming training run raysparse-" in err and "at step 2" in err, err[-3000:]
    assert _progress_steps(cwd / "out-b") == [1, 2, 3, 4]

    # --resume never: a new run folder beside the old one, every step trained again
    code, err = _cli(
        [*_train_args(inputs, other_triples, cwd / "out-b"), "--resume", "never"], caplog, capsys
    )
    assert code == 0, err[-3000:]
    assert "resuming" not in err
    assert _progress_steps(cwd / "out-b") == [1, 2]
    assert len(list((cwd / "out-b" / "runs").iterdir())) == 2
