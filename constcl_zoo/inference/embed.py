"""Sliding-window embeddings of whole videos, streamed: decode -> preprocess -> batch -> network.

A window is ``clip_frames`` decoded frames taken every ``frame_stride`` (the weights' temporal sampling); window
``k`` starts at decoded frame ``k * stride``. Only full windows are embedded: a video shorter than one window
raises :class:`~constcl_zoo.inference.video.VideoTooShortError`, and the last ``< stride`` frames after the last full
window are not covered. Frames are preprocessed one at a time as they decode (only those a window uses) and
dropped as soon as no later window needs them, so peak memory depends on the window and batch sizes, never
on the video's length. Decoding and preprocessing run in a background thread, overlapping the network.

The same machinery drives the PyTorch models (``model.embed``) and the ONNX Runtime embedder (``export``):
:func:`embed_frames` takes any ``run(clips [B, 3, T, H, W]) -> features [B, ...]``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidArgumentError, InvalidTypeError
from ..nn.preprocess import ClipPreprocess
from .clips import clip_span
from .video import Frame, VideoTooShortError, iter_array_frames, iter_video_file

VideoInput = str | os.PathLike | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class WindowSpec:
    """Temporal sampling of the sliding windows, in decoded frames."""

    clip_frames: int
    frame_stride: int
    stride: int

    def __post_init__(self) -> None:
        for name in ("clip_frames", "frame_stride", "stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")

    @property
    def span(self) -> int:
        """Decoded frames from a window's first to its last frame, inclusive."""
        return clip_span(self.clip_frames, self.frame_stride)

    @classmethod
    def from_preprocess(cls, preprocess: ClipPreprocess, clip_frames: int | None = None,
                        stride: int | None = None) -> WindowSpec:
        """Defaults from the weights: ``num_frames`` frames every ``frame_stride``; windows tile the video
        (``stride = clip_frames * frame_stride``)."""
        cfg = preprocess.cfg
        clip_frames = cfg.num_frames if clip_frames is None else clip_frames
        stride = clip_frames * cfg.frame_stride if stride is None else stride
        return cls(clip_frames, cfg.frame_stride, stride)

    def needs(self, index: int) -> bool:
        """Whether decoded frame ``index`` belongs to some window."""
        first = max(0, -(-(index - self.span + 1) // self.stride))
        return any((index - k * self.stride) % self.frame_stride == 0 for k in range(first, index // self.stride + 1))


@dataclass
class VideoEmbeddings:
    """Features of every window of one video.

    ``embeddings``: ``[N, D]`` (global branch) or ``[N, C, T', H', W']`` (region branch), float32 on the CPU.
    ``start_s`` / ``end_s``: ``[N]`` seconds — the presentation time of the window's first frame, and that of
    its last frame plus the frame's duration. ``start_frame`` / ``end_frame``: ``[N]`` decoded-frame indices
    of the first and last frame (inclusive). ``num_frames``: frames decoded in the whole video.
    """

    embeddings: torch.Tensor
    start_s: np.ndarray
    end_s: np.ndarray
    start_frame: np.ndarray
    end_frame: np.ndarray
    num_frames: int
    source: str
    spec: WindowSpec

    def __len__(self) -> int:
        return self.embeddings.shape[0]


@dataclass(frozen=True)
class _Window:
    clip: torch.Tensor  # [3, T, crop, crop]
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float


def frames_of(video: VideoInput, fps: float | None = None) -> tuple[Iterator[Frame], str]:
    """A frame iterator and a display name for a file path or an in-memory ``[T, H, W, 3]`` uint8 video."""
    if isinstance(video, (str, os.PathLike)):
        if fps is not None:
            raise InvalidArgumentError("fps= is for in-memory videos; a file's frame times come from its container")
        return iter_video_file(video), str(Path(video))
    if isinstance(video, (np.ndarray, torch.Tensor)):
        return iter_array_frames(video, fps), "<array>"
    raise InvalidTypeError(f"video must be a file path or a uint8 [T, H, W, 3] array, got {type(video).__name__}")


def iter_windows(frames: Iterable[Frame], preprocess: ClipPreprocess, spec: WindowSpec,
                 source: str, counter: list[int] | None = None) -> Iterator[_Window]:
    """Preprocessed windows in order, streaming. ``counter[0]`` receives the number of decoded frames."""
    kept: dict[int, tuple[torch.Tensor, float, float]] = {}  # index -> (frame [3, crop, crop], time, duration)
    next_start, seen = 0, 0
    for frame in frames:
        seen = frame.index + 1
        if spec.needs(frame.index):
            kept[frame.index] = (preprocess(frame.rgb[None])[:, 0], frame.time_s, frame.duration_s)
        while frame.index == next_start + spec.span - 1:
            idx = [next_start + i * spec.frame_stride for i in range(spec.clip_frames)]
            last = kept[idx[-1]]
            yield _Window(torch.stack([kept[i][0] for i in idx], dim=1), idx[0], idx[-1], kept[idx[0]][1],
                          last[1] + last[2])
            next_start += spec.stride
            for i in [i for i in kept if i < next_start]:
                del kept[i]
        if counter is not None:
            counter[0] = seen
    if next_start == 0:
        raise VideoTooShortError(f"{source}: {seen} decoded frame(s), but a window of {spec.clip_frames} frames "
                                 f"every {spec.frame_stride} spans {spec.span}; the last frame read was "
                                 f"frame {seen - 1}")


def _prefetch(items: Iterator, depth: int) -> Iterator:
    """Run ``items`` in a daemon thread, at most ``depth`` ahead; exceptions re-raise in the consumer."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as exc:  # handed to the consumer, re-raised there
            put((done, exc))

    thread = threading.Thread(target=work, daemon=True, name="constcl-decode")
    thread.start()
    try:
        while True:
            item, exc = buffer.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()


def iter_batches(windows: Iterable[_Window], batch_size: int) -> Iterator[list[_Window]]:
    """Group windows into lists of at most ``batch_size``."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch: list[_Window] = []
    for window in windows:
        batch.append(window)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def embed_frames(run: Callable[[torch.Tensor], torch.Tensor], video: VideoInput, preprocess: ClipPreprocess, *,
                 clip_frames: int | None = None, stride: int | None = None, batch_size: int = 8,
                 fps: float | None = None, prefetch: bool = True) -> VideoEmbeddings:
    """Embed every window of ``video`` with ``run(clips [B, 3, T, crop, crop]) -> [B, ...]``.

    ``video``: a file path (decoded with PyAV) or a uint8 ``[T, H, W, 3]`` array with ``fps``. ``clip_frames``
    and ``stride`` (decoded frames between window starts) default to the weights' preprocessing (see
    :class:`WindowSpec`). ``prefetch`` decodes and preprocesses in a background thread, at most two batches
    ahead of ``run``.
    """
    spec = WindowSpec.from_preprocess(preprocess, clip_frames, stride)
    frames, source = frames_of(video, fps)
    counter = [0]
    batches = iter_batches(iter_windows(frames, preprocess, spec, source, counter), batch_size)
    if prefetch:
        batches = _prefetch(batches, depth=2)
    outputs, windows = [], []
    for batch in batches:
        out = run(torch.stack([w.clip for w in batch]))
        outputs.append(out.detach().float().cpu())
        windows += batch
    return assemble(torch.cat(outputs), [w.start_frame for w in windows], [w.end_frame for w in windows],
                    [w.start_s for w in windows], [w.end_s for w in windows], counter[0], source, spec)


def assemble(features: torch.Tensor, start_frame: Sequence[int], end_frame: Sequence[int],
             start_s: Sequence[float], end_s: Sequence[float], num_frames: int, source: str,
             spec: WindowSpec) -> VideoEmbeddings:
    """A :class:`VideoEmbeddings` from the features ``[N, ...]`` of a video's windows, in order, and their frame
    indices and times (``N`` each); shared by :func:`embed_frames` and engines that embed windows elsewhere."""
    return VideoEmbeddings(features, np.asarray(start_s, dtype=np.float64), np.asarray(end_s, dtype=np.float64),
                           np.asarray(start_frame, dtype=np.int64), np.asarray(end_frame, dtype=np.int64),
                           num_frames, source, spec)


@contextlib.contextmanager
def inference_runner(model: torch.nn.Module, *, forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     precision: str = "auto") -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """``run(clips [B, 3, T, H, W]) -> float32 features [B, ...]``: ``forward`` (default: ``model``) in the
    chosen precision (see :mod:`constcl_zoo.inference.precision`). ``model``'s weights are put in the plan's layout in
    place and it runs in eval mode while the context is open (its mode is restored afterwards)."""
    from .precision import plan_context, prepare_model, resolve_precision, to_input

    forward = model if forward is None else forward
    device = next(model.parameters()).device
    plan = resolve_precision(precision, device)
    prepare_model(model, plan)
    was_training = model.training
    model.eval()

    def run(clips: torch.Tensor) -> torch.Tensor:
        with plan_context(plan, device):
            return forward(to_input(clips, model, plan)).float()

    try:
        yield run
    finally:
        model.train(was_training)


def embed_video(model: torch.nn.Module, video: VideoInput, *,
                forward: Callable[[torch.Tensor], torch.Tensor] | None = None, clip_frames: int | None = None,
                stride: int | None = None, batch_size: int = 8, precision: str = "auto",
                fps: float | None = None) -> VideoEmbeddings:
    """Run ``forward`` (default: ``model`` itself) on every window of ``video``, in the chosen precision.

    ``model`` must carry ``preprocess`` (the weights' :class:`ClipPreprocess`). ``precision``: ``"auto"`` (bf16
    autocast where the hardware runs bf16 natively, else fp32; channels_last_3d on CPUs and bf16 GPUs),
    ``"fp32"`` (the reference) or ``"bf16"`` — see :mod:`constcl_zoo.inference.precision`; ``model``'s weights are put
    in that layout in place, and it runs in eval mode (its mode is restored afterwards). Windows: see
    :func:`embed_frames`. This is the one place where PyTorch inference over a whole video happens: encoders'
    ``embed`` and the task models' video methods (e.g. ``classify``) call it; the Ray engine of
    ``constcl-zoo embed`` runs the same :func:`inference_runner` on windows from :func:`iter_windows`.
    """
    with inference_runner(model, forward=forward, precision=precision) as run:
        return embed_frames(run, video, model.preprocess, clip_frames=clip_frames, stride=stride,
                            batch_size=batch_size, fps=fps)
