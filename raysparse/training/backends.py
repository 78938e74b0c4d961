"""The two ways a worker steps the optimiser: DeepSpeed (ZeRO, bf16/fp16) and plain torch (DDP, AMP).

:func:`deepspeed_config` turns :class:`~raysparse.config.TrainConfig` into DeepSpeed's JSON; both backends save and
load their own checkpoint files in one directory per checkpoint, so the loop does not care which one runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysparse.config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)


DS_TAG = (
    "ds"  # DeepSpeed checkpoint tag inside every checkpoint directory (fixed: one checkpoint per directory)
)


TORCH_STATE_FILE = "torch_state.pt"  # DDP fallback checkpoint (rank 0 only: DDP replicas are identical)


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


def set_default_env(use_gpu: bool) -> None:
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "raysparse" / "torch_extensions")
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
