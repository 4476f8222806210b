"""Self-supervised heads: the projection MLP (global branch) and the instance reconstructor (region branch).

Both are exact to the official TF code (``const_cl/modeling/heads``; CVRL's head in ``video_ssl_model.py``).
They are used in pretraining only; downstream models drop them (paper §4.1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GlobalHeadConfig, RegionHeadConfig
from ..errors import InvalidArgumentError
from .layers import roi_align_mean


class ProjectionMLP(nn.Module):
    """``hidden_layers`` x [Linear -> BN -> ReLU] -> Linear: ``[N, in_dim]`` -> ``[N, out_dim]``."""

    def __init__(self, in_dim: int, cfg: GlobalHeadConfig) -> None:
        super().__init__()
        self.normalize_inputs = cfg.normalize_inputs
        layers = []
        for _ in range(cfg.hidden_layers):
            layers += [nn.Linear(in_dim, cfg.hidden_dim, bias=cfg.hidden_bias),
                       nn.BatchNorm1d(cfg.hidden_dim, cfg.bn_eps, cfg.bn_momentum), nn.ReLU(inplace=True)]
            in_dim = cfg.hidden_dim
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(in_dim, cfg.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize_inputs:
            x = F.normalize(x, dim=-1)
        lead = x.shape[:-1]
        x = self.hidden(x.reshape(-1, x.shape[-1]))  # BatchNorm1d wants [N, C]
        return self.out(x).reshape(*lead, -1)


class DecoderUnit(nn.Module):
    """One official "head": cross-attention with its own q/k/v, ``LN(attn + q)``, then a 2-layer GELU FFN
    without residual. ``query [B, N, Dq]``, ``memory [B, M, Dm]`` -> ``[B, N, dim]``."""

    def __init__(self, query_dim: int, memory_dim: int, dim: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.q = nn.Linear(query_dim, dim)
        self.k = nn.Linear(memory_dim, dim)
        self.v = nn.Linear(memory_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.ffn1 = nn.Linear(dim, dim)
        self.ffn2 = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        q = self.q(query)
        attn = torch.softmax(q @ self.k(memory).transpose(1, 2) * self.scale, dim=-1)
        h = self.norm(self.dropout(attn @ self.v(memory)) + q)
        return self.ffn2(F.gelu(self.ffn1(h)))


class DecoderLayer(nn.Module):
    """``num_heads`` independent :class:`DecoderUnit` s whose outputs are concatenated."""

    def __init__(self, query_dim: int, memory_dim: int, cfg: RegionHeadConfig) -> None:
        super().__init__()
        self.units = nn.ModuleList(
            DecoderUnit(query_dim, memory_dim, cfg.head_dim, cfg.layer_norm_eps, cfg.dropout)
            for _ in range(cfg.num_heads))

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return torch.cat([unit(query, memory) for unit in self.units], dim=-1)


class InstanceReconstructor(nn.Module):
    """Reconstructs each region of one view from its ROI feature and the other view's context (paper Eq. 5).

    ``forward(features, boxes)`` takes the region-branch features of both views stacked on the batch axis
    (view a first): ``features [2B, C, T', H', W']``, key-frame boxes ``[2B, N, 4]`` normalised
    ``(x1, y1, x2, y2)``, and optional per-clip key-frame indices ``[2B]`` into T' (default ``T' // 2``).

    Returns a dict of ``[B, N, ·]`` tensors: ``inst_a``/``inst_b`` (ROI features of each view, from the
    L2-normalised feature map), ``inst_a2b``/``inst_b2a`` (reconstructions of the other view's regions) and
    ``target_a``/``target_b``, what ``inst_b2a``/``inst_a2b`` are contrasted with (the raw ROI features; for
    ``context_length=0`` their MLP projections).
    """

    def __init__(self, feature_dim: int, cfg: RegionHeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.context_length == 0:
            self.mlp = ProjectionMLP(feature_dim, cfg.vanilla_mlp)
            return
        pos_dim = 0
        if cfg.positional_embedding:
            self.temporal_mlp = nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 8))
            self.spatial_mlp = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 8))
            pos_dim = 16
        memory_dim = feature_dim + pos_dim
        width = cfg.num_heads * cfg.head_dim
        self.layers = nn.ModuleList(
            DecoderLayer(feature_dim if i == 0 else width, memory_dim, cfg) for i in range(cfg.num_layers))
        self.projection = nn.Linear(width, feature_dim)

    def key_frame_features(self, features: torch.Tensor, boxes: torch.Tensor,
                           key_frames: torch.Tensor) -> torch.Tensor:
        """ROIAlign + mean on each clip's key frame: ``[N, C, T, H, W]``, ``[N, R, 4]``, ``[N]`` -> ``[N, R, C]``."""
        frames = features[torch.arange(features.shape[0], device=features.device), :, key_frames]
        return roi_align_mean(frames, boxes, self.cfg.crop_size, self.cfg.sample_offset)

    def memory(self, features: torch.Tensor, key_frames: torch.Tensor) -> torch.Tensor:
        """Context memory: ``context_length`` frames strided ``T' // context_length`` around the key frame,
        with the positional MLP outputs concatenated: ``[N, C, T, H, W]`` -> ``[N, L*H*W, C + 16]``."""
        n, _, t, h, w = features.shape
        length = self.cfg.context_length
        stride = t // length
        offsets = torch.arange(-(length // 2), length // 2 + 1, device=features.device) * stride
        index = (key_frames[:, None] + offsets).clamp(0, t - 1)  # [N, L]
        mem = features[torch.arange(n, device=features.device)[:, None], :, index]  # [N, L, C, H, W]
        mem = mem.permute(0, 1, 3, 4, 2)  # [N, L, H, W, C], flattened in (t, h, w) order below
        if self.cfg.positional_embedding:
            grid = torch.stack(torch.meshgrid(
                torch.arange(length), torch.arange(h), torch.arange(w), indexing="ij"), dim=-1)
            grid = grid.to(device=features.device, dtype=features.dtype)
            grid = grid - grid.mean(dim=(0, 1, 2))
            pos = torch.cat([self.temporal_mlp(grid[..., :1]), self.spatial_mlp(grid[..., 1:])], dim=-1)
            mem = torch.cat([mem, pos.expand(n, -1, -1, -1, -1)], dim=-1)
        return mem.reshape(n, length * h * w, -1)

    def decode(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Transformer decoder + projection: ``[N, R, C]``, ``[N, M, C + 16]`` -> ``[N, R, C]``."""
        for layer in self.layers:
            query = layer(query, memory)
        return self.projection(query)

    def forward(self, features: torch.Tensor, boxes: torch.Tensor,
                key_frames: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        n, _, t = features.shape[:3]
        if n % 2:
            raise InvalidArgumentError(f"expected both views stacked on the batch axis (even batch), got {n} clips")
        if key_frames is None:
            key_frames = torch.full((n,), t // 2, dtype=torch.long, device=features.device)
        if self.cfg.normalize_inputs:
            features = F.normalize(features, dim=1)
        inst = self.key_frame_features(features, boxes, key_frames)
        half = n // 2
        if self.cfg.context_length == 0:
            pred = self.mlp(inst)
            target = pred
        else:
            mem = self.memory(features, key_frames)
            # Views a and b query each other's memory: swap the halves and decode both directions at once.
            pred = self.decode(inst, torch.cat([mem[half:], mem[:half]]))
            target = inst
        return {"inst_a": inst[:half], "inst_b": inst[half:], "inst_a2b": pred[:half], "inst_b2a": pred[half:],
                "target_a": target[:half], "target_b": target[half:]}
