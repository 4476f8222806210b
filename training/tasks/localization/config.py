"""Configuration of the action-localization trainer (``python -m training train-localizer``).

:class:`LocalizationConfig` = the task's ``data`` and ``model`` sections + the engine's ``optim`` and ``run``
(:mod:`training.engine.config`: presets, ``-o section.field=value`` overrides, JSON round trip, validation).
Presets (:data:`PRESETS`):

* ``cpu_small`` — ``constcl_r3d14_w16`` from random init, 8-frame clips with a 64 px short side, 8 key frames a
  step: learns the synthetic motion actions (``synthetic.py``) within minutes on 2 CPU cores (the CI test).
* ``ava_r3d50`` — the paper's setting on AVA v2.2: ConST-CL R3D-50 weights, the action transformer head, 32 frames
  at stride 2, short side 400 (``data.root`` = an AVA-layout folder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from ...engine.config import AtLeast, AtLeastOne, AtLeastZero, Fraction, OptimConfig, RunConfig, TrainConfig

EncodersIfZero = Annotated[int, AtLeast(0, " (0: the encoder's)")]


@dataclass
class LocalizationDataConfig:
    """AVA-layout files under ``root`` (defaults: the names of AVA v2.2 and of the synthetic generator)."""

    root: str = ""
    train_csv: str = "annotations/ava_train_v2.2.csv"
    val_csv: str = "annotations/ava_val_v2.2.csv"
    labelmap: str = "annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt"
    excluded: str = "annotations/ava_val_excluded_timestamps_v2.2.csv"
    videos: str = "videos"
    batch_size: AtLeastOne = 8  # key frames per optimizer step, over all processes and micro-batches
    num_workers: AtLeastZero = 0  # DataLoader worker processes (0: decode in the training process)
    eval_batch_size: AtLeastOne = 8

    def path(self, name: str) -> Path:
        """``root / <field name>`` for one of the file fields."""
        return Path(self.root) / getattr(self, name)


@dataclass
class LocalizationModelConfig:
    """The encoder and the head (``load(encoder, task="localization", head=...)``)."""

    encoder: str = "constcl_r3d14_w16"  # a name, checkpoint folder or hf-hub repo
    pretrained: bool = False  # load the encoder's weights (False: random init, seeded by init_seed)
    branch: Literal["region", "global"] = "region"
    head: Literal["transformer", "roi"] = "transformer"
    num_frames: EncodersIfZero = 0  # clip around a key frame (0: the encoder's)
    frame_stride: EncodersIfZero = 0
    short_side: EncodersIfZero = 0  # whole frames resized to this short side (0: the encoder's resize_short_side)
    dropout: Annotated[float, Fraction(below_one=True)] = 0.3  # the transformer head's dropout
    init_seed: int = 0
    freeze_encoder: bool = False  # train the head only (encoder weights and BN statistics fixed)


@dataclass
class LocalizationConfig(TrainConfig):
    """A complete localization training run: the task's data and model sections + the engine's."""

    data: LocalizationDataConfig = field(default_factory=LocalizationDataConfig)
    model: LocalizationModelConfig = field(default_factory=LocalizationModelConfig)


def cpu_small() -> LocalizationConfig:
    """Random-init ``constcl_r3d14_w16``, action transformer, 8x64 px whole-frame clips: minutes on 2 CPU cores."""
    return LocalizationConfig(
        preset="cpu_small",
        data=LocalizationDataConfig(batch_size=8, num_workers=0, eval_batch_size=8),
        model=LocalizationModelConfig(encoder="constcl_r3d14_w16", pretrained=False, head="transformer",
                                      num_frames=8, frame_stride=1, short_side=64, dropout=0.1),
        optim=OptimConfig(lr=0.1, momentum=0.9, warmup_steps=10, weight_decay=1e-4, grad_reduction="mean",
                          clip_grad_norm=5.0),
        run=RunConfig(steps=250, checkpoint_every=50, keep_checkpoints=1, log_every=25, eval_every=0,
                      precision="fp32", channels_last=False, threads=2, progress=False),
    )


def ava_r3d50() -> LocalizationConfig:
    """The paper's AVA v2.2 setting: ConST-CL R3D-50 weights, action transformer, 32 frames at stride 2, short
    side 400 (the paper's test resolution), SGD with warm-up and cosine decay."""
    return LocalizationConfig(
        preset="ava_r3d50",
        data=LocalizationDataConfig(batch_size=64, num_workers=8, eval_batch_size=16),
        model=LocalizationModelConfig(encoder="constcl_r3d50", pretrained=True, head="transformer", num_frames=32,
                                      frame_stride=2, short_side=400),
        optim=OptimConfig(lr=0.1, momentum=0.9, warmup_steps=1000, weight_decay=1e-7, grad_reduction="mean"),
        run=RunConfig(steps=30_000, checkpoint_every=1000, eval_every=5000, precision="bf16"),
    )


PRESETS: dict[str, Callable[[], LocalizationConfig]] = {"cpu_small": cpu_small, "ava_r3d50": ava_r3d50}
