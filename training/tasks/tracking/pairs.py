"""Training pairs for SiamFC: (exemplar clip, search clip, target offset) from labelled sequences or raw videos.

A pair is built the way the tracker crops (:func:`constcl_zoo.tasks.tracking.crop_and_resize`, the one crop):
the exemplar is the SiamFC context crop around the box in frame ``i`` (with its 2n neighbours), the search crop
is centred near the box in frame ``j`` (``|j - i| <= max_gap``) but displaced by a known random shift and scaled
by a known random scale, so the target sits ``shift`` pixels from the search crop's centre. The label is that
shift; :func:`response_labels` turns it into SiamFC's positive disc on the response map.

* :class:`SequencePairs`: sequences with boxes (GOT-10k / OTB / VOT layouts, :mod:`.datasets`).
* :class:`VideoPairs`: label-free. Random boxes in real videos (any folder of videos): the "target" is whatever
  the box covers in frame ``i``; the search frame is a nearby frame ``j`` (real motion and appearance change
  around the box) with the synthetic shift and scale as the label. No annotation is needed, so a head trains on
  the videos we have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from constcl_zoo.errors import InvalidArgumentError
from constcl_zoo.inference.clips import clip_indices
from constcl_zoo.inference.video import iter_image_files, list_videos
from constcl_zoo.tasks.tracking import TrackerConfig, crop_and_resize

from ...data.videos import decode_video
from .datasets import Sequence


@dataclass(frozen=True)
class PairConfig:
    """``max_gap``: frames between exemplar and search; ``max_shift``: search-crop pixels the target may sit
    off-centre (per axis); ``max_scale``: log-uniform scale change in ``[1/max_scale, max_scale]``;
    ``pairs_per_epoch``: the dataset's length; for :class:`VideoPairs`, box sides are ``box_min..box_max`` of the
    frame's short side."""

    max_gap: int = 10
    max_shift: float = 24.0
    max_scale: float = 1.15
    pairs_per_epoch: int = 2000
    box_min: float = 0.15
    box_max: float = 0.45
    video_short_side: int = 240
    max_frames_per_video: int = 400


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
