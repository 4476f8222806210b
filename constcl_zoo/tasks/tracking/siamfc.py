"""The SiamFC tracking loop over any feature backend (:class:`SiamFC`), the crops it feeds it
(:func:`crop_and_resize`), input checks, and :class:`FrameByFrame` (``init`` / ``update`` / ``track``), shared by
the PyTorch trackers and the ONNX Runtime one."""

from __future__ import annotations

import collections
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ConstclZooError
from ...formats.boxes import box_iou, xywh_to_xyxy
from .config import TrackerConfig
from .results import TrackResult

FrameSource = str | os.PathLike | np.ndarray | torch.Tensor | Iterable[np.ndarray]


class TrackerInputError(ConstclZooError, ValueError):
    """A box or frame the tracker cannot use (empty box, box outside the frame, wrong frame format, no init)."""



def check_box(box: Sequence[float] | np.ndarray, frame_size: tuple[int, int] | None = None,
              what: str = "box") -> np.ndarray:
    """Validate an ``x, y, w, h`` pixel box (finite, positive size, overlapping the ``(H, W)`` frame when given);
    returns it as float64 ``[4]``. Raises :class:`TrackerInputError` naming the problem."""
    arr = np.asarray(box, dtype=np.float64).reshape(-1)
    if arr.shape != (4,) or not np.isfinite(arr).all():
        raise TrackerInputError(f"{what} must be 4 finite numbers x,y,w,h (pixels), got {list(np.ravel(box))}")
    if arr[2] <= 0 or arr[3] <= 0:
        raise TrackerInputError(f"{what} {_fmt(arr)} is empty: width and height must be > 0")
    if frame_size is not None:
        h, w = frame_size
        inside = box_iou(xywh_to_xyxy(arr)[None], np.array([[0.0, 0.0, w, h]]))[0, 0]
        if inside <= 0:
            raise TrackerInputError(f"{what} {_fmt(arr)} lies outside the {w}x{h} frame")
    return arr


def _fmt(box: np.ndarray) -> str:
    return "(" + ",".join(f"{v:g}" for v in box) + ")"


def check_frame(frame: Any, index: int | str = "") -> torch.Tensor:
    """A uint8 RGB frame ``[H, W, 3]`` (numpy or torch) as a CPU uint8 tensor."""
    x = torch.from_numpy(np.ascontiguousarray(frame)) if isinstance(frame, np.ndarray) else frame
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 3 or x.shape[-1] != 3 \
            or 0 in x.shape:
        desc = f"{getattr(frame, 'dtype', type(frame).__name__)} {tuple(getattr(frame, 'shape', ()))}"
        raise TrackerInputError(f"frame {index}: expected uint8 RGB [H, W, 3], got {desc}".replace("frame :", "frame:"))
    return x.cpu()


