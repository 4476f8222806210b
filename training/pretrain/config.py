"""Pretraining configuration: the data, augmentation, boxes, model and loss sections, and the presets.

``PretrainConfig`` holds everything a run depends on; the ``optim`` and ``run`` sections, overrides, JSON round
trip and validation are the engine's (:mod:`training.engine.config`). Presets (:data:`PRESETS`) are functions
returning a full config; any field can then be overridden with dotted keys (``data.batch_size=8``,
``optim.lr=0.5``, ``boxes.method=slic``). The resolved config is written to ``<run>/config.json`` and read back on
``--resume``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..data.augment import AugmentConfig
from ..engine.config import OptimConfig, RunConfig, TrainConfig, check
from ..engine.config import get_preset as _get_preset

BoxMethod = Literal["random", "random_official", "slic", "felzenszwalb", "detector", "hog"]
KeyFramePairing = Literal["center", "nearest", "random"]


@dataclass
class DataConfig:
    """Video input and temporal sampling (official: 16 frames at stride 2, two views per video)."""

    videos: str = ""  # folder (scanned recursively) or manifest (.csv with a 'path' column, or .txt one path a line)
    extensions: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
    decoder: Literal["opencv", "pyav"] = "opencv"
    num_frames: int = 16
    frame_stride: int = 2
    crop_size: int = 224
    decode_short_side: int = 0  # resize decoded frames so the shorter side is this (0: keep native size)
    min_video_frames: int = 0  # shorter videos are skipped; 0: one clip span ((num_frames - 1) * stride + 1)
    batch_size: int = 1024  # clips (2 views each) per optimizer step, summed over processes and accumulation
    num_workers: int = 8
    prefetch_factor: int = 2
    key_frames: KeyFramePairing = "center"  # Table 4: center (default), nearest, random
    index_cache: str = ""  # JSON file caching decoded frame counts ('' -> <run>/video_index.json)
    # folder of decoded frames (uint8 at decode_short_side, one .npy a video, memory-mapped; '' : decode every
    # clip from the file): decode once, then sampling a clip is a slice (videos.FrameCache)
    frame_cache: str = ""


@dataclass
class BoxConfig:
    """Region boxes on each view's key frame (paper §3.3)."""

    method: BoxMethod = "random"
    num_boxes: int = 8  # per view (paper: 8 random boxes, 16 slic/felzenszwalb regions)
    detector_dir: str = ""  # 'detector': folder of per-video box files (see training/regions.py)
    segment_short_side: int = 128  # slic/felzenszwalb run on the key frame resized to this short side
    hog_short_side: int = 600  # hog: people must be >= 128 px tall (its 64x128 window), so detect at this size
    min_size: float = 0.02  # boxes narrower/shorter than this (normalised) after crop are replaced


@dataclass
class ModelSection:
    """The network: a registered ``constcl_zoo`` architecture plus optional head overrides."""

    arch: str = "constcl_r3d50"
    context_length: int = -1  # -1: the architecture's; 0: vanilla region contrast (Table 6)
    init_seed: int = 0


@dataclass
class LossConfig:
    """Official ``ConstCLLosses``; ``local_weight`` 0.001 in the official code, 0.01 in the paper."""

    global_temperature: float = 0.1
    local_temperature: float = 0.2
    global_weight: float = 1.0
    local_weight: float = 0.001


