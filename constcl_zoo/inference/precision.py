"""Inference precision and memory layout: ``precision="auto" | "fp32" | "bf16"`` -> an :class:`ExecutionPlan`.

``"auto"`` picks the fastest plan the hardware supports:

* CPU with native bf16 (AVX512-BF16 or AMX: oneDNN's own check, confirmed by the CPU flags on Linux): bf16
  autocast + channels_last_3d.
* Other CPUs: fp32 + channels_last_3d. bf16 would be emulated there, far slower than fp32 (``benchmarks/embed.py``
  measures ~1 GFLOP/s bf16 GEMM against ~150 fp32 on the 2-core AVX2 CI machine), while channels_last_3d alone
  ran R3D-50 9-27% faster than the default layout at the same fp32 accuracy.
* CUDA: bf16 autocast + channels_last_3d where ``torch.cuda.is_bf16_supported()``, else fp32.

``"fp32"`` is the reference: fp32 in the default layout. ``"bf16"`` forces bf16 autocast + channels_last_3d
(emulated where not native).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InvalidArgumentError

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class ExecutionPlan:
    """How to run: ``dtype`` ``"fp32"`` or ``"bf16"`` (autocast), and whether to use channels_last_3d."""

    dtype: str
    channels_last: bool

    def __str__(self) -> str:
        return self.dtype + (" + channels_last_3d" if self.channels_last else "")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AMX or AVX512-BF16)."""
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():  # Linux: trust the kernel's flags over heuristics
        flags = set()
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
        return onednn and any(f in flags for f in _BF16_CPU_FLAGS)
    return onednn


def resolve_precision(precision: str, device: torch.device | str) -> ExecutionPlan:
    """The plan for ``precision`` (``"auto"``, ``"fp32"`` or ``"bf16"``) on ``device``."""
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return ExecutionPlan("fp32", channels_last=False)
    if precision == "bf16":
        return ExecutionPlan("bf16", channels_last=True)
    device = torch.device(device)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return ExecutionPlan("bf16" if bf16 else "fp32", channels_last=bf16)
    if device.type == "cpu":
        return ExecutionPlan("bf16" if cpu_has_native_bf16() else "fp32", channels_last=True)
    return ExecutionPlan("fp32", channels_last=False)


def prepare_model(model: torch.nn.Module, plan: ExecutionPlan) -> torch.nn.Module:
    """Put ``model``'s weights in the plan's memory layout, in place; returns it."""
    fmt = torch.channels_last_3d if plan.channels_last else torch.contiguous_format
    return model.to(memory_format=fmt)


@contextlib.contextmanager
def plan_context(plan: ExecutionPlan, device: torch.device | str) -> Iterator[None]:
    """Inference mode, plus bf16 autocast for a bf16 plan."""
    device = torch.device(device)
    with torch.inference_mode():
        if plan.dtype == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield


def to_input(clips: torch.Tensor, model: torch.nn.Module, plan: ExecutionPlan) -> torch.Tensor:
    """Move a clip batch ``[B, 3, T, H, W]`` to the model's device (and, for fp32 plans, its dtype) and layout."""
    param = next(model.parameters())
    clips = clips.to(device=param.device, dtype=param.dtype if plan.dtype == "fp32" else torch.float32)
    return clips.contiguous(memory_format=torch.channels_last_3d if plan.channels_last else torch.contiguous_format)
