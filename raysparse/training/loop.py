"""The training loop: :func:`train_loop_per_worker` is what :class:`ray.train.torch.TorchTrainer` runs on every
worker; :func:`run_loop` is the same loop behind a small I/O interface (:class:`LoopIO`), so it also runs without
Ray (:func:`raysparse.training.run.train_single_process`: unit tests, GPU benchmarks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raysparse.config import RaySparseConfig, config_from_dict
from raysparse.schemas import RetrievalData
from raysparse.training.backends import DeepSpeedBackend, TorchBackend, set_default_env
from raysparse.training.examples import Collator, TrainingExamples, load_pairs, load_triples, sample_rows

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

TRAINER_STATE_FILE = (
    "trainer_state.json"  # step, best metric, patience: human-readable and backend-independent
)


HF_SUBDIR = "model"  # Hugging Face layout model saved by rank 0 next to the DeepSpeed files


VAL_METRIC = "val/ndcg@10"


def evaluate_dev(model: Any, dev: RetrievalData, k: int = 10, batch_size: int = 32) -> dict[str, float]:
    """nDCG/MRR/recall@k of ``model`` on the validation collection, through the evaluation stage's own code
    (:func:`raysparse.evaluation.evaluate_model`: the model's encoding spec, the same index and metrics), so the
    checkpoint is selected on the numbers ``raysparse evaluate`` would report."""
    from raysparse.evaluation.core import evaluate_model

    class _Cfg:  # the cut-offs evaluate_model reads from an EvalConfig
        def __init__(self) -> None:
            self.k, self.recall_k, self.batch_size = k, 100, batch_size

    was_training = model.training
    model.eval()
    try:
        result = evaluate_model(model, dev, _Cfg())
    finally:
        model.train(was_training)
    keep = {f"ndcg@{k}", f"mrr@{k}", "ndcg@10", "mrr@10", "recall@10", "recall@100", f"recall@{k}"}
    # the efficiency side as `raysparse evaluate` measures it: SPLADE FLOPS over the dev queries x dev documents
    # and the mean active terms (val/flops is the sweep's efficiency axis, raysparse.tune)
    keep |= {"flops", "avg_query_terms", "avg_doc_terms"}
    out = {f"val/{name}": float(v) for name, v in result.metrics.items() if name in keep}
    out["val/active_terms_query"] = float(result.metrics.get("avg_query_terms", 0.0))
    out["val/active_terms_doc"] = float(result.metrics.get("avg_doc_terms", 0.0))
    return out


def _as_dense(reps: Any) -> torch.Tensor:
    import torch

    if isinstance(reps, torch.Tensor):
        return (reps.to_dense() if reps.is_sparse else reps).float().cpu()
    return torch.as_tensor(np.asarray(reps), dtype=torch.float32)


@dataclass
class LoopIO:
    """What differs between Ray Train and a single process: where checkpoints come from and go to."""

    rank: int
    world_size: int
    get_checkpoint_dir: Callable[[], contextlib.AbstractContextManager[Path | None]]
    report: Callable[[dict[str, Any], Path | None], None]
    in_ray: bool = False


def _training_module(encoder: Any) -> torch.nn.Module:
    """Wrap the encoder so one ``forward`` call encodes queries, documents and parallel pairs of a micro-batch.

    Why one call: DeepSpeed and DDP only instrument ``forward`` (calling ``encoder.query_forward`` directly would
    bypass ZeRO-3's parameter gathering), and DDP expects one forward per backward.
    """
    import torch

    class QueryDocEncoder(torch.nn.Module):
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, q: Any, d: Any, ko: Any = None, en: Any = None) -> tuple[torch.Tensor, ...]:
            """TokenizedBatch inputs (raysparse.encoding) -> (B, V) representations, windows pooled per text."""
            reps = [self.encoder.encode_batch(q, is_query=True), self.encoder.encode_batch(d, is_query=False)]
            if ko is not None:
                reps += [
                    self.encoder.encode_batch(ko, is_query=False),
                    self.encoder.encode_batch(en, is_query=False),
                ]
            return tuple(reps)

    return QueryDocEncoder(encoder)


WRAPPER_PREFIX = "encoder."  # state-dict prefix the training wrapper adds


def _forward(backend: Any, batch: dict[str, Any], pairs: dict[str, Any] | None) -> list[torch.Tensor]:
    """Run the wrapped encoder through the engine (ZeRO hooks, DDP sync); fp32 representations out."""
    inputs = [batch["q"].to(backend.device), batch["d"].to(backend.device)]
    if pairs is not None:
        inputs += [pairs["ko"].to(backend.device), pairs["en"].to(backend.device)]
    return [r.float() for r in backend(*inputs)]


def _flops(q: torch.Tensor, d: torch.Tensor) -> float:
    """Evaluation's FLOPS metric (:func:`raysparse.evaluation.index.expected_flops`) on one micro-batch."""
    from raysparse.evaluation.index import expected_flops

    return expected_flops((q > 0).float().mean(0), (d > 0).float().mean(0))


def _log_progress(path: Path | None, record: dict[str, Any]) -> None:
    if path is None:
        return
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _maybe_fail(config: dict[str, Any], step: int, rank: int) -> None:
    """Fault injection for resume tests: exit the worker once at ``fail_at_step`` (a marker file makes it once)."""
    fail_at = config.get("fail_at_step")
    if fail_at is None or step != fail_at or rank != config.get("fail_rank", 0):
        return
    marker = Path(config["fail_marker"])
    if marker.exists():
        return
    marker.write_text(str(step))
    # Ray Train's controller registers a reported checkpoint when it next polls the workers; a worker dying right
    # after ray.train.report can lose that checkpoint (measured under heavy load), so let the poll happen first.
    time.sleep(float(config.get("fail_delay_s", 5.0)))
    log.warning("fault injection: rank %d exits at step %d", rank, step)
    os._exit(17)


def _build_model(cfg: RaySparseConfig, backbone: str, examples: TrainingExamples) -> Any:
    """The encoder to train. Inference-free query mode needs per-token query weights: when the backbone brings none,
    start from BM25-style IDF over the training documents (identical on every rank: same data, same tokenizer).
    ``model.kind: dense``: a :class:`~raysparse.dense.DenseEncoder` over the same backbone (pooling from the config)."""
    # the config is authoritative for the priors (Tune varies them); a translation table comes with the backbone dir
    from raysparse.encoding import spec_from_model_config

    if cfg.model.kind == "dense":
        from raysparse.dense import DenseEncoder

        return DenseEncoder.from_pretrained(
            backbone,
            pooling=cfg.model.pooling,
            normalize=cfg.model.normalize,
            spec=spec_from_model_config(cfg.model),
        )
    from raysparse.model import QUERY_WEIGHTS_FILE, RAYSPARSE_JSON, SparseEncoder, idf_weights

    overrides: dict[str, Any] = {
        "lexical_prior": cfg.model.lexical_prior,
        "query_mode": cfg.model.query_mode,
        "translation_prior": cfg.model.translation_prior,
        "neural_weight": cfg.model.neural_weight,
        "translation_side": cfg.model.translation_side,
        "spec": spec_from_model_config(cfg.model),
    }
    has_weights = (Path(backbone) / QUERY_WEIGHTS_FILE).is_file() and (
        Path(backbone) / RAYSPARSE_JSON
    ).is_file()
    if cfg.model.query_mode == "inference_free" and not has_weights:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(backbone)
        docs = list(dict.fromkeys(t for texts in (*examples.positives, *examples.negatives) for t in texts))
        overrides["query_weights"] = idf_weights(tokenizer, docs)
    return SparseEncoder.from_pretrained(backbone, **overrides)


def run_loop(config: dict[str, Any], io: LoopIO) -> list[dict[str, Any]]:
    """The training loop shared by Ray workers and the single process; returns the metrics it reported.

    ``config`` holds plain values (it crosses process boundaries): ``cfg`` (a RaySparseConfig dump), ``triples``,
    ``backbone``, ``out_dir`` and optionally ``dev`` (RetrievalData), ``term_pairs``, ``sentence_pairs``.
    """
    import torch
    import torch.distributed as dist

    from raysparse.losses import DenseRetrievalLoss, SparseRetrievalLoss

    cfg = config_from_dict(config["cfg"], "train_loop_config")
    tc = cfg.train
    on_gpu = tc.use_gpu and torch.cuda.is_available()
    out_dir = Path(config["out_dir"])
    rank, world = io.rank, io.world_size
    torch.manual_seed(tc.seed)

    examples = load_triples(config["triples"], tc.negatives_per_query)
    beta_on = cfg.loss.beta > 0
    term_pairs = load_pairs(config.get("term_pairs"), "term pairs")[0] if beta_on else []
    sentence_pairs = load_pairs(config.get("sentence_pairs"), "sentence pairs")[0] if beta_on else []
    dev: RetrievalData | None = config.get("dev")
    if rank == 0:
        log.info(
            "training data: %s; %d term pairs, %d sentence pairs",
            examples.report,
            len(term_pairs),
            len(sentence_pairs),
        )

    encoder = _build_model(cfg, config["backbone"], examples)
    model = _training_module(encoder)
    collator = Collator(
        encoder.tokenizer,
        cfg.model.max_query_length,
        cfg.model.max_doc_length,
        tc.negatives_per_query,
        tc.seed,
        spec=encoder.spec,
    )
    if tc.deepspeed.enabled:
        backend: Any = DeepSpeedBackend(model, tc, on_gpu)
    else:
        backend = TorchBackend(model, tc, on_gpu, io.in_ray)
    dense = cfg.model.kind == "dense"  # the one dispatch: the encoder above, the objective here
    loss_cls = DenseRetrievalLoss if dense else SparseRetrievalLoss
    loss_fn = loss_cls(cfg.loss, tc.max_steps).to(backend.device)

    state = {"step": 0, "best": None, "best_step": None, "bad_evals": 0}
    with io.get_checkpoint_dir() as ckpt_dir:
        if ckpt_dir is not None:
            backend.load(ckpt_dir)
            state.update(json.loads((Path(ckpt_dir) / TRAINER_STATE_FILE).read_text()))
            if rank == 0:
                log.info("resumed from %s at step %d", ckpt_dir, state["step"])

    progress_dir = out_dir / "progress"
    progress_dir.mkdir(parents=True, exist_ok=True)
    progress_file = progress_dir / f"rank{rank}.jsonl"
    if state["step"] == 0:  # a fresh start, not a resume: records of an earlier run here are stale
        progress_file.unlink(missing_ok=True)
        if rank == 0:
            (out_dir / "history.jsonl").unlink(missing_ok=True)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tensorboard"))
    history: list[dict[str, Any]] = []

    def evaluate() -> dict[str, float]:
        """Rank 0 evaluates, every rank gets the result (early stopping must be decided identically everywhere)."""
        result: list[Any] = [None]
        with backend.full_parameters():
            if rank == 0:
                result[0] = evaluate_dev(
                    backend.module.encoder, dev, k=cfg.eval.k, batch_size=cfg.eval.batch_size
                )
        if world > 1 and dist.is_initialized():
            dist.broadcast_object_list(result, src=0)
        return result[0]

    def checkpoint(metrics: dict[str, Any]) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=f"raysparse-ckpt-r{rank}-"))
        try:
            backend.save(tmp)  # collective for DeepSpeed: every rank writes its own partition
            with backend.full_parameters():
                if rank == 0:
                    backend.module.encoder.save_pretrained(str(tmp / HF_SUBDIR))
                    (tmp / TRAINER_STATE_FILE).write_text(json.dumps(state))
            io.report(metrics, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    if dev is not None and tc.eval_at_start and state["step"] == 0:
        # step 0 of the learning curve: what the priors give before any gradient step (history only, no checkpoint)
        start = {"step": 0, **evaluate()}
        history.append(start)
        if rank == 0:
            _log_progress(out_dir / "history.jsonl", start)
            if writer is not None:
                for name, value in start.items():
                    if name != "step":
                        writer.add_scalar(name, value, 0)
            log.info("step 0 (priors): %s=%.4f", VAL_METRIC, start[VAL_METRIC])

    accumulation = tc.gradient_accumulation_steps
    bar = None
    if rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.max_steps, initial=state["step"], desc="train", unit="step", mininterval=5)
    stop = bool(state.get("stopped"))  # a run that stopped early stays stopped when resumed
    last_end = time.perf_counter()
    while state["step"] < tc.max_steps and not stop:
        step = state["step"]
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        flops = 0.0
        for micro in range(accumulation):
            micro_step = step * accumulation + micro
            rows = sample_rows(
                len(examples), tc.batch_size, seed=tc.seed, micro_step=micro_step, rank=rank, world_size=world
            )
            batch = collator.examples(examples, rows)
            pairs = (
                collator.pairs(term_pairs, sentence_pairs, tc.batch_size, micro_step=micro_step, rank=rank)
                if beta_on
                else None
            )
            reps = _forward(backend, batch, pairs)
            q, d = reps[0], reps[1]
            n_pos = batch["num_positives"]
            pos = d[:n_pos]
            neg = d[n_pos:].reshape(n_pos, -1, d.shape[-1]) if d.shape[0] > n_pos else None  # (B, N, V)
            kwargs: dict[str, Any] = {"step": step}
            if cfg.loss.delta > 0:
                kwargs["teacher_pos"] = batch["teacher_pos"].to(q.device)
                if batch["teacher_neg"] is not None:
                    kwargs["teacher_neg"] = batch["teacher_neg"].to(q.device)
            if pairs is not None:
                kwargs["ko"], kwargs["en"] = reps[2], reps[3]
            out = loss_fn(q, pos, neg, **kwargs)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"rank {rank}: loss is {loss.item()} at step {step} (micro-step {micro})"
                )
            backend.backward(loss)
            backend.step()
            for name, value in out.items():
                if isinstance(value, torch.Tensor) and value.numel() == 1:
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) / accumulation
                elif isinstance(value, (int, float)):
                    sums[name] = sums.get(name, 0.0) + float(value) / accumulation
            with torch.no_grad():
                flops += 0.0 if dense else _flops(q, d) / accumulation  # FLOPS means nothing for dense
        state["step"] = step + 1
        done = state["step"]
        metrics: dict[str, Any] = {
            "step": done,
            **{f"loss/{'total' if k == 'loss' else k}": v for k, v in sums.items()},
            "train/lr": backend.lr,
            "sparsity/flops": flops,
            "time/step_s": time.perf_counter() - t0,  # compute: forward, backward, optimizer step
        }
        _log_progress(
            progress_file, {"step": done, "loss": sums.get("loss"), "pid": os.getpid(), "time": time.time()}
        )

        is_last = done >= tc.max_steps
        want_ckpt = done % tc.checkpoint_every == 0 or is_last
        evaluated = dev is not None and (done % tc.eval_every == 0 or want_ckpt)
        if evaluated:
            metrics.update(evaluate())
            value = metrics[VAL_METRIC]
            if state["best"] is None or value > state["best"]:
                state.update(best=value, best_step=done, bad_evals=0)
            else:
                state["bad_evals"] += 1
                if tc.early_stopping_patience and state["bad_evals"] >= tc.early_stopping_patience:
                    stop = True
                    state["stopped"] = True
                    want_ckpt = True
                    if rank == 0:
                        log.info(
                            "early stopping at step %d (best %s=%.4f at step %s)",
                            done,
                            VAL_METRIC,
                            state["best"],
                            state["best_step"],
                        )
            metrics["best/ndcg@10"] = state["best"]
            if bar is not None:  # one console line per validation; every metric is in TensorBoard/history
                bar.write(
                    f"step {done}: {VAL_METRIC}={metrics[VAL_METRIC]:.4f} (best {state['best']:.4f} at step "
                    f"{state['best_step']}), loss {sums.get('loss', float('nan')):.4f}"
                )
        # wall time of the whole step, previous step's end to now (includes data, evaluation and reporting)
        metrics["time/wall_s"] = time.perf_counter() - last_end
        if writer is not None:
            for name, value in metrics.items():
                if name != "step" and isinstance(value, (int, float)) and value is not None:
                    writer.add_scalar(name, value, done)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{sums.get('loss', float('nan')):.3f}", refresh=False)
        history.append(metrics)
        if rank == 0:
            _log_progress(out_dir / "history.jsonl", metrics)
        if want_ckpt:
            checkpoint(metrics)
        elif (
            evaluated or done % tc.report_every == 0
        ):  # the same decision on every rank (reports are collective)
            io.report(metrics, None)
        last_end = time.perf_counter()
        _maybe_fail(config, done, rank)
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    return history


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every ``ray.train.report`` with the whole metrics dict at INFO (a screenful per report in the
    job's console); those metrics are in TensorBoard and the history file already, so only its warnings stay."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray Train version: its own logging stays as it is
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point for :class:`ray.train.torch.TorchTrainer` (Ray has already set up the process group)."""
    import ray.train

    set_default_env(config.get("use_gpu", False))
    _quiet_ray_train_reports()
    ctx = ray.train.get_context()

    @contextlib.contextmanager
    def checkpoint_dir() -> Iterator[Path | None]:
        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield Path(d)

    def report(metrics: dict[str, Any], directory: Path | None) -> None:
        clean = {k: v for k, v in metrics.items() if v is not None}
        if directory is None:
            ray.train.report(clean)
        else:
            ray.train.report(clean, checkpoint=ray.train.Checkpoint.from_directory(str(directory)))

    run_loop(config, LoopIO(ctx.get_world_rank(), ctx.get_world_size(), checkpoint_dir, report, in_ray=True))
