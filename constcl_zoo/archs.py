"""Registered architectures.

* ``constcl_r3d50``: the paper's network, exact to the official TF config (``const_cl_pretrain_k400_*.yaml``):
  R3D-50 "Y" backbone, 3x2048 MLP -> 128 global head, instance reconstructor with context length 5.
* ``cvrl_r3d50``: CVRL's R3D-50 (single res5) and CVRL's MLP head (hidden Linear layers with bias, TF BN
  momentum 0.997), so the published CVRL checkpoints load.
* ``*_r3d14_w16``: small variants for CPU work and tests — one bottleneck block per stage (depth 14), stem
  width 16 (a quarter of R3D-50: res5 has 512 channels), heads scaled down alike, 8x112x112 clips.
"""

from __future__ import annotations

from .config import BackboneConfig, GlobalHeadConfig, ModelConfig, PreprocessConfig, RegionHeadConfig, register_arch

_CVRL_HEAD = GlobalHeadConfig(hidden_bias=True, bn_momentum=1 - 0.997)
_R3D14_KERNELS = ((1,), (1,), (3,), (3,))
_SMALL_PREPROCESS = PreprocessConfig(num_frames=8, frame_stride=2, crop_size=112, resize_short_side=112)


@register_arch
def constcl_r3d50() -> ModelConfig:
    return ModelConfig(arch="constcl_r3d50", family="constcl")


@register_arch
def cvrl_r3d50() -> ModelConfig:
    return ModelConfig(arch="cvrl_r3d50", family="cvrl", backbone=BackboneConfig(region_branch=False),
                       global_head=_CVRL_HEAD, region_head=None)


@register_arch
def constcl_r3d14_w16() -> ModelConfig:
    small_mlp = GlobalHeadConfig(hidden_dim=512, out_dim=128)
    return ModelConfig(
        arch="constcl_r3d14_w16", family="constcl",
        backbone=BackboneConfig(width=16, temporal_kernels=_R3D14_KERNELS),
        global_head=small_mlp,
        region_head=RegionHeadConfig(context_length=3, head_dim=32, vanilla_mlp=small_mlp),
        preprocess=_SMALL_PREPROCESS)


@register_arch
def cvrl_r3d14_w16() -> ModelConfig:
    return ModelConfig(
        arch="cvrl_r3d14_w16", family="cvrl",
        backbone=BackboneConfig(width=16, temporal_kernels=_R3D14_KERNELS, region_branch=False),
        global_head=GlobalHeadConfig(hidden_dim=512, out_dim=128, hidden_bias=True, bn_momentum=1 - 0.997),
        region_head=None, preprocess=_SMALL_PREPROCESS)
