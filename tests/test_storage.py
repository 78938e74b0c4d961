"""Shared storage: training and Tune put their Ray storage where ``ray.storage_path`` says, and a run started again
elsewhere resumes from it.

The "NFS mount" is a tmp directory that both runs see under different spellings (a plain path, then a ``file://``
URI, which is how pyarrow's filesystem layer, and so Ray's storage, addresses s3://, gs:// and local storage alike).
Between the two runs Ray is shut down and started again, so the only thing the second run shares with the first is
that directory, as a run on another node of a cluster would. Real Ray Train + DeepSpeed on Korean/English MS MARCO
text from ../shared/data (the tiny backbone and triples of tests/test_train.py).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from test_train import session_inputs

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def storage_inputs(shared_data, tmp_path_factory) -> dict[str, object]:
    return session_inputs(shared_data, tmp_path_factory)  # shared with test_train.py in one session


def _fresh_ray():
    """A new local Ray instance with 2 CPUs (``address="local"``: never someone else's cluster on this machine)."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray


@pytest.fixture
def own_ray():
    yield _fresh_ray()
    import ray

    ray.shutdown()


def _train_cfg(inputs: dict[str, object], storage: str, max_steps: int, name: str):
    from raysparse.config import load_config

    return load_config(
        None,
        [
            *inputs["model_overrides"],
            f"name={name}",
            f"ray.storage_path={storage}",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
            "train.deepspeed.zero_stage=2",
            "train.deepspeed.precision=fp32",
            f"train.max_steps={max_steps}",
            "train.checkpoint_every=2",
            "train.eval_every=100",
            "train.batch_size=4",
            "train.negatives_per_query=1",
            "train.max_failures=0",
        ],
    )


def _checkpoint_steps(run_dir: Path) -> dict[str, int]:
    """checkpoint folder name -> the step its trainer state says (Ray Train's run folder on the shared storage)."""
    from raysparse.training import TRAINER_STATE_FILE

    return {
        d.name: json.loads((d / TRAINER_STATE_FILE).read_text())["step"]
        for d in sorted(run_dir.glob("checkpoint_*"))
        if (d / TRAINER_STATE_FILE).is_file()
    }


def _progress_steps(out_dir: Path) -> list[int]:
    path = out_dir / "progress" / "rank0.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_training_checkpoints_go_to_storage_path_and_a_second_run_resumes_from_it(
    storage_inputs, own_ray, tmp_path
):
    from raysparse.model import SparseEncoder
    from raysparse.training import run_training

    nfs = tmp_path / "nfs"  # stands for a mount every node has
    name = f"shared-storage-{uuid.uuid4().hex[:8]}"
    # where the run would land if ray.storage_path were ignored: the default "runs" (cwd) or Ray's ~/ray_results
    elsewhere = [Path("runs").resolve() / name, Path.home() / "ray_results" / name]

    # Run 1: a plain path; 2 steps, a checkpoint at step 2.
    first = run_training(
        _train_cfg(storage_inputs, str(nfs), max_steps=2, name=name),
        storage_inputs["triples"],
        storage_inputs["dev"],
        tmp_path / "node-a",
        sentence_pairs=storage_inputs["sentence_pairs"],
        backbone_dir=storage_inputs["backbone"],
    )
    # the run folder is <name>-<run identity> (a hash of data and settings) directly under the storage
    (run_dir,) = list(nfs.iterdir())
    assert run_dir.name.startswith(f"{name}-"), run_dir
    assert Path(first.checkpoint_path).resolve().is_relative_to(run_dir.resolve()), first.checkpoint_path
    assert set(_checkpoint_steps(run_dir).values()) == {2}, _checkpoint_steps(run_dir)
    assert _progress_steps(tmp_path / "node-a") == [1, 2]
    assert not any(p.exists() for p in elsewhere), "Ray Train wrote outside ray.storage_path"

    # Run 2: a new Ray instance, another output folder, the same storage as a file:// URI and a longer schedule.
    _fresh_ray()
    second = run_training(
        _train_cfg(storage_inputs, nfs.resolve().as_uri(), max_steps=4, name=name),
        storage_inputs["triples"],
        storage_inputs["dev"],
        tmp_path / "node-b",
        sentence_pairs=storage_inputs["sentence_pairs"],
        backbone_dir=storage_inputs["backbone"],
    )
    # it started from the step-2 checkpoint on the shared storage: only steps 3 and 4 ran here
    assert _progress_steps(tmp_path / "node-b") == [3, 4]
    steps = _checkpoint_steps(run_dir)
    assert 4 in steps.values() and len(list(nfs.iterdir())) == 1, (steps, list(nfs.iterdir()))
    assert Path(second.checkpoint_path.removeprefix("file://")).resolve().is_relative_to(run_dir.resolve())
    assert not any(p.exists() for p in elsewhere)
    model = SparseEncoder.from_pretrained(second.model_dir)
    assert (model.encode_queries(["서울 날씨 weather"]) > 0).any()


@pytest.mark.slow
def test_tune_sweep_puts_its_storage_under_storage_path(storage_inputs, own_ray, tmp_path):
    from raysparse.config import load_config
    from raysparse.tune import load_search_space, run_sweep

    nfs = tmp_path / "nfs"
    cfg = load_config(
        None,
        [
            *storage_inputs["model_overrides"],
            f"name=sweep-storage-{uuid.uuid4().hex[:8]}",
            f"ray.storage_path={nfs}",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
            "train.deepspeed.zero_stage=1",
            "train.deepspeed.precision=fp32",
            "train.max_steps=2",
            "train.eval_every=2",
            "train.checkpoint_every=2",
            "train.batch_size=4",
            "train.negatives_per_query=1",
            "tune.num_samples=1",
            "tune.scheduler=fifo",
            "tune.search_alg=random",
        ],
    )
    space = load_search_space(REPO_ROOT / "tuning" / "tiny.yaml", cfg)
    result = run_sweep(
        cfg,
        space,
        storage_inputs["triples"],
        storage_inputs["dev"],
        tmp_path / "sweep",
        sentence_pairs=storage_inputs["sentence_pairs"],
        backbone_dir=storage_inputs["backbone"],
    )
    if len(result.trials) != 1 or result.best_model_dir is None:
        raise RuntimeError(f"the sweep itself failed: {result.trials} {result.failed}")
    experiment_state = list(nfs.rglob("experiment_state-*.json")) if nfs.exists() else []
    trial_checkpoints = list(nfs.rglob("checkpoint_*/trainer_state.json")) if nfs.exists() else []
    assert experiment_state, "Tune's experiment state is not under ray.storage_path"
    assert trial_checkpoints, "the trials' Ray Train checkpoints are not under ray.storage_path"
