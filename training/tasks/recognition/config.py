"""Recognition configuration: the fine-tuning run (:class:`FinetuneConfig`: the model, data, augmentation, loss
and evaluation sections, and the presets) and the linear probe's settings (:class:`ProbeSettings`).

``FinetuneConfig`` holds everything a fine-tuning run depends on; the ``optim`` and ``run`` sections, ``-o``
overrides, JSON round trip and validation are the engine's (:mod:`training.engine.config`). Presets
(:data:`PRESETS`): ``cpu_small`` (a tiny encoder on tiny clips, for tests and CPUs) and ``ucf101`` (R3D-50 at
16x224x224).

Where the ``ucf101`` numbers come from: the ConST-CL paper (§4.1, "Video action recognition") fine-tunes all
layers for 50 epochs on UCF101 and HMDB51 and gives no other fine-tuning hyper-parameter; the CVRL appendix is not
in ``../shared/paper``. The rest are common defaults for fine-tuning a 3D ResNet-50 on UCF101, not a published
recipe: SGD with momentum 0.9, batch 64, learning rate 0.05 with ~2 epochs of linear warm-up and cosine decay,
weight decay 1e-4 on kernels, dropout 0.5 before the classifier, clips of 16 frames at stride 2 (the encoder's
pretraining clip), frames resized to short side 256, random resized crops of 224 (area 0.3-1, aspect 3/4-4/3)
with horizontal flips for training and the 224 centre crop of one centred clip for validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from constcl_zoo.errors import ConstclZooError

from ...engine.config import (
    AtLeast,
    AtLeastOne,
    AtLeastZero,
    Fraction,
    Interval,
    OptimConfig,
    Probability,
    RunConfig,
    TrainConfig,
    check,
)

FORMATS = ("folder", "ucf101", "hmdb51")  # labelled datasets (.data)
DefaultIfZero = Annotated[int, AtLeast(0, " (0: the default)")]
UCF101_TRAIN_VIDEOS = 9537  # trainlist01.txt


class ProbeError(ConstclZooError, ValueError):
    """A probe that cannot be trained or applied as asked (bad settings, feature sizes that do not match)."""


@dataclass(frozen=True)
class ProbeSettings:
    """How the linear classifier is trained (see the module docstring)."""

    l2_normalize: bool = False
    weight_decay: float = 1e-3
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    max_iter: int = 500  # L-BFGS iterations
    epochs: int = 100  # Adam
    lr: float = 1e-3  # Adam
    batch_size: int = 4096  # Adam
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("lbfgs", "adam"):
            raise ProbeError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ProbeError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        for name in ("max_iter", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ProbeError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ProbeError(f"lr must be > 0, got {self.lr!r}")


@dataclass
class FinetuneModelSection:
    """The network: a ``constcl_zoo`` encoder (name, checkpoint folder or hf-hub:...) with a classifier head."""

    encoder: str = ""
    random_init: bool = False  # a seeded random init of the encoder's architecture instead of its weights
    init_seed: int = 0  # seed of the random init and of the head
    freeze_encoder: bool = False  # train the head only (the encoder stays in eval mode: BN statistics frozen)
    dropout: Annotated[float, Fraction(below_one=True)] = 0.5  # before the linear classifier, in training only
    normalize_features: bool = False  # L2-normalise the pooled features before the head


@dataclass
class FinetuneDataConfig:
    """Labelled videos and clip sampling. Clip shape fields at 0 take the encoder's preprocessing."""

    format: Literal["folder", "ucf101", "hmdb51"] = "folder"
    train: str = ""  # a folder per class, or the video root with split files
    val: str = ""  # a folder per class; with split files the test videos' root ('' = train)
    splits: str = ""  # folder of the UCF101 / HMDB51 split files
    split: AtLeastOne = 1
    num_frames: DefaultIfZero = 0  # frames per clip (0: the encoder's)
    frame_stride: DefaultIfZero = 0  # decoded frames between clip frames (0: the encoder's)
    crop_size: DefaultIfZero = 0  # clip side in pixels (0: the encoder's)
    # frames are resized to this short side first (0: crop_size if set, else the encoder's)
    resize_short_side: DefaultIfZero = 0
    decoder: Literal["opencv", "pyav"] = "opencv"  # training clips (validation: constcl_zoo.inference.video, PyAV)
    batch_size: AtLeastOne = 64  # clips per optimizer step, over processes and accumulation
    num_workers: DefaultIfZero = 8
    prefetch_factor: AtLeastOne = 2
    index_cache: str = ""  # JSON caching decoded frame counts ('' -> <run>/train_index.json)


