"""What a request sends, made into checked clips: preprocessed clips (a ``.npy`` file, raw bytes described by
``X-Clips-Shape`` / ``X-Clips-Dtype``, a KServe v2 tensor: :class:`ClipReader`) or a video (every sliding window,
decoded in a pool of its own and stopped when its request gives up: :class:`VideoDecoder`).

Every bad input is an ``HTTPException`` naming the problem: 400 unreadable, 413 too many clips, 422 wrong shape,
dtype, non-finite values or an unusable video. A shape is checked before any array exists (``np.load`` would
allocate whatever a ``.npy`` header claims), and a body's clips are a view of it, not a copy.
"""

from __future__ import annotations

import asyncio
import functools
import io
import math
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import HTTPException
from numpy.lib import format as npy_format

from constcl_zoo.errors import ConstclZooError, InvalidArgumentError
from constcl_zoo.inference.embed import WindowSpec, frames_of, iter_windows
from constcl_zoo.inference.video import Frame, VideoError

from ..runtime import OnnxEmbedder
from .metrics import Metrics

NPY_MAGIC = b"\x93NUMPY"
NPY_HEADER_BYTES = 12 + 10000 + 64  # a .npy prefix (magic, version, length) and numpy's largest header, with room
SHAPE_HEADER = re.compile(r"\s*\d{1,18}(\s*,\s*\d{1,18})*\s*")


def npy_header_bytes(data: bytes | memoryview) -> bytes:
    """The bytes of a ``.npy`` file's prefix and header (what :func:`npy_header` parses); for a file that is not
    a ``.npy`` 1.0/2.0 or whose header is over numpy's limit, its first :data:`NPY_HEADER_BYTES` (numpy's parser then
    says what is wrong)."""
    prefix = bytes(data[:12])
    if prefix[:6] == NPY_MAGIC and prefix[6:8] in (b"\x01\x00", b"\x02\x00") and len(prefix) == 12:
        size = 10 + int.from_bytes(prefix[8:10], "little") if prefix[6] == 1 else \
            12 + int.from_bytes(prefix[8:12], "little")
        return bytes(data[:min(size, NPY_HEADER_BYTES)])
    return bytes(data[:NPY_HEADER_BYTES])


@functools.lru_cache(maxsize=64)
def npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran order, dtype, data offset)`` of a ``.npy`` header (:func:`npy_header_bytes`), parsed by
    numpy (``ValueError`` and friends for a bad one). Cached: clients send the same few headers again and again,
    and numpy's parser (``ast.literal_eval``) takes ~40 us."""
    buffer = io.BytesIO(header)
    version = npy_format.read_magic(buffer)
    if version not in ((1, 0), (2, 0)):
        raise InvalidArgumentError(f"format version {version[0]}.{version[1]} (1.0 and 2.0 are read)")
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, fortran, dtype = read_header(buffer)
    return shape, fortran, dtype, buffer.tell()


