"""OpenCV's MIL, KCF and CSRT trackers behind the ``init`` / ``update`` protocol of the evaluation.

MIL is in OpenCV's main modules; KCF and CSRT are in the contrib modules (``opencv-contrib-python-headless``,
which replaces ``opencv-python-headless``: install one of the two). Frames are RGB; OpenCV's trackers take BGR.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from constcl_zoo.errors import ConstclZooError

BASELINES = ("mil", "kcf", "csrt")


class BaselineUnavailableError(ConstclZooError, ImportError):
    """The installed OpenCV lacks the requested tracker."""


class OpenCVTracker:
    """An OpenCV tracker (``"mil"``, ``"kcf"`` or ``"csrt"``); ``update`` keeps the last box when OpenCV
    reports a failure (the box stays, as in the OTB runs of these trackers) with score 0."""

    def __init__(self, name: str) -> None:
        import cv2

        factory = {"mil": "TrackerMIL_create", "kcf": "TrackerKCF_create", "csrt": "TrackerCSRT_create"}
        if name not in factory:
            raise BaselineUnavailableError(f"unknown OpenCV tracker {name!r}; choose from {list(BASELINES)}")
        create = getattr(cv2, factory[name], None) or getattr(getattr(cv2, "legacy", None), factory[name], None)
        if create is None:
            raise BaselineUnavailableError(f"OpenCV {cv2.__version__} has no {name.upper()} tracker; it is in the "
                                           "contrib modules: pip install opencv-contrib-python-headless")
        self.name = name
        self._tracker = create()
        self._cv2 = cv2
        self._box = np.zeros(4)

    def init(self, frame: np.ndarray, box: Sequence[float]) -> None:
        self._box = np.asarray(box, dtype=np.float64)
        self._tracker.init(self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2BGR), tuple(round(float(v)) for v in box))

    def update(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        ok, box = self._tracker.update(self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2BGR))
        if ok:
            self._box = np.asarray(box, dtype=np.float64)
        return self._box.copy(), float(ok)


class StaticTracker:
    """The box that never moves (the floor every tracker must beat)."""

    name = "static"

    def init(self, frame: Any, box: Sequence[float]) -> None:
        self._box = np.asarray(box, dtype=np.float64)

    def update(self, frame: Any) -> tuple[np.ndarray, float]:
        return self._box.copy(), 0.0
