"""Driver side: :func:`run_training` (what the pipeline and Tune call) starts the TorchTrainer, then consolidates the
best checkpoint into ``out_dir/model``.

Resume: Ray Train V2 (the default in ray 2.60) rejects ``TorchTrainer(resume_from_checkpoint=...)``; the loop reads
``ray.train.get_checkpoint()`` instead, which is set after a worker-failure restart and when a run is started again
with the same ``RunConfig(name, storage_path)``. So the run's name and storage *are* its identity (:func:`run_identity`):
a relative ``ray.storage_path`` is taken from the output directory, and the name carries a hash of the training data,
the backbone and every setting that changes what is learnt. Training other triples, or into another output directory,
is therefore another run; only the same run resumes, it says so, and ``resume`` ("never" | "auto" | "must") makes
the choice explicit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from raysparse.config import RaySparseConfig
from raysparse.schemas import RetrievalData
from raysparse.training.backends import deepspeed_config, set_default_env
from raysparse.training.checkpoints import consolidate_checkpoint, pick_best, read_history
from raysparse.training.examples import TrainingExamples, load_triples
from raysparse.training.loop import TRAINER_STATE_FILE, VAL_METRIC, LoopIO, run_loop, train_loop_per_worker

log = logging.getLogger(__name__)

RESUME_MODES = ("never", "auto", "must")


# Settings that may change between a run and its resumption without making it another run: the schedule's length,
# how often it evaluates/saves, and where/how many resources it gets (the data order depends on num_workers, so that
# one stays in the identity).
RESUMABLE_TRAIN_KEYS = frozenset(
    {
        "max_steps",
        "eval_every",
        "checkpoint_every",
        "early_stopping_patience",
        "max_failures",
        "keep_checkpoints",
        "use_gpu",
        "cpus_per_worker",
        "resources",
    }
)


@dataclass
class TrainResult:
    """Where the trained model is and how training went."""

    model_dir: Path  # fp32 Hugging Face layout SparseEncoder (out_dir/model)
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_path: str | None = None  # the checkpoint the model was consolidated from


def _prepare_backbone(
    cfg: RaySparseConfig, examples: TrainingExamples, out_dir: Path, backbone_dir: str | None
) -> str:
    """The backbone the workers load: ``backbone_dir`` as given (the pipeline built it with its priors), else the
    configured one (a local backbone built from the training texts) with the priors and spec attached."""
    if backbone_dir:
        return str(backbone_dir)
    from raysparse.backbone import build_encoder, build_local_backbone

    target = out_dir / "backbone"
    if (target / "raysparse.json").is_file():
        return str(target)
    texts = examples.texts()
    path = cfg.model.backbone
    if path == "local-small":
        path = build_local_backbone(texts, cfg.model, str(out_dir / "backbone-mlm"))
    documents = list(dict.fromkeys(t for group in (*examples.positives, *examples.negatives) for t in group))
    path, _ = build_encoder(path, cfg.model, target, background_texts=texts, documents=documents)
    return path


def _loop_config(
    cfg: RaySparseConfig,
    triples: Any,
    dev: RetrievalData | None,
    out_dir: Path,
    backbone: str,
    term_pairs: Any,
    sentence_pairs: Any,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    def absolute(x: Any) -> Any:
        return str(Path(x).resolve()) if isinstance(x, (str, Path)) and "://" not in str(x) else x

    return {
        "cfg": cfg.model_dump(mode="json"),
        "triples": absolute(triples),
        "dev": dev,
        "out_dir": str(out_dir.resolve()),
        "backbone": absolute(backbone) if Path(str(backbone)).exists() else backbone,
        "term_pairs": absolute(term_pairs),
        "sentence_pairs": absolute(sentence_pairs),
        "use_gpu": cfg.train.use_gpu,
        **(extra or {}),
    }


def _input_digest(source: Any) -> str:
    """Content hash of a training input: a file or directory (contents), a table (its rows), a URI (its name)."""
    from raysparse.pipeline import file_digest, fingerprint

    if source is None:
        return "-"
    if isinstance(source, pa.Table):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, source.schema) as writer:
            writer.write_table(source)
        import hashlib

        return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]
    if "://" in str(source) or not Path(source).exists():
        return fingerprint(str(source))
    return file_digest(source)


def _backbone_digest(backbone: str) -> str:
    """A backbone directory by its file names, sizes and config (hashing GBs of weights every run would be slow)."""
    from raysparse.pipeline import fingerprint

    path = Path(backbone)
    if not path.is_dir():
        return fingerprint(backbone)  # a Hub name
    files = sorted(f for f in path.rglob("*") if f.is_file())
    config = path / "config.json"
    return fingerprint(
        [
            [(str(f.relative_to(path)), f.stat().st_size) for f in files],
            config.read_text() if config.is_file() else "",
        ]
    )


def run_identity(
    cfg: RaySparseConfig,
    triples: Any,
    backbone: str,
    term_pairs: Any = None,
    sentence_pairs: Any = None,
) -> str:
    """A 16-hex hash of what a training run learns from: the data, the backbone and the model/loss/train settings
    (less :data:`RESUMABLE_TRAIN_KEYS`). Two runs with the same identity may resume each other's checkpoints."""
    from raysparse.pipeline import fingerprint

    train = {k: v for k, v in cfg.train.model_dump(mode="json").items() if k not in RESUMABLE_TRAIN_KEYS}
    loss_needs_pairs = cfg.loss.beta > 0
    return fingerprint(
        {
            "triples": _input_digest(triples),
            "term_pairs": _input_digest(term_pairs) if loss_needs_pairs else "-",
            "sentence_pairs": _input_digest(sentence_pairs) if loss_needs_pairs else "-",
            "backbone": _backbone_digest(backbone),
            "model": cfg.model.model_dump(mode="json"),
            "loss": cfg.loss.model_dump(mode="json"),
            "train": train,
        }
    )