class ClipReader:
    """Preprocessed clips of a request, checked for ``embedder`` (an :class:`~export.runtime.OnnxEmbedder`): float32
    ``[B, 3, T, crop, crop]`` with ``1 <= B <= max_clips`` and finite values."""

    def __init__(self, embedder: OnnxEmbedder, max_clips: int) -> None:
        self.embedder, self.max_clips = embedder, max_clips
        self.value_range = list(embedder.config.preprocess.value_range)

    def check_header(self, shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
        """Shape, clip count and dtype of clips about to be read, before any array exists."""
        clip_shape = tuple(self.embedder.clip_shape)
        if len(shape) not in (4, 5) or tuple(shape[-4:]) != clip_shape:
            raise HTTPException(422, f"{name}: clips must have shape [B, {', '.join(map(str, clip_shape))}] "
                                     f"(preprocessed), got {tuple(shape)}")
        count = shape[0] if len(shape) == 5 else 1
        if count == 0:
            raise HTTPException(422, f"{name}: no clips (the shape {tuple(shape)} has a batch of 0)")
        if count > self.max_clips:
            raise HTTPException(413, f"{name}: {count} clips; the limit is {self.max_clips} per request")
        if dtype.kind != "f":
            raise HTTPException(422, f"{name}: clips must be float (preprocessed to {self.value_range}), got {dtype}")

    def clips(self, data: bytes | memoryview, offset: int, shape: tuple[int, ...], dtype: np.dtype, fortran: bool,
              name: str, problem: str, holder: str) -> np.ndarray:
        """Checked float32 clips ``[B, 3, T, crop, crop]`` viewing ``data[offset:]`` (no copy for C-ordered
        float32): the byte count must match the (already checked) shape; values must be finite. ``problem`` and
        ``holder`` word the byte-count error."""
        size = math.prod(shape) * dtype.itemsize
        if len(data) - offset != size:
            raise HTTPException(400, f"{name}: {problem} (the shape {tuple(shape)} needs {size} bytes of data, "
                                     f"{holder} holds {len(data) - offset})")
        array = np.frombuffer(data, dtype, math.prod(shape), offset)
        array = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
        return self.checked(array[None] if len(shape) == 4 else array, name)

    def checked(self, array: np.ndarray, name: str) -> np.ndarray:
        """``array`` as the model's float32 clips (422 for a wrong shape or non-finite values)."""
        try:
            clips = self.embedder.check_clips(array)
        except ValueError as exc:
            raise HTTPException(422, f"{name}: {exc}") from None
        if not np.isfinite(clips).all():
            raise HTTPException(422, f"{name}: the clips contain NaN or infinite values (or values too large "
                                     f"for float32)")
        return clips

    def read_npy(self, data: bytes | memoryview, name: str) -> np.ndarray:
        """Clips from ``.npy`` bytes. The header is parsed and checked (shape, dtype, clip count, byte count)
        before any array exists: ``np.load`` would allocate whatever shape the header claims. Only the header's
        bytes are copied (numpy reads headers of at most 10000 bytes)."""
        try:
            shape, fortran, dtype, offset = npy_header(npy_header_bytes(data))
        except (ValueError, OSError, EOFError, TypeError, SyntaxError) as exc:
            raise HTTPException(400, f"{name}: not a readable .npy array ({exc})") from None
        if dtype.hasobject:
            raise HTTPException(400, f"{name}: not a readable .npy array (object arrays need pickle, which this "
                                     f"service never loads)")
        self.check_header(shape, dtype, name)
        return self.clips(data, offset, shape, dtype, fortran, name, "not a readable .npy array", "the file")

    def raw_clips(self, data: bytes | memoryview, shape_header: str, dtype_header: str, name: str) -> np.ndarray:
        """Clips from raw C-ordered bytes described by the ``X-Clips-Shape`` and ``X-Clips-Dtype`` headers."""
        if not SHAPE_HEADER.fullmatch(shape_header):
            raise HTTPException(400, f"X-Clips-Shape must be comma-separated sizes such as "
                                     f"1,{','.join(map(str, self.embedder.clip_shape))}; got {shape_header!r}")
        try:
            dtype = np.dtype(dtype_header.strip())
        except TypeError:
            raise HTTPException(400, f"X-Clips-Dtype: {dtype_header!r} is not a dtype (float32, float16, "
                                     f"float64)") from None
        shape = tuple(int(size) for size in shape_header.split(","))
        self.check_header(shape, dtype, name)
        return self.clips(data, 0, shape, dtype, False, name, "the body does not match X-Clips-Shape and "
                          "X-Clips-Dtype", "the body")


class _Cancelled(ConstclZooError):
    """A decoding job whose request timed out or went away (nobody waits for its result)."""


def _cancellable(frames: Iterable[Frame], cancel: threading.Event, metrics: Metrics) -> Iterator[Frame]:
    """``frames`` until ``cancel`` is set (checked before each frame is decoded)."""
    iterator = iter(frames)
    while not cancel.is_set():
        try:
            frame = next(iterator)
        except StopIteration:
            return
        metrics.frames_decoded.inc()
        yield frame
    raise _Cancelled


class VideoDecoder:
    """Uploaded videos -> the clips of every sliding window (at most ``max_clips``) and the windows' times, decoded
    by ``workers`` threads of their own (not the default executor). A request that times out or goes away stops its
    decoding before the next frame."""

    def __init__(self, embedder: OnnxEmbedder, max_clips: int, workers: int, metrics: Metrics) -> None:
        self.embedder, self.max_clips, self.metrics = embedder, max_clips, metrics
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="constcl-decode")

    async def decode(self, data: bytes | memoryview, name: str) -> tuple[np.ndarray, list[dict]]:
        """``(clips, windows)`` of the video ``data`` (``name``: the upload's file name, for messages)."""
        cancel = threading.Event()
        self.metrics.decode_jobs.inc()
        try:
            with self.metrics.timed("decode"):
                return await asyncio.get_running_loop().run_in_executor(self.pool, self._job, data, name, cancel)
        finally:
            cancel.set()  # a timed-out or cancelled request: its decoding stops before the next frame

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _job(self, data: bytes | memoryview, name: str, cancel: threading.Event) -> tuple[np.ndarray, list[dict]]:
        try:
            return self._decode(data, name, cancel)
        finally:
            self.metrics.decode_jobs.dec()

    def _decode(self, data: bytes | memoryview, name: str, cancel: threading.Event) -> tuple[np.ndarray, list[dict]]:
        if cancel.is_set():  # timed out while queued for a worker
            raise _Cancelled
        suffix = Path(name).suffix if len(Path(name).suffix) <= 8 else ""
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            spec = WindowSpec.from_preprocess(self.embedder.preprocess)
            frames, _ = frames_of(tmp.name)
            try:
                clips, windows = self._windows(frames, spec, name, cancel)
            except (HTTPException, _Cancelled):
                raise
            except (VideoError, FileNotFoundError) as exc:
                raise HTTPException(422, str(exc).replace(tmp.name, name)) from None
            except Exception as exc:  # anything else a decoder throws is still about this upload
                raise HTTPException(422, f"{name}: cannot decode the video ({type(exc).__name__}: "
                                         f"{str(exc).replace(tmp.name, name)})") from None
        return np.stack(clips), windows

    def _windows(self, frames: Iterable[Frame], spec: WindowSpec, name: str, cancel: threading.Event
                 ) -> tuple[list[np.ndarray], list[dict]]:
        clips, windows = [], []
        for window in iter_windows(_cancellable(frames, cancel, self.metrics), self.embedder.preprocess, spec, name):
            if len(clips) == self.max_clips:
                raise HTTPException(413, f"{name}: more than {self.max_clips} windows; the limit is "
                                         f"{self.max_clips} clips per request (send a shorter video)")
            clips.append(window.clip.numpy())
            windows.append({"start_s": window.start_s, "end_s": window.end_s,
                            "start_frame": window.start_frame, "end_frame": window.end_frame})
        return clips, windows
