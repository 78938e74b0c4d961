"""Ray Train + DeepSpeed on 2 workers: a worker dies once mid-run, Ray restarts the group, the loop resumes from
the last checkpoint and finishes at max_steps with no step lost beyond the checkpoint interval.

Continuity is checked from what the workers did, not from what they say: with dropout off, the loss a rank records
for a step is a function of the model/optimizer state and of the batch only, so a step re-run after the restart must
give the loss of its first run. That holds only if the checkpoint restored the state exactly AND the data order
continued at that step (a restarted sampler would feed another batch and give another loss)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_train import session_inputs


@pytest.fixture(scope="module")
def ray_inputs(shared_data, tmp_path_factory) -> dict[str, object]:
    return session_inputs(shared_data, tmp_path_factory)  # shared with test_train.py in one session


@pytest.fixture
def own_ray():
    """A fresh local Ray with 2 CPUs (``address="local"``: never join a cluster someone else started here)."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _steps(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_two_workers_zero2_survive_a_worker_crash_and_resume(ray_inputs, own_ray, tmp_path):
    import torch

    from raysparse.config import load_config
    from raysparse.model import SparseEncoder
    from raysparse.training import TRAINER_STATE_FILE, run_training

    max_steps, every, fail_at = 5, 2, 3
    cfg = load_config(
        None,
        [
            *ray_inputs["model_overrides"],
            "model.lexical_prior=5",
            "name=crash-resume",
            f"ray.storage_path={tmp_path / 'storage'}",
            "train.num_workers=2",
            "train.cpus_per_worker=1",
            "train.deepspeed.zero_stage=2",
            "train.deepspeed.precision=bf16",
            f"train.max_steps={max_steps}",
            f"train.checkpoint_every={every}",
            "train.eval_every=100",
            "train.batch_size=4",
            "train.negatives_per_query=1",
            "train.max_failures=1",
        ],
    )
    # the shared tiny backbone without dropout: a step's loss then depends only on the state and the batch
    backbone = tmp_path / "backbone-no-dropout"
    shutil.copytree(ray_inputs["backbone"], backbone)
    hf_config = json.loads((backbone / "config.json").read_text())
    hf_config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (backbone / "config.json").write_text(json.dumps(hf_config))
    marker = tmp_path / "crashed-once"
    out = tmp_path / "out"
    result = run_training(
        cfg,
        ray_inputs["triples"],
        ray_inputs["dev"],
        out,
        sentence_pairs=ray_inputs["sentence_pairs"],
        backbone_dir=str(backbone),
        extra_loop_config={"fail_at_step": fail_at, "fail_marker": str(marker)},
    )
    assert marker.read_text() == str(fail_at), "the fault was never injected: this test would prove nothing"

    for rank in (0, 1):
        records = _steps(out / "progress" / f"rank{rank}.jsonl")
        steps = [r["step"] for r in records]
        # first attempt ran 1..fail_at, the restarted group resumed after the last checkpoint (step 2) and finished
        last_ckpt = (fail_at // every) * every
        assert steps == [*range(1, fail_at + 1), *range(last_ckpt + 1, max_steps + 1)], steps
        assert fail_at - last_ckpt <= every  # nothing lost beyond one checkpoint interval
        pids = [r["pid"] for r in records]
        assert pids[fail_at] != pids[fail_at - 1], "the resumed steps must come from a restarted worker"
        # steps last_ckpt+1..fail_at ran twice: before the crash and after the resume, on the same batch and state
        first = {r["step"]: r["loss"] for r in records[:fail_at]}
        again = {r["step"]: r["loss"] for r in records[fail_at:]}
        rerun = range(last_ckpt + 1, fail_at + 1)
        assert list(rerun), "the crash must fall after a checkpoint for a step to be re-run"
        for step in rerun:
            assert again[step] == pytest.approx(first[step], rel=1e-4, abs=1e-6), (rank, step, first, again)
        # the check can tell batches apart: other steps (other batches, other states) give other losses
        others = [loss for step, loss in first.items() if step not in rerun]
        assert all(abs(loss - first[s]) > 1e-3 * abs(first[s]) for loss in others for s in rerun), first
    # the merged history has every step once, and the final checkpoint holds the final step
    assert [h["step"] for h in result.history] == list(range(1, max_steps + 1))
    assert all(torch.isfinite(torch.tensor(h["loss/total"])) for h in result.history)
    state = json.loads((Path(result.checkpoint_path) / TRAINER_STATE_FILE).read_text())
    assert 1 <= state["step"] <= max_steps and "val/ndcg@10" in result.best_metrics
    # both ranks' ZeRO-2 partitions reached the merged checkpoint directory
    ds_files = sorted(p.name for p in (Path(result.checkpoint_path) / "ds").iterdir())
    assert sum("optim_states" in f for f in ds_files) == 2, ds_files
    model = SparseEncoder.from_pretrained(result.model_dir)
    reps = model.encode_queries(["서울 날씨 weather"])
    assert torch.isfinite(reps).all() and (reps > 0).any()
