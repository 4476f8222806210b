"""Whole-video action localization: key frames, person boxes (given or detected), clips, the action head, tracks.

Key frames are at ``times`` (seconds), or every ``interval_s`` from ``interval_s / 2``. Key frame ``t`` is the
decoded frame shown at ``t``; its clip is ``num_frames`` frames every ``frame_stride`` centred on it (the first /
last frame repeats at the video's ends), whole frames resized to the head's ``short_side``. Decoding streams: only
the frames one clip spans are kept. Person boxes: ``boxes`` from the caller (per key frame), else the detector
(:class:`~constcl_zoo.detection.HogPersonDetector` by default) on the full-resolution key frame. Boxes of
consecutive key frames are linked into tracks by IoU (greedy, highest IoU first).

Which actions are reported — the rule, per person and class ``c``: probability ``p[c] >= threshold[c]`` and
``threshold[c] < 1``; of those, the ``top_k`` most probable, best first. ``threshold`` is the caller's
``score_threshold`` for every class when given; otherwise the checkpoint's calibrated ``head.score_thresholds``
(``python -m training calibrate-localizer``: per class, the lowest threshold with precision >= a target on held-out
data; 1.0 for a class that never reaches it); otherwise 0.5. A model that is not sure says nothing: the person keeps
its box and track, with no action.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..boxes import box_iou
from ..errors import ConstclZooError

if TYPE_CHECKING:
    from ..detection import PersonDetector
    from .localization import ActionLocalizer


class LocalizationInputError(ConstclZooError, ValueError):
    """Unusable ``boxes`` / ``times`` / thresholds for :func:`localize`."""


MIN_INTERVAL_S = 0.001
MAX_INTERVAL_S = 86_400.0


def check_interval(interval_s: float) -> float:
    """``interval_s`` (seconds between detector key frames) if it is in ``[MIN_INTERVAL_S, MAX_INTERVAL_S]``, else
    :class:`LocalizationInputError`. (Key frames never outnumber frames: several in one frame's time are one.)"""
    if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:  # also refuses nan
        raise LocalizationInputError(f"interval between key frames must be from {MIN_INTERVAL_S} to "
                                     f"{MAX_INTERVAL_S:.0f} s, got {interval_s}")
    return interval_s


@dataclass
class PersonResult:
    """One person at one key frame: ``box`` normalised (x1, y1, x2, y2), ``box_px`` in pixels, the detector's
    ``score``, the ``track_id``, ``actions`` ``[(label, probability)]`` above the threshold (best first, at most
    ``top_k``) and ``probs`` ``[C]`` (every class)."""

    box: np.ndarray
    box_px: np.ndarray
    score: float
    track_id: int = -1
    actions: list[tuple[str, float]] = field(default_factory=list)
    probs: np.ndarray | None = None


@dataclass
class KeyFrameResult:
    """One key frame of a :class:`Localization`: its time ``time_s`` (seconds), its decoded-frame index
    ``frame_index`` and the ``persons`` found there (:class:`PersonResult`)."""

    time_s: float
    frame_index: int
    persons: list[PersonResult]


@dataclass
class Localization:
    """The result of :func:`localize`: ``frames`` (one per key frame), ``labels``, the video's ``size`` (W, H),
    ``num_frames`` decoded, ``fps`` and ``timings`` (seconds spent in detection, backbone and head)."""

    frames: list[KeyFrameResult]
    labels: tuple[str, ...]
    size: tuple[int, int]
    num_frames: int
    fps: float
    source: str
    timings: dict[str, float]

    @property
    def num_tracks(self) -> int:
        return len({p.track_id for f in self.frames for p in f.persons})

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "labels": list(self.labels), "width": self.size[0], "height": self.size[1],
                "fps": self.fps, "num_frames": self.num_frames, "num_tracks": self.num_tracks,
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
                "key_frames": [{"time_s": round(f.time_s, 4), "frame": f.frame_index, "persons": [
                    {"track_id": p.track_id, "box": [round(float(v), 5) for v in p.box],
                     "box_px": [round(float(v), 1) for v in p.box_px], "score": round(p.score, 5),
                     "actions": [{"label": a, "score": round(s, 5)} for a, s in p.actions]}
                    for p in f.persons]} for f in self.frames]}


