"""Person detectors: ``frame -> (boxes, scores)``, the seam localization takes its person boxes from.

A detector is anything with ``detect(frame)``, ``frame`` an RGB uint8 ``[H, W, 3]``, returning
:class:`Detections` — boxes ``[K, 4]`` normalised ``(x1, y1, x2, y2)`` and scores ``[K]``, best first
(:class:`PersonDetector`).

* :class:`HogPersonDetector` — OpenCV's HOG people detector (its weights ship with OpenCV 4: nothing to download).
  Its window is 64x128 px, so frames are resized to ``short_side`` (600 by default: the pedestrians of a 576-line
  street scene) first. Scores are the SVM margins (not probabilities). OpenCV 5 dropped the detector.
* :class:`OnnxPersonDetector` — a user-supplied ONNX person detector wrapped to a small contract: input ``image``
  float32 ``[1, 3, H, W]`` RGB in [0, 1] (any H, W, or the fixed size the file declares), outputs ``boxes``
  ``[K, 4]`` normalised ``(x1, y1, x2, y2)`` and ``scores`` ``[K]``. Wrap another detector's raw outputs (anchors,
  NMS, class filtering) into that graph once, e.g. in PyTorch before exporting it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import ConstclZooError, DependencyError, InvalidArgumentError
from .video import check_frame_size


class DetectorError(ConstclZooError, RuntimeError):
    """A detector that cannot run (missing OpenCV feature, unusable ONNX file, wrong outputs)."""


@dataclass(frozen=True)
class Detections:
    """``boxes [K, 4]`` normalised (x1, y1, x2, y2) float32 and ``scores [K]``, best first."""

    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, threshold: float) -> Detections:
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep])


@runtime_checkable
class PersonDetector(Protocol):
    """What localization needs from a person detector."""

    def detect(self, frame: np.ndarray) -> Detections:
        """Persons on one RGB uint8 ``[H, W, 3]`` frame."""
        ...


def _sorted(boxes: np.ndarray, scores: np.ndarray) -> Detections:
    order = np.argsort(-scores, kind="stable")
    return Detections(np.clip(boxes[order], 0.0, 1.0).astype(np.float32), scores[order].astype(np.float32))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first."""
    from ..formats.boxes import box_iou

    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    for i in order:
        if not keep or box_iou(boxes[i:i + 1], boxes[keep]).max() < iou_threshold:
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as exc:
        raise ImportError("the HOG person detector needs OpenCV: pip install 'constcl-zoo[video]'") from exc
    return cv2


@functools.lru_cache(maxsize=1)
def _hog() -> object:
    cv2 = _cv2()
    if not hasattr(cv2, "HOGDescriptor"):
        raise DependencyError(
            f"OpenCV {cv2.__version__} has no HOG people detector (OpenCV 5 moved it out of the main modules); "
            f"install opencv-python-headless<5, or use another detector (e.g. OnnxPersonDetector)")
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


class HogPersonDetector:
    """OpenCV's HOG + linear SVM people detector at a usable scale.

    ``short_side``: frames are resized so their shorter side has this many pixels, from :data:`MIN_SHORT_SIDE`
    (the 128 px tall detection window) to :data:`MAX_SHORT_SIDE`, or 0 for the frame's own size (people shorter
    than ~128 px there are missed; the resized frame must also pass the frame-size limits of
    :func:`constcl_zoo.inference.video.check_frame_size`); ``min_score``: SVM margin below which a detection is dropped;
    ``nms_iou``: overlapping detections above this IoU are merged (greedy NMS).
    """

    MIN_SHORT_SIDE = 128
    MAX_SHORT_SIDE = 4320  # DCI 8K's short side; HOG time grows with the pixels (600 px: ~1 s a frame)

    def __init__(self, short_side: int = 600, min_score: float = 0.0, nms_iou: float = 0.5,
                 win_stride: int = 8, scale: float = 1.05) -> None:
        if short_side != 0 and not self.MIN_SHORT_SIDE <= short_side <= self.MAX_SHORT_SIDE:
            raise InvalidArgumentError(f"HOG short side must be 0 (the frame's own size) or from "
                                       f"{self.MIN_SHORT_SIDE} to {self.MAX_SHORT_SIDE} px, got {short_side}")
        self.short_side, self.min_score, self.nms_iou = short_side, min_score, nms_iou
        self.win_stride, self.scale = win_stride, scale

    def detect(self, frame: np.ndarray) -> Detections:
        cv2 = _cv2()
        h, w = frame.shape[:2]
        s = self.short_side / min(h, w) if self.short_side > 0 else 1.0
        check_frame_size(max(1, round(h * s)), max(1, round(w * s)), f"HOG detector input (frame {w}x{h} with "
                         f"short side {self.short_side})")
        img = frame if s == 1.0 else cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))),
                                                interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        ih, iw = img.shape[:2]
        rects, weights = _hog().detectMultiScale(img, winStride=(self.win_stride,) * 2, padding=(8, 8),
                                                 scale=self.scale)
        if len(rects) == 0:
            return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        r = np.asarray(rects, np.float32).reshape(-1, 4)
        scores = np.asarray(weights, np.float32).ravel()
        boxes = np.stack([r[:, 0] / iw, r[:, 1] / ih, (r[:, 0] + r[:, 2]) / iw, (r[:, 1] + r[:, 3]) / ih], -1)
        keep = scores >= self.min_score
        boxes, scores = boxes[keep], scores[keep]
        if self.nms_iou < 1.0 and len(scores):
            idx = nms(boxes, scores, self.nms_iou)
            boxes, scores = boxes[idx], scores[idx]
        return _sorted(boxes, scores)


class OnnxPersonDetector:
    """A user-supplied ONNX person detector (contract in the module docstring), run with ONNX Runtime (the
    ``export`` extra). ``min_score`` drops low scores; ``providers`` default to ONNX Runtime's CPU provider."""

    def __init__(self, path: str | os.PathLike, min_score: float = 0.0, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("OnnxPersonDetector needs ONNX Runtime: pip install onnxruntime") from exc
        try:
            self.session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for unreadable or invalid files
            raise DetectorError(f"{path}: cannot load the ONNX person detector ({exc})") from exc
        inputs = self.session.get_inputs()
        outputs = {o.name for o in self.session.get_outputs()}
        if len(inputs) != 1 or inputs[0].name != "image" or not {"boxes", "scores"} <= outputs:
            raise DetectorError(f"{path}: an ONNX person detector takes one input 'image' [1, 3, H, W] and "
                                f"returns 'boxes' [K, 4] and 'scores' [K]; this file has inputs "
                                f"{[i.name for i in inputs]} and outputs {sorted(outputs)}")
        shape = inputs[0].shape
        self.size = (shape[2], shape[3]) if all(isinstance(d, int) for d in shape[2:]) else None
        self.path, self.min_score = path, min_score

    def detect(self, frame: np.ndarray) -> Detections:
        img = frame
        if self.size is not None and frame.shape[:2] != tuple(self.size):
            img = _cv2().resize(frame, (self.size[1], self.size[0]), interpolation=_cv2().INTER_AREA)
        x = (img.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        boxes, scores = self.session.run(["boxes", "scores"], {"image": np.ascontiguousarray(x)})
        boxes, scores = np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32).ravel()
        if len(boxes) != len(scores):
            raise DetectorError(f"{self.path}: {len(boxes)} boxes but {len(scores)} scores")
        keep = scores >= self.min_score
        return _sorted(boxes[keep], scores[keep])
