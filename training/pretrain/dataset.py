"""The pretraining samples: two augmented views of a video with their key-frame boxes.

Reproducible and resumable by construction: sample number ``p`` of the run (counted over all processes) is video
``perm_e[p mod n]`` of epoch ``e = p // n`` (the shared stream of :mod:`training.data.loader`), and all of its
randomness comes from a generator seeded with ``(seed, p)``. Which worker decodes it, and whether the run was
restarted, cannot change it. The data position saved in a checkpoint is the number of micro-batches consumed.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from constcl_zoo.inference.clips import clip_indices

from .._moved import deprecated_names
from ..data.augment import augment_view
from ..data.videos import FrameCache, VideoDecodeError, VideoIndex, read_frames
from ..engine.config import ConfigError
from .config import PretrainConfig
from .regions import view_boxes
from .sampling import pair_key_frames, sample_view_starts

__getattr__ = deprecated_names(__name__)  # StreamSampler, build_loader: now in training.data.loader
log = logging.getLogger(__name__)
_MAX_RETRIES = 10


class PretrainDataset(Dataset):
    """``dataset[(p, v)]`` -> sample number ``p`` drawn from video ``v``.

    Returns ``clips [2, 3, T, S, S]`` (view 1, view 2) in [-1, 1], ``boxes [2, N, 4]`` normalised (x1, y1, x2, y2)
    on each view's key frame, ``key_frames [2]`` (feature time steps, T' = T / ``temporal_stride``) and
    ``skipped`` (videos that failed to decode and were replaced by the next one).
    """

    def __init__(self, index: VideoIndex, cfg: PretrainConfig, temporal_stride: int,
                 frame_cache: FrameCache | None = None) -> None:
        self.index = index
        self.cfg = cfg
        self.temporal_stride = temporal_stride
        self.frame_cache = frame_cache
        if cfg.data.num_frames % temporal_stride:
            raise ConfigError(f"config data.num_frames={cfg.data.num_frames}: must be a multiple of the backbone's "
                              f"temporal stride ({temporal_stride})")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        position, video = key
        rng = np.random.default_rng([self.cfg.run.seed, position])
        for attempt in range(_MAX_RETRIES):
            entry = self.index.entries[(video + attempt) % len(self.index)]
            try:
                sample = self._make(entry.path, entry.num_frames, rng)
            except VideoDecodeError as exc:
                log.warning("sample %d: %s; using the next video", position, exc)
                rng = np.random.default_rng([self.cfg.run.seed, position, attempt + 1])
                continue
            sample["skipped"] = torch.tensor(attempt)
            return sample
        raise VideoDecodeError(f"sample {position}: {_MAX_RETRIES} videos in a row failed to decode, starting at "
                               f"{self.index.entries[video].path}")

    def _make(self, path: str, length: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        d = self.cfg.data
        starts = sample_view_starts(length, d.num_frames, d.frame_stride, rng)
        steps = d.num_frames // self.temporal_stride
        keys = pair_key_frames(d.key_frames, starts, steps, self.temporal_stride * d.frame_stride, rng)
        views = [clip_indices(s, d.num_frames, d.frame_stride, length, past_end="wrap") for s in starts]
        if self.frame_cache is not None:
            frames = self.frame_cache.read(path, views[0] + views[1])
        else:
            frames = read_frames(path, views[0] + views[1], d.decoder, d.decode_short_side)
        clips, boxes = [], []
        for v in range(2):
            view_frames = frames[v * d.num_frames:(v + 1) * d.num_frames]
            clip, geometry = augment_view(view_frames, v, d.crop_size, self.cfg.augment, rng)
            key = keys[v] * self.temporal_stride  # the view frame the key feature step starts at
            boxes.append(view_boxes(self.cfg.boxes, view_frames[key], geometry, rng, video=path,
                                    frame_index=views[v][key]))
            clips.append(clip)
        return {"clips": torch.stack(clips), "boxes": torch.stack(boxes), "key_frames": torch.tensor(keys)}


def views_first(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, 2, ...]`` samples -> model inputs with both views on the batch axis, view 1 first:
    ``clips [2B, 3, T, S, S]``, ``boxes [2B, N, 4]``, ``key_frames [2B]``."""
    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1).reshape(-1, *x.shape[2:])

    return flat(batch["clips"]), flat(batch["boxes"]), flat(batch["key_frames"])