def resolve_storage(storage: str, out_dir: Path) -> str:
    """``ray.storage_path`` as Ray Train needs it: a URI as is, a relative path under the output directory (so two
    output directories never share run folders by accident), an absolute path resolved."""
    if "://" in storage:
        return storage.rstrip("/")
    path = Path(storage)
    return str(path.resolve() if path.is_absolute() else (out_dir / path).resolve())


def _existing_checkpoint_step(storage: str, name: str) -> int | None:
    """The highest step among the checkpoints of run ``name`` in ``storage`` (local path or URI); None when none."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(storage if "://" in storage else Path(storage).as_uri())
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/{name}", allow_not_found=True))
    except (OSError, pa.ArrowInvalid) as err:
        raise ValueError(f"ray.storage_path {storage}: cannot list it: {err}") from None
    steps = []
    for info in infos:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        try:
            with fs.open_input_stream(f"{info.path}/{TRAINER_STATE_FILE}") as f:
                steps.append(int(json.loads(f.read())["step"]))
        except (OSError, ValueError, KeyError):
            continue  # a checkpoint a killed run left incomplete: Ray Train does not resume from it either
    return max(steps) if steps else None


def check_resume_mode(resume: str) -> str:
    if resume not in RESUME_MODES:
        raise ValueError(f"resume: {resume!r} is not one of {', '.join(RESUME_MODES)}")
    return resume


def _announce(name: str, where: str, step: int | None, resume: str) -> None:
    if step is not None and resume != "never":
        log.warning(
            "resuming training run %s from its checkpoint at step %d (%s); --resume never starts afresh",
            name,
            step,
            where,
        )
    elif step is None and resume == "must":
        raise ValueError(
            f"--resume must: no checkpoint of training run {name} in {where} (nothing to resume)"
        )
    else:
        log.info("training run %s: a fresh start (%s)", name, where)


def run_training(
    cfg: RaySparseConfig,
    triples_path: str | Path | pa.Table,
    dev: RetrievalData | None,
    out_dir: str | Path,
    term_pairs: str | Path | pa.Table | None = None,
    sentence_pairs: str | Path | pa.Table | None = None,
    backbone_dir: str | None = None,
    *,
    extra_loop_config: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
    resume: str = "auto",
) -> TrainResult:
    """Train on Ray Train (``cfg.train.num_workers`` workers) and export the best checkpoint to ``out_dir/model``.

    The Ray Train run is ``<cfg.name>-<run_identity>`` in :func:`resolve_storage`; ``resume="auto"`` continues it
    from its latest checkpoint when there is one (and logs so), ``"must"`` fails when there is none, ``"never"``
    starts a new run beside it (named with a time stamp; the earlier run's checkpoints are kept).
    ``extra_loop_config`` is merged into the workers' config (fault injection in tests: ``fail_at_step``, ...).
    ``callbacks`` go to ``RunConfig(callbacks=...)`` (Tune sweeps pass ``TuneReportCallback`` to see the reports).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from raysparse.outputs import atomic_write_text
    from raysparse.ray_utils import init_ray

    tc = cfg.train
    check_resume_mode(resume)
    deepspeed_config(tc)  # fail fast (fp16 on CPU) before starting workers
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    examples = load_triples(triples_path, tc.negatives_per_query)
    log.info("%s", examples.report)
    backbone = _prepare_backbone(cfg, examples, out, backbone_dir)
    storage = resolve_storage(cfg.ray.storage_path, out)
    name = f"{cfg.name}-{run_identity(cfg, triples_path, backbone, term_pairs, sentence_pairs)}"
    step = _existing_checkpoint_step(storage, name)
    _announce(name, f"{storage}/{name}", step, resume)
    if step is not None and resume == "never":
        name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        log.info("--resume never: a new run %s beside the earlier one (kept)", name)
    init_ray(cfg.ray.address)
    resources = {"CPU": tc.cpus_per_worker}
    if tc.use_gpu:
        resources["GPU"] = 1
    if tc.resources:
        # placement: e.g. {gpu_pool: 1} keeps workers on the GPU node type (cluster.yaml, deploy/kuberay); a request
        # no node can satisfy would wait forever inside Ray Train, so it fails here naming the key
        from raysparse.ray_utils import check_placement

        check_placement(tc.resources, "train.resources")
        resources.update(tc.resources)
    checkpoint_config = CheckpointConfig(
        num_to_keep=tc.keep_checkpoints,
        checkpoint_score_attribute=VAL_METRIC if dev is not None else None,
        checkpoint_score_order="max",
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=_loop_config(
            cfg, triples_path, dev, out, backbone, term_pairs, sentence_pairs, extra_loop_config
        ),
        scaling_config=ScalingConfig(
            num_workers=tc.num_workers, use_gpu=tc.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=checkpoint_config,
            callbacks=callbacks,
        ),
        torch_config=TorchConfig(backend="nccl" if tc.use_gpu else "gloo"),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training run {name} failed: {result.error}") from result.error
    candidates = list(result.best_checkpoints or [])
    if not candidates and result.checkpoint is not None:
        candidates = [(result.checkpoint, result.metrics or {})]
    if not candidates:
        raise RuntimeError(f"training run {name} reported no checkpoint")
    best, best_metrics = pick_best(candidates)
    best_path = best.path
    with best.as_directory() as local:  # downloads when storage is remote (s3://, gs://)
        model_dir = consolidate_checkpoint(local, out / "model", tc)
    history = read_history(out) or sorted((m for _, m in candidates), key=lambda m: m.get("step", 0))
    atomic_write_text(out / "best_metrics.json", json.dumps(best_metrics, indent=2))
    return TrainResult(model_dir, dict(best_metrics), history, str(best_path))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_single_process(
    cfg: RaySparseConfig,
    triples_path: str | Path | pa.Table,
    dev: RetrievalData | None,
    out_dir: str | Path,
    term_pairs: str | Path | pa.Table | None = None,
    sentence_pairs: str | Path | pa.Table | None = None,
    backbone_dir: str | None = None,
    *,
    resume: str = "auto",
) -> TrainResult:
    """The same loop without Ray: one process, world size 1 (unit tests, quick experiments, GPU benchmarks).

    Checkpoints go to ``out_dir/checkpoints/<run identity>/step_<N>``; ``resume`` as in :func:`run_training`.
    DeepSpeed needs the torch.distributed environment variables; they are set here unless already present.
    """
    tc = cfg.train
    check_resume_mode(resume)
    set_default_env(tc.use_gpu)
    deepspeed_config(tc)
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    examples = load_triples(triples_path, tc.negatives_per_query)
    backbone = _prepare_backbone(cfg, examples, out, backbone_dir)
    ckpt_root = out / "checkpoints" / run_identity(cfg, triples_path, backbone, term_pairs, sentence_pairs)
    existing = sorted(
        (p for p in ckpt_root.glob("step_*") if (p / TRAINER_STATE_FILE).is_file()),
        key=lambda p: int(p.name.split("_")[1]),
    )
    _announce(
        ckpt_root.name, str(ckpt_root), int(existing[-1].name.split("_")[1]) if existing else None, resume
    )
    if existing and resume == "never":
        ckpt_root = ckpt_root.with_name(f"{ckpt_root.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        existing = []
    reported: list[tuple[str, dict[str, Any]]] = []

    @contextlib.contextmanager
    def checkpoint_dir() -> Iterator[Path | None]:
        yield existing[-1] if existing else None

    def report(metrics: dict[str, Any], directory: Path | None) -> None:
        if directory is None:
            return
        target = ckpt_root / f"step_{metrics['step']}"
        partial = target.with_name(f".{target.name}.partial")  # a killed copy never looks like a checkpoint
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(directory, partial)
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
        reported.append((str(target), dict(metrics)))

    # The process group DeepSpeed creates is left in place: DeepSpeed caches it (deepspeed.comm), so destroying it
    # would break the next call in this process; a world of one holds no resources worth freeing.
    history = run_loop(
        _loop_config(cfg, triples_path, dev, out, backbone, term_pairs, sentence_pairs, None),
        LoopIO(0, 1, checkpoint_dir, report),
    )
    if not reported:
        raise RuntimeError("training reported no checkpoint")
    best_path, best_metrics = pick_best(reported)
    model_dir = consolidate_checkpoint(best_path, out / "model", tc)
    return TrainResult(model_dir, dict(best_metrics), history, best_path)
