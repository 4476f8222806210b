"""The SiamFC tracker on ONNX Runtime: the graphs of :mod:`export.tracking_onnx` in the same tracking loop
(:class:`constcl_zoo.tasks.tracking.SiamFC`) as the PyTorch tracker, with the same ``init`` / ``update`` /
``track``.

>>> tracker = OnnxTracker("tracker_onnx/")
>>> tracker.init(frame, (x, y, w, h)); box, score = tracker.update(next_frame)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from constcl_zoo.tasks.base import TaskConfig
from constcl_zoo.tasks.tracking import FrameByFrame, FrameSource, SiamFC, TrackResult

from .runtime import create_session
from .tracking_onnx import CONFIG_FILE, EXEMPLAR_FILE, SEARCH_FILE


class OnnxTracker(FrameByFrame):
    """SiamFC on ONNX Runtime from an exported folder; ``providers`` / ``threads`` as
    :func:`export.runtime.create_session`."""

    def __init__(self, folder: str | os.PathLike, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no {CONFIG_FILE} (export a tracker with export_tracker_onnx)")
        self.config = TaskConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
        self.exemplar_session, self.provider = create_session(folder / EXEMPLAR_FILE, providers, threads)
        self.search_session, _ = create_session(folder / SEARCH_FILE, providers, threads)
        bb = self.config.encoder.backbone
        self.feature_stride = bb.stem_stride[1] * bb.stem_pool_stride[1] * 2
        self._loop: SiamFC | None = None

    def _new_loop(self) -> SiamFC:
        def exemplar(z: torch.Tensor) -> np.ndarray:
            return self.exemplar_session.run(None, {"exemplar": z.numpy().astype(np.float32)})[0]

        def respond(zf: np.ndarray, x: torch.Tensor) -> torch.Tensor:
            out = self.search_session.run(None, {"search": x.numpy().astype(np.float32), "exemplar_features": zf})
            return torch.from_numpy(out[0])

        return SiamFC(self.config.head, tuple(self.config.preprocess.value_range), self.feature_stride,
                      exemplar, respond)

    def track(self, video: FrameSource, init_box: Sequence[float], **kwargs: Any) -> TrackResult:
        self._loop = self._new_loop()
        return self._loop.track(video, init_box, **kwargs)
