"""Video reading for every trainer: frame-exact sparse decoding (OpenCV or PyAV), whole videos decoded into memory
(:func:`decode_video`), the frame cache and an index of decoded frame counts.

Listing videos (folder or manifest) and the PyAV decode loop come from ``constcl_zoo.inference.video``.

Frame counts come from decoding, never from container headers: headers lie (``tree.avi`` claims 444 frames and
decodes 68). Decoding is sequential from the first frame, which is exact for every codec and container: a frame's
index is its position in the decoded stream. Only the requested frames are converted to RGB (OpenCV ``grab`` /
``retrieve``; PyAV converts only kept frames), and decoding stops after the last requested frame.
"""

from __future__ import annotations

import json
import logging
import os
import types
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from constcl_zoo.errors import ConstclZooError, InvalidArgumentError
from constcl_zoo.fileio import atomic_write
from constcl_zoo.inference.video import EmptyVideoError, VideoDecodeError, VideoError, iter_av_frames, list_videos

__all__ = [
    "DecodedVideo",
    "FrameCache",
    "NoUsableVideosError",
    "VideoDecodeError",
    "VideoEntry",
    "VideoIndex",
    "build_index",
    "count_frames",
    "decode_video",
    "list_videos",
    "read_frames",
    "resize_short_side",
]

log = logging.getLogger(__name__)


_CV2_SINGLE_THREADED: set[int] = set()


def _cv2() -> types.ModuleType:
    """``cv2`` with its internal thread pool off. Decoding is parallel across DataLoader workers instead, and a pool
    started in the main process makes forked workers hang (cv2 destroys the inherited pool's locks)."""
    import cv2

    if os.getpid() not in _CV2_SINGLE_THREADED:
        cv2.setNumThreads(1)
        _CV2_SINGLE_THREADED.add(os.getpid())
    return cv2


def resize_short_side(frame: np.ndarray, short_side: int, upscale: str = "linear") -> np.ndarray:
    """Resize ``[H, W, 3]`` so its shorter side is ``short_side`` (0: unchanged): OpenCV's area filter down, and up
    bilinear (``upscale="linear"``) or the area filter too (``"area"``)."""
    cv2 = _cv2()

    h, w = frame.shape[:2]
    if short_side <= 0 or min(h, w) == short_side:
        return frame
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    up = cv2.INTER_AREA if upscale == "area" else cv2.INTER_LINEAR
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else up)


@dataclass(frozen=True)
class DecodedVideo:
    """A whole video in memory: ``frames`` uint8 RGB ``[N, H, W, 3]`` and each frame's presentation ``times``
    (seconds, ``[N]``)."""

    frames: np.ndarray
    times: np.ndarray

    def index_at(self, seconds: float) -> int:
        """The decoded frame shown at ``seconds``."""
        return int(np.clip(np.searchsorted(self.times, seconds + 1e-6, side="right") - 1, 0, len(self.times) - 1))


def decode_video(path: str | Path, short_side: int = 0, max_frames: int | None = None,
                 upscale: str = "linear") -> DecodedVideo:
    """Every decoded frame of ``path`` (PyAV, ``constcl_zoo.inference.video``; at most ``max_frames``), resized
    to ``short_side`` (:func:`resize_short_side`): for datasets small enough to keep in memory."""
    from constcl_zoo.inference.video import iter_video_file

    frames, times = [], []
    for frame in iter_video_file(path):
        frames.append(resize_short_side(frame.rgb, short_side, upscale))
        times.append(frame.time_s)
        if max_frames is not None and len(frames) >= max_frames:
            break
    return DecodedVideo(np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8), np.asarray(times))


def read_frames(path: str | Path, indices: Sequence[int], decoder: str = "opencv",
                short_side: int = 0) -> np.ndarray:
    """Decoded frames ``indices`` (0-based, any order, repeats allowed) as uint8 RGB ``[len(indices), H, W, 3]``.

    ``short_side > 0`` resizes each kept frame so its shorter side has that many pixels.
    Raises :class:`VideoDecodeError` naming the file and the first missing frame if the stream ends early.
    """
    if len(indices) == 0:
        raise InvalidArgumentError("read_frames: no frame indices given")
    wanted = sorted(set(int(i) for i in indices))
    if wanted[0] < 0:
        raise InvalidArgumentError(f"{path}: negative frame index {wanted[0]}")
    if decoder == "opencv":
        got = _read_opencv(Path(path), wanted, short_side)
    elif decoder == "pyav":
        got = _read_pyav(Path(path), wanted, short_side)
    else:
        raise InvalidArgumentError(f"decoder must be 'opencv' or 'pyav', got {decoder!r}")
    missing = [i for i in wanted if i not in got]
    if missing:
        raise VideoDecodeError(f"{path}: frame {missing[0]} requested but the video decoded only "
                               f"{max(got, default=-1) + 1 if got else 'no'} frames up to there")
    return np.stack([got[int(i)] for i in indices])


