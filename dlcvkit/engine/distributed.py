"""The Accelerator for a run: CPU when no GPU is present (gloo under `accelerate launch`), precision, seeding."""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, get_int_from_env
from torch import nn

from dlcvkit.config import TrainConfig
from dlcvkit.engine.trackers import make_trackers
from dlcvkit.errors import DlcvkitError


def make_accelerator(train: TrainConfig, run_dir: Path | None = None) -> Accelerator:
    """An Accelerator configured by the recipe (asks for the CPU when CUDA is absent or `train.cpu`)."""
    cpu = train.cpu or not torch.cuda.is_available()
    if cpu and train.precision == "fp16":
        raise DlcvkitError("train.precision='fp16' needs a GPU; use 'bf16' (or 'no') on the CPU")
    trackers = make_trackers(train, run_dir) if run_dir is not None else []
    # A failed rank must not leave the others waiting forever in a collective (default NCCL timeout: 10 min+).
    timeout = timedelta(seconds=int(os.environ.get("DLCVKIT_COLLECTIVE_TIMEOUT", "600")))
    atexit.unregister(_destroy_process_group)  # once per process, however many runs it makes
    atexit.register(_destroy_process_group)
    return Accelerator(
        cpu=cpu,
        mixed_precision=train.precision,
        dynamo_backend="inductor" if train.compile else "no",
        log_with=trackers or None,
        project_dir=str(run_dir) if run_dir is not None else None,
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)],
    )


def is_launch_main_process() -> bool:
    """Whether this is the main process of its launch, read as accelerate reads the rank (torchrun's RANK, else
    MPI's variables) but without making accelerate's shared state: made before the run's Accelerator(cpu=...),
    that state would be fixed without the CPU choice, and on a node without a GPU every process of a launch
    would then train alone. For the work done before a run's Accelerator exists."""
    return get_int_from_env(["RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK"], 0) == 0


def compute_threads(threads: int) -> int:
    """torch's intra-op threads for each process: `threads` (train.threads) if set, else OMP_NUM_THREADS (which
    `accelerate launch` sets to the cores per process), else the cores this process may use divided among the
    processes of this node. Loader workers need none of them: torch gives each worker one thread."""
    if threads > 0:
        return threads
    if (omp := os.environ.get("OMP_NUM_THREADS", "")).isdigit() and int(omp) > 0:
        return int(omp)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # macOS: all
    return max(1, cores // max(1, local_processes))


def pick_device(name: str = "auto") -> torch.device:
    """The device of a command that runs outside the engine: `auto` (a GPU if present), `cpu` or `cuda[:i]`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DlcvkitError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DlcvkitError(f"--device {name}: no GPU is visible; use --device cpu")
    return device


def _destroy_process_group() -> None:
    """At exit, after every training of this process (see trackers.finish_trackers)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def use_deterministic_kernels() -> None:
    """Ask torch for deterministic kernels (needed for bit-exact resume on a GPU; the CPU ones already are)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the sum of the processes' gradients (torch's own autograd
    all_reduce in torch.distributed.nn is deprecated)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all processes, for CPU (gloo) runs.

    Written by hand because torch's SyncBatchNorm accepts only GPU tensors (and DDP refuses it on CPU); without
    it N CPU processes would normalise over their own slices and no longer compute what 1 process does. The
    per-channel sums and count, then the sums of squared deviations from the global mean, are all-reduced with
    the autograd-aware all_reduce, so gradients flow through the global statistics exactly as with
    SyncBatchNorm. Statistics are float32 also under bf16 autocast, as torch's batch norm keeps them.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-d input (got {x.dim()}-d)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = (1, channels) + (1,) * (x.dim() - 2)
        x32 = x.float()
        totals = _AllReduceSum.apply(torch.cat([x32.sum(dims), x32.new_full((1,), x.numel() / channels)]))
        n = totals[-1]
        mean = totals[:channels] / n
        centred = x32 - mean.view(shape)
        # two passes: E[x²] − E[x]² in one would lose the variance to cancellation where |mean| >> std
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * n / (n - 1), factor)  # unbiased, as torch's BN keeps it
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        y = y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer made to normalise over the global batch: torch's SyncBatchNorm on GPUs,
    CpuSyncBatchNorm on the CPU."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(model, nn.modules.batchnorm._BatchNorm) and not isinstance(model, CpuSyncBatchNorm):
        sync = CpuSyncBatchNorm(model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats)
        sync.load_state_dict(model.state_dict())
        if model.affine:  # keep frozen weights frozen (a frozen backbone, BYOL's target), as torch's conversion does
            sync.weight.requires_grad_(model.weight.requires_grad)
            sync.bias.requires_grad_(model.bias.requires_grad)
        sync.train(model.training)
        return sync
    for name, child in model.named_children():
        model.add_module(name, convert_sync_batchnorm(child, device))
    return model
