"""Data-parallel training over several processes with PyTorch's DistributedDataParallel, started by torchrun.

    torchrun --nproc_per_node 2 -m mnist_gan train --preset seed ...

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them (a plain `mnist-gan train`) there is one process and
everything here is a no-op. The back-end is NCCL when the processes use GPUs and gloo on CPUs.

What stays the same as one process: `--batch-size` is the global batch; rank r trains on the r-th slice of each
global batch of the epoch's order (so the ranks' shards are disjoint and together are the one-process batch) and
on the r-th slice of the same noise draw. DDP averages the gradients of the per-rank mean losses, which is the
gradient of the global mean loss, and BatchNorm layers compute their statistics over the global batch, so N
processes follow the one-process run up to rounding. Every rank holds identical weights, optimizer state and
noise generator; rank 0 alone writes files, so a checkpoint written with N processes resumes with any M that
divides the batch.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from mnist_gan.errors import MnistGanError
from mnist_gan.gan.device import resolve_device


@dataclass(frozen=True)
class Ranks:
    """This process' place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (its first dimension must divide evenly)."""
        if not self.enabled:
            return batch
        size = len(batch) // self.world_size
        return batch[self.rank * size:(self.rank + 1) * size]

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of `tensor` over the ranks (a collective: every rank must call it at the same point)."""
        if not self.enabled:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total)
        return total / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when `flag` is true on any (a collective)."""
        if not self.enabled:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())


def setup(device_name: str, batch_size: int, pack: int = 1, paired: bool = False) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun describes (if any) and pick this process' device. Each process's share of
    the global batch must hold whole packs of `pack` images (--pack): a pack never spans two processes. `paired`
    (--diversity) is refused with several processes."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Ranks(), resolve_device(device_name)
    if paired:  # its term divides two batch means: averaging the processes' gradients would not reproduce it
        raise MnistGanError("--diversity is not combined with several processes yet; train it in one process")
    ranks = Ranks(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if batch_size % world_size:
        raise MnistGanError(f"--batch-size {batch_size} is the global batch and must divide evenly among "
                            f"{world_size} processes")
    if (batch_size // world_size) % pack:
        raise MnistGanError(f"--batch-size {batch_size} over {world_size} processes leaves {batch_size // world_size} "
                            f"images each, not a multiple of --pack {pack}; choose a batch of a multiple of "
                            f"{world_size * pack}")
    device = resolve_device(device_name)
    if device.type == "cuda":  # one GPU per process on each machine
        device = resolve_device(f"cuda:{ranks.local_rank}")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_shutdown)
    return ranks, device


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """DDP-wrap `module` (its BatchNorm layers first made global-batch) for the steps that train it."""
    if not ranks.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    # Every parameter gets a gradient in the step that trains the module (G's in the G step, D's in the D step),
    # so no unused-parameter search is needed; D is frozen and called unwrapped in the G step.
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def global_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm layer of `module` normalise with the statistics of the global batch.

    On GPUs this is torch's SyncBatchNorm. It refuses CPU tensors, so on CPUs each BatchNorm becomes a
    GlobalBatchNorm, which all-reduces the batch's sums (differentiably) over gloo.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            replacement = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats, device="meta")
            # the very same parameters and buffers, so optimizers built earlier keep training them
            for key, value in [*child.named_parameters(recurse=False), *child.named_buffers(recurse=False)]:
                setattr(replacement, key, value)
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            global_batchnorm(child, device)
    return module


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks, for CPU process groups; same state_dict as BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        local_count = xf.numel() // xf.shape[1]
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_tensor([local_count])])  # (2C + 1,)
        stats = _AllReduceSum.apply(stats)  # (2C + 1,) summed over every rank
        channels = xf.shape[1]
        count = stats[-1]
        mean = stats[:channels] / count
        var = (stats[channels:2 * channels] / count - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum a tensor over the ranks; the gradient of each rank's copy is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total