def _read_opencv(path: Path, wanted: list[int], short_side: int) -> dict[int, np.ndarray]:
    cv2 = _cv2()

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoDecodeError(f"{path}: OpenCV cannot open the file")
    keep = set(wanted)
    out: dict[int, np.ndarray] = {}
    try:
        for index in range(wanted[-1] + 1):
            if not cap.grab():
                break
            if index in keep:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    raise VideoDecodeError(f"{path}: OpenCV could not decode frame {index}")
                out[index] = resize_short_side(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), short_side)
    finally:
        cap.release()
    return out


def _read_pyav(path: Path, wanted: list[int], short_side: int) -> dict[int, np.ndarray]:
    keep = set(wanted)
    out: dict[int, np.ndarray] = {}
    try:
        for index, _, frame in iter_av_frames(path):
            if index in keep:  # only kept frames are converted to RGB
                out[index] = resize_short_side(frame.to_ndarray(format="rgb24"), short_side)
            if index >= wanted[-1]:
                break
    except (VideoError, OSError) as exc:
        if not out:
            raise VideoDecodeError(f"{path}: PyAV cannot decode the file ({exc})") from exc
        log.warning("%s: decoding stopped with an error after %d kept frames (%s)", path, len(out), exc)
    return out


def count_frames(path: str | Path, decoder: str = "opencv") -> int:
    """Number of frames the decoder actually yields (not the header's claim)."""
    path = Path(path)
    if decoder == "opencv":
        cv2 = _cv2()
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise VideoDecodeError(f"{path}: OpenCV cannot open the file")
        n = 0
        try:
            while cap.grab():
                n += 1
        finally:
            cap.release()
        return n
    try:
        return sum(1 for _ in iter_av_frames(path))
    except EmptyVideoError:
        return 0
    except (VideoError, OSError) as exc:
        raise VideoDecodeError(f"{path}: PyAV cannot decode the file ({exc})") from exc


class NoUsableVideosError(ConstclZooError, RuntimeError):
    """None of the listed videos can be decoded into one clip span (each one's reason is logged)."""


@dataclass(frozen=True)
class VideoEntry:
    path: str
    num_frames: int


@dataclass
class VideoIndex:
    """Usable videos with their decoded frame counts, and the ones skipped (path -> reason)."""

    entries: list[VideoEntry]
    skipped: dict[str, str]

    def __len__(self) -> int:
        return len(self.entries)


