"""The dense bi-encoder trained by the sparse model's own pipeline: the same triples (real MS MARCO ko/en text), the
same Ray Train + DeepSpeed loop (``model.kind: dense`` switches the encoder and the objective, nothing else), the
same checkpoint consolidation and validation through raysparse.evaluation."""

from __future__ import annotations

import pytest
from test_train import session_inputs


@pytest.fixture(scope="module")
def ray_inputs(shared_data, tmp_path_factory) -> dict[str, object]:
    return session_inputs(shared_data, tmp_path_factory)  # the tiny backbone + triples test_train.py builds


@pytest.fixture
def own_ray():
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_dense_model_trains_on_ray_train_deepspeed_and_consolidates(ray_inputs, own_ray, tmp_path):
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from raysparse.config import load_config
    from raysparse.dense import DenseEncoder, build_dense_encoder, is_dense_dir
    from raysparse.training import DS_TAG, run_training

    steps = 30  # ~one pass over the 240 training triples at batch 8
    cfg = load_config(
        None,
        [
            *ray_inputs["model_overrides"],
            "model.kind=dense",
            "model.pooling=mean",
            "name=dense-train",
            f"ray.storage_path={tmp_path / 'storage'}",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
            "train.deepspeed.zero_stage=2",
            "train.deepspeed.precision=fp32",
            f"train.max_steps={steps}",
            f"train.checkpoint_every={steps}",
            f"train.eval_every={steps}",
            "train.eval_at_start=true",
            "train.batch_size=8",
            "train.lr=1e-3",
            "train.negatives_per_query=1",
        ],
    )
    # the backbone stage's output for kind dense: the same masked-LM backbone behind a pooling head
    backbone, _ = build_dense_encoder(ray_inputs["backbone"], cfg.model, tmp_path / "dense-backbone")
    result = run_training(
        cfg,
        ray_inputs["triples"],
        ray_inputs["dev"],
        tmp_path / "out",
        sentence_pairs=ray_inputs["sentence_pairs"],
        backbone_dir=backbone,
    )
    history = result.history
    assert [h["step"] for h in history] == list(range(steps + 1))  # step 0 = the untrained encoder
    trained_steps = [h for h in history if h["step"] > 0]
    assert all(torch.isfinite(torch.tensor(h["loss/ranking"])) for h in trained_steps)
    assert all(h["loss/cross_lingual"] > 0 for h in trained_steps)  # the parallel pairs reached the loss
    assert "loss/sparsity_query" not in trained_steps[0]  # the dense objective, not the sparse one
    # it learns: the InfoNCE loss of the last steps is well below the first steps' (same triples, one pass)
    first = sum(h["loss/ranking"] for h in trained_steps[:5]) / 5
    last = sum(h["loss/ranking"] for h in trained_steps[-5:]) / 5
    assert last < 0.8 * first, f"ranking loss {first:.3f} -> {last:.3f}"
    start, end = history[0]["val/ndcg@10"], history[-1]["val/ndcg@10"]
    assert 0.0 < start <= 1.0 and 0.0 < end <= 1.0  # validated through raysparse.evaluation (dense index)

    assert is_dense_dir(result.model_dir)
    for name in ("modules.json", "1_Pooling/config.json", "model.safetensors"):
        assert (result.model_dir / name).is_file(), name
    trained = DenseEncoder.from_pretrained(result.model_dir)
    initial = DenseEncoder.from_pretrained(backbone)
    fp32 = get_fp32_state_dict_from_zero_checkpoint(result.checkpoint_path, tag=DS_TAG)
    trained_sd, initial_sd = trained.state_dict(), initial.state_dict()
    changed = 0
    for key, value in fp32.items():
        name = key.removeprefix("encoder.")
        torch.testing.assert_close(trained_sd[name], value.float(), rtol=0, atol=0)
        changed += not torch.equal(trained_sd[name], initial_sd[name])
    assert changed > len(fp32) // 2, f"only {changed}/{len(fp32)} parameters changed"
    assert result.best_metrics["val/ndcg@10"] == pytest.approx(end)
