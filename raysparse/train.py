"""Training of the sparse encoder: one step function, run in one process or by Ray Train with DeepSpeed.

The pieces, in the order a step uses them:

* :func:`load_triples` / :func:`load_pairs` read mining output (:data:`~raysparse.schemas.TRIPLES`) and the
  optional Korean-English term/sentence pairs, counting every skipped row in a :class:`ReadReport`.
* :func:`sample_rows` decides which rows a worker sees at a given micro-step. The order is a pure function of
  ``(seed, epoch, micro_step, rank)``, so a run resumed from a checkpoint at step ``s`` sees exactly the batches an
  uninterrupted run would have seen from ``s`` on (no data loader state to save).
* :class:`Collator` tokenises query / one positive / ``negatives_per_query`` negatives with dynamic padding and
  carries the BM25 scores of the chosen documents as teacher scores for distillation.
* :func:`deepspeed_config` turns :class:`~raysparse.config.TrainConfig` into DeepSpeed's JSON.
* :func:`train_loop_per_worker` is the loop :class:`ray.train.torch.TorchTrainer` runs on every worker; the same
  loop runs without Ray in :func:`train_single_process` (unit tests, GPU benchmarks).
* :func:`run_training` is what the pipeline and Tune call: it starts the TorchTrainer, then consolidates the best
  checkpoint into an fp32 Hugging Face layout model (``out_dir/model``).

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
import functools
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysparse.config import RaySparseConfig, TrainConfig, config_from_dict
from raysparse.schemas import ReadReport, RetrievalData

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

DS_TAG = (
    "ds"  # DeepSpeed checkpoint tag inside every checkpoint directory (fixed: one checkpoint per directory)
)
TORCH_STATE_FILE = "torch_state.pt"  # DDP fallback checkpoint (rank 0 only: DDP replicas are identical)
TRAINER_STATE_FILE = (
    "trainer_state.json"  # step, best metric, patience: human-readable and backend-independent
)
HF_SUBDIR = "model"  # Hugging Face layout model saved by rank 0 next to the DeepSpeed files
VAL_METRIC = "val/ndcg@10"
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

TRIPLE_FIELDS = ("query", "positive_texts", "positive_scores", "negative_texts", "negative_scores")


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingExamples:
    """Mining output in plain lists (one entry per query), ready for deterministic sampling."""

    queries: list[str]
    positives: list[list[str]]
    positive_scores: list[list[float]]
    negatives: list[list[str]]
    negative_scores: list[list[float]]
    report: ReadReport

    def __len__(self) -> int:
        return len(self.queries)

    def texts(self) -> list[str]:
        """Every query and document text (e.g. to train a local tokenizer on)."""
        out = list(self.queries)
        for docs in (*self.positives, *self.negatives):
            out.extend(docs)
        return out


def _read_table(source: str | Path | pa.Table, what: str) -> tuple[pa.Table, str]:
    if isinstance(source, pa.Table):
        return source, f"<{what} table>"
    path = Path(source) if "://" not in str(source) else source
    if isinstance(path, Path) and not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    # A directory is read as its *.parquet files: mining writes mining_report.json beside triples.parquet, and
    # `mine --out D` then `train --triples D` is the documented flow. Each file is read on its own so that an error
    # names the file.
    files = (
        sorted(
            f for f in path.rglob("*.parquet") if not f.name.startswith((".", "_"))
        )  # as pyarrow skips them
        if isinstance(path, Path) and path.is_dir()
        else [path]
    )
    if not files:
        raise ValueError(f"{what}: {path} holds no .parquet file")
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(str(f)))
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"{what}: {f} is not readable Parquet: {err}") from None
    if len(tables) == 1:
        return tables[0], str(path)
    try:
        return pa.concat_tables(tables, promote_options="default"), str(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"{what}: the Parquet files under {path} have incompatible schemas: {err}") from None


def load_triples(source: str | Path | pa.Table, negatives_per_query: int = 1) -> TrainingExamples:
    """Read mining output (a Parquet file, a directory of them, or a table in :data:`TRIPLES` shape).

    Rows that cannot train are skipped and counted (empty query, no positive, no negative when negatives are
    required); malformed rows (score lists that do not match their texts, null texts) raise an error naming the
    file, row and field, because they mean the producer is broken, not that the data is noisy.
    """
    table, name = _read_table(source, "triples")
    missing = [f for f in TRIPLE_FIELDS if f not in table.column_names]
    if missing:
        raise ValueError(
            f"triples {name}: missing field(s) {', '.join(missing)} (expected the schemas.TRIPLES columns)"
        )
    report = ReadReport(name)
    ex = TrainingExamples([], [], [], [], [], report)
    cols = {f: table.column(f).to_pylist() for f in TRIPLE_FIELDS}
    for row in range(table.num_rows):
        query = cols["query"][row]
        pos, pos_s = cols["positive_texts"][row] or [], cols["positive_scores"][row] or []
        neg, neg_s = cols["negative_texts"][row] or [], cols["negative_scores"][row] or []
        for fname, texts, scores in (("positive", pos, pos_s), ("negative", neg, neg_s)):
            if len(texts) != len(scores):
                raise ValueError(
                    f"triples {name}: row {row}, field {fname}_scores has {len(scores)} values "
                    f"for {len(texts)} {fname}_texts"
                )
            if any(t is None for t in texts):
                raise ValueError(f"triples {name}: row {row}, field {fname}_texts contains null")
        if not query or not query.strip():
            report.skip("empty query")
            continue
        if not pos:
            report.skip("no positive")
            continue
        if negatives_per_query > 0 and not neg:
            report.skip("no negative")
            continue
        report.read += 1
        ex.queries.append(query)
        ex.positives.append(list(pos))
        ex.positive_scores.append([float(s) if s is not None else 0.0 for s in pos_s])
        ex.negatives.append(list(neg))
        ex.negative_scores.append([float(s) if s is not None else 0.0 for s in neg_s])
    if not ex.queries:
        raise ValueError(f"triples {name}: no usable rows ({report})")
    return ex


def load_pairs(
    source: str | Path | pa.Table | None, what: str = "pairs"
) -> tuple[list[tuple[str, str]], ReadReport]:
    """Read a ``ko``/``en`` table (:data:`TERM_PAIRS` or :data:`SENTENCE_PAIRS`); empty sides are skipped and counted."""
    if source is None:
        return [], ReadReport(f"<no {what}>")
    table, name = _read_table(source, what)
    for f in ("ko", "en"):
        if f not in table.column_names:
            raise ValueError(f"{what} {name}: missing field {f!r} (expected columns ko, en)")
    report = ReadReport(name)
    pairs: list[tuple[str, str]] = []
    for ko, en in zip(table.column("ko").to_pylist(), table.column("en").to_pylist(), strict=True):
        if not ko or not en or not ko.strip() or not en.strip():
            report.skip("empty side")
            continue
        report.read += 1
        pairs.append((ko, en))
    return pairs, report


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def sample_rows(
    num_rows: int, batch_size: int, *, seed: int, micro_step: int, rank: int = 0, world_size: int = 1
) -> list[tuple[int, int]]:
    """``(row, epoch)`` pairs a worker trains on at ``micro_step``.

    The global stream is an endless sequence of epochs, each a seeded permutation of the rows; micro-step ``m``
    takes the global slice ``[m * B * W, (m + 1) * B * W)`` and rank ``r`` its ``r``-th block of ``B``. Deriving the
    order from the step (not from iterator state) is what makes resume exact.
    """
    start = (micro_step * world_size + rank) * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, offset = divmod(pos, num_rows)
        out.append((int(_epoch_permutation(num_rows, seed, epoch)[offset]), epoch))
    return out


@dataclass
class Collator:
    """Tokenise a micro-batch by the model's encoding spec (documents in windows, Kiwi pre-tokenisation when the
    spec says so), with dynamic padding (pad to the longest window in the batch, not the maximum)."""

    tokenizer: Any
    max_query_length: int
    max_doc_length: int
    negatives_per_query: int
    seed: int
    spec: Any = None  # raysparse.encoding.EncodingSpec; None: one from the lengths above

    def __post_init__(self) -> None:
        from raysparse.encoding import EncodingSpec

        if self.spec is None:
            self.spec = EncodingSpec(
                max_query_length=self.max_query_length,
                max_doc_length=self.max_doc_length,
                doc_stride=max(1, (self.max_doc_length - 2) * 3 // 4),
            )

    def _tokenize(self, texts: Sequence[str], *, is_query: bool) -> Any:
        from raysparse.encoding import tokenize_texts

        return tokenize_texts(self.tokenizer, texts, self.spec, is_query=is_query)

    def examples(self, ex: TrainingExamples, rows: Sequence[tuple[int, int]]) -> dict[str, Any]:
        """Query, one positive and ``negatives_per_query`` negatives per row, chosen by ``(seed, epoch, row)``."""
        import torch

        queries, positives, negatives, t_pos, t_neg = [], [], [], [], []
        k = self.negatives_per_query
        for row, epoch in rows:
            rng = np.random.default_rng([self.seed, epoch, row])
            p = int(rng.integers(len(ex.positives[row])))
            queries.append(ex.queries[row])
            positives.append(ex.positives[row][p])
            t_pos.append(ex.positive_scores[row][p])
            if k:
                n = len(ex.negatives[row])
                chosen = rng.choice(n, size=k, replace=n < k)
                negatives.extend(ex.negatives[row][int(i)] for i in chosen)
                t_neg.append([ex.negative_scores[row][int(i)] for i in chosen])
        batch: dict[str, Any] = {}
        batch["q"] = self._tokenize(queries, is_query=True)
        # positives first, then negatives row-major: one document forward per micro-step
        batch["d"] = self._tokenize(positives + negatives, is_query=False)
        batch["num_positives"] = len(positives)
        batch["teacher_pos"] = torch.tensor(t_pos, dtype=torch.float32)
        batch["teacher_neg"] = torch.tensor(t_neg, dtype=torch.float32) if k else None
        return batch

    def pairs(
        self,
        term_pairs: Sequence[tuple[str, str]],
        sentence_pairs: Sequence[tuple[str, str]],
        size: int,
        *,
        micro_step: int,
        rank: int,
    ) -> dict[str, Any] | None:
        """A batch of ``size`` ko/en pairs (half terms, half sentences when both exist), chosen by the step."""
        if not term_pairs and not sentence_pairs:
            return None
        rng = np.random.default_rng([self.seed, 7, micro_step, rank])
        chosen: list[tuple[str, str]] = []
        sources = [s for s in (term_pairs, sentence_pairs) if s]
        for i, src in enumerate(sources):
            n = size // len(sources) + (1 if i < size % len(sources) else 0)
            chosen.extend(src[int(j)] for j in rng.integers(len(src), size=n))
        return {
            "ko": self._tokenize([c[0] for c in chosen], is_query=False),
            "en": self._tokenize([c[1] for c in chosen], is_query=False),
        }


# ----------------------------------------------------------------------------------------------------------------
# Optimisation: DeepSpeed config, optimizer, schedule
# ----------------------------------------------------------------------------------------------------------------


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere torch emulates it, slowly."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, on_gpu: bool) -> str:
    """``auto`` -> bf16 on GPUs and on CPUs with native bf16, else fp32.

    Measured on the project's 2-core AMD EPYC (no AVX512): a small BERT forward+backward takes 3-10x longer under
    bf16 autocast or with bf16 weights than in fp32, so bf16 on such CPUs saves memory but costs most of the time.
    """
    if precision != "auto":
        return precision
    return "bf16" if on_gpu or cpu_has_native_bf16() else "fp32"


def deepspeed_config(train_cfg: TrainConfig, *, on_gpu: bool | None = None) -> dict[str, Any]:
    """DeepSpeed JSON for ``train_cfg``.

    ``train_batch_size`` is left out on purpose: DeepSpeed derives it from the micro batch, the accumulation steps
    and the world size, which is only known inside the workers. The optimizer is a torch AdamW built by us
    (``zero_allow_untested_optimizer``): DeepSpeed's fused/CPU Adam would compile for ~40 s on every fresh CPU
    machine. fp16 needs a GPU (DeepSpeed's CPU accelerator rejects it), so it is an error on CPU.
    """
    ds = train_cfg.deepspeed
    on_gpu = train_cfg.use_gpu if on_gpu is None else on_gpu
    precision = resolve_precision(ds.precision, on_gpu)
    if precision == "fp16" and not on_gpu:
        raise ValueError(
            "train.deepspeed.precision=fp16 needs a GPU (DeepSpeed on CPU rejects fp16); "
            "use bf16 or fp32 on CPU, or set train.use_gpu=true"
        )
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage >= 1:
        zero.update(overlap_comm=on_gpu, contiguous_gradients=True, reduce_scatter=True)
    if ds.zero_stage == 3:
        # Needed to save a Hugging Face model from rank 0 while parameters are partitioned.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        # DeepSpeed's memory-efficient linear replaces torch.nn.functional.linear for the whole process and never
        # restores it; anything traced later in that process (TorchScript/ONNX export after single-process
        # training, a Tune driver) then fails on its autograd Function.
        zero["memory_efficient_linear"] = False
    if ds.offload_optimizer:
        if ds.zero_stage == 0:
            raise ValueError("train.deepspeed.offload_optimizer needs train.deepspeed.zero_stage >= 1")
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": bool(on_gpu)}
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train_cfg.batch_size,
        "gradient_accumulation_steps": train_cfg.gradient_accumulation_steps,
        "gradient_clipping": train_cfg.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "initial_scale_power": 16, "loss_scale_window": 1000},
        "zero_allow_untested_optimizer": True,
        # with offload, keep our torch AdamW instead of forcing DeepSpeedCPUAdam (and its compile)
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return cfg


def lr_lambda(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_fraction`` of the run, then linear decay to 0 (a LambdaLR multiplier)."""
    warmup = max(1, round(total_steps * warmup_fraction)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def build_optimizer(model: torch.nn.Module, train_cfg: TrainConfig) -> tuple[Any, Any]:
    """torch AdamW (no weight decay on biases and LayerNorms) and its warm-up/decay LambdaLR."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": train_cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=train_cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(train_cfg.max_steps, train_cfg.warmup_fraction)
    )
    return optimizer, scheduler


# ----------------------------------------------------------------------------------------------------------------
# Backends: DeepSpeed and the torch DDP fallback behind one small interface
# ----------------------------------------------------------------------------------------------------------------


class DeepSpeedBackend:
    """A DeepSpeed engine; ``step()`` is called on every micro-batch (DeepSpeed knows the accumulation boundary)."""

    def __init__(self, model: torch.nn.Module, train_cfg: TrainConfig, on_gpu: bool):
        import deepspeed

        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        optimizer, scheduler = build_optimizer(model, train_cfg)
        self.config = deepspeed_config(train_cfg, on_gpu=on_gpu)
        self.zero_stage = train_cfg.deepspeed.zero_stage
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=self.config
        )
        self.module = self.engine.module
        self.device = self.engine.device

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.engine(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @contextlib.contextmanager
    def full_parameters(self) -> Iterator[None]:
        """Gather ZeRO-3 partitions so rank 0 can evaluate or save the whole model (collective: every rank enters)."""
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
                yield
        else:
            yield

    def save(self, directory: Path) -> None:
        self.engine.save_checkpoint(str(directory), tag=DS_TAG)

    def load(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(directory), tag=DS_TAG)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint (tag {DS_TAG!r}) in {directory}")


class TorchBackend:
    """torch DDP (``ray.train.torch.prepare_model``) + ``torch.autocast``: the fallback when DeepSpeed is disabled."""

    def __init__(self, model: torch.nn.Module, train_cfg: TrainConfig, on_gpu: bool, in_ray: bool):
        import torch
        import torch.distributed as dist

        precision = resolve_precision(train_cfg.deepspeed.precision, on_gpu)
        if precision == "fp16" and not on_gpu:
            raise ValueError("train.deepspeed.precision=fp16 needs a GPU; use bf16 or fp32 on CPU")
        if in_ray:
            import ray.train.torch

            self.device = ray.train.torch.get_device()
            wrapped = ray.train.torch.prepare_model(model)
        else:
            self.device = torch.device("cuda" if on_gpu else "cpu")
            model = model.to(self.device)
            wrapped = model
            if dist.is_initialized() and dist.get_world_size() > 1:
                wrapped = torch.nn.parallel.DistributedDataParallel(model)
        self.model = wrapped
        self.module = getattr(wrapped, "module", wrapped)
        self.optimizer, self.scheduler = build_optimizer(self.module, train_cfg)
        self.accumulation = train_cfg.gradient_accumulation_steps
        self.max_grad_norm = train_cfg.max_grad_norm
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self._micro = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            return self.model(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        loss = loss / self.accumulation
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self) -> None:
        import torch

        self._micro += 1
        if self._micro % self.accumulation:
            return
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @contextlib.contextmanager
    def full_parameters(self) -> Iterator[None]:
        yield

    def save(self, directory: Path) -> None:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_rank() == 0:
            state = {
                "model": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
            }
            if self.scaler:
                state["scaler"] = self.scaler.state_dict()
            torch.save(state, Path(directory) / TORCH_STATE_FILE)

    def load(self, directory: Path) -> None:
        import torch

        # weights_only: a checkpoint directory may come from shared storage; never unpickle arbitrary objects
        state = torch.load(Path(directory) / TORCH_STATE_FILE, map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------


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
    """Expected multiply-adds of a query-document dot product: sum_j P(q_j > 0) * P(d_j > 0) (SPLADE's FLOPS)."""
    return float(((q > 0).float().mean(0) * (d > 0).float().mean(0)).sum())


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
    start from BM25-style IDF over the training documents (identical on every rank: same data, same tokenizer)."""
    # the config is authoritative for the priors (Tune varies them); a translation table comes with the backbone dir
    from raysparse.encoding import spec_from_model_config
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

    from raysparse.losses import SparseRetrievalLoss

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
    loss_fn = SparseRetrievalLoss(cfg.loss, tc.max_steps).to(backend.device)

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
                flops += _flops(q, d) / accumulation
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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point for :class:`ray.train.torch.TorchTrainer` (Ray has already set up the process group)."""
    import ray.train

    _default_env(config.get("use_gpu", False))
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


def _default_env(use_gpu: bool) -> None:
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "raysparse" / "torch_extensions")
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ----------------------------------------------------------------------------------------------------------------
# Driver side: run, pick the best checkpoint, consolidate to fp32
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """Where the trained model is and how training went."""

    model_dir: Path  # fp32 Hugging Face layout SparseEncoder (out_dir/model)
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_path: str | None = None  # the checkpoint the model was consolidated from


def consolidate_checkpoint(
    checkpoint_dir: str | Path, out_model_dir: str | Path, train_cfg: TrainConfig
) -> Path:
    """Write an fp32 SparseEncoder (HF layout) from a training checkpoint directory.

    ZeRO-1/2/3: the fp32 master weights rebuilt by ``get_fp32_state_dict_from_zero_checkpoint`` (the module's own
    weights are bf16/fp16 copies). ZeRO-0: DeepSpeed keeps no consolidatable fp32 copy, so the module weights saved
    by rank 0 are upcast (bf16 precision is lost there; use stage >= 1 when that matters). DDP: fp32 module weights.
    """
    import torch

    from raysparse.model import SparseEncoder

    ckpt = Path(checkpoint_dir)
    model = SparseEncoder.from_pretrained(str(ckpt / HF_SUBDIR)).float()
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


def _read_history(out_dir: Path) -> list[dict[str, Any]]:
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


def _pick_best(candidates: list[tuple[Any, dict[str, Any]]]) -> tuple[Any, dict[str, Any]]:
    """The checkpoint with the best validation nDCG; without validation, the latest."""
    scored = [c for c in candidates if c[1].get(VAL_METRIC) is not None]
    if scored:
        return max(scored, key=lambda c: (c[1][VAL_METRIC], c[1].get("step", 0)))
    return max(candidates, key=lambda c: c[1].get("step", 0))


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
    best, best_metrics = _pick_best(candidates)
    best_path = best.path
    with best.as_directory() as local:  # downloads when storage is remote (s3://, gs://)
        model_dir = consolidate_checkpoint(local, out / "model", tc)
    history = _read_history(out) or sorted((m for _, m in candidates), key=lambda m: m.get("step", 0))
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
    _default_env(tc.use_gpu)
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
    best_path, best_metrics = _pick_best(reported)
    model_dir = consolidate_checkpoint(best_path, out / "model", tc)
    return TrainResult(model_dir, dict(best_metrics), history, best_path)
