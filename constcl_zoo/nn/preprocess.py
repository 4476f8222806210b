"""The preprocessing that belongs to the weights: uint8 RGB frames -> normalised clip tensor."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..config import PreprocessConfig
from ..errors import InvalidArgumentError, InvalidTypeError
from ..inference.video import check_frame_size

ArrayLike = np.ndarray | torch.Tensor


def _filter(x: np.ndarray, interpolation: str) -> np.ndarray:
    """The antialiasing filters of ``torch.nn.functional.interpolate(..., antialias=True)`` (PIL's)."""
    x = np.abs(x)
    if interpolation == "bilinear":
        return np.where(x < 1.0, 1.0 - x, 0.0)
    a = -0.5  # PyTorch's antialiased bicubic uses PIL's a = -0.5
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
                    np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0))


@lru_cache(maxsize=64)
def _taps(in_size: int, out_size: int, first: int, count: int, interpolation: str
          ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Antialiased resampling of one axis from ``in_size`` to ``out_size`` samples, for output samples
    ``first .. first + count - 1`` only.

    Returns ``(index [count, K], weight [count, K], lo, hi)``: output ``i`` is ``sum_k weight[i, k] *
    input[lo + index[i, k]]``; only input samples ``lo .. hi - 1`` are read. The weights are those of
    ``F.interpolate(mode=..., antialias=True, align_corners=False)`` (its ``_compute_indices_min_size_weights_aa``:
    centre ``scale * (i + 0.5)``, support ``scale`` per unit of filter radius when downsampling), in float64.
    """
    scale = in_size / out_size
    radius = 1.0 if interpolation == "bilinear" else 2.0
    support = radius * scale if scale >= 1.0 else radius
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    centre = scale * (np.arange(first, first + count, dtype=np.float64) + 0.5)
    xmin = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # astype truncates like the C++ cast
    xmax = np.minimum((centre + support + 0.5).astype(np.int64), in_size)
    k = int((xmax - xmin).max())
    index = xmin[:, None] + np.arange(k)[None]
    weight = _filter((index - centre[:, None] + 0.5) * invscale, interpolation) * (index < xmax[:, None])
    total = weight.sum(1, keepdims=True)
    weight = np.divide(weight, total, out=np.zeros_like(weight), where=total != 0)
    index = np.minimum(index, xmax[:, None] - 1)
    lo, hi = int(xmin.min()), int(xmax.max())
    return (torch.from_numpy(index - lo), torch.from_numpy(weight.astype(np.float32)), lo, hi)


def _resample_rows(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``out[:, i] = sum_k weight[i, k] * x[:, index[i, k]]`` for ``x [T, N, ...]``: whole contiguous rows are
    gathered and accumulated, one filter tap at a time."""
    shape = (1, index.shape[0]) + (1,) * (x.ndim - 2)
    index, weight = index.to(x.device), weight.to(x.device)
    out = x.index_select(1, index[:, 0]).mul_(weight[:, 0].view(shape))
    for k in range(1, index.shape[1]):
        out.addcmul_(x.index_select(1, index[:, k]), weight[:, k].view(shape))
    return out


class ClipPreprocess:
    """Turn uint8 RGB frames ``[T, H, W, 3]`` into the clip ``[3, T, crop, crop]`` the weights expect.

    A batch ``[B, T, H, W, 3]`` gives ``[B, 3, T, crop, crop]``. Steps: resize so the shorter side is
    ``resize_short_side`` (antialiased), centre crop ``crop_size``, scale [0, 255] -> ``value_range``.
    Temporal sampling (``num_frames`` every ``frame_stride``) is the caller's: the frames given are the clip.

    The crop is computed first, in the frame's own coordinates, and only the source pixels under it are
    resampled, with the filter weights of ``F.interpolate(..., antialias=True, align_corners=False)`` computed
    for the cropped output pixels only: memory and time depend on the crop, not on the frame's longer side.
    The result equals resize-then-crop with ``F.interpolate`` up to float rounding (the weights here are
    computed in float64 and the passes run rows first; on the shared test videos the largest difference is
    3e-5 on the [-1, 1] output scale, 0.004 of one uint8 level; ``tests/test_preprocess.py`` holds it to 1e-4).
    Frames over the size limits of :func:`~constcl_zoo.inference.video.check_frame_size` raise
    :class:`~constcl_zoo.inference.video.FrameSizeError`.
    """

    def __init__(self, cfg: PreprocessConfig, chunk_frames: int = 32) -> None:
        if cfg.resize_short_side < cfg.crop_size:
            raise InvalidArgumentError(
                f"resize_short_side ({cfg.resize_short_side}) must be >= crop_size ({cfg.crop_size})")
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
            raise InvalidTypeError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
        if x.dtype != torch.uint8:
            raise InvalidTypeError(f"frames must be uint8 RGB in [0, 255], got dtype {x.dtype}")
        if x.ndim == 5:
            return torch.stack([self(clip, crop) for clip in x])
        if x.ndim != 4 or x.shape[-1] != 3:
            raise InvalidArgumentError(
                f"frames must be [T, H, W, 3] (or [B, T, H, W, 3]) RGB, got shape {tuple(x.shape)}")
        t, h, w, _ = x.shape
        if t == 0 or h == 0 or w == 0:
            raise InvalidArgumentError(f"frames are empty: shape {tuple(x.shape)}")
        check_frame_size(h, w, f"frames {list(x.shape)}")
        out_h, out_w = self.output_size(h, w)
        crop_h, crop_w = (self.cfg.crop_size,) * 2 if crop else (out_h, out_w)
        rows = _taps(h, out_h, (out_h - crop_h) // 2, crop_h, self.cfg.interpolation) if out_h != h else None
        cols = _taps(w, out_w, (out_w - crop_w) // 2, crop_w, self.cfg.interpolation) if out_w != w else None
        top, left = (h - crop_h) // 2, (w - crop_w) // 2  # where an axis keeps its size, the crop is a plain slice
        r0, r1 = (rows[2], rows[3]) if rows else (top, top + crop_h)
        c0, c1 = (cols[2], cols[3]) if cols else (left, left + crop_w)
        lo, hi = self.cfg.value_range
        chunks = []
        for start in range(0, t, self.chunk_frames):  # bounds the float copy of large frames
            chunk = x[start:start + self.chunk_frames, r0:r1, c0:c1].float()  # [t, h', w', 3]: only what is read
            if rows:
                chunk = _resample_rows(chunk, rows[0], rows[1])
            chunk = chunk.transpose(1, 2)  # [t, w', crop_h, 3]: columns become rows
            if cols:
                chunk = _resample_rows(chunk.contiguous(), cols[0], cols[1])
            chunks.append(chunk.permute(0, 3, 2, 1).clamp_(0, 255).mul_((hi - lo) / 255.0).add_(lo))
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
        raise InvalidArgumentError(f"crops must be a positive integer, got {crops!r}")
    shape = tuple(getattr(frames, "shape", ()))
    if len(shape) != 4 or shape[-1] != 3 or 0 in shape:
        raise InvalidArgumentError(f"frames must be one clip [T, H, W, 3] RGB, got shape {shape}")
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
