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

    def __call__(self, frames: ArrayLike) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
        if x.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8 RGB in [0, 255], got dtype {x.dtype}")
        if x.ndim == 5:
            return torch.stack([self(clip) for clip in x])
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"frames must be [T, H, W, 3] (or [B, T, H, W, 3]) RGB, got shape {tuple(x.shape)}")
        t, h, w, _ = x.shape
        if t == 0 or h == 0 or w == 0:
            raise ValueError(f"frames are empty: shape {tuple(x.shape)}")
        out_h, out_w = self.output_size(h, w)
        crop = self.cfg.crop_size
        top, left = (out_h - crop) // 2, (out_w - crop) // 2
        lo, hi = self.cfg.value_range
        chunks = []
        for start in range(0, t, self.chunk_frames):  # bounds the float copy of large frames
            chunk = x[start:start + self.chunk_frames].permute(0, 3, 1, 2).float()
            if (out_h, out_w) != (h, w):
                chunk = F.interpolate(chunk, size=(out_h, out_w), mode=self.cfg.interpolation,
                                      align_corners=False, antialias=True)
            chunk = chunk[:, :, top:top + crop, left:left + crop]
            chunks.append(chunk.clamp_(0, 255).mul_((hi - lo) / 255.0).add_(lo))
        return torch.cat(chunks).permute(1, 0, 2, 3).contiguous()

    def frame_indices(self, start: int) -> list[int]:
        """Decoded-frame indices of the clip that starts at frame ``start``."""
        return [start + i * self.cfg.frame_stride for i in range(self.cfg.num_frames)]

    @property
    def clip_span(self) -> int:
        """Decoded frames covered by one clip (first to last, inclusive)."""
        return (self.cfg.num_frames - 1) * self.cfg.frame_stride + 1



def spatial_views(preprocess: ClipPreprocess, frames: ArrayLike, crops: int = 3) -> torch.Tensor:
    """Multi-view testing crops of one clip: uint8 ``[T, H, W, 3]`` -> ``[crops, 3, T, crop, crop]``.

    After ``preprocess``'s short-side resize, ``crops`` squares of ``crop_size`` are taken evenly along the
    longer side (left / centre / right for landscape frames, top / centre / bottom for portrait ones; the first
    and last touch the edges), the shorter side centred; ``crops=1`` is ``preprocess``'s own centre crop. Each
    view is cut from the original frames (the region that becomes that crop after the resize) and handed to the
    same preprocessing with ``resize_short_side = crop_size``, so resizing and value scaling are
    :class:`ClipPreprocess`'s and exist once.
    """
    import dataclasses

    if not isinstance(crops, int) or isinstance(crops, bool) or crops < 1:
        raise ValueError(f"crops must be a positive integer, got {crops!r}")
    shape = tuple(getattr(frames, "shape", ()))
    if len(shape) != 4 or shape[-1] != 3 or 0 in shape:
        raise ValueError(f"frames must be one clip [T, H, W, 3] RGB, got shape {shape}")
    h, w = shape[1], shape[2]
    out_h, out_w = preprocess.output_size(h, w)
    crop = preprocess.cfg.crop_size
    to_crop = ClipPreprocess(dataclasses.replace(preprocess.cfg, resize_short_side=crop), preprocess.chunk_frames)

    def region(offset: int, out: int, size: int) -> slice:
        """Original pixels ``[offset, offset + crop)`` of an axis resized from ``size`` to ``out``."""
        scale = size / out
        length = min(size, max(1, round(crop * scale)))
        start = min(max(0, round(offset * scale)), size - length)
        return slice(start, start + length)

    long_out, long_size = (out_w, w) if out_w >= out_h else (out_h, h)
    short_out, short_size = (out_h, h) if out_w >= out_h else (out_w, w)
    centre = region((short_out - crop) // 2, short_out, short_size)
    offsets = [(long_out - crop) // 2] if crops == 1 else [i * (long_out - crop) // (crops - 1) for i in range(crops)]
    views = []
    for offset in offsets:
        along = region(offset, long_out, long_size)
        rows, cols = (centre, along) if out_w >= out_h else (along, centre)
        views.append(to_crop(frames[:, rows, cols]))
    return torch.stack(views)
