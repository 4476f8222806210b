"""Which decoded frames a clip takes: the one copy of the clip-index arithmetic, shared by inference (windows,
key-frame clips) and training (pretraining views, fine-tuning and probe clips, localization clips).

A clip is ``num_frames`` frames taken every ``frame_stride`` decoded frames from a first frame ``start``; it covers
:func:`clip_span` decoded frames. Where it reaches past the video, :func:`clip_indices` either wraps around to the
start (``"wrap"``: the official pretraining's ``_sample_or_pad``) or repeats the nearest frame (``"clamp"``: the
first / last frame repeats). A clip centred on a key frame starts at :func:`centred_start`.
"""

from __future__ import annotations

from typing import Literal

from ..errors import InvalidArgumentError

__all__ = ["centred_start", "clip_indices", "clip_span"]


def clip_span(num_frames: int, frame_stride: int) -> int:
    """Decoded frames from a clip's first to its last frame, inclusive."""
    return (num_frames - 1) * frame_stride + 1


def centred_start(key: int, num_frames: int, frame_stride: int) -> int:
    """The first frame of the clip whose frame ``num_frames // 2`` is decoded frame ``key`` (may be negative:
    :func:`clip_indices` clamps it)."""
    return key - (num_frames // 2) * frame_stride


def clip_indices(start: int, num_frames: int, frame_stride: int, num_decoded: int, *,
                 past_end: Literal["wrap", "clamp"], first: int = 0) -> list[int]:
    """Decoded-frame indices ``start + i * frame_stride`` (``i < num_frames``) of a video of ``num_decoded``
    frames. ``past_end="wrap"``: modulo ``num_decoded``; ``"clamp"``: clamped to ``[first, num_decoded - 1]``
    (``first``: the oldest frame still available, e.g. in a streaming buffer)."""
    indices = [start + i * frame_stride for i in range(num_frames)]
    if past_end == "wrap":
        return [i % num_decoded for i in indices]
    if past_end == "clamp":
        return [min(max(i, first), num_decoded - 1) for i in indices]
    raise InvalidArgumentError(f"past_end must be 'wrap' or 'clamp', got {past_end!r}")
