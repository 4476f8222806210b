"""Pretraining configuration: the data, augmentation, boxes, model and loss sections, and the presets.

``PretrainConfig`` holds everything a run depends on; the ``optim`` and ``run`` sections, overrides, JSON round
trip and validation are the engine's (:mod:`training.engine.config`). Presets (:data:`PRESETS`) are functions
returning a full config; any field can then be overridden with dotted keys (``data.batch_size=8``,
``optim.lr=0.5``, ``boxes.method=slic``). The resolved config is written to ``<run>/config.json`` and read back on
``--resume``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from constcl_zoo.inference.clips import clip_span

from ..data.augment import AugmentConfig
from ..engine.config import (
    AtLeast,
    AtLeastOne,
    AtLeastZero,
    Fraction,
    NonNegative,
    OptimConfig,
    Positive,
    RunConfig,
    TrainConfig,
    check,
)
from ..engine.config import get_preset as _get_preset

BoxMethod = Literal["random", "random_official", "slic", "felzenszwalb", "detector", "hog"]
KeyFramePairing = Literal["center", "nearest", "random"]


@dataclass
class DataConfig:
    """Video input and temporal sampling (official: 16 frames at stride 2, two views per video)."""

    videos: str = ""  # folder (scanned recursively) or manifest (.csv with a 'path' column, or .txt one path a line)
    extensions: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
    decoder: Literal["opencv", "pyav"] = "opencv"
    num_frames: AtLeastOne = 16
    frame_stride: AtLeastOne = 2
    crop_size: AtLeastOne = 224
    decode_short_side: AtLeastZero = 0  # resize decoded frames so the shorter side is this (0: keep native size)
    min_video_frames: AtLeastZero = 0  # shorter videos are skipped; 0: one clip span ((num_frames - 1) * stride + 1)
    batch_size: AtLeastOne = 1024  # clips (2 views each) per optimizer step, summed over processes and accumulation
    num_workers: AtLeastZero = 8
    prefetch_factor: AtLeastOne = 2
    key_frames: KeyFramePairing = "center"  # Table 4: center (default), nearest, random
    index_cache: str = ""  # JSON file caching decoded frame counts ('' -> <run>/video_index.json)
    # folder of decoded frames (uint8 at decode_short_side, one .npy a video, memory-mapped; '' : decode every
    # clip from the file): decode once, then sampling a clip is a slice (videos.FrameCache)
    frame_cache: str = ""


@dataclass
class BoxConfig:
    """Region boxes on each view's key frame (paper §3.3)."""

    method: BoxMethod = "random"
    num_boxes: AtLeastOne = 8  # per view (paper: 8 random boxes, 16 slic/felzenszwalb regions)
    detector_dir: str = ""  # 'detector': folder of per-video box files (see training/regions.py)
    segment_short_side: AtLeastOne = 128  # slic/felzenszwalb run on the key frame resized to this short side
    hog_short_side: AtLeastOne = 600  # hog: people must be >= 128 px tall (its 64x128 window), so detect at this size
    # boxes narrower/shorter than this (normalised) after crop are replaced
    min_size: Annotated[float, Fraction(below_one=True)] = 0.02


@dataclass
class ModelSection:
    """The network: a registered ``constcl_zoo`` architecture plus optional head overrides."""

    arch: str = "constcl_r3d50"
    # -1: the architecture's; 0: vanilla region contrast (Table 6)
    context_length: Annotated[int, AtLeast(-1, " (-1: the architecture's, 0: vanilla)")] = -1
    init_seed: int = 0


@dataclass
class LossConfig:
    """Official ``ConstCLLosses``; ``local_weight`` 0.001 in the official code, 0.01 in the paper."""

    global_temperature: Annotated[float, Positive()] = 0.1
    local_temperature: Annotated[float, Positive()] = 0.2
    global_weight: Annotated[float, NonNegative()] = 1.0
    local_weight: Annotated[float, NonNegative()] = 0.001


@dataclass
class PretrainConfig(TrainConfig):
    """A complete pretraining run."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    boxes: BoxConfig = field(default_factory=BoxConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def validate(self) -> None:
        """Raise :class:`~training.engine.ConfigError` naming the first impossible value."""
        super().validate()
        b = self.boxes
        check(b.method != "detector" or bool(b.detector_dir), "boxes.detector_dir", b.detector_dir,
              "boxes.method=detector needs a folder of box files")

    @property
    def clip_span(self) -> int:
        """Decoded frames covered by one view."""
        return clip_span(self.data.num_frames, self.data.frame_stride)


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
