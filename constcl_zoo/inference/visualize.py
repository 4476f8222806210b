"""Annotated videos: boxes and labels drawn on frames, written as browser-playable H.264 MP4.

The one writer every command and the demo use (``constcl-zoo track``, ``constcl-zoo localize``, ``python -m
demos``). MP4 with H.264 (libx264, ``yuv420p``, even frame sizes, ``+faststart``) plays in every browser; PyAV
(the ``video`` extra) encodes it, OpenCV draws (the ``video`` extra too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from types import ModuleType, TracebackType

import numpy as np

from ..errors import ConstclZooError

Color = tuple[int, int, int]

PALETTE: tuple[Color, ...] = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                              (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


class VideoWriteError(ConstclZooError, OSError):
    """An annotated video could not be written (unwritable path, encoder missing, bad frames)."""


def color_for(index: int) -> Color:
    """A distinct RGB colour per track / object id."""
    return PALETTE[index % len(PALETTE)]


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as exc:
        raise ImportError("drawing on frames needs OpenCV: pip install 'constcl-zoo[video]'") from exc
    return cv2


def draw_box(frame: np.ndarray, box_xyxy: Sequence[float], color: Color = PALETTE[0], label: str | None = None,
             thickness: int | None = None) -> np.ndarray:
    """Draw one box ``(x1, y1, x2, y2)`` in pixels, with an optional label above it, on an RGB uint8 frame
    ``[H, W, 3]`` in place; returns the frame."""
    cv2 = _cv2()
    h, w = frame.shape[:2]
    thickness = thickness or max(1, round(min(h, w) / 240))
    x1, y1, x2, y2 = (round(float(v)) for v in box_xyxy)
    cv2.rectangle(frame, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
    if label:
        draw_label(frame, label, (x1, y1), color)
    return frame


def draw_label(frame: np.ndarray, text: str, anchor: tuple[int, int], color: Color = PALETTE[0]) -> np.ndarray:
    """Text on a filled background whose bottom-left corner is ``anchor`` (moved inside the frame)."""
    cv2 = _cv2()
    h, w = frame.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = min(max(anchor[0], 0), max(w - tw - 2, 0))
    y = min(max(anchor[1], th + base + 2), h - 1)
    cv2.rectangle(frame, (x, y - th - base - 2), (x + tw + 2, y), color, -1)
    text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(frame, text, (x + 1, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, text_color, 1, cv2.LINE_AA)
    return frame


class Mp4Writer:
    """Write RGB uint8 frames ``[H, W, 3]`` to an H.264 MP4 that browsers play.

    >>> with Mp4Writer("out.mp4", fps=25) as out:
    ...     for frame in frames:
    ...         out.write(frame)

    Odd frame sizes are padded by one pixel (yuv420p needs even sizes). The file appears at ``path`` only once
    it is complete (written next to it, then renamed).
    """

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 23) -> None:
        if not (fps > 0 and np.isfinite(fps)):
            raise VideoWriteError(f"{path}: fps must be a positive number, got {fps}")
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self._tmp = self.path.with_name(f".{self.path.name}.partial.mp4")
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def __enter__(self) -> Mp4Writer:
        try:
            import av
        except ImportError as exc:
            raise ImportError("writing MP4 needs PyAV: pip install 'constcl-zoo[video]'") from exc
        if self.path.suffix.lower() != ".mp4":
            raise VideoWriteError(f"{self.path}: annotated videos are written as .mp4 (H.264)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self._tmp), mode="w", format="mp4",
                                      options={"movflags": "+faststart"})
        except OSError as exc:
            raise VideoWriteError(f"{self.path}: cannot write the video ({exc})") from exc
        return self

    def write(self, frame: np.ndarray) -> None:
        import av

        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3):
            raise VideoWriteError(f"{self.path}: frame {self.frames} must be uint8 [H, W, 3] RGB, got "
                                  f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}")
        h, w = frame.shape[:2]
        if self._stream is None:
            self._size = (h, w)
            self._stream = self._container.add_stream("libx264", rate=self.fps)
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        elif (h, w) != self._size:
            raise VideoWriteError(f"{self.path}: frame {self.frames} is {w}x{h}, earlier frames were "
                                  f"{self._size[1]}x{self._size[0]}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._stream is not None and exc_type is None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            if self._container is not None:
                self._container.close()
        finally:
            if exc_type is None and self.frames > 0:
                os.replace(self._tmp, self.path)
            else:
                self._tmp.unlink(missing_ok=True)
        if exc_type is None and self.frames == 0:
            raise VideoWriteError(f"{self.path}: no frames were written")
