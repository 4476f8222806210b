"""Single-object tracking: a SiamFC tracker on the encoder's dense features (``task="tracking"``).

>>> tracker = load("my_tracker/")                  # a tracking checkpoint (python -m training track-train)
>>> tracker = load("constcl_r3d14_w16", task="tracking", pretrained=False)   # any encoder, a fresh head
>>> result = tracker.track("video.mp4", init_box=(x, y, w, h))      # boxes [N, 4] x,y,w,h px, scores [N], fps
>>> tracker.init(frame, box); box, score = tracker.update(next_frame)   # frame by frame (uint8 RGB [H, W, 3])

The paper's setting (§4, "Single object tracking", after VFS / SeCo / VINCE):

* Backbone: the encoder's branch (``region`` by default: ``res5_region``; ``global`` and single-res5 encoders
  work too) with res4 / res5 at spatial stride 1 and dilation 2 / 4 (the first block of a dilated stage at half
  the dilation, as VFS), same weights (:func:`constcl_zoo.nn.backbone.dilate_backbone`): feature stride 8.
* Input: each frame with its ``temporal_radius`` (n = 2) neighbours on each side, 5 frames, the edge frames
  repeated at the start and end of a video; the features are the centre time slice after res5. ``causal=True``
  uses the 2n *past* frames and the last time slice instead, so nothing waits for future frames (live video):
  a deviation from the paper, which looks 2 frames ahead.
* Head: SiamFC cross-correlation with a learned 1x1 "adjust" conv on the exemplar and on the search features,
  then a one-channel BatchNorm on the response (SiamFC's ``BNorm`` adjust option; its other option, a fixed
  0.001 gain on the sum, assumes AlexNet's feature magnitudes). The correlation is the *mean* over channels and
  exemplar cells (a sum scaled by ``1 / (C * hz * wz)``). In training the BatchNorm gives the logits unit
  variance from the first step whatever the backbone's feature scale, so the logistic loss has a gradient to
  follow (a learned scale that starts at 1 on a mean correlation leaves the logits ~0 and the loss at log 2);
  its learned gain / bias and running statistics make the calibrated output scale and bias at inference. A
  fresh head's BatchNorm is the identity.
* Tracking: SiamFC's reference PyTorch tracker (exemplar 127 / search 255 crops, context 0.5, 3 scales of step
  1.0375 run as one batch, scale penalty 0.9745, scale learning rate 0.59, response upsampled x16 bicubic, cosine
  window 0.176), all in :class:`TrackerConfig`. At feature stride 8 and TF 'same' padding, 127 / 255 crops give
  16x16 / 32x32 features and a 17x17 response — SiamFC's response size — and the crops' centres stay aligned
  (both sizes go odd -> even -> even -> even through the stride-2 layers, so their padding offsets agree).

Exemplar features are computed once, at ``init``. Exact shortcuts (same numbers up to float rounding): the output
stage runs only on the time slices the kept one depends on (:func:`stage_time_slice`), the search-side 1x1 adjust
is folded into the exemplar side and the correlation is one matrix product (:meth:`SiamFCHead.respond`); crops
are affine warps of the uint8 frames (:func:`crop_and_resize`). The backbone runs in the embedding path's precision plan
(:mod:`constcl_zoo.inference.precision`: bf16 autocast + channels_last_3d where the hardware has bf16) under
``torch.inference_mode``; the head and the post-processing run in fp32.

The tracking loop (:class:`SiamFC`) only needs two functions — exemplar features and scale responses — so the
ONNX Runtime tracker (``export.tracking_runtime``) runs the same loop on exported graphs.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConstclZooError
from ..formats.boxes import box_iou, xywh_to_xyxy
from ..nn.backbone import dilate_backbone
from .base import TaskConfig, TaskConfigError, TaskModel

FrameSource = str | os.PathLike | np.ndarray | torch.Tensor | Iterable[np.ndarray]
CORRELATIONS = ("mean", "zncc")
ENDPOINTS = ("output", "res4", "res3")


class TrackerInputError(ConstclZooError, ValueError):
    """A box or frame the tracker cannot use (empty box, box outside the frame, wrong frame format, no init)."""


@dataclass(frozen=True)
class TrackerConfig:
    """Every SiamFC parameter (the head config of a tracking checkpoint).

    Sizes in pixels of the crops fed to the backbone: ``exemplar_size`` / ``search_size``. ``context``: the
    exemplar crop's side is ``sqrt((w + p) * (h + p))`` with ``p = context * (w + h)``. ``num_scales`` search
    scales ``scale_step ** k``, k centred on 0; the non-unit scales' responses are multiplied by
    ``scale_penalty``; the box size moves ``scale_lr`` of the way to the winning scale. The response is upsampled
    ``response_upsample`` x (bicubic) and mixed with a cosine (Hann) window of weight ``window_influence``.
    ``temporal_radius``: n neighbours on each side of a frame (2n + 1 input frames); ``causal``: the 2n past
    frames instead (see the module doc). ``adjust_channels``: output channels of the 1x1 adjust convs (0: the
    encoder's feature channels, initialised to the identity). ``correlation``: ``"mean"`` (SiamFC's
    cross-correlation, scaled by ``1 / (C * hz * wz)``) or ``"zncc"`` (zero-mean normalised cross-correlation of the
    adjusted exemplar and each search window over channels and cells, in [-1, 1]: brightness-, contrast- and
    feature-scale-invariant, so a few strong background features cannot outvote the target; the response
    BatchNorm then only scales training logits). ``template_lr``: after each frame the exemplar moves this
    fraction of the way to the exemplar cut at the new box (0: SiamFC's fixed exemplar; costs one exemplar pass
    a frame). ``endpoint``: the features correlated: ``"output"`` (the encoder's
    output stage, res5 or the region res5, dilated), ``"res4"`` (dilated) or ``"res3"``, all at feature stride 8.

    Speed knob: ``num_scales=1`` (a fast mode, not the default) runs the backbone on one search crop instead of
    3, ~3x less backbone work; the box then keeps its initial size. On vot15_bag (random-init R3D-14, 63 / 127) it
    measured success 0.395 / precision 0.449 against 0.370 / 0.464 with 3 scales
    (``benchmarks/results/track_vot15_bag_1scale.json``). ``causal=True`` is no faster (the same 5 frames); it
    removes the n-frame look-ahead latency.
    """

    exemplar_size: int = 127
    search_size: int = 255
    context: float = 0.5
    num_scales: int = 3
    scale_step: float = 1.0375
    scale_penalty: float = 0.9745
    scale_lr: float = 0.59
    response_upsample: int = 16
    window_influence: float = 0.176
    temporal_radius: int = 2
    causal: bool = False
    adjust_channels: int = 0
    correlation: str = "mean"
    endpoint: str = "output"
    template_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.correlation not in CORRELATIONS:
            raise TaskConfigError(f"head.correlation must be one of {list(CORRELATIONS)}, got {self.correlation!r}")
        if self.endpoint not in ENDPOINTS:
            raise TaskConfigError(f"head.endpoint must be one of {list(ENDPOINTS)}, got {self.endpoint!r}")
        if not (0 < self.exemplar_size < self.search_size):
            raise TaskConfigError(f"head: need 0 < exemplar_size < search_size, got {self.exemplar_size}, "
                                  f"{self.search_size}")
        if self.num_scales < 1 or self.num_scales % 2 == 0:
            raise TaskConfigError(f"head.num_scales must be odd and >= 1, got {self.num_scales}")
        if self.temporal_radius < 0 or self.response_upsample < 1 or self.adjust_channels < 0:
            raise TaskConfigError("head: temporal_radius, adjust_channels must be >= 0 and response_upsample >= 1")
        if not all(0.0 <= v <= 1.0 for v in (self.window_influence, self.scale_lr, self.template_lr)):
            raise TaskConfigError("head: window_influence, scale_lr and template_lr must be in [0, 1]")

    @property
    def num_frames(self) -> int:
        return 2 * self.temporal_radius + 1

    @property
    def scale_factors(self) -> np.ndarray:
        half = self.num_scales // 2
        return self.scale_step ** np.linspace(-half, half, self.num_scales)


@dataclass
class TrackResult:
    """``boxes [N, 4]`` float64 ``x, y, w, h`` pixels (frame 0: the initial box), ``scores [N]`` the per-frame
    confidence in [0, 1] (1 on frame 0): for a ``"zncc"`` tracker the normalised correlation of the exemplar with
    the chosen window (how much the target still looks like its first frame; it drops when the target is lost or
    hidden), else the sigmoid of the response peak. ``times [N]`` seconds the tracker spent on each frame
    (decoding excluded)."""

    boxes: np.ndarray
    scores: np.ndarray
    times: np.ndarray

    @property
    def fps(self) -> float:
        total = float(self.times.sum())
        return len(self.times) / total if total > 0 else float("inf")

    def __len__(self) -> int:
        return len(self.boxes)


def format_boxes(boxes: np.ndarray, scores: np.ndarray | None = None) -> str:
    """``[N, 4]`` boxes as text, one ``x,y,w,h`` line a frame (the OTB / GOT-10k results format); with ``scores
    [N]``, a fifth column: the per-frame confidence (``x,y,w,h,confidence``)."""
    rows = np.asarray(boxes, dtype=np.float64)
    if scores is None:
        return "".join(",".join(f"{v:.2f}" for v in row) + "\n" for row in rows)
    return "".join(",".join(f"{v:.2f}" for v in row) + f",{c:.4f}\n" for row, c in zip(rows, scores, strict=True))


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
    from ..inference.video import EmptyVideoError, iter_array_frames, iter_frames

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


def stage_time_slice(blocks: nn.Sequential, x: torch.Tensor, t: int) -> torch.Tensor:
    """Time slice ``t`` of ``blocks(x)`` (``x [B, C, T, H, W]`` -> ``[B, C', H', W']``) for bottleneck blocks whose
    only temporal op is a stride-1 'same'-padded ``temporal_conv`` of odd kernel: each block runs only on the slices
    the wanted one depends on. A block's output slice needs its input slices within the kernel's radius, so
    walking back from ``t`` gives each block's input interval; cropping a block's input to it leaves the kept
    slices' values unchanged (their padding is the original one at the clip's ends). Other blocks: the whole
    stage."""
    kernels = [getattr(getattr(b, "temporal_conv", None), "kernel_size", (0,)) for b in blocks]
    strides = [getattr(getattr(b, "temporal_conv", None), "stride", (0,)) for b in blocks]
    if any(k[0] % 2 == 0 for k in kernels) or any(s[0] != 1 for s in strides):
        return blocks(x)[:, :, t]
    last = x.shape[2] - 1
    need = [(t, t)]  # need[i]: the interval of block i's input slices (need[-1]: the output slice)
    for k in reversed(kernels):
        lo, hi = need[0]
        need.insert(0, (max(lo - k[0] // 2, 0), min(hi + k[0] // 2, last)))
    start = 0  # x holds the slices start, start + 1, ...
    for block, (lo, hi) in zip(blocks, need, strict=False):
        x = block(x[:, :, lo - start:hi - start + 1])
        start = lo
    return x[:, :, t - start]


def cross_correlation(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_{c, p} z[b, c, p] x[b, c, p + q]``: ``z [B or 1, C, hz, wz]`` slid over ``x [B, C, hx, wx]`` ->
    ``[B, 1, hx - hz + 1, wx - wz + 1]`` (a ``z`` with B = 1 is shared by every ``x``).

    As one matrix product of every exemplar cell with every search cell (``[hz*wz, C] @ [C, hx*wx]``) and a sum
    of the ``hz*wz`` shifted diagonals: a GEMM instead of a convolution with an ``hz x wz`` kernel over C
    channels, which CPU convolution kernels run ~10x slower (8 ms against 1 ms for R3D-14's 63 / 127 crops)."""
    b, _, hx, wx = x.shape
    hz, wz = z.shape[-2:]
    ho, wo = hx - hz + 1, wx - wz + 1
    cells = torch.matmul(z.flatten(2).transpose(1, 2), x.flatten(2))  # [B, hz*wz, hx*wx]
    p = torch.arange(hz * wz, device=x.device)
    q = torch.arange(ho * wo, device=x.device)[:, None]
    index = p * (hx * wx) + (q // wo + p // wz) * wx + (q % wo + p % wz)  # [ho*wo, hz*wz] into cells[b].flatten()
    return cells.flatten(1)[:, index].sum(-1).view(b, 1, ho, wo)


def normalized_cross_correlation(z: torch.Tensor, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Zero-mean normalised cross-correlation (ZNCC) of ``z [B or 1, C, hz, wz]`` with every ``hz x wz`` window
    of ``x [B, C, hx, wx]``, over channels and cells: ``[B, 1, hx - hz + 1, wx - wz + 1]`` in [-1, 1] (0 where a
    window is constant).

    The exemplar is centred once; the windows' means and norms come from box sums of ``x`` and ``x**2`` (in
    float64: the variance is a difference of two large sums). Numerator: :func:`cross_correlation` with the centred
    exemplar (its zero mean removes each window's mean by itself)."""
    hz, wz = z.shape[-2:]
    n = z.shape[1] * hz * wz
    z0 = z - z.mean(dim=(1, 2, 3), keepdim=True)
    numerator = cross_correlation(z0, x)
    x64 = x.double()
    cells = hz * wz
    s1 = F.avg_pool2d(x64.sum(1, keepdim=True), (hz, wz), stride=1) * cells
    s2 = F.avg_pool2d(x64.square().sum(1, keepdim=True), (hz, wz), stride=1) * cells
    variance = s2 - s1.square() / n
    flat = variance <= 1e-9 * s2  # a constant window (up to rounding): no pattern to correlate with
    window_norm = variance.clamp_min(0).sqrt().to(x.dtype)
    z_norm = z0.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return (numerator / (z_norm * window_norm + eps)).masked_fill(flat, 0.0)


class SiamFCHead(nn.Module):
    """1x1 adjust convs on each side, mean cross-correlation, a one-channel BatchNorm (output scale and bias).

    ``forward(z [B, C, hz, wz], x [B, C, hx, wx]) -> [B, 1, hx - hz + 1, wx - wz + 1]`` (a ``z`` with B = 1 is
    shared by every ``x``). Tracking computes ``adjust_z(z)`` once and :meth:`respond` every frame.
    """

    def __init__(self, in_channels: int, cfg: TrackerConfig) -> None:
        super().__init__()
        self.correlation = cfg.correlation
        channels = cfg.adjust_channels or in_channels
        self.adjust_z = nn.Conv2d(in_channels, channels, 1)
        self.adjust_x = nn.Conv2d(in_channels, channels, 1)
        self.norm = nn.BatchNorm2d(1)

    def respond(self, zf: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Responses of adjusted exemplar features ``zf = adjust_z(z)`` in backbone search features ``x``: the
        BatchNorm of the mean correlation of ``zf`` with ``adjust_x(x)``.

        ``adjust_x`` is folded into the exemplar side (``<zf, W x + b> = <W^T zf, x> + <zf, b>``): a ``[c, C]``
        product over the ``hz x wz`` exemplar cells instead of a 1x1 conv over the search cells of every scale
        (12x as many with 3 scales at exemplar / search 63 / 127 or 127 / 255).

        ``correlation="zncc"``: the ZNCC of ``zf`` with ``adjust_x(x)`` (:func:`normalized_cross_correlation`), in
        [-1, 1], without the BatchNorm in eval mode (it only scales training logits; the tracker's confidence is the
        ZNCC itself)."""
        if self.correlation == "zncc":
            out = normalized_cross_correlation(zf, self.adjust_x(x))
            return self.norm(out) if self.training else out
        w = self.adjust_x.weight.flatten(1)  # [c, C]
        kernel = torch.einsum("oc,boyx->bcyx", w, zf)
        offset = (zf * self.adjust_x.bias.view(1, -1, 1, 1)).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1)
        out = cross_correlation(kernel, x) + offset
        return self.norm(out / (zf.shape[1] * zf.shape[-2] * zf.shape[-1]))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.respond(self.adjust_z(z), x)


class FrameByFrame:
    """``init`` / ``update`` over a :class:`SiamFC` loop from ``self._new_loop()``: shared by the PyTorch tracker
    and the ONNX Runtime one (``export.tracking_runtime.OnnxTracker``), which differ only in how they compute
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


#: The training-free baseline's parameters: a template of the box's area (no context), a search window 3x its
#: side, one scale, the response at crop resolution, a Hann window of weight 0.3 (chosen on the validation
#: sequences: docs in the README's tracking section).
NCC_CONFIG = TrackerConfig(exemplar_size=32, search_size=96, context=0.0, num_scales=1, response_upsample=1,
                           window_influence=0.3, temporal_radius=0, correlation="zncc")


PIXEL_FEATURES = "pixels"


def is_pixel_tracker_config(data: Any) -> bool:
    """Whether a parsed ``config.json`` describes a training-free pixel tracker (a config, no weights)."""
    return isinstance(data, dict) and data.get("task") == "tracking" and data.get("features") == PIXEL_FEATURES


@dataclass(frozen=True)
class PixelTrackerConfig:
    """A training-free tracker checkpoint: ``config.json`` alone (``"task": "tracking", "features": "pixels"``,
    the :class:`TrackerConfig` under ``head``; no weights). ``load()`` returns it as an :class:`NCCTracker`."""

    head: TrackerConfig = field(default_factory=lambda: NCC_CONFIG)
    provenance: dict[str, Any] = field(default_factory=dict)
    task = "tracking"

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": 1, "task": self.task, "features": PIXEL_FEATURES,
                "head": dataclasses.asdict(self.head), "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> PixelTrackerConfig:
        if not is_pixel_tracker_config(data):
            raise TaskConfigError(f"{source}: not a pixel tracker config (needs task 'tracking', features 'pixels')")
        head = data.get("head") or {}
        names = {f.name for f in dataclasses.fields(TrackerConfig)}
        unknown = sorted(set(head) - names) if isinstance(head, dict) else ["(head is not an object)"]
        if unknown:
            raise TaskConfigError(f"{source}: unknown head field(s) {unknown}; fields: {sorted(names)}")
        provenance = data.get("provenance") or {}
        return cls(TrackerConfig(**head), dict(provenance) if isinstance(provenance, dict) else {})


class NCCTracker(FrameByFrame):
    """The training-free baseline: zero-mean normalised cross-correlation of grayscale pixels (OpenCV's
    ``matchTemplate``, ``TM_CCOEFF_NORMED``) in the same tracking loop as the SiamFC tracker (:class:`SiamFC`:
    crops, scales, scale penalty, cosine window, box update), at feature stride 1. The floor every learned tracker
    must beat. ``config``: a :class:`TrackerConfig` with ``correlation="zncc"`` (default :data:`NCC_CONFIG`).

    >>> tracker = NCCTracker(); result = tracker.track("video.mp4", init_box=(x, y, w, h))
    """

    task = "tracking"
    name = "ncc"

    def __init__(self, config: TrackerConfig | None = None, provenance: dict[str, Any] | None = None) -> None:
        self.config = PixelTrackerConfig(config or NCC_CONFIG, dict(provenance or {}))
        if self.tracker_config.correlation != "zncc":
            raise TaskConfigError("NCCTracker: the pixel baseline's correlation is 'zncc'")
        self._loop: SiamFC | None = None

    @property
    def tracker_config(self) -> TrackerConfig:
        return self.config.head

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the tracker as a checkpoint folder (``config.json`` only: there are no weights)."""
        from ..fileio import atomic_write

        return atomic_write(Path(folder) / "config.json", json.dumps(self.config.to_dict(), indent=2) + "\n")

    def _new_loop(self) -> SiamFC:
        import cv2

        def gray(clips: torch.Tensor) -> np.ndarray:  # [S, 3, T, X, X] in [0, 255] -> [S, X, X] float32
            rgb = clips[:, :, clips.shape[2] // 2 if not self.tracker_config.causal else -1]
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype).view(1, 3, 1, 1)
            return (rgb * weights).sum(1).numpy().astype(np.float32)

        def exemplar(z: torch.Tensor) -> np.ndarray:
            return gray(z)[0]

        def respond(template: np.ndarray, x: torch.Tensor) -> torch.Tensor:
            maps = [cv2.matchTemplate(search, template, cv2.TM_CCOEFF_NORMED) for search in gray(x)]
            return torch.from_numpy(np.stack(maps)[:, None])

        return SiamFC(self.tracker_config, (0.0, 255.0), 1, exemplar, respond)

    def track(self, video: FrameSource, init_box: Sequence[float], *, precision: str | None = None,
              **kwargs: Any) -> TrackResult:
        """As :meth:`FrameByFrame.track`; ``precision`` is accepted for a uniform interface (pixels: fp32)."""
        return super().track(video, init_box, **kwargs)


class SiamFCTracker(FrameByFrame, TaskModel):
    """A SiamFC tracker on an encoder (see the module doc). ``forward(exemplar, search) -> responses`` for
    training; ``init`` / ``update`` / ``track`` for tracking."""

    task = "tracking"
    head_config_class = TrackerConfig
    default_branch = "region"

    def __init__(self, config: TaskConfig, encoder: Any = None) -> None:
        super().__init__(config, encoder)
        dilate_backbone(self.encoder.backbone)
        self.precision = "auto"
        self._loop: SiamFC | None = None

    def build_head(self, config: TaskConfig) -> nn.Module:
        endpoint = config.head.endpoint
        channels = config.encoder.feature_dim if endpoint == "output" else \
            config.encoder.backbone.stage_channels[{"res3": 1, "res4": 2}[endpoint]]
        return SiamFCHead(channels, config.head)

    def init_head(self, generator: torch.Generator) -> None:
        head = self.head
        with torch.no_grad():
            for conv in (head.adjust_z, head.adjust_x):
                out_c, in_c = conv.weight.shape[:2]
                if out_c == in_c:
                    conv.weight.copy_(torch.eye(in_c).view(in_c, in_c, 1, 1))
                else:
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / math.sqrt(in_c))
                conv.bias.zero_()
            head.norm.reset_parameters()  # gain 1, bias 0, running mean 0 / var 1: the identity in eval mode

    @property
    def tracker_config(self) -> TrackerConfig:
        return self.config.head

    @property
    def feature_stride(self) -> int:
        """Input pixels per feature cell (8 for the R3D backbones: res4 / res5 dilated)."""
        bb = self.config.encoder.backbone
        return bb.stem_stride[1] * bb.stem_pool_stride[1] * 2

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, S, S]`` preprocessed clips -> ``[B, C, S/8, S/8]``: the centre time slice of the encoder's
        dense features at the head's ``endpoint`` (the last one in causal mode).

        The output stage (res5) runs only on the time slices that slice depends on (:func:`stage_time_slice`):
        the same numbers as the whole stage's slice, e.g. res5 on 1 of 3 slices for R3D-14 (its one block has a
        temporal kernel of 3, so it needs all 3 res4 slices but computes 1)."""
        enc = self.encoder
        head_cfg = self.config.head
        if head_cfg.endpoint != "output":
            fmap = enc.forward_features(clips, (head_cfg.endpoint,))[head_cfg.endpoint]
            return fmap[:, :, -1] if head_cfg.causal else fmap[:, :, fmap.shape[2] // 2]
        endpoint = getattr(enc, "output_endpoint", None)
        stage = getattr(getattr(enc, "backbone", None), endpoint or "", None)
        if endpoint is None or not isinstance(stage, nn.Sequential):
            fmap = enc.forward_features(clips, (endpoint,))[endpoint] if endpoint else enc(clips)
            return fmap[:, :, -1] if self.config.head.causal else fmap[:, :, fmap.shape[2] // 2]
        x = enc.forward_features(clips, ("res4",))["res4"]
        return stage_time_slice(stage, x, x.shape[2] - 1 if self.config.head.causal else x.shape[2] // 2)

    def forward(self, exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        """Responses ``[B, 1, h, w]`` (logits) of exemplar clips ``[B, 3, T, Z, Z]`` in search clips
        ``[B, 3, T, X, X]``."""
        return self.head(self.features(exemplar), self.features(search))

    # -- tracking -------------------------------------------------------------------------------------------
    def _features_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from ..inference.precision import plan_context, prepare_model, resolve_precision, to_input

        device = next(self.parameters()).device
        plan = resolve_precision(self.precision, device)
        prepare_model(self.encoder, plan)

        def run(clips: torch.Tensor) -> torch.Tensor:
            with plan_context(plan, device):
                return self.features(to_input(clips, self.encoder, plan)).float()

        return run

    def _new_loop(self) -> SiamFC:
        self.eval()
        features = self._features_fn()
        head = self.head
        dtype = next(head.parameters()).dtype

        def exemplar(z: torch.Tensor) -> torch.Tensor:
            feats = features(z)
            with torch.inference_mode():
                return head.adjust_z(feats.to(dtype))

        def respond(zf: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            feats = features(x)
            with torch.inference_mode():
                return head.respond(zf, feats.to(dtype))

        return SiamFC(self.config.head, tuple(self.config.preprocess.value_range), self.feature_stride,
                      exemplar, respond)

    def track(self, video: FrameSource, init_box: Sequence[float], *, precision: str | None = None,
              **kwargs: Any) -> TrackResult:
        """Track through a whole video (file, image folder, array or iterable of frames): :meth:`SiamFC.track`."""
        if precision is not None:
            self.precision = precision
        return super().track(video, init_box, **kwargs)


__all__ = [
    "NCC_CONFIG",
    "NCCTracker",
    "PixelTrackerConfig",
    "SiamFC",
    "SiamFCHead",
    "SiamFCTracker",
    "TrackResult",
    "TrackerConfig",
    "TrackerInputError",
    "check_box",
    "check_frame",
    "crop_and_resize",
    "cross_correlation",
    "format_boxes",
    "is_pixel_tracker_config",
    "normalized_cross_correlation",
    "stage_time_slice",
]
