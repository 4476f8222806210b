"""R3D backbone of CVRL and ConST-CL, exact to the official TF ``ResNet3D`` / ``ResNet3DY``.

Input ``[N, 3, T, H, W]``. Stem: conv 5x7x7 stride (2, 2, 2) -> BN -> ReLU -> max-pool 1x3x3 stride (1, 2, 2),
all with TF 'same' padding. Stages res2..res5 of bottleneck blocks; spatial stride 2 in the first block of res3,
res4 and res5, no temporal stride after the stem. For a 16x224x224 clip the endpoints are
``res2 [N,256,8,56,56]``, ``res3 [N,512,8,28,28]``, ``res4 [N,1024,8,14,14]``, ``res5 [N,2048,8,7,7]``.

The ConST-CL "Y" duplicates res5: ``res5`` (global branch) and ``res5_region`` (region branch) are both fed
from res4. A backbone builds only the res5 branches it is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..config import BackboneConfig
from ..errors import InvalidArgumentError
from .layers import Conv3dSame, MaxPool3dSame

ENDPOINTS = ("stem", "res2", "res3", "res4", "res5", "res5_region")
_DEPTH = {"stem": 0, "res2": 1, "res3": 2, "res4": 3, "res5": 4, "res5_region": 4}


class Bottleneck3D(nn.Module):
    """temporal conv [kt,1,1] -> BN -> ReLU -> spatial conv [1,3,3] (stride s) -> BN -> ReLU -> 1x1x1 expand -> BN,
    plus a shortcut (1x1x1 'valid' projection conv + BN when the channel count changes), then ReLU."""

    def __init__(self, in_channels: int, filters: int, temporal_kernel: int, spatial_stride: int,
                 bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        out_channels = 4 * filters
        self.spatial_stride = spatial_stride
        if in_channels != out_channels:
            self.shortcut_conv: nn.Module | None = nn.Conv3d(
                in_channels, out_channels, 1, stride=(1, spatial_stride, spatial_stride), bias=False)
            self.shortcut_bn: nn.Module | None = nn.BatchNorm3d(out_channels, bn_eps, bn_momentum)
        else:
            self.shortcut_conv = self.shortcut_bn = None
        self.temporal_conv = Conv3dSame(in_channels, filters, (temporal_kernel, 1, 1))
        self.bn1 = nn.BatchNorm3d(filters, bn_eps, bn_momentum)
        self.spatial_conv = Conv3dSame(filters, filters, (1, 3, 3), (1, spatial_stride, spatial_stride))
        self.bn2 = nn.BatchNorm3d(filters, bn_eps, bn_momentum)
        self.expand_conv = Conv3dSame(filters, out_channels, (1, 1, 1))
        self.bn3 = nn.BatchNorm3d(out_channels, bn_eps, bn_momentum)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_bn(self.shortcut_conv(x))
        elif self.spatial_stride > 1:
            shortcut = x[:, :, :, :: self.spatial_stride, :: self.spatial_stride]
        else:
            shortcut = x
        out = self.relu(self.bn1(self.temporal_conv(x)))
        out = self.relu(self.bn2(self.spatial_conv(out)))
        out = self.bn3(self.expand_conv(out))
        return self.relu(out + shortcut)


class Stem(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.conv = Conv3dSame(3, cfg.width, cfg.stem_kernel, cfg.stem_stride)
        self.bn = nn.BatchNorm3d(cfg.width, cfg.bn_eps, cfg.bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.pool = MaxPool3dSame(cfg.stem_pool_kernel, cfg.stem_pool_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


def _stage(cfg: BackboneConfig, index: int, in_channels: int) -> nn.Sequential:
    filters = cfg.width * 2**index
    blocks = []
    for i, kt in enumerate(cfg.temporal_kernels[index]):
        stride = 2 if (i == 0 and index > 0) else 1
        blocks.append(Bottleneck3D(in_channels, filters, kt, stride, cfg.bn_eps, cfg.bn_momentum))
        in_channels = 4 * filters
    return nn.Sequential(*blocks)


class ResNet3D(nn.Module):
    """R3D backbone with the res5 branches named in ``res5_branches`` (``"global"`` -> ``res5``,
    ``"region"`` -> ``res5_region``)."""

    def __init__(self, cfg: BackboneConfig, res5_branches: Sequence[str] = ("global",)) -> None:
        super().__init__()
        if len(cfg.temporal_kernels) != 4:
            raise InvalidArgumentError(f"the backbone has 4 stages (res2..res5); got {len(cfg.temporal_kernels)}")
        unknown = set(res5_branches) - {"global", "region"}
        if unknown or not res5_branches:
            raise InvalidArgumentError(
                f"res5_branches must be a non-empty subset of ('global', 'region'), got {res5_branches}")
        self.cfg = cfg
        channels = cfg.stage_channels
        self.stem = Stem(cfg)
        self.res2 = _stage(cfg, 0, cfg.width)
        self.res3 = _stage(cfg, 1, channels[0])
        self.res4 = _stage(cfg, 2, channels[1])
        # A single-res5 network (CVRL) serves both branches from its one res5.
        if "global" in res5_branches or not cfg.region_branch:
            self.res5 = _stage(cfg, 3, channels[2])
        if "region" in res5_branches and cfg.region_branch:
            self.res5_region = _stage(cfg, 3, channels[2])

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(name for name in ENDPOINTS if hasattr(self, name))

    def forward(self, x: torch.Tensor, endpoints: Sequence[str]) -> dict[str, torch.Tensor]:
        """Compute the named endpoints of ``x [N, 3, T, H, W]`` (and nothing past the deepest one needed)."""
        missing = [e for e in endpoints if e not in self.endpoints]
        if missing:
            raise InvalidArgumentError(f"unknown endpoint(s) {missing}; this backbone has {list(self.endpoints)}")
        depth = max(_DEPTH[e] for e in endpoints) if endpoints else -1
        out: dict[str, torch.Tensor] = {}
        for name in ENDPOINTS[:4]:
            if _DEPTH[name] > depth:
                break
            x = out[name] = getattr(self, name)(x)
        for name in ("res5", "res5_region"):
            if name in endpoints:
                out[name] = getattr(self, name)(x)
        return {name: out[name] for name in endpoints}


def dilate_backbone(backbone: ResNet3D, stages: Sequence[str] = ("res4", "res5", "res5_region"),
                    dilations: Sequence[int] = (2, 4, 4)) -> ResNet3D:
    """Turn the spatial stride of ``stages`` into dilation, in place, keeping every weight (VFS / SiamFC-style
    trackers: res4/res5 at stride 1 with dilation 2/4, so res5 has a feature stride of 8 instead of 32).

    As torchvision's ``replace_stride_with_dilation``, the first block of a dilated stage uses half the stage's
    dilation (the previous stage's) and the others the full one; shortcut projections lose their stride too.
    Stages the backbone does not have are skipped. TF 'same' padding accounts for the dilation.
    """
    for name, dilation in zip(stages, dilations, strict=True):
        stage = getattr(backbone, name, None)
        if stage is None:
            continue
        for i, block in enumerate(stage):
            d = dilation // 2 if i == 0 else dilation
            block.spatial_stride = 1
            block.spatial_conv.stride = (1, 1, 1)
            block.spatial_conv.dilation = (1, d, d)
            if block.shortcut_conv is not None:
                block.shortcut_conv.stride = (1, 1, 1)
    return backbone
