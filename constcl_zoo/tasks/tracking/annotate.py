"""Tracking a video file or image folder into boxes and, optionally, an annotated H.264 MP4: the one implementation
behind ``constcl-zoo track`` and the demo's tracking tab."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ...formats.boxes import xywh_to_xyxy
from ...inference.video import iter_video_file
from ...inference.visualize import Mp4Writer, draw_box
from .model import SiamFCTracker
from .ncc import NCCTracker
from .results import TrackResult


def video_fps(source: str | os.PathLike, default: float = 30.0) -> float:
    """Frames per second of a video file (from its first decoded frame's duration), ``default`` for an image
    folder or a video whose frames carry no duration."""
    if not Path(source).is_file():
        return default
    first = next(iter_video_file(source), None)
    return 1.0 / first.duration_s if first is not None and first.duration_s > 0 else default


def track_video(tracker: SiamFCTracker | NCCTracker, source: str | os.PathLike, box: Sequence[float], *,
                out: str | os.PathLike | None = None, precision: str = "auto",
                progress: Callable[[int], None] | None = None) -> TrackResult:
    """Track ``box`` (x, y, w, h px on the first frame) through a video file or image folder; with ``out``, also
    write the annotated H.264 MP4 there (each frame's box, labelled with its score). ``progress(i)`` after frame
    ``i``. The one implementation behind ``constcl-zoo track`` and the demo's tracking tab."""
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(Mp4Writer(out, fps=video_fps(source))) if out else None

        def on_frame(i: int, rgb: np.ndarray, xywh: np.ndarray, score: float) -> None:
            if writer is not None:
                writer.write(draw_box(np.array(rgb), xywh_to_xyxy(np.asarray(xywh)), label=f"{score:.2f}"))
            if progress is not None:
                progress(i)

        return tracker.track(source, box, precision=precision, on_frame=on_frame)