@dataclass
class FinetuneAugmentConfig:
    """Training clips: a random resized crop (same for every frame) and a horizontal flip."""

    crop_area: Annotated[tuple[float, float], Interval(upper=1)] = (0.3, 1.0)
    crop_aspect: Annotated[tuple[float, float], Interval()] = (0.75, 4.0 / 3.0)
    crop_attempts: AtLeastOne = 100
    flip_p: Probability = 0.5


@dataclass
class FinetuneLossConfig:
    label_smoothing: Annotated[float, Fraction(below_one=True)] = 0.0


@dataclass
class FinetuneEvalConfig:
    """Validation: ``clips`` windows along each video x ``crops`` spatial crops, softmax scores averaged."""

    clips: AtLeastOne = 1
    crops: AtLeastOne = 1
    batch_size: AtLeastOne = 16  # views per forward pass
    decode_workers: AtLeastZero = 1  # videos decoded ahead in threads


@dataclass
class FinetuneConfig(TrainConfig):
    """A complete fine-tuning run."""

    model: FinetuneModelSection = field(default_factory=FinetuneModelSection)
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    augment: FinetuneAugmentConfig = field(default_factory=FinetuneAugmentConfig)
    loss: FinetuneLossConfig = field(default_factory=FinetuneLossConfig)
    eval: FinetuneEvalConfig = field(default_factory=FinetuneEvalConfig)

    def validate(self) -> None:
        """Raise :class:`~training.engine.ConfigError` naming the first impossible value."""
        super().validate()
        d = self.data
        check(not (d.resize_short_side and d.crop_size) or d.resize_short_side >= d.crop_size,
              "data.resize_short_side", d.resize_short_side, f"must be >= data.crop_size={d.crop_size}")


def cpu_small() -> FinetuneConfig:
    """A tiny encoder (``constcl_r3d14_w16``) on 4x48x48 clips, 4 clips a step, 20 steps: for tests and CPUs."""
    return FinetuneConfig(
        preset="cpu_small",
        model=FinetuneModelSection(encoder="constcl_r3d14_w16", dropout=0.5),
        data=FinetuneDataConfig(num_frames=4, frame_stride=2, crop_size=48, resize_short_side=56, batch_size=4,
                                num_workers=1),
        optim=OptimConfig(lr=0.05, momentum=0.9, weight_decay=1e-4, warmup_steps=2, grad_reduction="mean"),
        run=RunConfig(steps=20, checkpoint_every=10, eval_every=10, log_every=1, precision="fp32",
                      channels_last=False),
    )


def ucf101() -> FinetuneConfig:
    """R3D-50 on UCF101 split 1 at 16x224x224: 50 epochs (paper) of 9537 videos at batch 64 (see the module
    docstring for where each number comes from). Give the encoder with ``--model``."""
    batch, epochs = 64, 50
    steps_per_epoch = UCF101_TRAIN_VIDEOS // batch  # 149
    return FinetuneConfig(
        preset="ucf101",
        model=FinetuneModelSection(encoder="constcl_r3d50", dropout=0.5),
        data=FinetuneDataConfig(format="ucf101", num_frames=16, frame_stride=2, crop_size=224, resize_short_side=256,
                                batch_size=batch, num_workers=16),
        optim=OptimConfig(lr=0.05, momentum=0.9, weight_decay=1e-4, warmup_steps=2 * steps_per_epoch,
                          grad_reduction="mean"),
        run=RunConfig(steps=epochs * steps_per_epoch, checkpoint_every=5 * steps_per_epoch,
                      eval_every=5 * steps_per_epoch, log_every=20, sync_bn=True, precision="bf16"),
    )


PRESETS: dict[str, Callable[[], FinetuneConfig]] = {"cpu_small": cpu_small, "ucf101": ucf101}
