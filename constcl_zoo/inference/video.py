"""Frame-exact, streaming video decoding with PyAV (the ``video`` extra).

Frames are counted as they decode: a container header's frame count is never trusted (``tree.avi`` claims 444
frames and decodes 68). Each :class:`Frame` carries its decoded index, its presentation time and duration in
seconds, and the RGB pixels ``[H, W, 3]`` uint8. Decoding never holds more than one frame: peak memory does
not depend on the video's length.
"""

from __future__ import annotations

import csv
import io
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from ..errors import ConstclZooError, InvalidArgumentError, InvalidTypeError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
INSTALL_HINT = "pip install 'constcl-zoo[video]'"


class VideoError(ConstclZooError, ValueError):
    """A video that cannot be used: unreadable, corrupt, empty or too short. The message names the file."""


class VideoDecodeError(VideoError):
    """The container or a frame failed to decode (the message names the file and the frame index)."""


class EmptyVideoError(VideoError):
    """The file has no video stream, or its video stream decodes to no frame."""


class VideoTooShortError(VideoError):
    """Fewer decoded frames than one clip spans."""


class ManifestError(ConstclZooError, ValueError):
    """A manifest that cannot be read: not UTF-8, no ``path`` column, no entries. The message names file and line."""


class FrameSizeError(VideoError):
    """A frame over the size limits (:data:`MAX_FRAME_SIDE`, :data:`MAX_FRAME_PIXELS`, :data:`MAX_ASPECT_RATIO`)."""


# Limits on the frames we decode and preprocess. They bound the memory and time one frame can cost (a 66 KB
# MJPEG file can hold 30000x2 frames) and sit well above real video: DCI 8K is 8192x4320, panoramas are 2:1 and
# the widest cinema formats ~2.8:1. A frame over any limit raises FrameSizeError before it is converted to RGB.
MAX_FRAME_SIDE = 8192
"""Largest height or width, in pixels."""
MAX_FRAME_PIXELS = 8192 * 4320
"""Largest height x width (one uint8 RGB frame of this size is ~106 MB)."""
MAX_ASPECT_RATIO = 10.0
"""Largest ratio of the longer side to the shorter side."""


def check_frame_size(height: int, width: int, where: str) -> None:
    """Raise :class:`FrameSizeError` naming ``where`` (file and frame) unless a ``height`` x ``width`` frame is
    within the limits; the one check of frame sizes, used by the decoder and by ``ClipPreprocess``."""
    problems = []
    if max(height, width) > MAX_FRAME_SIDE:
        problems.append(f"a side over {MAX_FRAME_SIDE} px")
    if height * width > MAX_FRAME_PIXELS:
        problems.append(f"over {MAX_FRAME_PIXELS} pixels")
    if height < 1 or width < 1 or max(height, width) > MAX_ASPECT_RATIO * min(height, width):
        problems.append(f"an aspect ratio over {MAX_ASPECT_RATIO:g}:1")
    if problems:
        raise FrameSizeError(f"{where}: frame size {width}x{height} (width x height) has {' and '.join(problems)}; "
                             f"constcl_zoo refuses such frames (limits in constcl_zoo.inference.video: MAX_FRAME_SIDE, "
                             f"MAX_FRAME_PIXELS, MAX_ASPECT_RATIO). Resize the video first, e.g. with ffmpeg -vf scale")


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``rgb`` is ``[H, W, 3]`` uint8; times in seconds."""

    index: int
    time_s: float
    duration_s: float
    rgb: np.ndarray


def require_av() -> ModuleType:
    """Import PyAV or raise an ImportError saying which extra installs it."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching sys.modules in tests
        raise ImportError(f"decoding video files needs PyAV, which is not installed: {INSTALL_HINT}") from exc
    return av


def decoder_reason(exc: BaseException) -> str:
    """What a PyAV/FFmpeg error says, for a user: its text without the errno (``[Errno 1094995529] Invalid data
    found when processing input: 'x.mp4'`` -> ``Invalid data found when processing input``)."""
    reason = getattr(exc, "strerror", None)
    return str(reason) if reason else str(exc)