def _key_boxes(boxes: Any, times: Sequence[float] | None) -> tuple[list[float] | None, dict[int, np.ndarray]]:
    """Normalise the caller's boxes to (times, {key frame number: [N, 5] boxes + score})."""
    if boxes is None:
        return (list(times) if times is not None else None), {}
    if isinstance(boxes, Mapping):
        if times is not None:
            raise LocalizationInputError("give boxes as {time_s: boxes} or as a list with times=, not both")
        times = sorted(float(t) for t in boxes)
        items = [boxes[t] for t in sorted(boxes, key=float)]
    else:
        if times is None:
            raise LocalizationInputError("boxes as a list need times= (one time in seconds per entry)")
        items = list(boxes)
        if len(items) != len(times):
            raise LocalizationInputError(f"{len(items)} box sets for {len(times)} times")
    out = {}
    for k, (t, b) in enumerate(zip(times, items, strict=True)):
        arr = np.asarray(b, np.float32).reshape(-1, np.asarray(b).shape[-1] if np.asarray(b).size else 4)
        if arr.shape[1] not in (4, 5):
            raise LocalizationInputError(f"boxes at {t} s: expected [N, 4] (x1, y1, x2, y2) or [N, 5] with a score, "
                                         f"got shape {arr.shape}")
        if arr.shape[1] == 4:
            arr = np.concatenate([arr, np.ones((len(arr), 1), np.float32)], 1)
        if len(arr) and not (np.isfinite(arr).all() and (arr[:, :4] >= -1e-6).all() and (arr[:, :4] <= 1 + 1e-6).all()
                             and (arr[:, 2] >= arr[:, 0]).all() and (arr[:, 3] >= arr[:, 1]).all()):
            raise LocalizationInputError(f"boxes at {t} s must be normalised (x1, y1, x2, y2) in [0, 1] with "
                                         f"x2 >= x1, y2 >= y1 — divide pixel boxes by (W, H, W, H)")
        out[k] = arr
    return list(times), out


def link_tracks(frames: list[KeyFrameResult], iou_threshold: float = 0.2, max_gap: int = 1) -> None:
    """Give every person a ``track_id``: greedy IoU matching (highest first) against each live track's box
    predicted at this key frame (constant velocity from its last two boxes), tracks seen in the last
    ``max_gap + 1`` key frames; unmatched persons start new tracks. In place."""
    history: dict[int, list[tuple[int, np.ndarray]]] = {}  # track -> [(key frame number, box), ...]
    next_id = 0
    for k, frame in enumerate(frames):
        live, predicted = [], []
        for track, seen in history.items():
            (k1, b1) = seen[-1]
            if k - k1 > max_gap + 1:
                continue
            box = b1
            if len(seen) > 1:
                k0, b0 = seen[-2]
                box = b1 + (b1 - b0) * (k - k1) / (k1 - k0)
            live.append(track)
            predicted.append(box)
        pairs = []
        if live and frame.persons:
            iou = box_iou(np.stack([p.box for p in frame.persons]), np.stack(predicted))
            pairs = sorted(((iou[i, j], i, j) for i in range(iou.shape[0]) for j in range(iou.shape[1])
                            if iou[i, j] >= iou_threshold), reverse=True)
        used_p, used_t = set(), set()
        for _, i, j in pairs:
            if i not in used_p and j not in used_t:
                used_p.add(i)
                used_t.add(j)
                frame.persons[i].track_id = live[j]
        for i, person in enumerate(frame.persons):
            if i not in used_p:
                person.track_id, next_id = next_id, next_id + 1
            history.setdefault(person.track_id, []).append((k, person.box))


