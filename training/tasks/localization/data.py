"""AVA-format samples for training and evaluation: a clip read from the video file around each key frame, the
persons' boxes and multi-hot labels.

A key frame at ``timestamp`` seconds is decoded frame ``round(timestamp * fps)``; its clip is ``num_frames`` frames
every ``frame_stride`` centred on it (frame ``key + (i - num_frames // 2) * frame_stride``), indices clamped to the
video (the first / last frame repeats), resized to ``short_side`` without cropping (the localizer's
``clip_preprocess``; the indices: :mod:`constcl_zoo.inference.clips`). Videos are found as
``<videos>/<video_id>.<ext>`` and decoded whole into memory (:func:`training.data.videos.decode_video`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from constcl_zoo.errors import ConstclZooError
from constcl_zoo.formats.ava import (
    AvaLabel,
    group_persons,
    image_key,
    read_ava_csv,
    read_excluded,
    read_person_boxes,
    split_key,
)
from constcl_zoo.inference import clips
from constcl_zoo.inference.video import VIDEO_EXTENSIONS
from constcl_zoo.nn.preprocess import ClipPreprocess

from ..._moved import deprecated_names
from ...data.videos import DecodedVideo, decode_video

__getattr__ = deprecated_names(__name__)  # VideoFrames: now training.data.videos.decode_video


class AvaDataError(ConstclZooError, ValueError):
    """Annotations that do not fit the videos or the label map."""


@dataclass
class KeyFrame:
    video_id: str
    timestamp: float
    boxes: np.ndarray  # [N, 4] normalised x1, y1, x2, y2
    labels: np.ndarray  # [N, C] multi-hot over the label map's classes (zeros for detected boxes)
    scores: np.ndarray  # [N] person scores (1 for ground truth)

    @property
    def key(self) -> str:
        return image_key(self.video_id, self.timestamp)


def key_frame_clip(key: int, num_frames: int, frame_stride: int, num_decoded: int) -> list[int]:
    """Decoded-frame indices of the clip centred on frame ``key``, clamped to ``[0, num_decoded - 1]``."""
    return clips.clip_indices(clips.centred_start(key, num_frames, frame_stride), num_frames, frame_stride,
                              num_decoded, past_end="clamp")


def clip_indices(key: int, num_frames: int, frame_stride: int, num_decoded: int) -> list[int]:
    """Deprecated: :func:`key_frame_clip`."""
    warnings.warn("training.tasks.localization.data.clip_indices is deprecated: it is key_frame_clip now (the "
                  "indices come from constcl_zoo.inference.clips)", DeprecationWarning, stacklevel=2)
    return key_frame_clip(key, num_frames, frame_stride, num_decoded)


class AvaClips(torch.utils.data.Dataset):
    """One sample per key frame: ``{"clip": [3, T, H, W], "boxes": [N, 4], "labels": [N, C], "key": str}``.

    ``annotations``: an AVA CSV (ground truth); ``labels``: the classes to train/evaluate (label map order);
    ``person_boxes``: a detections CSV whose boxes (score >= ``box_threshold``) replace the ground-truth boxes
    (for evaluation with detected boxes; labels are then zeros). ``excluded``: excluded-timestamps CSV.
    """

    def __init__(self, annotations: str | os.PathLike, videos: str | os.PathLike, labels: list[AvaLabel],
                 preprocess: ClipPreprocess, *, excluded: str | os.PathLike | None = None,
                 person_boxes: str | os.PathLike | None = None, box_threshold: float = 0.0) -> None:
        self.videos = Path(videos)
        self.labels = labels
        self.preprocess = preprocess
        index = {x.id: i for i, x in enumerate(labels)}
        skip = read_excluded(excluded)
        persons = group_persons(read_ava_csv(annotations))
        self.frames: list[KeyFrame] = []
        if person_boxes is not None:
            detected = read_person_boxes(person_boxes, box_threshold)
            keys = sorted(set(persons) | set(detected), key=split_key)
        for key in sorted(persons, key=split_key) if person_boxes is None else keys:
            if key in skip:
                continue
            video_id, ts = split_key(key)
            if person_boxes is None:
                people = persons[key]
                boxes = np.array([p.box for p in people], np.float32)
                multi = np.zeros((len(people), len(labels)), np.float32)
                for i, p in enumerate(people):
                    for a in p.actions:
                        if a in index:
                            multi[i, index[a]] = 1.0
                scores = np.ones(len(people), np.float32)
            else:
                found = detected.get(key, [])
                if not found:
                    continue
                boxes = np.array([b for b, _ in found], np.float32)
                multi = np.zeros((len(found), len(labels)), np.float32)
                scores = np.array([s for _, s in found], np.float32)
            self.frames.append(KeyFrame(video_id, ts, boxes, multi, scores))
        if not self.frames:
            raise AvaDataError(f"{annotations}: no key frames to use (all excluded, or no detected boxes)")
        self._cache: dict[str, DecodedVideo] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def video_path(self, video_id: str) -> Path:
        for ext in VIDEO_EXTENSIONS:
            path = self.videos / f"{video_id}{ext}"
            if path.is_file():
                return path
        raise FileNotFoundError(f"no video file for video_id {video_id!r} in {self.videos} "
                                f"(expected {video_id}.mp4 or another video extension)")

    def _video(self, video_id: str) -> DecodedVideo:
        if video_id not in self._cache:
            self._cache[video_id] = decode_video(self.video_path(video_id), self.preprocess.cfg.resize_short_side)
        return self._cache[video_id]

    def __getitem__(self, i: int) -> dict[str, object]:
        kf = self.frames[i]
        video = self._video(kf.video_id)
        cfg = self.preprocess.cfg
        idx = key_frame_clip(video.index_at(kf.timestamp), cfg.num_frames, cfg.frame_stride, len(video.frames))
        clip = self.preprocess(video.frames[idx], crop=False)
        return {"clip": clip, "boxes": torch.from_numpy(kf.boxes), "labels": torch.from_numpy(kf.labels),
                "scores": torch.from_numpy(kf.scores), "key": kf.key, "video_id": kf.video_id,
                "timestamp": kf.timestamp}


def collate(samples: list[dict[str, object]]) -> dict[str, object]:
    """Batch samples: clips padded (bottom/right, zeros) to the largest size with boxes rescaled to match; boxes
    padded to the most persons with ``mask [B, N]`` marking the real ones."""
    h = max(s["clip"].shape[2] for s in samples)
    w = max(s["clip"].shape[3] for s in samples)
    n = max(s["boxes"].shape[0] for s in samples)
    c = samples[0]["labels"].shape[1]
    b = len(samples)
    clips = samples[0]["clip"].new_zeros((b, 3, samples[0]["clip"].shape[1], h, w))
    boxes = torch.zeros(b, n, 4)
    boxes[..., 2:] = 1.0  # padding boxes: the whole frame (valid, masked out)
    labels, mask, scores = torch.zeros(b, n, c), torch.zeros(b, n, dtype=torch.bool), torch.zeros(b, n)
    for i, s in enumerate(samples):
        _, _, sh, sw = s["clip"].shape
        clips[i, :, :, :sh, :sw] = s["clip"]
        k = s["boxes"].shape[0]
        boxes[i, :k] = s["boxes"] * torch.tensor([sw / w, sh / h, sw / w, sh / h])
        labels[i, :k], mask[i, :k], scores[i, :k] = s["labels"], True, s["scores"]
    return {"clip": clips, "boxes": boxes, "labels": labels, "mask": mask, "scores": scores,
            "key": [s["key"] for s in samples], "video_id": [s["video_id"] for s in samples],
            "timestamp": [s["timestamp"] for s in samples], "orig_boxes": [s["boxes"] for s in samples]}
