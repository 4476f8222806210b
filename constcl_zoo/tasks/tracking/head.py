"""The SiamFC head: 1x1 adjusts, cross-correlation (mean or zero-mean normalised, as one matrix product) and a
one-channel BatchNorm; :func:`stage_time_slice` runs a backbone stage on the time slices one output slice needs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrackerConfig


def stage_time_slice(blocks: nn.Sequential, x: torch.Tensor, t: int) -> torch.Tensor:
    """Time slice ``t`` of ``blocks(x)`` (``x [B, C, T, H, W]`` -> ``[B, C', H', W']``) for bottleneck blocks whose
    only temporal op is a stride-1 'same'-padded ``temporal_conv`` of odd kernel: each block runs only on the slices
    the wanted one depends on. A block's output slice needs its input slices within the kernel's radius, so
    walking back from ``t`` gives each block's input interval; cropping a block's input to it leaves the kept
    slices' values unchanged (their padding is the original one at the clip's ends). Other blocks: the whole
    stage."""
    kernels = [getattr(getattr(b, "temporal_conv", None), "kernel_size", (0,)) for b in blocks]
    strides = [getattr(getattr(b, "temporal_conv", None), "stride", (0,)) for b in blocks]
    if any(k[0] % 2 == 0 for k in kernels) or any(s[0] != 1 for s in strides):
        return blocks(x)[:, :, t]
    last = x.shape[2] - 1
    need = [(t, t)]  # need[i]: the interval of block i's input slices (need[-1]: the output slice)
    for k in reversed(kernels):
        lo, hi = need[0]
        need.insert(0, (max(lo - k[0] // 2, 0), min(hi + k[0] // 2, last)))
    start = 0  # x holds the slices start, start + 1, ...
    for block, (lo, hi) in zip(blocks, need, strict=False):
        x = block(x[:, :, lo - start:hi - start + 1])
        start = lo
    return x[:, :, t - start]


def cross_correlation(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_{c, p} z[b, c, p] x[b, c, p + q]``: ``z [B or 1, C, hz, wz]`` slid over ``x [B, C, hx, wx]`` ->
    ``[B, 1, hx - hz + 1, wx - wz + 1]`` (a ``z`` with B = 1 is shared by every ``x``).

    As one matrix product of every exemplar cell with every search cell (``[hz*wz, C] @ [C, hx*wx]``) and a sum
    of the ``hz*wz`` shifted diagonals: a GEMM instead of a convolution with an ``hz x wz`` kernel over C
    channels, which CPU convolution kernels run ~10x slower (8 ms against 1 ms for R3D-14's 63 / 127 crops)."""
    b, _, hx, wx = x.shape
    hz, wz = z.shape[-2:]
    ho, wo = hx - hz + 1, wx - wz + 1
    cells = torch.matmul(z.flatten(2).transpose(1, 2), x.flatten(2))  # [B, hz*wz, hx*wx]
    p = torch.arange(hz * wz, device=x.device)
    q = torch.arange(ho * wo, device=x.device)[:, None]
    index = p * (hx * wx) + (q // wo + p // wz) * wx + (q % wo + p % wz)  # [ho*wo, hz*wz] into cells[b].flatten()
    return cells.flatten(1)[:, index].sum(-1).view(b, 1, ho, wo)


def normalized_cross_correlation(z: torch.Tensor, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Zero-mean normalised cross-correlation (ZNCC) of ``z [B or 1, C, hz, wz]`` with every ``hz x wz`` window
    of ``x [B, C, hx, wx]``, over channels and cells: ``[B, 1, hx - hz + 1, wx - wz + 1]`` in [-1, 1] (0 where a
    window is constant).

    The exemplar is centred once; the windows' means and norms come from box sums of ``x`` and ``x**2`` (in
    float64: the variance is a difference of two large sums). Numerator: :func:`cross_correlation` with the centred
    exemplar (its zero mean removes each window's mean by itself)."""
    hz, wz = z.shape[-2:]
    n = z.shape[1] * hz * wz
    z0 = z - z.mean(dim=(1, 2, 3), keepdim=True)
    numerator = cross_correlation(z0, x)
    x64 = x.double()
    cells = hz * wz
    s1 = F.avg_pool2d(x64.sum(1, keepdim=True), (hz, wz), stride=1) * cells
    s2 = F.avg_pool2d(x64.square().sum(1, keepdim=True), (hz, wz), stride=1) * cells
    variance = s2 - s1.square() / n
    flat = variance <= 1e-9 * s2  # a constant window (up to rounding): no pattern to correlate with
    window_norm = variance.clamp_min(0).sqrt().to(x.dtype)
    z_norm = z0.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return (numerator / (z_norm * window_norm + eps)).masked_fill(flat, 0.0)


class SiamFCHead(nn.Module):
    """1x1 adjust convs on each side, mean cross-correlation, a one-channel BatchNorm (output scale and bias).

    ``forward(z [B, C, hz, wz], x [B, C, hx, wx]) -> [B, 1, hx - hz + 1, wx - wz + 1]`` (a ``z`` with B = 1 is
    shared by every ``x``). Tracking computes ``adjust_z(z)`` once and :meth:`respond` every frame.
    """

    def __init__(self, in_channels: int, cfg: TrackerConfig) -> None:
        super().__init__()
        self.correlation = cfg.correlation
        channels = cfg.adjust_channels or in_channels
        self.adjust_z = nn.Conv2d(in_channels, channels, 1)
        self.adjust_x = nn.Conv2d(in_channels, channels, 1)
        self.norm = nn.BatchNorm2d(1)

    def respond(self, zf: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Responses of adjusted exemplar features ``zf = adjust_z(z)`` in backbone search features ``x``: the
        BatchNorm of the mean correlation of ``zf`` with ``adjust_x(x)``.

        ``adjust_x`` is folded into the exemplar side (``<zf, W x + b> = <W^T zf, x> + <zf, b>``): a ``[c, C]``
        product over the ``hz x wz`` exemplar cells instead of a 1x1 conv over the search cells of every scale
        (12x as many with 3 scales at exemplar / search 63 / 127 or 127 / 255).

        ``correlation="zncc"``: the ZNCC of ``zf`` with ``adjust_x(x)`` (:func:`normalized_cross_correlation`), in
        [-1, 1], without the BatchNorm in eval mode (it only scales training logits; the tracker's confidence is the
        ZNCC itself)."""
        if self.correlation == "zncc":
            out = normalized_cross_correlation(zf, self.adjust_x(x))
            return self.norm(out) if self.training else out
        w = self.adjust_x.weight.flatten(1)  # [c, C]
        kernel = torch.einsum("oc,boyx->bcyx", w, zf)
        offset = (zf * self.adjust_x.bias.view(1, -1, 1, 1)).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1)
        out = cross_correlation(kernel, x) + offset
        return self.norm(out / (zf.shape[1] * zf.shape[-2] * zf.shape[-1]))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.respond(self.adjust_z(z), x)
