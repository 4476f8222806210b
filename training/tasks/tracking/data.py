"""Tracking data: annotated sequences on disk (OTB, GOT-10k and VOT folders, read into :class:`Sequence` s) and the
tracker's training pairs (:class:`SequencePairs` from sequences, :class:`VideoPairs` label-free from videos).

* **OTB** (``<seq>/img/*.jpg`` + ``groundtruth_rect.txt``, ``x,y,w,h`` one frame a line, separated by commas,
  tabs or spaces). Sequences with two targets (``Jogging``, ``Skating2``) have ``groundtruth_rect.1.txt`` and
  ``groundtruth_rect.2.txt``: they become two sequences, ``Jogging.1`` and ``Jogging.2`` (an empty one, as
  ``Human4``'s ``.1``, is skipped). Sequences whose
  annotation covers only part of the frames use the OTB benchmark's frame ranges (a ``<seq>_frames.txt`` with
  ``first,last`` — 1-based, inclusive — when there is one, else the benchmark's known ranges, e.g. ``David``
  300-770).
* **GOT-10k** (``<split>/list.txt`` naming the sequences; ``<seq>/*.jpg`` + ``groundtruth.txt``, ``x,y,w,h``).
* **VOT** (``<seq>/groundtruth.txt`` of 8-value polygons ``x1,y1,...,x4,y4`` or 4-value boxes; images in
  ``<seq>/`` or ``<seq>/color/`` or ``<seq>/imgs/``): a polygon's axis-aligned box is the min/max of its corners.

:func:`read_dataset` reads a folder of sequences of any of these layouts (or one sequence folder).

**Training pairs** for SiamFC: (exemplar clip, search clip, target offset) from labelled sequences or raw
videos.

A pair is built the way the tracker crops (:func:`constcl_zoo.tasks.tracking.crop_and_resize`, the one crop):
the exemplar is the SiamFC context crop around the box in frame ``i`` (with its 2n neighbours), the search crop
is centred near the box in frame ``j`` (``|j - i| <= max_gap``) but displaced by a known random shift and scaled
by a known random scale, so the target sits ``shift`` pixels from the search crop's centre. The label is that
shift; :func:`response_labels` turns it into SiamFC's positive disc on the response map.

* :class:`SequencePairs`: sequences with boxes (GOT-10k / OTB / VOT layouts, above).
* :class:`VideoPairs`: label-free. Random boxes in real videos (any folder of videos): the "target" is whatever
  the box covers in frame ``i``; the search frame is a nearby frame ``j`` (real motion and appearance change
  around the box) with the synthetic shift and scale as the label. No annotation is needed, so a head trains on
  the videos we have.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from constcl_zoo.errors import ConstclZooError, InvalidArgumentError
from constcl_zoo.inference.clips import clip_indices
from constcl_zoo.inference.video import IMAGE_EXTENSIONS, iter_image_files, list_image_frames, list_videos
from constcl_zoo.tasks.tracking import TrackerConfig, crop_and_resize

from ...data.videos import decode_video
from .config import PairConfig


class TrackingDatasetError(ConstclZooError, ValueError):
    """A sequence folder that cannot be read (no images, a malformed annotation line, counts that disagree)."""


@dataclass(frozen=True)
class Sequence:
    """One annotated sequence: ``frames`` (image paths, in order) and ``boxes`` ``[N, 4]`` float64 ``x, y, w, h``
    in pixels (top-left corner), one per frame."""

    name: str
    frames: tuple[Path, ...]
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


# The OTB-100 sequences whose images outnumber their annotation: the benchmark's (first, last) frame, 1-based.
OTB_FRAME_RANGES: dict[str, tuple[int, int]] = {
    "david": (300, 770), "football1": (1, 74), "freeman3": (1, 460), "freeman4": (1, 283), "diving": (1, 215),
}

_SEPARATORS = re.compile(r"[,\s]+")


MAX_BOX_FILE_BYTES = 50_000_000
MAX_LINE_CHARS = 1_000
MAX_COORDINATE = 1e6  # pixels: far beyond any frame the package decodes


def read_box_file(path: str | os.PathLike) -> np.ndarray:
    """Rows of numbers separated by commas, tabs or spaces -> ``[N, K]`` float64 (blank lines skipped).

    4 values a row are ``x, y, w, h``; 8 are a VOT polygon (see :func:`polygons_to_xywh`). ``NaN`` is allowed
    (GOT-10k marks frames without a target that way); infinite or absurd (> 1e6 px) values, binary content and
    overlong lines are not. Raises :class:`TrackingDatasetError` naming the line.
    """
    path = Path(path)
    if path.stat().st_size > MAX_BOX_FILE_BYTES:
        raise TrackingDatasetError(f"{path}: {path.stat().st_size} bytes is not a box file (limit "
                                   f"{MAX_BOX_FILE_BYTES // 1_000_000} MB)")
    rows: list[list[float]] = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise TrackingDatasetError(f"{path}:{number}: not text (a box file holds rows of numbers)") from None
        if not line:
            continue
        if len(line) > MAX_LINE_CHARS:
            raise TrackingDatasetError(f"{path}:{number}: a line of {len(line)} characters is not a row of numbers")
        try:
            values = [float(v) for v in _SEPARATORS.split(line) if v]
        except ValueError:
            raise TrackingDatasetError(f"{path}:{number}: not a row of numbers: {line[:80]!r}") from None
        if len(values) not in (4, 8) or (rows and len(values) != len(rows[0])):
            raise TrackingDatasetError(f"{path}:{number}: expected 4 values (x,y,w,h) or 8 (a polygon) on every "
                                       f"line, got {len(values)}")
        if any(math.isinf(v) or abs(v) > MAX_COORDINATE for v in values):
            raise TrackingDatasetError(f"{path}:{number}: coordinates must be finite pixels within "
                                       f"+-{MAX_COORDINATE:g}, got {line[:80]!r}")
        rows.append(values)
    if not rows:
        raise TrackingDatasetError(f"{path}: no boxes")
    return np.asarray(rows, dtype=np.float64)


def polygons_to_xywh(values: np.ndarray) -> np.ndarray:
    """``[N, 8]`` polygons (4 corners) or ``[N, 4]`` boxes -> ``[N, 4]`` axis-aligned ``x, y, w, h`` (the
    polygon's min/max corners)."""
    if values.shape[1] == 4:
        return values
    xs, ys = values[:, 0::2], values[:, 1::2]
    x1, y1 = xs.min(axis=1), ys.min(axis=1)
    return np.stack([x1, y1, xs.max(axis=1) - x1, ys.max(axis=1) - y1], axis=1)


def _frame_range(folder: Path, name: str) -> tuple[int, int] | None:
    ranges = sorted(folder.glob("*_frames.txt"))
    if ranges:
        values = _SEPARATORS.split(ranges[0].read_text().strip())
        try:
            first, last = int(values[0]), int(values[1])
        except (IndexError, ValueError) as exc:
            raise TrackingDatasetError(f"{ranges[0]}: expected 'first,last' frame numbers") from exc
        return first, last
    return OTB_FRAME_RANGES.get(name.lower())


def _sequence(name: str, folder: Path, images: list[Path], boxes: np.ndarray) -> Sequence:
    frame_range = _frame_range(folder, name.split(".")[0])
    if frame_range is not None and len(images) != len(boxes):
        first, last = frame_range
        images = images[first - 1:last]
    if len(images) != len(boxes):
        raise TrackingDatasetError(f"{folder}: {len(images)} images but {len(boxes)} boxes for {name!r}; give the "
                                   f"annotated frame range in a '{name.split('.')[0]}_frames.txt' (first,last)")
    return Sequence(name, tuple(images), polygons_to_xywh(boxes))


def read_otb_sequence(folder: str | os.PathLike) -> list[Sequence]:
    """The sequence(s) of one OTB folder (two for a two-target sequence)."""
    folder = Path(folder)
    images = list_image_frames(folder / "img")
    single = folder / "groundtruth_rect.txt"
    # An empty groundtruth_rect.N.txt (Human4's .1) is no target.
    multi = sorted(f for f in folder.glob("groundtruth_rect.*.txt") if f.read_text().strip())
    if single.is_file() and not multi:
        return [_sequence(folder.name, folder, images, read_box_file(single))]
    if not multi:
        raise TrackingDatasetError(f"{folder}: no groundtruth_rect.txt")
    return [_sequence(f"{folder.name}.{f.name.split('.')[1]}", folder, images, read_box_file(f)) for f in multi]


def _image_dir(folder: Path) -> Path:
    for sub in ("img", "imgs", "color"):
        if (folder / sub).is_dir():
            return folder / sub
    return folder


def read_sequence(folder: str | os.PathLike) -> list[Sequence]:
    """One sequence folder in any supported layout (OTB, GOT-10k or VOT; see the module doc)."""
    folder = Path(folder)
    if (folder / "groundtruth_rect.txt").is_file() or any(folder.glob("groundtruth_rect.*.txt")):
        return read_otb_sequence(folder)
    gt = folder / "groundtruth.txt"
    if not gt.is_file():
        raise TrackingDatasetError(f"{folder}: no groundtruth_rect.txt (OTB) or groundtruth.txt (GOT-10k, VOT)")
    return [_sequence(folder.name, folder, list_image_frames(_image_dir(folder)), read_box_file(gt))]


def _is_sequence(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("groundtruth_rect.txt", "groundtruth.txt")) or \
        any(folder.glob("groundtruth_rect.*.txt"))


def read_dataset(root: str | os.PathLike) -> list[Sequence]:
    """Every sequence under ``root``: one sequence folder, a GOT-10k split (``list.txt``), or a folder of sequence
    folders (OTB / VOT / GOT-10k), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset folder at {root}")
    if _is_sequence(root):
        return read_sequence(root)
    listing = root / "list.txt"
    if listing.is_file():
        names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
        folders = [root / n for n in names]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and _is_sequence(p))
    if not folders:
        raise TrackingDatasetError(f"{root}: no sequence folders (each needs groundtruth_rect.txt or groundtruth.txt)")
    return [seq for f in folders for seq in read_sequence(f)]


__all__ = ["IMAGE_EXTENSIONS", "OTB_FRAME_RANGES", "Sequence", "TrackingDatasetError", "polygons_to_xywh",
           "read_box_file", "read_dataset", "read_otb_sequence", "read_sequence"]


def _window_indices(center: int, n: int, length: int) -> list[int]:
    """The ``2n + 1`` frames centred on ``center`` (the tracker's temporal window), clamped to the video."""
    return clip_indices(center - n, 2 * n + 1, 1, length, past_end="clamp")


def make_pair(frames_z: torch.Tensor, box_z: np.ndarray, frames_x: torch.Tensor, box_x: np.ndarray,
              tracker: TrackerConfig, pairs: PairConfig, rng: np.random.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exemplar ``[3, T, Z, Z]`` and search ``[3, T, X, X]`` clips in [0, 255], and the target's offset
    ``[2]`` (x, y) in search-crop pixels from its centre. Frames: uint8 ``[T, H, W, 3]``; boxes ``x, y, w, h``."""
    size = box_z[2:]
    p = tracker.context * size.sum()
    z_side = math.sqrt((size[0] + p) * (size[1] + p))
    pad = frames_z[len(frames_z) // 2].float().mean(dim=(0, 1))
    z = crop_and_resize(frames_z, box_z[:2] + size / 2, [z_side], tracker.exemplar_size, pad)[0]
    size_x = box_x[2:]
    p = tracker.context * size_x.sum()
    x_side = math.sqrt((size_x[0] + p) * (size_x[1] + p)) * tracker.search_size / tracker.exemplar_size
    scale = math.exp(rng.uniform(-1, 1) * math.log(pairs.max_scale))
    shift = rng.uniform(-pairs.max_shift, pairs.max_shift, 2)
    side = x_side * scale
    center = box_x[:2] + size_x / 2 - shift * side / tracker.search_size
    x = crop_and_resize(frames_x, center, [side], tracker.search_size, pad)[0]
    return z, x, torch.tensor(shift, dtype=torch.float32)


def response_labels(shift: torch.Tensor, size: int, stride: int, radius: float = 16.0) -> torch.Tensor:
    """SiamFC labels ``[B, 1, size, size]``: 1 within ``radius`` search-crop pixels of the target (``shift [B, 2]``
    px from the crop centre), else 0."""
    cells = (torch.arange(size, dtype=torch.float32) - (size - 1) / 2) * stride
    dx = cells[None, None, :] - shift[:, 0, None, None]
    dy = cells[None, :, None] - shift[:, 1, None, None]
    return ((dx**2 + dy**2).sqrt() <= radius).float()[:, None]


class _Pairs(Dataset):
    def __init__(self, tracker: TrackerConfig, pairs: PairConfig, seed: int) -> None:
        self.tracker, self.pairs, self.seed = tracker, pairs, seed

    def __len__(self) -> int:
        return self.pairs.pairs_per_epoch

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index])


class SequencePairs(_Pairs):
    """Pairs from annotated sequences (frames read on demand)."""

    def __init__(self, sequences: Seq[Sequence], tracker: TrackerConfig, pairs: PairConfig = PairConfig(),
                 seed: int = 0) -> None:
        super().__init__(tracker, pairs, seed)
        self.sequences = [s for s in sequences if len(s) > 1]
        if not self.sequences:
            raise InvalidArgumentError("no sequence with at least 2 frames")

    def _frames(self, seq: Sequence, indices: list[int]) -> torch.Tensor:
        return torch.stack([torch.from_numpy(f.rgb) for f in iter_image_files([seq.frames[i] for i in indices])])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = self._rng(index)
        while True:
            seq = self.sequences[rng.integers(len(self.sequences))]
            i = int(rng.integers(len(seq)))
            j = int(np.clip(i + rng.integers(-self.pairs.max_gap, self.pairs.max_gap + 1), 0, len(seq) - 1))
            if np.isfinite(seq.boxes[[i, j]]).all() and (seq.boxes[[i, j], 2:] > 1).all():
                break
        n = self.tracker.temporal_radius
        return make_pair(self._frames(seq, _window_indices(i, n, len(seq))), seq.boxes[i],
                         self._frames(seq, _window_indices(j, n, len(seq))), seq.boxes[j], self.tracker,
                         self.pairs, rng)


class VideoPairs(_Pairs):
    """Label-free pairs from a folder (or manifest) of videos; frames are decoded once, downscaled to
    ``video_short_side``, at most ``max_frames_per_video`` a video."""

    def __init__(self, videos: str | Path, tracker: TrackerConfig, pairs: PairConfig = PairConfig(),
                 seed: int = 0) -> None:
        super().__init__(tracker, pairs, seed)
        self.videos: list[torch.Tensor] = []
        for path in list_videos(videos):
            frames = decode_video(path, pairs.video_short_side, pairs.max_frames_per_video, upscale="area").frames
            if len(frames) > 2 * pairs.max_gap:
                self.videos.append(torch.from_numpy(frames))
        if not self.videos:
            raise InvalidArgumentError(f"{videos}: no video with more than {2 * pairs.max_gap} frames")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = self._rng(index)
        video = self.videos[rng.integers(len(self.videos))]
        t, h, w = video.shape[:3]
        i = int(rng.integers(t))
        j = int(np.clip(i + rng.integers(-self.pairs.max_gap, self.pairs.max_gap + 1), 0, t - 1))
        side = rng.uniform(self.pairs.box_min, self.pairs.box_max) * min(h, w)
        aspect = math.exp(rng.uniform(-0.5, 0.5))
        bw, bh = min(side * aspect, w - 2), min(side / aspect, h - 2)
        box = np.array([rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh])
        n = self.tracker.temporal_radius
        return make_pair(video[_window_indices(i, n, t)], box, video[_window_indices(j, n, t)], box,
                         self.tracker, self.pairs, rng)