def iter_av_frames(path: str | os.PathLike, threads: int = 0) -> Iterator[tuple[int, float | None, object]]:
    """Decode ``path`` in order, yielding ``(decoded index, nominal frame period in s or None, av.VideoFrame)``;
    nothing is converted to RGB here, so callers convert only the frames they keep. ``threads=0``: FFmpeg chooses.

    Raises :class:`VideoDecodeError` (file and frame index in the message) for a corrupt container or frame,
    :class:`EmptyVideoError` when no frame decodes, :class:`FrameSizeError` for a frame over the size limits
    (checked on the header and on every frame, before any RGB conversion), ``FileNotFoundError`` for a missing file.
    """
    av = require_av()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoDecodeError(f"{path}: cannot open the container ({decoder_reason(exc)})") from exc
    with container:
        if not container.streams.video:
            raise EmptyVideoError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context.width and stream.codec_context.height:  # the header's size, before any decoding
            check_frame_size(stream.codec_context.height, stream.codec_context.width, f"{path}: video stream")
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        rate = stream.average_rate or stream.guessed_rate
        period = 1.0 / float(rate) if rate else None
        index = 0
        decoder = container.decode(stream)
        while True:
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except av.FFmpegError as exc:
                raise VideoDecodeError(f"{path}: decoding failed at frame {index} "
                                       f"(after {index} good frames): {decoder_reason(exc)}") from exc
            check_frame_size(frame.height, frame.width, f"{path}: frame {index}")  # a stream may change size
            yield index, period, frame
            index += 1
        if index == 0:
            raise EmptyVideoError(f"{path}: the video stream decodes to no frame")


def iter_video_file(path: str | os.PathLike, threads: int = 0) -> Iterator[Frame]:
    """Decode ``path`` into RGB :class:`Frame` s with their times (errors as :func:`iter_av_frames`)."""
    av = require_av()
    for index, period, frame in iter_av_frames(path, threads):
        try:
            rgb = frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, ValueError) as exc:
            raise VideoDecodeError(f"{path}: frame {index} cannot be converted to RGB: {decoder_reason(exc)}") from exc
        time_s = float(frame.time) if frame.time is not None else (index * period if period else float(index))
        duration = frame.duration * float(frame.time_base) if frame.duration and frame.time_base else period
        yield Frame(index, time_s, float(duration or 0.0), rgb)


def iter_array_frames(frames: np.ndarray | torch.Tensor, fps: float, source: str = "<array>") -> Iterator[Frame]:
    """Frames of an in-memory video ``[T, H, W, 3]`` uint8 at ``fps`` frames per second."""
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise InvalidTypeError(f"{source}: frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidArgumentError(f"{source}: frames must be uint8 [T, H, W, 3] RGB, got {frames.dtype} "
                         f"{tuple(frames.shape)}")
    if not fps or fps <= 0:
        raise InvalidArgumentError(
            f"{source}: an in-memory video needs fps > 0 to give window times in seconds, got {fps!r}")
    if frames.shape[0] == 0:
        raise EmptyVideoError(f"{source}: the array holds no frame")
    check_frame_size(frames.shape[1], frames.shape[2], f"{source}: frames {list(frames.shape)}")
    for i in range(frames.shape[0]):
        yield Frame(i, i / fps, 1.0 / fps, frames[i])


def find_videos(folder: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Video files (by extension, case-insensitive) under ``folder``, recursively, sorted."""
    exts = {e.lower() for e in extensions}
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in exts)


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest line: the path as written, resolved against the manifest's folder, and its line number."""

    written: Path
    path: Path
    line: int


def read_manifest(manifest: str | os.PathLike) -> list[ManifestEntry]:
    """Entries of a manifest: a ``.csv`` with a ``path`` column, or text (``.txt``, ``.lst``, ...) with one path a
    line, blank lines and ``#`` comments skipped. Relative paths are relative to the manifest's folder.

    Manifests are UTF-8, with or without a byte-order mark (as spreadsheet programs write CSV); anything else
    raises :class:`ManifestError` naming the line.
    """
    manifest = Path(manifest)
    data = manifest.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ManifestError(f"{manifest}, line {line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save the manifest "
                            f"as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    rows: list[tuple[int, str]]
    if manifest.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        fields = [f.strip() for f in reader.fieldnames or []]
        if "path" not in fields:
            raise ManifestError(f"{manifest}: a CSV manifest needs a 'path' column, got {reader.fieldnames}")
        column = (reader.fieldnames or [])[fields.index("path")]
        rows = [(reader.line_num, (row[column] or "").strip()) for row in reader]
    else:
        rows = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), start=1)]
    entries = [ManifestEntry(Path(p), Path(p) if Path(p).is_absolute() else manifest.parent / p, n)
               for n, p in rows if p and not p.startswith("#")]
    if not entries:
        raise ManifestError(f"{manifest}: the manifest lists no videos; give one path a line (a .csv: a 'path' "
                            f"column)")
    return entries


