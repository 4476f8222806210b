"""Process-group helpers for ``torchrun`` (NCCL on GPUs, Gloo on CPU) and a differentiable all-gather."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the ``torchrun`` process group if ``WORLD_SIZE > 1`` (backend from the device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward sums every process's gradient for this process's slice (all_reduce + slice).

    The same gradient as the official ``tpu_cross_replica_concat`` (scatter + all_reduce SUM); works on Gloo,
    which has no reduce_scatter.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.size = rank, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x [b, ...]`` from all processes along dim 0 (differentiable); returns it and this process's
    row offset (``rank * b``). Without a process group: ``(x, 0)``."""
    if not is_distributed():
        return x, 0
    return _GatherWithGrad.apply(x), dist.get_rank() * x.shape[0]


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over processes (no gradient); identity without a process group."""
    if not is_distributed():
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()
