"""Whole-video action localization: key frames, person boxes (given or detected), clips, the action head, tracks.

Key frames are at ``times`` (seconds), or every ``interval_s`` from ``interval_s / 2``. Key frame ``t`` is the
decoded frame shown at ``t``; its clip is ``num_frames`` frames every ``frame_stride`` centred on it (the first /
last frame repeats at the video's ends), whole frames resized to the head's ``short_side``. Decoding streams: only
the frames one clip spans are kept. Person boxes: ``boxes`` from the caller (per key frame), else the detector
(:class:`~constcl_zoo.inference.detection.HogPersonDetector` by default) on the full-resolution key frame. Boxes of
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from ...errors import ConstclZooError
from ...formats.boxes import box_iou
from ...inference.clips import centred_start, clip_indices
from ...inference.detection import HogPersonDetector, PersonDetector
from ...inference.embed import frames_of
from ...inference.visualize import Mp4Writer, color_for, draw_box
from ...nn.preprocess import ClipPreprocess


class ActionModel(Protocol):
    """What :func:`localize` uses of its model: an :class:`~constcl_zoo.tasks.localization.ActionLocalizer`."""

    labels: tuple[str, ...]
    clip_preprocess: ClipPreprocess

    def action_thresholds(self, score_threshold: float | None = None) -> np.ndarray: ...
    def forward_features(self, clip: torch.Tensor) -> torch.Tensor: ...
    def forward_head(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor: ...
    def parameters(self) -> Iterator[torch.nn.Parameter]: ...


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


class _Keys:
    """Which decoded frames are key frames, and their person boxes: the caller's (``given``), none for a key frame
    the caller gave no boxes for, else the detector's on the frame."""

    def __init__(self, key_times: list[float] | None, given: dict[int, np.ndarray], boxes_given: bool,
                 interval_s: float, detector: PersonDetector | None, person_threshold: float) -> None:
        self.key_times, self.given, self.boxes_given = key_times, given, boxes_given
        self.interval_s, self.detector, self.person_threshold = interval_s, detector, person_threshold
        self.next = 0  # the next key frame's number

    def time(self, k: int) -> float | None:
        if self.key_times is not None:
            return self.key_times[k] if k < len(self.key_times) else None
        return (k + 0.5) * self.interval_s

    def due(self, frame: Any, timings: dict[str, float]) -> list[tuple[int, float, int, np.ndarray]]:
        """The key frames ``frame`` shows: ``(key number, time, frame index, boxes [N, 5])`` each."""
        keys = []
        frame_end = frame.time_s + max(frame.duration_s, 1e-9)
        while (t := self.time(self.next)) is not None and frame_end > t:
            if self.next in self.given:
                det = self.given[self.next]
            elif self.key_times is not None and self.boxes_given:
                det = np.zeros((0, 5), np.float32)
            else:
                start = time.perf_counter()
                found = self.detector.detect(frame.rgb).above(self.person_threshold)
                timings["detection"] += time.perf_counter() - start
                det = np.concatenate([found.boxes, found.scores[:, None]], 1).astype(np.float32)
            keys.append((self.next, t, frame.index, det))
            self.next += 1
            if self.key_times is None:  # at most one detector key frame per decoded frame: skip the others in its time
                self.next = max(self.next, math.ceil(frame_end / self.interval_s - 0.5))
        return keys


