"""What a tracker returns: :class:`TrackResult` (boxes, scores, times) and its text format
(:func:`format_boxes`: one ``x,y,w,h[,confidence]`` line a frame, the OTB / GOT-10k results format)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrackResult:
    """``boxes [N, 4]`` float64 ``x, y, w, h`` pixels (frame 0: the initial box), ``scores [N]`` the per-frame
    confidence in [0, 1] (1 on frame 0): for a ``"zncc"`` tracker the normalised correlation of the exemplar with
    the chosen window (how much the target still looks like its first frame; it drops when the target is lost or
    hidden), else the sigmoid of the response peak. ``times [N]`` seconds the tracker spent on each frame
    (decoding excluded)."""

    boxes: np.ndarray
    scores: np.ndarray
    times: np.ndarray

    @property
    def fps(self) -> float:
        total = float(self.times.sum())
        return len(self.times) / total if total > 0 else float("inf")

    def __len__(self) -> int:
        return len(self.boxes)


def format_boxes(boxes: np.ndarray, scores: np.ndarray | None = None) -> str:
    """``[N, 4]`` boxes as text, one ``x,y,w,h`` line a frame (the OTB / GOT-10k results format); with ``scores
    [N]``, a fifth column: the per-frame confidence (``x,y,w,h,confidence``)."""
    rows = np.asarray(boxes, dtype=np.float64)
    if scores is None:
        return "".join(",".join(f"{v:.2f}" for v in row) + "\n" for row in rows)
    return "".join(",".join(f"{v:.2f}" for v in row) + f",{c:.4f}\n" for row, c in zip(rows, scores, strict=True))
