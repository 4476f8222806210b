"""One-pass evaluation (OPE) metrics of the OTB protocol.

Per sequence: IoU and centre distance between the predicted and ground-truth ``x, y, w, h`` boxes of every
frame; the success curve is the fraction of frames with IoU > t for 21 thresholds t in [0, 1] and the success
score its mean (the area under it); the precision curve is the fraction of frames whose centre error is <= t px
for t = 0..50 and the precision score its value at 20 px. Dataset scores average the sequences' curves. The
first frame's prediction is the ground truth (the tracker is initialised on it), as in the OTB toolkit; frames
whose ground truth is missing (NaN, as GOT-10k marks absent targets) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from constcl_zoo.errors import InvalidArgumentError
from constcl_zoo.formats.boxes import box_iou, xywh_to_xyxy

IOU_THRESHOLDS = np.linspace(0.0, 1.0, 21)
CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64)
PRECISION_PX = 20


@dataclass(frozen=True)
class SequenceMetrics:
    """``success_curve [21]``, ``precision_curve [51]`` and their scores for one sequence."""

    success_curve: np.ndarray
    precision_curve: np.ndarray

    @property
    def success(self) -> float:
        return float(self.success_curve.mean())

    @property
    def precision(self) -> float:
        return float(self.precision_curve[PRECISION_PX])


def center_errors(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """Euclidean distance in pixels between box centres, ``[N, 4]`` x2 -> ``[N]``."""
    centers = lambda b: b[:, :2] + b[:, 2:] / 2  # noqa: E731
    return np.linalg.norm(centers(pred_xywh) - centers(gt_xywh), axis=1)


def sequence_metrics(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> SequenceMetrics:
    """OTB curves of one sequence from ``[N, 4]`` predicted and ground-truth ``x, y, w, h`` boxes."""
    pred = np.asarray(pred_xywh, dtype=np.float64).copy()
    gt = np.asarray(gt_xywh, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 2 or pred.shape[1] != 4:
        raise InvalidArgumentError(f"predictions {pred.shape} and ground truth {gt.shape} must both be [N, 4] "
                                   "x, y, w, h")
    pred[0] = gt[0]
    keep = np.isfinite(gt).all(axis=1)
    pred, gt = pred[keep], gt[keep]
    ious = box_iou(xywh_to_xyxy(pred), xywh_to_xyxy(gt), pairwise=False)
    errors = center_errors(pred, gt)
    success = (ious[:, None] > IOU_THRESHOLDS[None]).mean(axis=0)
    precision = (errors[:, None] <= CENTER_THRESHOLDS[None]).mean(axis=0)
    return SequenceMetrics(success, precision)


def dataset_curves(per_sequence: list[SequenceMetrics]) -> SequenceMetrics:
    """The dataset's curves: the mean of its sequences' curves."""
    if not per_sequence:
        raise InvalidArgumentError("no sequences to average")
    return SequenceMetrics(np.mean([m.success_curve for m in per_sequence], axis=0),
                           np.mean([m.precision_curve for m in per_sequence], axis=0))
