"""From the run's checkpoints to one model: pick the best by validation metric, consolidate DeepSpeed ZeRO shards
(or the DDP state) into an fp32 Hugging Face layout model with the encoder's priors and encoding spec.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from raysparse.config import TrainConfig
from raysparse.training.backends import DS_TAG, TORCH_STATE_FILE
from raysparse.training.loop import HF_SUBDIR, VAL_METRIC, WRAPPER_PREFIX

log = logging.getLogger(__name__)


def consolidate_checkpoint(
    checkpoint_dir: str | Path, out_model_dir: str | Path, train_cfg: TrainConfig
) -> Path:
    """Write an fp32 encoder (HF layout; sparse or dense, as saved) from a training checkpoint directory.

    ZeRO-1/2/3: the fp32 master weights rebuilt by ``get_fp32_state_dict_from_zero_checkpoint`` (the module's own
    weights are bf16/fp16 copies). ZeRO-0: DeepSpeed keeps no consolidatable fp32 copy, so the module weights saved
    by rank 0 are upcast (bf16 precision is lost there; use stage >= 1 when that matters). DDP: fp32 module weights.
    """
    import torch

    from raysparse.evaluation.core import load_encoder

    ckpt = Path(checkpoint_dir)
    # a SparseEncoder, or a DenseEncoder (model.kind dense): the directory says which
    model = load_encoder(str(ckpt / HF_SUBDIR)).float()
    ds = train_cfg.deepspeed
    if ds.enabled and ds.zero_stage >= 1:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=DS_TAG)
    elif not ds.enabled:
        state = torch.load(ckpt / TORCH_STATE_FILE, map_location="cpu", weights_only=True)["model"]
    else:
        state = None
    if state is not None:
        state = {k.removeprefix(WRAPPER_PREFIX): v.float() for k, v in state.items()}
        result = model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"checkpoint {ckpt}: unexpected parameters {result.unexpected_keys[:5]}")
        _check_missing_are_tied(model, result.missing_keys, ckpt)
    from raysparse.outputs import atomic_target

    out = Path(out_model_dir)
    with atomic_target(
        out
    ) as tmp:  # OUT/model appears complete or not at all (a killed run leaves .model.partial)
        model.save_pretrained(str(tmp))
    return out


def _check_missing_are_tied(model: Any, missing: list[str], ckpt: Path) -> None:
    """A checkpoint may store a tied weight once (its twin is restored through the tie); anything else missing is
    an error, because silently keeping the backbone's initial weights would ship an untrained layer."""
    params = dict(model.named_parameters(remove_duplicate=False))
    owners: dict[int, int] = {}
    for p in params.values():
        owners[p.data_ptr()] = owners.get(p.data_ptr(), 0) + 1
    untied = [m for m in missing if m in params and owners[params[m].data_ptr()] < 2]
    if untied:
        raise ValueError(f"checkpoint {ckpt}: parameters missing from the checkpoint: {untied[:5]}")


def read_history(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "history.jsonl"
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[record["step"]] = (
                record  # a step re-run after a restart replaces the lost attempt's record
            )
    return [by_step[s] for s in sorted(by_step)]


def pick_best(candidates: list[tuple[Any, dict[str, Any]]]) -> tuple[Any, dict[str, Any]]:
    """The checkpoint with the best validation nDCG; without validation, the latest."""
    scored = [c for c in candidates if c[1].get(VAL_METRIC) is not None]
    if scored:
        return max(scored, key=lambda c: (c[1][VAL_METRIC], c[1].get("step", 0)))
    return max(candidates, key=lambda c: c[1].get("step", 0))