class FrameCache:
    """Every frame of a video decoded once to uint8 RGB at ``short_side`` and kept as a ``.npy`` file in
    ``folder``, read back memory-mapped: sampling a clip is then an array slice, not a decode.

    On 2 cores decoding, not the network, limits small-model pretraining: a 16-frame view at stride 2 decodes up
    to 31 frames (sequential decoding from the start of the file for exactness) and keeps 16. A file is named by
    the video's name and a hash of its path, size, mtime, ``short_side`` and decoder, so a changed video or
    setting gets a new file; files are written atomically (a killed run leaves none half-written).
    """

    def __init__(self, folder: str | Path, short_side: int, decoder: str = "opencv") -> None:
        self.folder = Path(folder)
        self.short_side = short_side
        self.decoder = decoder
        self._open: dict[str, np.ndarray] = {}

    def path_for(self, video: str | Path) -> Path:
        import hashlib

        video = Path(video).resolve()
        st = video.stat()
        key = f"{video}:{st.st_size}:{st.st_mtime_ns}:{self.short_side}:{self.decoder}"
        return self.folder / f"{video.stem}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"

    def frames(self, video: str | Path) -> np.ndarray:
        """All frames of ``video`` as a read-only memory-mapped ``[N, H, W, 3]`` uint8 array (decoded on first use;
        :class:`VideoDecodeError` when the video decodes no frame)."""
        key = str(video)
        if key not in self._open:
            target = self.path_for(video)
            if not target.is_file():
                self._write(Path(video), target)
            self._open[key] = np.load(target, mmap_mode="r")
        return self._open[key]

    def _write(self, video: Path, target: Path) -> None:
        if self.decoder == "pyav":
            try:
                decoded = [resize_short_side(f.to_ndarray(format="rgb24"), self.short_side)
                           for _, _, f in iter_av_frames(video)]
            except (VideoError, OSError) as exc:
                raise VideoDecodeError(f"{video}: PyAV cannot decode the file ({exc})") from exc
        else:
            cv2 = _cv2()
            cap = cv2.VideoCapture(str(video))
            if not cap.isOpened():
                raise VideoDecodeError(f"{video}: OpenCV cannot open the file")
            decoded = []
            try:
                while True:
                    ok, frame = cap.read()
                    if not ok or frame is None:
                        break
                    decoded.append(resize_short_side(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), self.short_side))
            finally:
                cap.release()
        if not decoded:
            raise VideoDecodeError(f"{video}: decodes no frames")
        shapes = {f.shape for f in decoded}
        if len(shapes) > 1:
            raise VideoDecodeError(f"{video}: frame size changes inside the video ({sorted(shapes)})")
        self.folder.mkdir(parents=True, exist_ok=True)
        array = np.stack(decoded)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the temporary name
                np.save(f, array, allow_pickle=False)

        atomic_write(target, save)

    def read(self, video: str | Path, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` of ``video`` as in :func:`read_frames`, from the cache."""
        frames = self.frames(video)
        bad = [int(i) for i in indices if not 0 <= int(i) < len(frames)]
        if bad:
            raise VideoDecodeError(f"{video}: frame {bad[0]} requested but the video decoded {len(frames)} frames")
        return np.ascontiguousarray(frames[np.asarray(indices, dtype=np.int64)])


def _read_count_cache(cache_path: Path | None) -> dict[str, dict]:
    """The frame-count cache of :func:`build_index` (path -> stamp, frames, error); empty if absent or unreadable."""
    if cache_path is None or not cache_path.is_file():
        return {}
    try:
        return json.loads(cache_path.read_text())
    except json.JSONDecodeError:
        log.warning("%s: unreadable frame-count cache, recounting", cache_path)
        return {}


def _skip_reason(frames: int | None, error: str, min_frames: int) -> str:
    """Why a counted video is not used ("" when it is)."""
    if frames is None:
        return error or "unreadable"
    if frames == 0:
        return "decodes no frames"
    if frames < min_frames:
        return f"too short: {frames} decoded frames < {min_frames}"
    return ""


def build_index(paths: Sequence[Path], min_frames: int, decoder: str = "opencv", cache: str | Path | None = None,
                threads: int = 2, frame_cache: FrameCache | None = None) -> VideoIndex:
    """Count decoded frames of every video (threads; results cached in ``cache`` keyed by path, size, mtime).
    With ``frame_cache``, the videos are decoded into it and the counts are its arrays' lengths.

    Unreadable, empty and too-short (< ``min_frames``) videos are skipped with a logged warning and counted;
    only when *no* video is usable does this raise.
    """
    cache_path = Path(cache) if cache else None
    cached = _read_count_cache(cache_path)

    def stamp(p: Path) -> str:
        st = p.stat()
        return f"{st.st_size}:{st.st_mtime_ns}:{decoder}"

    def work(p: Path) -> tuple[str, int | None, str, str]:
        key = str(p)
        try:
            st = stamp(p)
        except OSError as exc:
            return key, None, f"cannot stat ({exc.strerror})", ""
        hit = cached.get(key)
        if frame_cache is None and hit and hit.get("stamp") == st:
            return key, hit.get("frames"), hit.get("error", ""), st
        try:
            if frame_cache is not None:
                return key, len(frame_cache.frames(p)), "", ""
            return key, count_frames(p, decoder), "", st
        except VideoDecodeError as exc:
            return key, None, str(exc), st

    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(work, paths))
    entries, skipped = [], {}
    for key, frames, error in ((key, frames, error) for key, frames, error, _ in results):
        reason = _skip_reason(frames, error, min_frames)
        if reason:
            skipped[key] = reason
        else:
            entries.append(VideoEntry(key, frames))
    new_cache = {key: {"stamp": st, "frames": frames, "error": error} for key, frames, error, st in results if st}
    for key, reason in skipped.items():
        log.warning("skipping video %s: %s", key, reason)
    if cache_path is not None:
        atomic_write(cache_path, json.dumps(new_cache, indent=1))
    if not entries:
        raise NoUsableVideosError(f"no usable videos among {len(paths)} (skipped: {skipped}); check data.videos")
    return VideoIndex(entries, skipped)
