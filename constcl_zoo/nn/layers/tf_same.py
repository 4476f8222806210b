"""TensorFlow ``padding='same'`` for 3-D convolution and max-pooling.

TF pads ``total = max((ceil(n / s) - 1) * s + k - n, 0)`` per axis, ``total // 2`` before and the rest after, so
the padding is asymmetric whenever ``total`` is odd (the R3D stem at 16x224x224 pads T (1, 2) and H/W (2, 3);
stride-2 3x3 convs on even sizes pad (0, 1)). PyTorch's ``padding=`` is symmetric and cannot express this, so the
pad is computed from the input size at run time and applied with ``F.pad``. Max-pooling pads with -inf, so the
padding never wins the max (TF ignores padded positions).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """``(before, after)`` padding TF's 'same' uses on one axis of length ``size`` (a dilated kernel spans
    ``(kernel - 1) * dilation + 1``)."""
    kernel = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_spec(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
              dilation: tuple[int, ...] = (1, 1, 1)) -> list[int]:
    spec: list[int] = []
    # F.pad lists the last axis first.
    for size, k, s, d in reversed(list(zip(x.shape[-3:], kernel, stride, dilation, strict=True))):
        spec.extend(same_padding(int(size), k, s, d))
    return spec


class Conv3dSame(nn.Conv3d):
    """``nn.Conv3d`` without bias and with TF 'same' padding; input ``[N, C, T, H, W]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int],
                 stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = _pad_spec(x, self.kernel_size, self.stride, self.dilation)
        if any(spec):
            x = F.pad(x, spec)
        return super().forward(x)


class MaxPool3dSame(nn.Module):
    """3-D max-pooling with TF 'same' padding (padded positions never win)."""

    def __init__(self, kernel_size: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = _pad_spec(x, self.kernel_size, self.stride)
        if any(spec):
            x = F.pad(x, spec, value=float("-inf"))
        return F.max_pool3d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"
