"""Frame-level mAP at IoU 0.5, as the official ActivityNet evaluator defines it
(``Evaluation/get_ava_performance.py`` with its PASCAL ``ObjectDetectionEvaluation``; re-implemented here from that
definition, not copied). AVA v2.2 results are reported with the current evaluator (commits c070fdb, 4e455cb,
af461c3 of 2020), the default ``rule="current"``; the 2018 one is ``rule="2018"``.

The definition, step by step (each step is tested in ``tests/test_localization_eval.py``):

1. Key frames are ``"video_id,%.6f" % timestamp`` (fractional timestamps are distinct key frames). The ground
   truth's key frames are every key frame its file names: rows with boxes (of any class) and rows of only
   ``video_id, timestamp``, which mark a key frame without actions.
2. Classes are those of the label map (the 60 evaluated AVA classes); rows of other classes are dropped.
3. Detections: per key frame at most 50 rows (box, class, score) are kept — the highest scores, chosen as the
   official reader does (a min-heap of ``(score, action_id, y1, x1, y2, x2)``; a new row replaces the heap's
   smallest only with a strictly higher score) — then ordered by descending score.
4. Detections on a key frame that is not one of the ground truth's key frames are ignored (the official code logs
   "not part of the ground truth. They will be ignored."). Detections on a ground-truth key frame are scored, so on
   a key frame without actions, or without ground truth of their class, they are false positives.
5. Per class and key frame, detections are matched in that order: each to the ground-truth box of its class with
   the highest IoU (the first, on ties); it is a true positive if that IoU >= 0.5 and the box is not matched yet,
   else a false positive (no fall-back to the second-best box).
6. Per class: detections of all key frames (in the order the detections file first names each key frame) sorted
   by descending score — ties ranked as the official ``np.argsort(scores)[::-1]`` ranks them — precision/recall
   against the number of ground-truth boxes of that class, and the VOC AP (precision made non-increasing from the
   right, summed over the recall steps, recall padded with 0 and 1).
7. A class with ground truth but no detection has AP 0 and counts in the mean; a class without ground truth has
   no AP and is left out of the mean. Nothing to evaluate (no class of the label map has ground truth) is an
   error, not a NaN.

``rule="2018"`` (the 2018 evaluator, for results reported with it): key frames are ``"video_id,%04d" %
int(timestamp)`` (whole seconds; a fractional timestamp is refused rather than merged with its second), the
excluded-timestamps file (``excluded``; AVA v2.1/v2.2 downloads still ship it) drops ground truth and detections
of its key frames, and every other detected key frame is scored — step 4 does not apply, so detections on key
frames absent from the ground truth are false positives. (The 2018 reader rejected ``video_id, timestamp`` rows;
here they are read and, having no boxes, change nothing.)

``rule="ignore_empty_frames"`` (mmaction2's ``ignore_empty_frames``, the rule the localization issue once
described): detections on a key frame without ground truth of an evaluated class (after the exclusions) are
dropped; on a key frame with ground truth of other classes only they stay false positives. Its keys are step 1's.

mmaction2's copy also drops classes with ground truth but no detections from the mean (step 7 counts them as 0).
See ``docs/official-differences.md``.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from constcl_zoo.errors import ConstclZooError
from constcl_zoo.fileio import atomic_write
from constcl_zoo.formats.ava import (
    AvaLabel,
    AvaRow,
    image_key,
    image_key_2018,
    read_ava_file,
    read_excluded,
    read_labelmap,
    split_key,
)
from constcl_zoo.formats.boxes import box_iou

IOU_THRESHOLD = 0.5
MAX_DETECTIONS_PER_FRAME = 50
EvalRule = Literal["current", "2018", "ignore_empty_frames"]
RULES: tuple[str, ...] = get_args(EvalRule)


class FrameMapOptionError(ConstclZooError, ValueError):
    """An evaluator option with a value it does not know, or options that do not go together."""


class NothingToEvaluateError(ConstclZooError, ValueError):
    """No class of the label map has ground truth: there is no mean to take."""


@dataclass
class FrameMAP:
    """``mean_ap``: mean over classes with ground truth; ``per_class``: class id -> AP (classes with ground truth);
    ``num_gt``: class id -> ground-truth boxes; ``no_ground_truth``: evaluated classes left out of the mean;
    ``rule``: the evaluator's rule; ``ignored_key_frames``: detected key frames left out by the rule (step 4, or
    ``ignore_empty_frames``)."""

    mean_ap: float
    per_class: dict[int, float]
    num_gt: dict[int, int]
    no_ground_truth: list[int]
    names: dict[int, str]
    rule: EvalRule = "current"
    ignored_key_frames: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"mAP": self.mean_ap, "per_class": {str(k): v for k, v in self.per_class.items()},
                "per_class_name": {self.names.get(k, str(k)): v for k, v in self.per_class.items()},
                "num_gt": {str(k): v for k, v in self.num_gt.items()},
                "no_ground_truth": self.no_ground_truth, "rule": self.rule,
                "ignored_key_frames": self.ignored_key_frames}


KeyFn = Callable[[str, float], str]


def _per_frame(rows: Iterable[AvaRow], classes: set[int], capacity: int, excluded: set[str], key_of: KeyFn
               ) -> dict[str, list[tuple[float, int, tuple[float, ...]]]]:
    """key -> [(score, class, box xyxy), ...] by descending score, capped at ``capacity`` (0: no cap)."""
    heaps: dict[str, list[tuple]] = {}
    for row in rows:
        key = key_of(row.video_id, row.timestamp)
        if row.action_id not in classes or key in excluded:
            continue
        score = 1.0 if row.value is None else float(row.value)
        x1, y1, x2, y2 = row.box
        entry = (score, row.action_id, y1, x1, y2, x2)  # the official heap's tuple order (ties)
        heap = heaps.setdefault(key, [])
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, entry)
        elif score > heap[0][0]:
            heapq.heapreplace(heap, entry)
    return {key: [(e[0], e[1], (e[3], e[2], e[5], e[4])) for e in sorted(heap, key=lambda e: -e[0])]
            for key, heap in heaps.items()}


def _key_2018(video_id: str, timestamp: float) -> str:
    """:func:`image_key_2018`, refusing what the 2018 evaluator cannot key: a fractional timestamp."""
    if not float(timestamp).is_integer():
        raise FrameMapOptionError(f"rule='2018' keys key frames by whole seconds, but video {video_id!r} has "
                                  f"timestamp {timestamp}: use rule='current' (six-decimal keys)")
    return image_key_2018(video_id, timestamp)


def voc_average_precision(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> float:
    """VOC AP of detections (``scores``, ``is_tp``; key frame by key frame, each by descending score) against
    ``num_gt`` ground-truth boxes; 0 without detections. Equal scores are ranked as the official code ranks them:
    numpy's default ascending argsort, reversed (so ties between key frames can change the AP, as they do there)."""
    if scores.size == 0:
        return 0.0
    order = np.argsort(scores)[::-1]
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
    ``[D]`` whether each matched a ground-truth box (IoU >= the threshold, one detection per box), ``num_gt``
    (ground-truth boxes of the class) and ``ignored`` (detected key frames the rule leaves out)."""

    scores: dict[int, np.ndarray]
    is_tp: dict[int, np.ndarray]
    num_gt: dict[int, int]
    ignored: int


def _scored_keys(rule: EvalRule, gt: dict, det: dict, groundtruth: list[AvaRow],
                 groundtruth_keys: Iterable[str] | None) -> set[str]:
    """The key frames whose detections count: the ground truth's key frames (current rule: with or without actions),
    those with ground-truth boxes (``ignore_empty_frames``), or every detected one (2018)."""
    if rule == "current":
        return set(groundtruth_keys) if groundtruth_keys is not None else {r.key for r in groundtruth}
    if rule == "ignore_empty_frames":
        return set(gt)
    return set(det)


def match_detections(groundtruth: Iterable[AvaRow], detections: Iterable[AvaRow], labels: Sequence[AvaLabel],
                     excluded: set[str] | None = None, iou_threshold: float = IOU_THRESHOLD,
                     rule: EvalRule = "current", groundtruth_keys: Iterable[str] | None = None) -> ClassMatches:
    """Match ``detections`` to ``groundtruth`` per class as the official evaluator does (steps 1-4 of the module
    docstring); :func:`frame_map` turns the result into APs, ``calibrate-localizer`` into thresholds.

    ``groundtruth_keys``: the ground truth's key frames (:func:`constcl_zoo.formats.ava.image_key`), those without
    actions included (:attr:`constcl_zoo.formats.ava.AvaFile.keys`); ``None``: the key frames of the ``groundtruth``
    rows. ``excluded``: excluded key frames (:func:`constcl_zoo.formats.ava.read_excluded`), for ``rule="2018"`` and
    ``"ignore_empty_frames"`` only — the current evaluator has no excluded-timestamps file."""
    if rule not in RULES:
        raise FrameMapOptionError(f"rule={rule!r}: use one of {RULES}")
    if excluded and rule == "current":
        raise FrameMapOptionError("the current official evaluator takes no excluded timestamps (key frames absent "
                                  "from the ground truth are ignored instead): drop them, or use rule='2018'")
    groundtruth, detections = list(groundtruth), list(detections)
    classes = {x.id for x in labels}
    key_of: KeyFn = _key_2018 if rule == "2018" else image_key
    excluded_keys = {key_of(*split_key(k)) for k in excluded or ()}
    gt = _per_frame(groundtruth, classes, 0, excluded_keys, key_of)
    det = _per_frame(detections, classes, MAX_DETECTIONS_PER_FRAME, excluded_keys, key_of)
    scored = _scored_keys(rule, gt, det, groundtruth, groundtruth_keys)
    ignored = len(set(det) - scored)
    det = {key: entries for key, entries in det.items() if key in scored}

    num_gt = {c: 0 for c in sorted(classes)}
    for entries in gt.values():
        for _, c, _ in entries:
            num_gt[c] += 1
    if not any(num_gt.values()):
        raise NothingToEvaluateError(
            f"nothing to evaluate: none of the {len(classes)} classes of the label map "
            f"({', '.join(map(str, sorted(classes)[:10]))}{'...' if len(classes) > 10 else ''}) has ground truth "
            f"({len(groundtruth)} ground-truth box rows" + (", after the exclusions)" if excluded_keys else ")"))
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
                        {c: np.concatenate(v) if v else np.zeros(0, bool) for c, v in is_tp.items()}, num_gt,
                        ignored)


def frame_map(groundtruth: Iterable[AvaRow], detections: Iterable[AvaRow], labels: Sequence[AvaLabel],
              excluded: set[str] | None = None, iou_threshold: float = IOU_THRESHOLD,
              rule: EvalRule = "current", groundtruth_keys: Iterable[str] | None = None) -> FrameMAP:
    """The official frame-mAP (see the module docstring) of ``detections`` against ``groundtruth`` rows; the
    arguments as :func:`match_detections`."""
    m = match_detections(groundtruth, detections, labels, excluded, iou_threshold, rule, groundtruth_keys)
    classes = sorted(m.num_gt)
    per_class = {c: voc_average_precision(m.scores[c], m.is_tp[c], m.num_gt[c]) for c in classes if m.num_gt[c]}
    return FrameMAP(float(np.mean(list(per_class.values()))), per_class, {c: n for c, n in m.num_gt.items() if n},
                    [c for c in classes if m.num_gt[c] == 0], {x.id: x.name for x in labels}, rule, m.ignored)


def evaluate_files(groundtruth: str | os.PathLike, detections: str | os.PathLike, labelmap: str | os.PathLike,
                   excluded: str | os.PathLike | None = None, rule: EvalRule = "current") -> FrameMAP:
    """:func:`frame_map` of AVA files (annotation CSV with its key frames without actions, detection CSV with
    scores, label map, excluded CSV for the rules that take one)."""
    gt = read_ava_file(groundtruth)
    return frame_map(gt.rows, read_ava_file(detections).rows, read_labelmap(labelmap), read_excluded(excluded),
                     rule=rule, groundtruth_keys=gt.keys)


def write_result(path: str | os.PathLike, result: FrameMAP) -> None:
    atomic_write(path, json.dumps(result.to_dict(), indent=2) + "\n")
