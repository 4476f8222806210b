"""Temporal sampling of the two views and key-frame pairing (paper Table 4).

``sample_view_starts`` is the official ``sample_ssl_sequence``: the gap between the two views is drawn from a
linearly decreasing density on ``[0, max_offset]`` by the same binary-search inversion of its CDF, the first
start is uniform in what is left, and the pair is randomly swapped. Frame indices wrap around (tile) past the end
(``constcl_zoo.inference.clips.clip_indices(..., past_end="wrap")``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from constcl_zoo.errors import InvalidArgumentError
from constcl_zoo.inference import clips


def _gap_cdf(k: float, max_offset: float) -> float:
    """CDF of the density proportional to ``max_offset - k`` on ``[0, max_offset]``."""
    return -(k**2) / max_offset**2 + 2.0 * k / max_offset


def sample_gap(u: float, max_offset: int) -> int:
    """Inverse-CDF gap for a uniform draw ``u`` in [0, 1), by the official binary search (integer result)."""
    lo, hi = 0.0, float(max_offset)
    k = math.floor(max_offset / 2.0)
    while abs(hi - lo) > 1.0:
        if _gap_cdf(k, max_offset) > u:
            lo, hi, k = lo, k, math.floor((k + lo) / 2.0)
        else:
            lo, hi, k = k, hi, math.floor((hi + k) / 2.0)
    return int(k)


def sample_view_starts(num_frames_video: int, num_frames: int, stride: int,
                       rng: np.random.Generator) -> tuple[int, int]:
    """Start frames ``(view 1, view 2)`` of the two views in a video of ``num_frames_video`` decoded frames."""
    length = num_frames_video
    reach = (num_frames - 1) * stride
    max_offset = length - reach if length > reach else length
    gap = sample_gap(float(rng.random()), max_offset)
    if max_offset == length:  # video shorter than one clip: independent starts, frames wrap around
        c1, c2 = int(rng.integers(0, max_offset)), int(rng.integers(0, max_offset))
    else:
        c1 = int(rng.integers(0, max(1, max_offset - gap)))
        c2 = c1 + gap
    return (c1, c2) if rng.random() < 0.5 else (c2, c1)


def clip_indices(start: int, num_frames: int, stride: int, num_frames_video: int) -> list[int]:
    """Deprecated: ``constcl_zoo.inference.clips.clip_indices(start, num_frames, stride, num_frames_video,
    past_end="wrap")`` (decoded-frame indices of a view, wrapping around the end as the official
    ``_sample_or_pad``)."""
    warnings.warn("training.pretrain.sampling.clip_indices is deprecated: use constcl_zoo.inference.clips."
                  "clip_indices(..., past_end='wrap')", DeprecationWarning, stacklevel=2)
    return clips.clip_indices(start, num_frames, stride, num_frames_video, past_end="wrap")


def pair_key_frames(strategy: str, starts: tuple[int, int], steps: int, frames_per_step: int,
                    rng: np.random.Generator) -> tuple[int, int]:
    """Key feature time steps ``(view 1, view 2)`` in ``[0, steps)`` for a pairing strategy.

    ``steps`` is T' (feature time steps); one step covers ``frames_per_step`` decoded frames (temporal stride of
    the backbone times the frame stride). ``center``: ``T' // 2`` in both views (official). ``nearest``: the pair
    of steps closest in video time (ties broken towards the centres). ``random``: independent uniform steps.
    """
    if strategy == "center":
        return steps // 2, steps // 2
    if strategy == "random":
        return int(rng.integers(0, steps)), int(rng.integers(0, steps))
    if strategy == "nearest":
        t = np.arange(steps)
        time_a = starts[0] + t * frames_per_step
        time_b = starts[1] + t * frames_per_step
        dist = np.abs(time_a[:, None] - time_b[None, :]).astype(np.float64)
        centre = np.abs(t[:, None] - steps // 2) + np.abs(t[None, :] - steps // 2)
        score = dist * (4 * steps) + centre
        i, j = np.unravel_index(int(np.argmin(score)), score.shape)
        return int(i), int(j)
    raise InvalidArgumentError(f"key-frame pairing must be 'center', 'nearest' or 'random', got {strategy!r}")