def list_videos(source: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Video paths from a folder (recursive, sorted, by extension) or a manifest (see :func:`read_manifest`)."""
    source = Path(source)
    if not str(source) or not source.exists():
        raise FileNotFoundError(f"videos: {source} does not exist (give a folder or a .csv/.txt manifest)")
    if source.is_dir():
        found = find_videos(source, extensions)
        if not found:
            raise FileNotFoundError(f"videos: no files with extensions {sorted(extensions)} under {source}")
        return found
    return [entry.path for entry in read_manifest(source)]


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_image_frames(folder: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files (by extension, case-insensitive) directly in ``folder``, in name order (``00000001.jpg``,
    ``00000002.jpg``, ... as OTB / GOT-10k / VOT store sequences). Raises :class:`EmptyVideoError` when none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no image folder at {folder}")
    exts = {e.lower() for e in extensions}
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise EmptyVideoError(f"{folder}: no image files ({', '.join(sorted(exts))})")
    return files


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's first start-of-frame marker (SOF0-SOF15 but DHT, JPG, DAC)."""
    i = 2
    while i + 9 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[i + 5:i + 9])
            return height, width
        i += 2 + struct.unpack(">H", head[i + 2:i + 4])[0]
    return None


def _tiff_size(head: bytes) -> tuple[int, int] | None:
    """(height, width) from the first IFD of a TIFF (tags 256 ImageWidth, 257 ImageLength)."""
    order = "<" if head[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", head[4:8])
    if offset + 2 > len(head):
        return None
    (count,) = struct.unpack(order + "H", head[offset:offset + 2])
    size = {}
    for k in range(count):
        entry = head[offset + 2 + 12 * k:offset + 14 + 12 * k]
        if len(entry) < 12:
            return None
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
    return (size[257], size[256]) if len(size) == 2 else None


IMAGE_HEADER_BYTES = 1 << 16  # the part of an image file read to find its size (JPEG EXIF blocks come first)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of a PNG, JPEG, BMP, TIFF or WebP image from its header, without decoding it; raises
    :class:`VideoDecodeError` for a file whose header is none of these or is cut short."""
    with open(path, "rb") as f:
        head = f.read(IMAGE_HEADER_BYTES)
    size: tuple[int, int] | None = None
    try:
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            size = height, width
        elif head[:2] == b"\xff\xd8":
            size = _jpeg_size(head)
        elif head[:2] == b"BM":
            width, height = struct.unpack("<ii", head[18:26])
            size = abs(height), width  # a negative height: rows stored top-down
        elif head[:4] in (b"II*\x00", b"MM\x00*"):
            size = _tiff_size(head)
        elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            kind = head[12:16]
            if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
                w, h = struct.unpack("<HH", head[26:30])
                size = h & 0x3FFF, w & 0x3FFF
            elif kind == b"VP8L" and head[20] == 0x2F:
                bits = int.from_bytes(head[21:25], "little")
                size = ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
            elif kind == b"VP8X":
                size = int.from_bytes(head[27:30], "little") + 1, int.from_bytes(head[24:27], "little") + 1
    except (struct.error, IndexError):
        size = None
    if size is None:
        raise VideoDecodeError(f"{path}: not a readable image ({_NO_HEADER})")
    return size


_NO_HEADER = f"no PNG, JPEG, BMP, TIFF or WebP header with its size in the first {IMAGE_HEADER_BYTES // 1024} KB"


def iter_image_files(files: Sequence[str | os.PathLike], fps: float = 30.0) -> Iterator[Frame]:
    """Decode image files (OpenCV, the ``video`` extra) into RGB :class:`Frame` s, one at a time, at a nominal
    ``fps``. An unreadable image raises :class:`VideoDecodeError` naming the file and its frame index; an image
    over the frame-size limits :class:`FrameSizeError`, checked on its header before it is decoded."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover
        raise ImportError(f"reading image folders needs OpenCV: {INSTALL_HINT}") from exc
    for index, path in enumerate(files):
        try:
            height, width = image_size(path)
        except VideoDecodeError:
            raise VideoDecodeError(f"{path}: frame {index} is not a readable image ({_NO_HEADER})") from None
        check_frame_size(height, width, f"{path}: frame {index}")
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VideoDecodeError(f"{path}: frame {index} is not a readable image")
        check_frame_size(bgr.shape[0], bgr.shape[1], f"{path}: frame {index}")  # the decoded size, too
        yield Frame(index, index / fps, 1.0 / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def iter_frames(source: str | os.PathLike, fps: float = 30.0) -> Iterator[Frame]:
    """Frames of a video file, of a folder of images (sorted by name, nominal ``fps``) or of a single image file
    (by extension: one frame): the one entry point for commands that accept any of them."""
    source = Path(source)
    if source.is_dir():
        return iter_image_files(list_image_frames(source), fps)
    if source.suffix.lower() in IMAGE_EXTENSIONS:
        if not source.is_file():
            raise FileNotFoundError(f"no image file at {source}")
        return iter_image_files([source], fps)
    return iter_video_file(source)
