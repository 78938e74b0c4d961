"""Training of the sparse encoder on Ray Train with DeepSpeed: one step function, run in one process or on workers.

The modules, in the order a run uses them:

* :mod:`~raysparse.training.examples`: read triples and pairs, sample each worker's rows, collate micro-batches.
* :mod:`~raysparse.training.backends`: DeepSpeed (ZeRO, mixed precision) or plain torch, behind one interface.
* :mod:`~raysparse.training.loop`: ``train_loop_per_worker(config)``, run by ``TorchTrainer`` on every worker.
* :mod:`~raysparse.training.checkpoints`: the best checkpoint, consolidated into an fp32 Hugging Face model.
* :mod:`~raysparse.training.run`: the driver: run identity and resume, ``TorchTrainer``, consolidation.
"""

from raysparse.training.backends import (
    DS_TAG,
    cpu_has_native_bf16,
    deepspeed_config,
    lr_lambda,
    resolve_precision,
)
from raysparse.training.checkpoints import consolidate_checkpoint
from raysparse.training.examples import Collator, TrainingExamples, load_pairs, load_triples, sample_rows
from raysparse.training.loop import (
    TRAINER_STATE_FILE,
    VAL_METRIC,
    evaluate_dev,
    run_loop,
    train_loop_per_worker,
)
from raysparse.training.run import (
    TrainResult,
    check_resume_mode,
    resolve_storage,
    run_identity,
    run_training,
    train_single_process,
)

__all__ = [
    "DS_TAG",
    "TRAINER_STATE_FILE",
    "VAL_METRIC",
    "Collator",
    "TrainResult",
    "TrainingExamples",
    "check_resume_mode",
    "consolidate_checkpoint",
    "cpu_has_native_bf16",
    "deepspeed_config",
    "evaluate_dev",
    "load_pairs",
    "load_triples",
    "lr_lambda",
    "resolve_precision",
    "resolve_storage",
    "run_identity",
    "run_loop",
    "run_training",
    "sample_rows",
    "train_loop_per_worker",
    "train_single_process",
]