class _Clips:
    """The action model's side of :func:`localize`: the preprocessed frames one clip spans (streamed), and each
    key frame's persons with their actions (only boxes without a model)."""

    def __init__(self, model: ActionModel | None, score_threshold: float | None, top_k: int) -> None:
        self.model, self.top_k = model, top_k
        if model is not None:
            self.pre = model.clip_preprocess
            self.nf, self.stride = self.pre.cfg.num_frames, self.pre.cfg.frame_stride
            self.thresholds = model.action_thresholds(score_threshold)  # [C]
            self.device = next(model.parameters()).device
        else:
            self.pre, self.nf, self.stride, self.device = None, 1, 1, torch.device("cpu")
        self.after = (self.nf - 1 - self.nf // 2) * self.stride  # frames a clip reaches past its key frame
        self.buffer: deque = deque(maxlen=(self.nf // 2) * self.stride + self.after + 1)  # (index, frame [3, H, W])
        self.timings = {"preprocess": 0.0, "detection": 0.0, "backbone": 0.0, "head": 0.0}

    def add(self, frame: Any) -> None:
        start = time.perf_counter()
        if self.pre is not None:
            self.buffer.append((frame.index, self.pre(frame.rgb[None], crop=False)[:, 0]))
        self.timings["preprocess"] += time.perf_counter() - start

    def run(self, key: tuple[int, float, int, np.ndarray], size: tuple[int, int], final_index: int) -> KeyFrameResult:
        """Key frame ``key``'s persons (``size``: the frames' (W, H); ``final_index``: the last frame decoded)."""
        _, t, index, det = key
        persons = [PersonResult(box=b[:4].copy(), box_px=b[:4] * np.array([*size, *size], np.float32),
                                score=float(b[4])) for b in det]
        if self.model is not None and persons:
            self._actions(persons, index, final_index)
        return KeyFrameResult(t, index, persons)

    def _actions(self, persons: list[PersonResult], index: int, final_index: int) -> None:
        model, nf, stride = self.model, self.nf, self.stride
        have = dict(self.buffer)
        idx = clip_indices(centred_start(index, nf, stride), nf, stride, final_index + 1, past_end="clamp",
                           first=self.buffer[0][0])
        clip = torch.stack([have[i] for i in idx], dim=1)[None].to(self.device)
        box_t = torch.from_numpy(np.stack([p.box for p in persons]))[None].to(self.device)
        with torch.inference_mode():
            start = time.perf_counter()
            feats = model.forward_features(clip.to(next(model.parameters()).dtype))
            mid = time.perf_counter()
            probs = torch.sigmoid(model.forward_head(feats, box_t.to(feats.dtype)))[0].float().cpu().numpy()
            self.timings["backbone"] += mid - start
            self.timings["head"] += time.perf_counter() - mid
        for p, pr in zip(persons, probs, strict=True):
            order = np.argsort(-pr, kind="stable")
            p.probs = pr
            p.actions = [(model.labels[c], float(pr[c])) for c in order
                         if pr[c] >= self.thresholds[c] and self.thresholds[c] < 1.0][:self.top_k]


def localize(model: ActionModel | None, video: Any, *, boxes: Any = None, times: Sequence[float] | None = None,
             score_threshold: float | None = None, top_k: int = 5, detector: PersonDetector | None = None,
             person_threshold: float = 0.0, interval_s: float = 1.0, fps: float | None = None,
             progress: Callable[[int], None] | None = None, num_frames: int | None = None,
             frame_stride: int | None = None) -> Localization:
    """Persons and their actions at key frames of ``video`` (module docstring). ``model`` (an
    :class:`~constcl_zoo.tasks.localization.ActionLocalizer`) ``=None``: persons and tracks only (no action head;
    ``num_frames``/``frame_stride`` then unused). ``progress(frames_decoded)`` is called per decoded frame.
    ``score_threshold``: report actions with probability >= it (1.0: none); ``None``: the model's calibrated
    per-class thresholds, else 0.5 (``ActionLocalizer.action_thresholds``)."""
    if score_threshold is not None and not 0.0 <= score_threshold <= 1.0:
        raise LocalizationInputError(f"score_threshold must be in [0, 1], got {score_threshold}")
    check_interval(interval_s)
    if top_k < 1:
        raise LocalizationInputError(f"top_k must be >= 1, got {top_k}")
    key_times, given = _key_boxes(boxes, times)
    if boxes is None and detector is None:
        detector = HogPersonDetector()
    keys = _Keys(key_times, given, boxes is not None, interval_s, detector, person_threshold)
    clips = _Clips(model, score_threshold, top_k)
    frames_iter, source = frames_of(video, fps)
    pending: list[tuple[int, float, int, np.ndarray]] = []  # (key number, time, key index, boxes [N, 5])
    results: list[KeyFrameResult] = []
    size, period, last_index = (0, 0), 0.0, -1
    for frame in frames_iter:
        last_index = frame.index
        size = (frame.rgb.shape[1], frame.rgb.shape[0])
        period = frame.duration_s or period
        clips.add(frame)
        pending += keys.due(frame, clips.timings)
        while pending and frame.index >= pending[0][2] + clips.after:
            results.append(clips.run(pending.pop(0), size, frame.index))
        if progress is not None:
            progress(frame.index + 1)
    results += [clips.run(key, size, last_index) for key in pending]
    link_tracks(results)
    fps_out = 1.0 / period if period else (fps or 0.0)
    return Localization(results, tuple(model.labels) if model is not None else (), size, last_index + 1, fps_out,
                        source, clips.timings)


def write_annotated(result: Localization, video: Any, out: Any, *, fps: float | None = None,
                    progress: Callable[[int], None] | None = None) -> int:
    """Draw ``result`` on every frame of ``video`` (each frame shows its nearest key frame's persons: box in its
    track's colour, ``#track action score``) into an H.264 MP4 at ``out``; returns the frames written."""
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
