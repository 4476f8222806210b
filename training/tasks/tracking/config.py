"""Configuration of the SiamFC tracker's trainer (``python -m training track-train``).

:class:`TrackTrainConfig` = the task's ``model``, ``data``, ``pairs`` (how training pairs are cut: :mod:`.data`)
and ``loss`` sections + the engine's ``optim`` and ``run`` (:mod:`training.engine.config`: presets, ``-o
section.field=value`` overrides, JSON round trip, validation). Presets (:data:`PRESETS`): ``cpu_small`` (head-only
training of the small random-init tracker on label-free pairs) and ``siamfc_r3d50`` (the paper-scale setting).
``model.freeze_backbone``, the old name of ``model.freeze_encoder``, still reads (DeprecationWarning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from ...engine.config import (
    AtLeast,
    AtLeastOne,
    AtLeastZero,
    NonNegative,
    OptimConfig,
    Positive,
    RunConfig,
    TrainConfig,
    check,
)
from ...engine.config import get_preset as _get_preset


@dataclass(frozen=True)
class PairConfig:
    """``max_gap``: frames between exemplar and search; ``max_shift``: search-crop pixels the target may sit
    off-centre (per axis); ``max_scale``: log-uniform scale change in ``[1/max_scale, max_scale]``;
    ``pairs_per_epoch``: the dataset's length; for :class:`VideoPairs`, box sides are ``box_min..box_max`` of the
    frame's short side."""

    max_gap: AtLeastZero = 10
    max_shift: Annotated[float, NonNegative()] = 24.0
    max_scale: Annotated[float, AtLeast(1)] = 1.15
    pairs_per_epoch: int = 2000
    box_min: float = 0.15
    box_max: float = 0.45
    video_short_side: int = 240
    max_frames_per_video: int = 400


@dataclass
class TrackModelConfig:
    """The tracker: an encoder (name, checkpoint folder or ``hf-hub:``; ``random_init`` for an architecture name
    without weights), its ``branch``, the tracker parameters ``head`` (:class:`TrackerConfig` fields) and whether
    the encoder is frozen (``freeze_encoder``; formerly ``freeze_backbone``)."""

    encoder: str = "constcl_r3d14_w16"
    random_init: bool = False
    branch: Literal["region", "global"] = "region"
    head: dict[str, Any] = field(default_factory=dict)
    freeze_encoder: bool = True
    init_seed: int = 0


@dataclass
class TrackDataConfig:
    """Pairs: label-free from ``videos`` (folder / manifest) or annotated from ``dataset`` (GOT-10k / OTB / VOT
    folder), exactly one. ``batch_size`` pairs per optimizer step (all processes)."""

    videos: str = ""
    dataset: str = ""
    batch_size: AtLeastOne = 8
    num_workers: AtLeastZero = 0


@dataclass
class TrackLossConfig:
    """``positive_radius``: search-crop pixels around the target labelled positive (SiamFC: 16)."""

    focal: bool = False
    positive_radius: Annotated[float, Positive()] = 16.0


@dataclass
class TrackTrainConfig(TrainConfig):
    """A complete tracker training run."""

    renamed_fields: ClassVar[dict[str, str]] = {"model.freeze_backbone": "model.freeze_encoder"}
    model: TrackModelConfig = field(default_factory=TrackModelConfig)
    data: TrackDataConfig = field(default_factory=TrackDataConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    loss: TrackLossConfig = field(default_factory=TrackLossConfig)

    def validate(self) -> None:
        super().validate()
        d, p = self.data, self.pairs
        check(not (d.videos and d.dataset), "data.videos", d.videos,
              "give only one of data.videos (--videos, label-free) and data.dataset (--dataset, annotated)")
        check(0 < p.box_min <= p.box_max < 1, "pairs.box_min", p.box_min, "need 0 < box_min <= box_max < 1")


def cpu_small() -> TrackTrainConfig:
    """Head-only training of the small random-init tracker (``constcl_r3d14_w16``, 63 / 127 crops) on
    label-free pairs: about 15 minutes on 2 busy CPU cores (~10 s a step)."""
    return TrackTrainConfig(
        preset="cpu_small",
        model=TrackModelConfig(encoder="constcl_r3d14_w16", random_init=True,
                               head={"exemplar_size": 63, "search_size": 127, "num_scales": 3},
                               freeze_encoder=True),
        data=TrackDataConfig(batch_size=8, num_workers=0),
        pairs=PairConfig(max_gap=10, max_shift=24.0, max_scale=1.15),
        optim=OptimConfig(lr=0.02, momentum=0.9, weight_decay=5e-4, warmup_steps=10, grad_reduction="mean"),
        run=RunConfig(steps=100, checkpoint_every=50, keep_checkpoints=2, log_every=10, precision="fp32",
                      channels_last=False, threads=2),
    )


def siamfc_r3d50() -> TrackTrainConfig:
    """The paper-scale setting: an R3D-50 encoder (give ``-o model.encoder=CHECKPOINT``), 127 / 255 crops,
    fine-tuned on annotated pairs (GOT-10k layout), SiamFC's batch 8 x 8 GPUs, 50 epochs of 6650 pairs."""
    return TrackTrainConfig(
        preset="siamfc_r3d50",
        model=TrackModelConfig(encoder="constcl_r3d50", freeze_encoder=False),
        data=TrackDataConfig(batch_size=64, num_workers=8),
        pairs=PairConfig(max_gap=100),
        optim=OptimConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, warmup_steps=200, grad_reduction="mean"),
        run=RunConfig(steps=5200, checkpoint_every=500, precision="bf16"),
    )


PRESETS: dict[str, Callable[[], TrackTrainConfig]] = {"cpu_small": cpu_small, "siamfc_r3d50": siamfc_r3d50}


def get_preset(name: str) -> TrackTrainConfig:
    """The named tracker training preset."""
    return _get_preset(PRESETS, name)
