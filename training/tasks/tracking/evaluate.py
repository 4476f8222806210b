"""OTB-protocol one-pass evaluation of any tracker on a dataset of sequences.

    python -m training eval-tracking --dataset DIR --model CHECKPOINT --out DIR
    python -m training eval-tracking --dataset DIR --baseline csrt --out DIR     # OpenCV MIL / KCF / CSRT

A tracker is anything with ``track(frames, init_box) -> TrackResult`` (the SiamFC tracker) or with
``init(frame, box)`` and ``update(frame) -> (box, score)`` (OpenCV's). It is initialised on the first frame's
ground truth and never re-initialised. Writes ``metrics.json`` (``{"success", "precision", "fps", "sequences":
{name: {"success", "precision", "fps"}}}``; fps: frames / seconds spent in the tracker, decoding excluded,
averaged over sequences), ``boxes/<sequence>.txt`` (``x,y,w,h`` a line) and ``success.png`` / ``precision.png``.

The metrics: one-pass evaluation (OPE) metrics of the OTB protocol.

Per sequence: IoU and centre distance between the predicted and ground-truth ``x, y, w, h`` boxes of every
frame; the success curve is the fraction of frames with IoU > t for 21 thresholds t in [0, 1] and the success
score its mean (the area under it); the precision curve is the fraction of frames whose centre error is <= t px
for t = 0..50 and the precision score its value at 20 px. Dataset scores average the sequences' curves. The
first frame's prediction is the ground truth (the tracker is initialised on it), as in the OTB toolkit; frames
whose ground truth is missing (NaN, as GOT-10k marks absent targets) are left out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from constcl_zoo.errors import InvalidArgumentError
from constcl_zoo.fileio import atomic_write
from constcl_zoo.formats.boxes import box_iou, xywh_to_xyxy
from constcl_zoo.inference.video import iter_image_files
from constcl_zoo.tasks.tracking import TrackResult, check_box, format_boxes

from .data import Sequence

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


@dataclass
class Evaluation:
    """Per-sequence results and metrics, and the dataset's."""

    name: str
    results: dict[str, TrackResult]
    metrics: dict[str, SequenceMetrics]

    @property
    def overall(self) -> SequenceMetrics:
        return dataset_curves(list(self.metrics.values()))

    @property
    def fps(self) -> float:
        return float(np.mean([r.fps for r in self.results.values()]))

    def to_dict(self) -> dict[str, Any]:
        overall = self.overall
        return {"success": overall.success, "precision": overall.precision, "fps": self.fps,
                "sequences": {name: {"success": m.success, "precision": m.precision, "fps": self.results[name].fps}
                              for name, m in self.metrics.items()}}


def run_tracker(tracker: Any, sequence: Sequence) -> TrackResult:
    """One-pass run of ``tracker`` on ``sequence`` from its first ground-truth box."""
    frames = iter_image_files(sequence.frames)
    init_box = check_box(sequence.boxes[0], what=f"{sequence.name}: the first ground-truth box")
    if hasattr(tracker, "track"):
        return tracker.track((f.rgb for f in frames), init_box)
    boxes, scores, times = [], [], []
    for i, frame in enumerate(frames):
        rgb = frame.rgb
        t0 = time.perf_counter()
        if i == 0:
            tracker.init(rgb, init_box)
            box, score = init_box, 1.0
        else:
            box, score = tracker.update(rgb)
        times.append(time.perf_counter() - t0)
        boxes.append(np.asarray(box, dtype=np.float64))
        scores.append(score)
    return TrackResult(np.stack(boxes), np.asarray(scores, dtype=np.float64), np.asarray(times))


def evaluate(make_tracker: Callable[[], Any], sequences: list[Sequence], name: str = "tracker",
             log: Callable[[str], None] | None = print) -> Evaluation:
    """Run a fresh ``make_tracker()`` on every sequence and score it (OTB one-pass evaluation)."""
    results, metrics = {}, {}
    for seq in sequences:
        result = run_tracker(make_tracker(), seq)
        if len(result) != len(seq):
            raise InvalidArgumentError(f"{name} returned {len(result)} boxes for the {len(seq)} frames of {seq.name}")
        results[seq.name] = result
        metrics[seq.name] = sequence_metrics(result.boxes, seq.boxes)
        if log:
            log(f"{name} {seq.name}: success {metrics[seq.name].success:.3f} precision "
                f"{metrics[seq.name].precision:.3f} fps {result.fps:.1f}")
    return Evaluation(name, results, metrics)


def format_table(evaluations: list[Evaluation]) -> str:
    """A Markdown table: tracker, success, precision, fps."""
    lines = ["| tracker | success (AUC) | precision (20 px) | fps |", "|---|---|---|---|"]
    for ev in evaluations:
        o = ev.overall
        lines.append(f"| {ev.name} | {o.success:.3f} | {o.precision:.3f} | {ev.fps:.1f} |")
    return "\n".join(lines)


def write_report(evaluations: list[Evaluation], out: str | Path) -> Path:
    """``metrics.json`` (the first tracker's, plus every tracker under ``"trackers"`` when there are several),
    ``boxes/[<tracker>/]<sequence>.txt``, ``success.png``, ``precision.png`` and ``table.md`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = evaluations[0].to_dict()
    if len(evaluations) > 1:
        payload["trackers"] = {ev.name: ev.to_dict() for ev in evaluations}
    atomic_write(out / "metrics.json", json.dumps(payload, indent=2) + "\n")
    for ev in evaluations:
        folder = out / "boxes" / (ev.name if len(evaluations) > 1 else "")
        for seq, result in ev.results.items():
            atomic_write(folder / f"{seq}.txt", format_boxes(result.boxes))
    atomic_write(out / "table.md", format_table(evaluations) + "\n")
    plot_curves(evaluations, out)
    return out / "metrics.json"


def plot_curves(evaluations: list[Evaluation], out: Path) -> None:
    """OTB success and precision plots (PNG), one line per tracker, scores in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for kind, x, label in (("success", IOU_THRESHOLDS, "overlap threshold"),
                           ("precision", CENTER_THRESHOLDS, "location error threshold (px)")):
        fig, ax = plt.subplots(figsize=(5, 4))
        for ev in sorted(evaluations, key=lambda e: -getattr(e.overall, kind)):
            o = ev.overall
            curve = o.success_curve if kind == "success" else o.precision_curve
            ax.plot(x, curve, label=f"{ev.name} [{getattr(o, kind):.3f}]")
        ax.set(xlabel=label, ylabel=f"{kind} rate", ylim=(0, 1.02), title=f"OPE {kind} plot")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right" if kind == "success" else "lower right", fontsize=8)
        fig.tight_layout()
        atomic_write(out / f"{kind}.png", lambda p, fig=fig: fig.savefig(p, format="png", dpi=100))
        plt.close(fig)
