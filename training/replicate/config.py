"""What a replication runs: the data it generates, the variants it pretrains, the budget, the evaluations.

A :class:`ReplicateConfig` is a preset (:data:`PRESETS`) plus ``-o section.field=value`` overrides, stored as
``<out>/config.json`` and read back on ``--resume`` (the engine's config machinery). Its ``optim`` and ``run``
sections are the pretraining budget that every pretrained variant gets unchanged.

Variants (:data:`VARIANTS`):

* ``random`` — the architecture at its seeded random init, no pretraining (the floor).
* ``cvrl`` — CVRL: the global (clip) contrastive loss only, on CVRL's network (no region branch).
* ``constcl`` — ConST-CL with the paper's context length (``pretrain.context_length``; the official config: 5).
* ``constcl_ctx0`` — ConST-CL with context length 0: the vanilla region contrast of the paper's Table 6.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from ..engine.config import AtLeast, AtLeastOne, OptimConfig, RunConfig, TrainConfig, check
from ..engine.config import get_preset as _get_preset

VARIANTS: tuple[str, ...] = ("random", "cvrl", "constcl", "constcl_ctx0")


@dataclass
class ReplicateDataConfig:
    """The generated benchmark (:mod:`training.synthetic`), all seeded by ``seed``; sizes in videos/sequences.

    ``backgrounds``: folder of real videos for backgrounds and textures ('' : generated ones); ``real_videos``:
    also pretrain on the videos of ``backgrounds``; ``vot``: a real tracking sequence folder to evaluate on too
    ('' : none)."""

    backgrounds: str = ""
    real_videos: bool = True
    vot: str = ""
    seed: int = 0
    pretrain_videos: AtLeastOne = 40
    pretrain_seconds: int = 6
    ava_videos: AtLeastOne = 30
    ava_val_videos: AtLeastOne = 8
    ava_speed: float = 60.0
    tracking_train: AtLeastOne = 12
    tracking_val: AtLeastOne = 3
    tracking_seconds: int = 3
    recognition_train_per_class: AtLeastOne = 12
    recognition_val_per_class: AtLeastOne = 6


@dataclass
class ReplicatePretrainConfig:
    """The shared network and clips of every pretrained variant (``optim``/``run``: the shared budget)."""

    arch: str = "constcl_r3d14_w16"
    cvrl_arch: str = "cvrl_r3d14_w16"
    # the paper's / official config's (needs >= 9 frames); context 0 is the constcl_ctx0 variant
    context_length: Annotated[int, AtLeast(1, " (context 0 is the constcl_ctx0 variant)")] = 5
    num_frames: AtLeastOne = 10
    frame_stride: AtLeastOne = 2
    crop_size: AtLeastOne = 64
    decode_short_side: int = 80
    batch_size: AtLeastOne = 8
    local_weight: float = 0.01


@dataclass
class ReplicateEvalConfig:
    """The downstream evaluations, identical for every variant.

    Tracking: the encoder with a fresh (identity-adjust) SiamFC head of these crop sizes and scales — no head
    training, so the numbers measure the features. Localization: ``train-localizer`` (preset ``cpu_small``)
    from the encoder's weights for ``localization_steps`` — the head only (``model.freeze_encoder``) unless
    ``localization_freeze_encoder`` is false, so the numbers measure the features. Recognition: a linear probe
    (``probe``) on the clip embeddings."""

    exemplar_size: int = 63
    search_size: int = 127
    num_scales: AtLeastOne = 1  # SiamFC's 3 cost 3x the backbone time; every variant is measured alike
    localization_steps: int = 100
    localization_lr: float = 0.1
    localization_freeze_encoder: bool = True


@dataclass
class ReplicateDefaultConfig:
    """The default model: the best ConST-CL run's encoder, its localizer, and a tracker whose head is trained
    on the synthetic tracking sequences for ``tracker_steps`` (kept only if it beats the untrained head)."""

    tracker_steps: int = 20
    tracker_batch_size: int = 8
    tracker_lr: float = 0.01


@dataclass
class ReplicateConfig(TrainConfig):
    variants: tuple[str, ...] = VARIANTS
    seeds: tuple[int, ...] = (0, 1)
    data: ReplicateDataConfig = field(default_factory=ReplicateDataConfig)
    pretrain: ReplicatePretrainConfig = field(default_factory=ReplicatePretrainConfig)
    evaluation: ReplicateEvalConfig = field(default_factory=ReplicateEvalConfig)
    default: ReplicateDefaultConfig = field(default_factory=ReplicateDefaultConfig)

    def validate(self) -> None:
        super().validate()
        unknown = [v for v in self.variants if v not in VARIANTS]
        check(not unknown and len(self.variants) > 0, "variants", list(self.variants), f"must be among {VARIANTS}")
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds", list(self.seeds),
              "must be distinct integers")
        d, e = self.data, self.evaluation
        check(d.ava_val_videos < d.ava_videos, "data.ava_val_videos", d.ava_val_videos, "must be < data.ava_videos")
        check(0 < e.exemplar_size < e.search_size, "evaluation.exemplar_size", e.exemplar_size,
              "must be positive and below evaluation.search_size")
        check(e.num_scales % 2 == 1, "evaluation.num_scales", e.num_scales, "must be odd")
        check(e.localization_steps > 10, "evaluation.localization_steps", e.localization_steps, "must be > 10")


def cpu() -> ReplicateConfig:
    """The whole table on 2 CPU cores in about an hour (4 variants x 2 seeds; see the README for the measured
    wall time): 10x64x64 clips, 8 a step, 250 steps per pretraining."""
    return ReplicateConfig(
        preset="cpu",
        optim=OptimConfig(lr=0.5, warmup_steps=20, weight_decay=1e-6, grad_reduction="mean"),
        run=RunConfig(steps=250, checkpoint_every=50, keep_checkpoints=1, log_every=25, precision="fp32",
                      channels_last=False, threads=2, progress=False),
    )


def smoke() -> ReplicateConfig:
    """Every stage of ``cpu`` at toy size (minutes): for tests and for trying the pipeline."""
    return ReplicateConfig(
        preset="smoke",
        variants=("random", "constcl"),
        seeds=(0,),
        data=ReplicateDataConfig(pretrain_videos=3, pretrain_seconds=3, ava_videos=3, ava_val_videos=1,
                                 tracking_train=1, tracking_val=1, tracking_seconds=2, recognition_train_per_class=2,
                                 recognition_val_per_class=1, real_videos=False),
        pretrain=ReplicatePretrainConfig(batch_size=2),
        evaluation=ReplicateEvalConfig(localization_steps=11),
        default=ReplicateDefaultConfig(tracker_steps=3, tracker_batch_size=2),
        optim=OptimConfig(lr=0.5, warmup_steps=1, weight_decay=1e-6, grad_reduction="mean"),
        run=RunConfig(steps=4, checkpoint_every=2, keep_checkpoints=1, log_every=2, precision="fp32",
                      channels_last=False, threads=2, progress=False),
    )


PRESETS: dict[str, Callable[[], ReplicateConfig]] = {"cpu": cpu, "smoke": smoke}


def get_preset(name: str) -> ReplicateConfig:
    return _get_preset(PRESETS, name)
