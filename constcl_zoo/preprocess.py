"""The preprocessing that belongs to the weights: uint8 RGB frames -> normalised clip tensor."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import PreprocessConfig

ArrayLike = np.ndarray | torch.Tensor


class ClipPreprocess:
    """Turn uint8 RGB frames ``[T, H, W, 3]`` into the clip ``[3, T, crop, crop]`` the weights expect.

    A batch ``[B, T, H, W, 3]`` gives ``[B, 3, T, crop, crop]``. Steps: resize so the shorter side is
    ``resize_short_side`` (antialiased), centre crop ``crop_size``, scale [0, 255] -> ``value_range``.
    Temporal sampling (``num_frames`` every ``frame_stride``) is the caller's: the frames given are the clip.
    """

    def __init__(self, cfg: PreprocessConfig, chunk_frames: int = 32) -> None:
        if cfg.resize_short_side < cfg.crop_size:
            raise ValueError(f"resize_short_side ({cfg.resize_short_side}) must be >= crop_size ({cfg.crop_size})")
        self.cfg = cfg
        self.chunk_frames = chunk_frames

    def __repr__(self) -> str:
        c = self.cfg
        return (f"ClipPreprocess(resize_short_side={c.resize_short_side}, crop_size={c.crop_size}, "
                f"value_range={c.value_range}, interpolation={c.interpolation!r}; clips of {c.num_frames} frames "
                f"every {c.frame_stride})")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Size ``(h, w)`` of a frame after the short-side resize, before the crop."""
        scale = self.cfg.resize_short_side / min(height, width)
        return max(self.cfg.resize_short_side, round(height * scale)), max(self.cfg.resize_short_side,
                                                                            round(width * scale))

    def __call__(self, frames: ArrayLike, crop: bool = True) -> torch.Tensor:
        """``crop=False`` keeps the whole frame (resized only): ``[3, T, H', W']`` with the short side
        ``resize_short_side`` — what localization needs, whose boxes cover the whole frame."""
        x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
        if x.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8 RGB in [0, 255], got dtype {x.dtype}")
        if x.ndim == 5:
            return torch.stack([self(clip, crop) for clip in x])
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames must be [T, H, W, 3] (or [B, T, H, W, 3]) RGB, got shape {tuple(x.shape)}")
        t, h, w, _ = x.shape
        if t == 0 or h == 0 or w == 0:
            raise ValueError(f"frames are empty: shape {tuple(x.shape)}")
        out_h, out_w = self.output_size(h, w)
        crop_h, crop_w = (self.cfg.crop_size, self.cfg.crop_size) if crop else (out_h, out_w)
        top, left = (out_h - crop_h) // 2, (out_w - crop_w) // 2
        lo, hi = self.cfg.value_range
        chunks = []
        for start in range(0, t, self.chunk_frames):  # bounds the float copy of large frames
            chunk = x[start:start + self.chunk_frames].permute(0, 3, 1, 2).float()
            if (out_h, out_w) != (h, w):
                chunk = F.interpolate(chunk, size=(out_h, out_w), mode=self.cfg.interpolation,
                                      align_corners=False, antialias=True)
            chunk = chunk[:, :, top:top + crop_h, left:left + crop_w]
            chunks.append(chunk.clamp_(0, 255).mul_((hi - lo) / 255.0).add_(lo))
        return torch.cat(chunks).permute(1, 0, 2, 3).contiguous()

    def frame_indices(self, start: int) -> list[int]:
        """Decoded-frame indices of the clip that starts at frame ``start``."""
        return [start + i * self.cfg.frame_stride for i in range(self.cfg.num_frames)]

    @property
    def clip_span(self) -> int:
        """Decoded frames covered by one clip (first to last, inclusive)."""
        return (self.cfg.num_frames - 1) * self.cfg.frame_stride + 1