def localize(model: ActionLocalizer | None, video: Any, *, boxes: Any = None, times: Sequence[float] | None = None,
             score_threshold: float | None = None, top_k: int = 5, detector: PersonDetector | None = None,
             person_threshold: float = 0.0, interval_s: float = 1.0, fps: float | None = None,
             progress: Callable[[int], None] | None = None, num_frames: int | None = None,
             frame_stride: int | None = None) -> Localization:
    """Persons and their actions at key frames of ``video`` (module docstring). ``model=None``: persons and tracks
    only (no action head; ``num_frames``/``frame_stride`` then unused). ``progress(frames_decoded)`` is called per
    decoded frame. ``score_threshold``: report actions with probability >= it (1.0: none); ``None``: the model's
    calibrated per-class thresholds, else 0.5 (``ActionLocalizer.action_thresholds``)."""
    from ..embed import frames_of

    if score_threshold is not None and not 0.0 <= score_threshold <= 1.0:
        raise LocalizationInputError(f"score_threshold must be in [0, 1], got {score_threshold}")
    check_interval(interval_s)
    if top_k < 1:
        raise LocalizationInputError(f"top_k must be >= 1, got {top_k}")
    key_times, given = _key_boxes(boxes, times)
    if boxes is None and detector is None:
        from ..detection import HogPersonDetector

        detector = HogPersonDetector()
    if model is not None:
        pre = model.clip_preprocess
        nf, stride = pre.cfg.num_frames, pre.cfg.frame_stride
        thresholds = model.action_thresholds(score_threshold)  # [C]
        device = next(model.parameters()).device
    else:
        pre, nf, stride, device = None, 1, 1, torch.device("cpu")
    before, after = (nf // 2) * stride, (nf - 1 - nf // 2) * stride
    frames_iter, source = frames_of(video, fps)
    buffer: deque = deque(maxlen=before + after + 1)  # (index, preprocessed frame [3, H, W])
    pending: list[tuple[int, float, int, np.ndarray]] = []  # (key number, time, key index, boxes [N, 5])
    results: list[KeyFrameResult] = []
    timings = {"preprocess": 0.0, "detection": 0.0, "backbone": 0.0, "head": 0.0}
    size, period, last_index = (0, 0), 0.0, -1
    next_key = 0

    def key_time(k: int) -> float | None:
        if key_times is not None:
            return key_times[k] if k < len(key_times) else None
        return (k + 0.5) * interval_s

    def run(key: tuple[int, float, int, np.ndarray], final_index: int) -> None:
        _, t, index, det = key
        persons = [PersonResult(box=b[:4].copy(), box_px=b[:4] * np.array([*size, *size], np.float32),
                                score=float(b[4])) for b in det]
        if model is not None and persons:
            have = {i: f for i, f in buffer}
            idx = [min(max(index + (i - nf // 2) * stride, buffer[0][0]), final_index) for i in range(nf)]
            clip = torch.stack([have[i] for i in idx], dim=1)[None].to(device)
            box_t = torch.from_numpy(np.stack([p.box for p in persons]))[None].to(device)
            with torch.inference_mode():
                start = time.perf_counter()
                feats = model.forward_features(clip.to(next(model.parameters()).dtype))
                mid = time.perf_counter()
                probs = torch.sigmoid(model.forward_head(feats, box_t.to(feats.dtype)))[0].float().cpu().numpy()
                timings["backbone"] += mid - start
                timings["head"] += time.perf_counter() - mid
            for p, pr in zip(persons, probs, strict=True):
                order = np.argsort(-pr, kind="stable")
                p.probs = pr
                p.actions = [(model.labels[c], float(pr[c])) for c in order
                             if pr[c] >= thresholds[c] and thresholds[c] < 1.0][:top_k]
        results.append(KeyFrameResult(t, index, persons))

    for frame in frames_iter:
        start = time.perf_counter()
        last_index = frame.index
        size = (frame.rgb.shape[1], frame.rgb.shape[0])
        period = frame.duration_s or period
        if pre is not None:
            buffer.append((frame.index, pre(frame.rgb[None], crop=False)[:, 0]))
        timings["preprocess"] += time.perf_counter() - start
        while (t := key_time(next_key)) is not None and frame.time_s + max(frame.duration_s, 1e-9) > t:
            if next_key in given:
                det = given[next_key]
            elif key_times is not None and boxes is not None:
                det = np.zeros((0, 5), np.float32)
            else:
                start = time.perf_counter()
                found = detector.detect(frame.rgb).above(person_threshold)
                timings["detection"] += time.perf_counter() - start
                det = np.concatenate([found.boxes, found.scores[:, None]], 1).astype(np.float32)
            pending.append((next_key, t, frame.index, det))
            next_key += 1
            if key_times is None:  # at most one detector key frame per decoded frame: skip the others in its time
                frame_end = frame.time_s + max(frame.duration_s, 1e-9)
                next_key = max(next_key, math.ceil(frame_end / interval_s - 0.5))
        while pending and frame.index >= pending[0][2] + after:
            run(pending.pop(0), frame.index)
        if progress is not None:
            progress(frame.index + 1)
    for key in pending:
        run(key, last_index)
    link_tracks(results)
    fps_out = 1.0 / period if period else (fps or 0.0)
    return Localization(results, tuple(model.labels) if model is not None else (), size, last_index + 1, fps_out,
                        source, timings)


def write_annotated(result: Localization, video: Any, out: Any, *, fps: float | None = None,
                    progress: Callable[[int], None] | None = None) -> int:
    """Draw ``result`` on every frame of ``video`` (each frame shows its nearest key frame's persons: box in its
    track's colour, ``#track action score``) into an H.264 MP4 at ``out``; returns the frames written."""
    from ..embed import frames_of
    from ..visualize import Mp4Writer, color_for, draw_box

    keys = np.array([f.frame_index for f in result.frames]) if result.frames else np.zeros(0, int)
    half = max(1, round(0.5 * result.fps * _interval(result))) if result.frames else 0
    frames_iter, _ = frames_of(video, fps)
    with Mp4Writer(out, fps=result.fps or fps or 25.0) as writer:
        for frame in frames_iter:
            rgb = frame.rgb.copy()
            if len(keys):
                k = int(np.argmin(np.abs(keys - frame.index)))
                if abs(keys[k] - frame.index) <= half:
                    for p in result.frames[k].persons:
                        label = f"#{p.track_id}"
                        if p.actions:
                            label += " " + ", ".join(f"{a} {s:.2f}" for a, s in p.actions[:2])
                        draw_box(rgb, p.box_px, color_for(p.track_id), label)
            writer.write(rgb)
            if progress is not None:
                progress(frame.index + 1)
        return writer.frames


def _interval(result: Localization) -> float:
    times = [f.time_s for f in result.frames]
    return float(np.median(np.diff(times))) if len(times) > 1 else 1.0