def crop_and_resize(frames: Sequence[np.ndarray | torch.Tensor] | torch.Tensor, center: np.ndarray,
                    sizes: Sequence[float], out_size: int, pad_color: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Square crops of side ``sizes[k]`` px centred on ``center (cx, cy)`` (continuous pixel coordinates) of
    uint8 frames ``[T, H, W, 3]``, padded with ``pad_color [3]`` outside the frame and resized (bilinear, the
    sample points of ``F.interpolate(align_corners=False)`` on the padded crop; upsampled, the outermost output
    ring blends in the pixels just outside the crop instead of repeating its edge): ``[K, 3, T, out, out]`` float
    in [0, 255].

    One affine warp per frame and size on the uint8 frame: only the ``out x out`` output pixels are computed, so
    the cost does not grow with the crop's side (no padded float copy of the region)."""
    import cv2

    arrays = [f.numpy() if isinstance(f, torch.Tensor) else np.asarray(f) for f in frames]
    border = tuple(float(v) for v in np.asarray(pad_color, dtype=np.float64).reshape(3))
    out = np.empty((len(sizes), len(arrays), out_size, out_size, 3), dtype=np.uint8)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for k, size in enumerate(sizes):
        s = float(size) / out_size  # input pixels per output pixel
        # output pixel centre u + 0.5 -> input coordinate (x1 + (u + 0.5) * s) - 0.5, x1 = cx - size / 2
        m = np.array([[s, 0.0, center[0] - size / 2 + 0.5 * s - 0.5],
                      [0.0, s, center[1] - size / 2 + 0.5 * s - 0.5]])
        for t, a in enumerate(arrays):
            out[k, t] = cv2.warpAffine(a, m, (out_size, out_size), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                                       borderValue=border)
    # [K, T, H, W, 3] memory viewed as [K, 3, T, H, W] is channels_last_3d: the CPU plan's layout, no copy there
    return torch.from_numpy(out).permute(0, 4, 1, 2, 3).float()


class SiamFC:
    """The SiamFC tracking loop (reference PyTorch implementation's, in continuous pixel coordinates), for any
    feature backend.

    ``exemplar(clip [1, 3, T, Z, Z]) -> state`` computes what the exemplar contributes (once, at init);
    ``respond(state, clips [S, 3, T, X, X]) -> responses [S, 1, h, w]`` scores the scales. Clips are normalised
    to ``value_range``. ``feature_stride``: input pixels per response cell.
    """

    def __init__(self, cfg: TrackerConfig, value_range: tuple[float, float], feature_stride: int,
                 exemplar: Callable[[torch.Tensor], Any], respond: Callable[[Any, torch.Tensor], torch.Tensor]) -> None:
        self.cfg = cfg
        self.value_range = value_range
        self.feature_stride = feature_stride
        self._exemplar = exemplar
        self._respond = respond
        self._history: collections.deque[torch.Tensor] = collections.deque(maxlen=2 * cfg.temporal_radius)
        self._state: dict[str, Any] | None = None
        self._hann: torch.Tensor | None = None  # the cosine window at the upsampled response size
        self.timing: dict[str, float] = collections.defaultdict(float)

    # -- frames ---------------------------------------------------------------------------------------------
    def _window(self, frame: torch.Tensor, future: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The 2n + 1 frames (each ``[H, W, 3]``, not copied) for ``frame``: past + frame + future (edge frames
        repeated), or the 2n past frames + frame in causal mode."""
        n = self.cfg.temporal_radius
        past = list(self._history)
        if self.cfg.causal:
            past = past[-2 * n:] if n else []
            frames = [past[0] if past else frame] * (2 * n - len(past)) + past + [frame]
        else:
            past = past[-n:] if n else []
            fut = list(future[:n])
            frames = [past[0] if past else frame] * (n - len(past)) + past + [frame] + fut
            frames += [frames[-1]] * (2 * n + 1 - len(frames))
        if any(f.shape != frame.shape for f in frames):
            sizes = sorted({tuple(f.shape) for f in frames})
            raise TrackerInputError(f"all frames must have the same size; got {sizes}")
        return frames

    def _normalise(self, crops: torch.Tensor) -> torch.Tensor:
        lo, hi = self.value_range
        return crops.mul_((hi - lo) / 255.0).add_(lo)

    # -- API ------------------------------------------------------------------------------------------------
    def init(self, frame: Any, box: Sequence[float], future: Sequence[Any] = ()) -> None:
        """Start tracking the ``x, y, w, h`` pixel ``box`` in uint8 RGB ``frame [H, W, 3]``; ``future``: up to n
        following frames (non-causal mode; missing ones are edge-repeated)."""
        cfg = self.cfg
        x = check_frame(frame, 0)
        box = check_box(box, tuple(x.shape[:2]))
        self._history.clear()
        t0 = time.perf_counter()
        window = self._window(x, [check_frame(f, "future") for f in future])
        size = box[2:].copy()
        center = box[:2] + size / 2
        p = cfg.context * size.sum()
        z_size = math.sqrt((size[0] + p) * (size[1] + p))
        pad = x.float().mean(dim=(0, 1))  # SiamFC pads crops with the first frame's mean colour
        z = self._normalise(crop_and_resize(window, center, [z_size], cfg.exemplar_size, pad))
        t1 = time.perf_counter()
        state = self._exemplar(z)
        t2 = time.perf_counter()
        self._state = {"center": center, "size": size, "z_size": z_size,
                       "x_size": z_size * cfg.search_size / cfg.exemplar_size, "pad": pad, "z": state,
                       "frame_size": tuple(x.shape[:2]), "min_size": size.copy()}
        self._history.append(x)
        self.timing["pre_post"] += t1 - t0
        self.timing["exemplar"] += t2 - t1

    def update(self, frame: Any, future: Sequence[Any] = ()) -> tuple[np.ndarray, float]:
        """Track into the next frame: ``(box [4] x, y, w, h px, score)``. ``future`` as in :meth:`init`."""
        if self._state is None:
            raise TrackerInputError("call tracker.init(frame, box) before tracker.update(frame)")
        cfg, st = self.cfg, self._state
        x = check_frame(frame)
        if tuple(x.shape[:2]) != st["frame_size"]:
            raise TrackerInputError(f"frame is {x.shape[1]}x{x.shape[0]}, the first frame was "
                                    f"{st['frame_size'][1]}x{st['frame_size'][0]}")
        t0 = time.perf_counter()
        window = self._window(x, [check_frame(f, "future") for f in future])
        factors = cfg.scale_factors
        clips = self._normalise(crop_and_resize(window, st["center"], st["x_size"] * factors, cfg.search_size,
                                                st["pad"]))
        t1 = time.perf_counter()
        responses = self._respond(st["z"], clips).float()
        t2 = time.perf_counter()
        box, score = self._locate(responses)
        t3 = time.perf_counter()
        if cfg.template_lr > 0:  # the exemplar moves towards the target's current appearance
            z = self._normalise(crop_and_resize(window, st["center"], [st["z_size"]], cfg.exemplar_size, st["pad"]))
            st["z"] = st["z"] * (1 - cfg.template_lr) + self._exemplar(z) * cfg.template_lr
        self._history.append(x)
        self.timing["pre_post"] += (t1 - t0) + (t3 - t2)
        self.timing["search"] += t2 - t1
        self.timing["exemplar"] += time.perf_counter() - t3
        return box, score

    def _locate(self, responses: torch.Tensor) -> tuple[np.ndarray, float]:
        cfg, st = self.cfg, self._state
        assert st is not None
        factors = cfg.scale_factors
        up = cfg.response_upsample * responses.shape[-1]
        resp = F.interpolate(responses, size=(up, up), mode="bicubic", align_corners=False)[:, 0]
        penalty = torch.full((cfg.num_scales,), cfg.scale_penalty, dtype=resp.dtype)
        penalty[cfg.num_scales // 2] = 1.0
        peaks = resp.flatten(1).amax(dim=1) * penalty
        k = int(peaks.argmax())
        peak = responses[k].max()
        score = float(peak.clamp(0, 1) if cfg.correlation == "zncc" else torch.sigmoid(peak))
        r = resp[k] - resp[k].min()
        r = r / (r.sum() + 1e-16)
        if self._hann is None or self._hann.shape[-1] != up:
            hann = torch.hann_window(up + 2, periodic=False, dtype=r.dtype)[1:-1]
            window = torch.outer(hann, hann)
            self._hann = window / window.sum()
        r = (1 - cfg.window_influence) * r + cfg.window_influence * self._hann
        row, col = divmod(int(r.argmax()), up)
        disp = np.array([col, row], dtype=np.float64) - (up - 1) / 2
        disp = disp * self.feature_stride / cfg.response_upsample * st["x_size"] * factors[k] / cfg.search_size
        # The target stays on the frame (its centre inside, its size between 4 px or its initial size, if smaller,
        # and the frame), as pysot does: a lost target is searched for where it can be, not ever farther away.
        h, w = st["frame_size"]
        st["center"] = np.clip(st["center"] + disp, 0.0, [w, h])
        scale = (1 - cfg.scale_lr) + cfg.scale_lr * factors[k]
        size = np.clip(st["size"] * scale, np.minimum(4.0, st["min_size"]), [w, h])
        ratio = float(np.sqrt(np.prod(size) / np.prod(st["size"])))  # the crops follow the size (unclipped: scale)
        st["size"] = size
        st["z_size"] *= ratio
        st["x_size"] *= ratio
        return np.concatenate([st["center"] - st["size"] / 2, st["size"]]), score

    def track(self, video: FrameSource, init_box: Sequence[float], *, fps: float | None = None,
              progress: Callable[[int], None] | None = None,
              on_frame: Callable[[int, np.ndarray, np.ndarray, float], None] | None = None) -> TrackResult:
        """Track ``init_box`` (``x, y, w, h`` px, on the first frame) through a video file, a folder of images, a
        uint8 ``[T, H, W, 3]`` array or an iterable of frames. Frames stream (n frames of look-ahead in
        non-causal mode). ``progress(i)`` / ``on_frame(i, rgb, box, score)`` are called after every frame."""
        boxes, scores, times = [], [], []
        n = 0 if self.cfg.causal else self.cfg.temporal_radius
        for i, (frame, future) in enumerate(_with_future(_iter_rgb(video, fps), n)):
            t0 = time.perf_counter()
            if i == 0:
                self.init(frame, init_box, future)
                box, score = check_box(init_box), 1.0
            else:
                box, score = self.update(frame, future)
            times.append(time.perf_counter() - t0)
            boxes.append(box)
            scores.append(score)
            if on_frame is not None:
                on_frame(i, frame, box, score)
            if progress is not None:
                progress(i)
        if not boxes:
            raise TrackerInputError("the video has no frames")
        return TrackResult(np.stack(boxes), np.asarray(scores), np.asarray(times))


def _iter_rgb(video: FrameSource, fps: float | None) -> Iterator[np.ndarray]:
    from ...inference.video import EmptyVideoError, iter_array_frames, iter_frames

    if isinstance(video, (str, os.PathLike)):
        if not Path(video).exists():
            raise FileNotFoundError(f"no video file or image folder at {video}")
        for frame in iter_frames(video):
            yield frame.rgb
    elif isinstance(video, (np.ndarray, torch.Tensor)):
        for frame in iter_array_frames(video, fps or 30.0):
            yield frame.rgb
    else:
        empty = True
        for frame in video:
            empty = False
            yield frame
        if empty:
            raise EmptyVideoError("the frame sequence is empty")


def _with_future(frames: Iterable[Any], n: int) -> Iterator[tuple[Any, list[Any]]]:
    """``(frame, the next n frames)`` for every frame (fewer at the end), reading at most n frames ahead."""
    buffer: collections.deque = collections.deque()
    for frame in frames:
        buffer.append(frame)
        if len(buffer) > n:
            yield buffer[0], list(buffer)[1:]
            buffer.popleft()
    while buffer:
        yield buffer[0], list(buffer)[1:]
        buffer.popleft()



class FrameByFrame:
    """``init`` / ``update`` over a :class:`SiamFC` loop from ``self._new_loop()``: shared by the PyTorch tracker
    and the ONNX Runtime one (``export.runtime.OnnxTracker``), which differ only in how they compute
    features and responses."""

    _loop: SiamFC | None = None

    def _new_loop(self) -> SiamFC:
        raise NotImplementedError

    def init(self, frame: Any, box: Sequence[float], future: Sequence[Any] = ()) -> None:
        """Start tracking ``box`` (``x, y, w, h`` px) in ``frame`` (uint8 RGB ``[H, W, 3]``); see :class:`SiamFC`."""
        self._loop = self._new_loop()
        self._loop.init(frame, box, future)

    def update(self, frame: Any, future: Sequence[Any] = ()) -> tuple[np.ndarray, float]:
        """``(box [4] x, y, w, h px, score)`` in the next frame."""
        if self._loop is None:
            raise TrackerInputError("call tracker.init(frame, box) before tracker.update(frame)")
        return self._loop.update(frame, future)

    def track(self, video: FrameSource, init_box: Sequence[float], **kwargs: Any) -> TrackResult:
        """Track through a whole video (file, image folder, array or iterable of frames): :meth:`SiamFC.track`."""
        self._loop = self._new_loop()
        return self._loop.track(video, init_box, **kwargs)

    @property
    def timing(self) -> dict[str, float]:
        """Seconds spent since the last ``init``/``track``: ``exemplar``, ``search`` (features + correlation) and
        ``pre_post`` (crops, upsampling, box update)."""
        return dict(self._loop.timing) if self._loop is not None else {}
