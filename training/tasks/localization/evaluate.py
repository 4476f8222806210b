"""Frame-level mAP at IoU 0.5, as the official ActivityNet evaluator defines it
(``Evaluation/get_ava_performance.py`` with its PASCAL ``ObjectDetectionEvaluation``; re-implemented here from that
definition, not copied).

The definition, step by step (each step is tested in ``tests/test_localization_eval.py``):

1. Classes are those of the label map (the 60 evaluated AVA classes); rows of other classes are dropped first.
2. Ground truth and detections of an excluded key frame are dropped.
3. Detections: per key frame at most 50 rows (box, class, score) are kept — the highest scores, chosen as the
   official reader does (a min-heap of ``(score, action_id, y1, x1, y2, x2)``; a new row replaces the heap's
   smallest only with a strictly higher score) — then ordered by descending score.
4. Per class and key frame, detections are matched in that order: each to the ground-truth box of its class with
   the highest IoU (the first, on ties); it is a true positive if that IoU >= 0.5 and the box is not matched yet,
   else a false positive (no fall-back to the second-best box). Detections on a key frame without ground truth of
   that class — including key frames without any ground truth — are false positives (``frames_without_gt=
   "false_positive"``, the default). With ``frames_without_gt="ignore"``, the rule the localization issue stated
   (mmaction2's ``ignore_empty_frames``), detections on a key frame without any ground truth of an evaluated class
   (after steps 1-2) are dropped before matching; on a key frame with ground truth of other classes only they stay
   false positives.
5. Per class: detections of all key frames sorted by descending score, precision/recall against the number of
   ground-truth boxes of that class, and the VOC AP (precision made non-increasing from the right, summed over
   the recall steps, recall padded with 0 and 1).
6. A class with ground truth but no detection has AP 0 and counts in the mean; a class without ground truth has
   no AP and is left out of the mean.

Where copies elsewhere differ: mmaction2's drops classes with ground truth but no detections from the mean and by
default ignores detections on key frames without ground truth (``ignore_empty_frames``); the official code counts
those as false positives (``per_image_evaluation``: no ground-truth boxes -> every detection is a false positive),
and so does this one by default. (The localization issue called them "ignored": that rule is the option
``frames_without_gt="ignore"`` / ``eval-ava --frames-without-gt ignore``; see ``docs/official-differences.md``.)
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from constcl_zoo.ava import AvaLabel, AvaRow, read_ava_csv, read_excluded, read_labelmap
from constcl_zoo.boxes import box_iou
from constcl_zoo.errors import ConstclZooError
from constcl_zoo.fileio import atomic_write

IOU_THRESHOLD = 0.5
MAX_DETECTIONS_PER_FRAME = 50
FramesWithoutGt = Literal["false_positive", "ignore"]
FRAMES_WITHOUT_GT: tuple[str, ...] = get_args(FramesWithoutGt)


class FrameMapOptionError(ConstclZooError, ValueError):
    """An evaluator option with a value it does not know."""


@dataclass
class FrameMAP:
    """``mean_ap``: mean over classes with ground truth; ``per_class``: class id -> AP (classes with ground truth);
    ``num_gt``: class id -> ground-truth boxes; ``no_ground_truth``: evaluated classes left out of the mean;
    ``frames_without_gt``: the rule for detections on key frames without ground truth."""

    mean_ap: float
    per_class: dict[int, float]
    num_gt: dict[int, int]
    no_ground_truth: list[int]
    names: dict[int, str]
    frames_without_gt: FramesWithoutGt = "false_positive"

    def to_dict(self) -> dict[str, object]:
        return {"mAP": self.mean_ap, "per_class": {str(k): v for k, v in self.per_class.items()},
                "per_class_name": {self.names.get(k, str(k)): v for k, v in self.per_class.items()},
                "num_gt": {str(k): v for k, v in self.num_gt.items()},
                "no_ground_truth": self.no_ground_truth, "frames_without_gt": self.frames_without_gt}


def _per_frame(rows: Iterable[AvaRow], classes: set[int], capacity: int, excluded: set[str]
               ) -> dict[str, list[tuple[float, int, tuple[float, ...]]]]:
    """key -> [(score, class, box xyxy), ...] by descending score, capped at ``capacity`` (0: no cap)."""
    heaps: dict[str, list[tuple]] = {}
    for row in rows:
        if row.action_id not in classes or row.key in excluded:
            continue
        score = 1.0 if row.value is None else float(row.value)
        x1, y1, x2, y2 = row.box
        entry = (score, row.action_id, y1, x1, y2, x2)  # the official heap's tuple order (ties)
        heap = heaps.setdefault(row.key, [])
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, entry)
        elif score > heap[0][0]:
            heapq.heapreplace(heap, entry)
    return {key: [(e[0], e[1], (e[3], e[2], e[5], e[4])) for e in sorted(heap, key=lambda e: -e[0])]
            for key, heap in heaps.items()}


def voc_average_precision(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> float:
    """VOC AP of detections (``scores``, ``is_tp``) against ``num_gt`` ground-truth boxes; 0 without detections."""
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(is_tp[order].astype(float))
    fp = np.cumsum(~is_tp[order])
    precision = np.concatenate([[0.0], tp / (tp + fp), [0.0]])
    recall = np.concatenate([[0.0], tp / num_gt, [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


@dataclass
class ClassMatches:
    """Steps 1-4 of the module docstring, per evaluated class id: ``scores`` ``[D]`` of its detections, ``is_tp``
    ``[D]`` whether each matched a ground-truth box (IoU >= the threshold, one detection per box) and ``num_gt``
    (ground-truth boxes of the class)."""

    scores: dict[int, np.ndarray]
    is_tp: dict[int, np.ndarray]
    num_gt: dict[int, int]


def match_detections(groundtruth: Iterable[AvaRow], detections: Iterable[AvaRow], labels: Sequence[AvaLabel],
                     excluded: set[str] | None = None, iou_threshold: float = IOU_THRESHOLD,
                     frames_without_gt: FramesWithoutGt = "false_positive") -> ClassMatches:
    """Match ``detections`` to ``groundtruth`` per class as the official evaluator does (steps 1-4 of the module
    docstring); :func:`frame_map` turns the result into APs, ``calibrate-localizer`` into thresholds."""
    if frames_without_gt not in FRAMES_WITHOUT_GT:
        raise FrameMapOptionError(f"frames_without_gt={frames_without_gt!r}: use one of {FRAMES_WITHOUT_GT}")
    classes = {x.id for x in labels}
    excluded = excluded or set()
    gt = _per_frame(groundtruth, classes, 0, excluded)
    det = _per_frame(detections, classes, MAX_DETECTIONS_PER_FRAME, excluded)
    if frames_without_gt == "ignore":
        det = {key: entries for key, entries in det.items() if key in gt}

    num_gt = {c: 0 for c in sorted(classes)}
    for entries in gt.values():
        for _, c, _ in entries:
            num_gt[c] += 1
    scores: dict[int, list[np.ndarray]] = {c: [] for c in classes}
    is_tp: dict[int, list[np.ndarray]] = {c: [] for c in classes}
    for key, entries in det.items():
        d_scores = np.array([e[0] for e in entries], float)
        d_class = np.array([e[1] for e in entries])
        d_boxes = np.array([e[2] for e in entries], float).reshape(-1, 4)
        g_entries = gt.get(key, [])
        g_class = np.array([e[1] for e in g_entries], dtype=int)
        g_boxes = np.array([e[2] for e in g_entries], float).reshape(-1, 4)
        for c in np.unique(d_class):
            sel = d_class == c
            boxes_c, gt_c = d_boxes[sel], g_boxes[g_class == c]
            tp = np.zeros(len(boxes_c), bool)
            if len(gt_c):
                iou = box_iou(boxes_c, gt_c)
                best = iou.argmax(axis=1)
                taken = np.zeros(len(gt_c), bool)
                for i, g in enumerate(best):
                    if iou[i, g] >= iou_threshold and not taken[g]:
                        tp[i] = taken[g] = True
            scores[int(c)].append(d_scores[sel])
            is_tp[int(c)].append(tp)
    return ClassMatches({c: np.concatenate(v) if v else np.zeros(0) for c, v in scores.items()},
                        {c: np.concatenate(v) if v else np.zeros(0, bool) for c, v in is_tp.items()}, num_gt)


def frame_map(groundtruth: Iterable[AvaRow], detections: Iterable[AvaRow], labels: Sequence[AvaLabel],
              excluded: set[str] | None = None, iou_threshold: float = IOU_THRESHOLD,
              frames_without_gt: FramesWithoutGt = "false_positive") -> FrameMAP:
    """The official frame-mAP (see the module docstring) of ``detections`` against ``groundtruth`` rows;
    ``frames_without_gt="ignore"``: drop detections on key frames without ground truth instead of counting them
    as false positives."""
    m = match_detections(groundtruth, detections, labels, excluded, iou_threshold, frames_without_gt)
    classes = sorted(m.num_gt)
    per_class = {c: voc_average_precision(m.scores[c], m.is_tp[c], m.num_gt[c]) for c in classes if m.num_gt[c]}
    mean_ap = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return FrameMAP(mean_ap, per_class, {c: n for c, n in m.num_gt.items() if n},
                    [c for c in classes if m.num_gt[c] == 0], {x.id: x.name for x in labels}, frames_without_gt)


def evaluate_files(groundtruth: str | os.PathLike, detections: str | os.PathLike, labelmap: str | os.PathLike,
                   excluded: str | os.PathLike | None = None,
                   frames_without_gt: FramesWithoutGt = "false_positive") -> FrameMAP:
    """:func:`frame_map` of AVA files (annotation CSV, detection CSV with scores, label map, excluded CSV)."""
    return frame_map(read_ava_csv(groundtruth), read_ava_csv(detections), read_labelmap(labelmap),
                     read_excluded(excluded), frames_without_gt=frames_without_gt)


def write_result(path: str | os.PathLike, result: FrameMAP) -> None:
    atomic_write(path, json.dumps(result.to_dict(), indent=2) + "\n")
