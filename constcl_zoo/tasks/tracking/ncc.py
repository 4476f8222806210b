"""The training-free tracker: ZNCC of grayscale pixels (OpenCV's ``matchTemplate``) in the SiamFC loop."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..base import TaskConfigError
from .config import NCC_CONFIG, PixelTrackerConfig, TrackerConfig
from .results import TrackResult
from .siamfc import FrameByFrame, FrameSource, SiamFC


class NCCTracker(FrameByFrame):
    """The training-free baseline: zero-mean normalised cross-correlation of grayscale pixels (OpenCV's
    ``matchTemplate``, ``TM_CCOEFF_NORMED``) in the same tracking loop as the SiamFC tracker (:class:`SiamFC`:
    crops, scales, scale penalty, cosine window, box update), at feature stride 1. The floor every learned tracker
    must beat. ``config``: a :class:`TrackerConfig` with ``correlation="zncc"`` (default :data:`NCC_CONFIG`).

    >>> tracker = NCCTracker(); result = tracker.track("video.mp4", init_box=(x, y, w, h))
    """

    task = "tracking"
    name = "ncc"

    def __init__(self, config: TrackerConfig | None = None, provenance: dict[str, Any] | None = None) -> None:
        self.config = PixelTrackerConfig(config or NCC_CONFIG, dict(provenance or {}))
        if self.tracker_config.correlation != "zncc":
            raise TaskConfigError("NCCTracker: the pixel baseline's correlation is 'zncc'")
        self._loop: SiamFC | None = None

    @property
    def tracker_config(self) -> TrackerConfig:
        return self.config.head

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the tracker as a checkpoint folder (``config.json`` only: there are no weights)."""
        from ...fileio import atomic_write

        return atomic_write(Path(folder) / "config.json", json.dumps(self.config.to_dict(), indent=2) + "\n")

    def _new_loop(self) -> SiamFC:
        import cv2

        def gray(clips: torch.Tensor) -> np.ndarray:  # [S, 3, T, X, X] in [0, 255] -> [S, X, X] float32
            rgb = clips[:, :, clips.shape[2] // 2 if not self.tracker_config.causal else -1]
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype).view(1, 3, 1, 1)
            return (rgb * weights).sum(1).numpy().astype(np.float32)

        def exemplar(z: torch.Tensor) -> np.ndarray:
            return gray(z)[0]

        def respond(template: np.ndarray, x: torch.Tensor) -> torch.Tensor:
            maps = [cv2.matchTemplate(search, template, cv2.TM_CCOEFF_NORMED) for search in gray(x)]
            return torch.from_numpy(np.stack(maps)[:, None])

        return SiamFC(self.tracker_config, (0.0, 255.0), 1, exemplar, respond)

    def track(self, video: FrameSource, init_box: Sequence[float], *, precision: str | None = None,
              **kwargs: Any) -> TrackResult:
        """As :meth:`FrameByFrame.track`; ``precision`` is accepted for a uniform interface (pixels: fp32)."""
        return super().track(video, init_box, **kwargs)