@dataclass
class PretrainConfig(TrainConfig):
    """A complete pretraining run."""

    preset: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    boxes: BoxConfig = field(default_factory=BoxConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        """Raise :class:`~training.engine.ConfigError` naming the first impossible value."""
        super().validate()
        d, a, b, lo = self.data, self.augment, self.boxes, self.loss
        for name in ("num_frames", "frame_stride", "crop_size", "batch_size", "prefetch_factor"):
            check(getattr(d, name) >= 1, f"data.{name}", getattr(d, name), "must be >= 1")
        for name in ("decode_short_side", "min_video_frames", "num_workers"):
            check(getattr(d, name) >= 0, f"data.{name}", getattr(d, name), "must be >= 0")
        check(0 < a.crop_area[0] <= a.crop_area[1] <= 1, "augment.crop_area", list(a.crop_area),
              "must be [low, high] with 0 < low <= high <= 1")
        check(0 < a.crop_aspect[0] <= a.crop_aspect[1], "augment.crop_aspect", list(a.crop_aspect),
              "must be [low, high] with 0 < low <= high")
        check(a.crop_attempts >= 1, "augment.crop_attempts", a.crop_attempts, "must be >= 1")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            value = getattr(a, name)
            check(all(0 <= v <= 1 for v in (value if isinstance(value, tuple) else (value,))), f"augment.{name}",
                  value, "probabilities must be in [0, 1]")
        check(a.jitter_strength >= 0, "augment.jitter_strength", a.jitter_strength, "must be >= 0")
        check(0 < a.blur_sigma[0] <= a.blur_sigma[1], "augment.blur_sigma", list(a.blur_sigma),
              "must be [low, high] with 0 < low <= high")
        for name in ("num_boxes", "segment_short_side", "hog_short_side"):
            check(getattr(b, name) >= 1, f"boxes.{name}", getattr(b, name), "must be >= 1")
        check(0 <= b.min_size < 1, "boxes.min_size", b.min_size, "must be in [0, 1)")
        check(b.method != "detector" or bool(b.detector_dir), "boxes.detector_dir", b.detector_dir,
              "boxes.method=detector needs a folder of box files")
        for name in ("global_temperature", "local_temperature"):
            value = getattr(lo, name)
            check(math.isfinite(value) and value > 0, f"loss.{name}", value, "must be a positive number")
        for name in ("global_weight", "local_weight"):
            value = getattr(lo, name)
            check(math.isfinite(value) and value >= 0, f"loss.{name}", value, "must be >= 0")
        check(self.model.context_length >= -1, "model.context_length", self.model.context_length,
              "must be -1 (the architecture's), 0 (vanilla) or positive")

    @property
    def clip_span(self) -> int:
        """Decoded frames covered by one view."""
        return (self.data.num_frames - 1) * self.data.frame_stride + 1


def paper_k400() -> PretrainConfig:
    """The paper's recipe: R3D-50 ConST-CL, batch 1024 clips, 16x224x224 at stride 2, SGD LR 40.96 with 2500
    warm-up steps and cosine decay over 100k steps (``run.steps=200000`` for the 200k model), official losses."""
    return PretrainConfig(
        preset="paper_k400",
        model=ModelSection(arch="constcl_r3d50", context_length=5),
        data=DataConfig(decode_short_side=256, batch_size=1024, num_workers=16),
        boxes=BoxConfig(method="random", num_boxes=8),
        loss=LossConfig(local_weight=0.001),
        optim=OptimConfig(lr=40.96, warmup_steps=2500),
        run=RunConfig(steps=100_000, checkpoint_every=1000, sync_bn=True, precision="bf16"),
    )


def cpu_smoke() -> PretrainConfig:
    """A small ConST-CL (``constcl_r3d14_w16``) on 8x64x64 clips, 4 clips a step: minutes on 2 CPU cores."""
    return PretrainConfig(
        preset="cpu_smoke",
        model=ModelSection(arch="constcl_r3d14_w16", context_length=3),
        data=DataConfig(num_frames=8, frame_stride=2, crop_size=64, decode_short_side=80, batch_size=4,
                        num_workers=1, prefetch_factor=2),
        boxes=BoxConfig(method="random", num_boxes=8),
        loss=LossConfig(local_weight=0.01),
        optim=OptimConfig(lr=0.5, warmup_steps=5, weight_decay=1e-6, grad_reduction="mean"),
        run=RunConfig(steps=40, checkpoint_every=20, keep_checkpoints=2, log_every=5, precision="fp32",
                      channels_last=False, threads=2),
    )


def cpu_real() -> PretrainConfig:
    """The shipped default's recipe: the small ConST-CL (``constcl_r3d14_w16``, context 5) on real video at a
    useful resolution on 2 CPU cores: 10x112x112 clips at stride 2 from frames decoded once into a frame cache
    (``<run>/frame_cache``, short side 128), 16 clips a step, 800 steps (about 40 minutes on a quiet machine;
    resumable with ``--resume``).

    Augmentation: the paper's crops, flips, blur and solarisation, **without colour jitter and grayscale**. On 18
    real videos the paper's colour augmentation teaches the network to ignore colour, the cue that separates kinds
    of scene: after 400 steps its clip embedding scored top-1 0.285 on the real-footage scene probe
    (``benchmarks/real_probe.py``) against 0.396 for a random init; without it, 0.542 after only 100 steps (README,
    "Real-video pretraining"). Kinetics-scale data is what makes colour invariance pay off; 18 videos are not."""
    return PretrainConfig(
        preset="cpu_real",
        model=ModelSection(arch="constcl_r3d14_w16", context_length=5),
        data=DataConfig(num_frames=10, frame_stride=2, crop_size=112, decode_short_side=128, batch_size=16,
                        num_workers=1, prefetch_factor=4, frame_cache="frame_cache"),
        augment=AugmentConfig(jitter_p=0.0, grayscale_p=0.0),
        boxes=BoxConfig(method="random", num_boxes=8),
        loss=LossConfig(local_weight=0.01),
        optim=OptimConfig(lr=0.5, warmup_steps=100, weight_decay=1e-6, grad_reduction="mean"),
        run=RunConfig(steps=800, checkpoint_every=100, keep_checkpoints=2, log_every=10, precision="fp32",
                      channels_last=False, threads=2),
    )


PRESETS: dict[str, Callable[[], PretrainConfig]] = {"paper_k400": paper_k400, "cpu_smoke": cpu_smoke,
                                                   "cpu_real": cpu_real}


def get_preset(name: str) -> PretrainConfig:
    """The named pretraining preset (``ConfigError`` listing the presets if unknown)."""
    return _get_preset(PRESETS, name)
