"""Training the SiamFC tracker on the shared engine (:mod:`training.engine`): config and presets, the loss and the
:class:`TrackTask`.

    python -m training track-train --config cpu_small --videos ../shared/data/videos --out runs/track   # label-free
    python -m training track-train --config siamfc_r3d50 --dataset GOT10K/train -o model.encoder=CKPT --out RUN
    python -m training track-train --out runs/track --resume                     # continue where it stopped

Loss: SiamFC's balanced logistic loss (positives and negatives each weigh one half) or, with ``loss.focal``, a
focal loss (alpha 0.25, gamma 2) as VFS / VINCE. ``model.freeze_encoder`` trains only the head (VFS / VINCE's
frozen-feature protocol: ``TaskModel.freeze_encoder``, the encoder stays in eval mode, its BN statistics untouched;
``model.freeze_backbone``, its old name, still reads with a DeprecationWarning); ``false`` fine-tunes the whole
tracker (the paper's setting). Run folder, resume, DDP, bf16, logging and progress are the engine's; after
the last step the tracking checkpoint is written to ``<out>/tracker``, which ``load()`` reads.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from constcl_zoo import load
from constcl_zoo.tasks.tracking import SiamFCTracker

from ...engine import ConfigError, Learner, OptimConfig, RunConfig, RunContext, StepOutput, TrainConfig, train
from ...engine.config import check
from ...engine.config import get_preset as _get_preset
from .pairs import PairConfig, response_labels

log = logging.getLogger("training")
TRACKER_FOLDER = "tracker"


def siamfc_loss(responses: torch.Tensor, labels: torch.Tensor, focal: bool = False, alpha: float = 0.25,
                gamma: float = 2.0) -> torch.Tensor:
    """Balanced logistic loss of response logits ``[B, 1, h, w]`` against 0/1 ``labels`` (same shape): positives
    and negatives each contribute half, averaged over the batch. ``focal``: the focal loss (alpha, gamma), summed
    and divided by the number of positives."""
    if focal:
        p = torch.sigmoid(responses)
        ce = F.binary_cross_entropy_with_logits(responses, labels, reduction="none")
        p_t = p * labels + (1 - p) * (1 - labels)
        a_t = alpha * labels + (1 - alpha) * (1 - labels)
        return (a_t * (1 - p_t) ** gamma * ce).sum() / labels.sum().clamp(min=1)
    pos = labels.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1)
    neg = (1 - labels).sum(dim=(1, 2, 3), keepdim=True).clamp(min=1)
    weights = labels * 0.5 / pos + (1 - labels) * 0.5 / neg
    loss = F.binary_cross_entropy_with_logits(responses, labels, weight=weights, reduction="none")
    return loss.sum(dim=(1, 2, 3)).mean()


@dataclass
class TrackModelConfig:
    """The tracker: an encoder (name, checkpoint folder or ``hf-hub:``; ``random_init`` for an architecture name
    without weights), its ``branch``, the tracker parameters ``head`` (:class:`TrackerConfig` fields) and whether
    the encoder is frozen (``freeze_encoder``; formerly ``freeze_backbone``)."""

    encoder: str = "constcl_r3d14_w16"
    random_init: bool = False
    branch: str = "region"
    head: dict[str, Any] = field(default_factory=dict)
    freeze_encoder: bool = True
    init_seed: int = 0


@dataclass
class TrackDataConfig:
    """Pairs: label-free from ``videos`` (folder / manifest) or annotated from ``dataset`` (GOT-10k / OTB / VOT
    folder), exactly one. ``batch_size`` pairs per optimizer step (all processes)."""

    videos: str = ""
    dataset: str = ""
    batch_size: int = 8
    num_workers: int = 0


@dataclass
class TrackLossConfig:
    """``positive_radius``: search-crop pixels around the target labelled positive (SiamFC: 16)."""

    focal: bool = False
    positive_radius: float = 16.0


@dataclass
class TrackTrainConfig(TrainConfig):
    """A complete tracker training run."""

    renamed_fields: ClassVar[dict[str, str]] = {"model.freeze_backbone": "model.freeze_encoder"}
    preset: str = ""
    model: TrackModelConfig = field(default_factory=TrackModelConfig)
    data: TrackDataConfig = field(default_factory=TrackDataConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    loss: TrackLossConfig = field(default_factory=TrackLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        super().validate()
        d, p = self.data, self.pairs
        check(not (d.videos and d.dataset), "data.videos", d.videos,
              "give only one of data.videos (--videos, label-free) and data.dataset (--dataset, annotated)")
        check(d.batch_size >= 1, "data.batch_size", d.batch_size, "must be >= 1")
        check(d.num_workers >= 0, "data.num_workers", d.num_workers, "must be >= 0")
        check(self.model.branch in ("region", "global"), "model.branch", self.model.branch, "must be region or global")
        check(p.max_gap >= 0 and p.max_shift >= 0 and p.max_scale >= 1, "pairs", p,
              "need max_gap >= 0, max_shift >= 0, max_scale >= 1")
        check(0 < p.box_min <= p.box_max < 1, "pairs.box_min", p.box_min, "need 0 < box_min <= box_max < 1")
        check(self.loss.positive_radius > 0, "loss.positive_radius", self.loss.positive_radius, "must be > 0")


class PairModel(nn.Module):
    """What the engine trains: the tracker on ``[0, 255]`` exemplar / search clips (normalised here to the
    weights' value range); ``freeze_encoder``: the tracker's :meth:`~constcl_zoo.tasks.base.TaskModel.freeze_encoder`
    (``freeze_backbone``, its old name, still works with a DeprecationWarning)."""

    def __init__(self, tracker: SiamFCTracker, freeze_encoder: bool = False, **old: bool) -> None:
        super().__init__()
        if "freeze_backbone" in old:
            warnings.warn("PairModel(freeze_backbone=) is deprecated: it is freeze_encoder now", DeprecationWarning,
                          stacklevel=2)
            freeze_encoder = old.pop("freeze_backbone")
        if old:
            raise TypeError(f"PairModel got unexpected keyword arguments {sorted(old)}")
        self.tracker = tracker.freeze_encoder(freeze_encoder)
        self.train()

    def forward(self, exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        lo, hi = self.tracker.config.preprocess.value_range
        z, x = exemplar * ((hi - lo) / 255.0) + lo, search * ((hi - lo) / 255.0) + lo
        fz, fx = self.tracker.features(z), self.tracker.features(x)
        return self.tracker.head(fz.float(), fx.float())


def build_tracker(cfg: TrackTrainConfig) -> SiamFCTracker:
    """The tracker to train (seeded head init)."""
    m = cfg.model
    kwargs: dict[str, Any] = {"pretrained": False, "seed": m.init_seed} if m.random_init else {}
    tracker = load(m.encoder, task="tracking", branch=m.branch, head=dict(m.head), **kwargs)
    if not isinstance(tracker, SiamFCTracker):
        raise ConfigError(f"config model.encoder={m.encoder!r} did not give a tracker")
    return tracker


class _Batches:
    """Micro-batch ``k`` of process ``rank`` holds pairs ``(k * world + rank) * n ... + n - 1``: each pair is a
    function of its index, so the stream restarts exactly at any micro-batch."""

    def __init__(self, start: int, rank: int, world: int, n: int) -> None:
        self.start, self.rank, self.world, self.n = start, rank, world, n

    def __iter__(self) -> Iterator[list[int]]:
        for k in itertools.count(self.start):
            first = (k * self.world + self.rank) * self.n
            yield list(range(first, first + self.n))


class TrackTask(Learner):
    """SiamFC on exemplar / search pairs: balanced logistic (or focal) loss on the response map."""

    name, unit = "tracker training", "pairs"
    metric_names = ("peak_in_positive",)

    def __init__(self, cfg: TrackTrainConfig) -> None:
        self.cfg = cfg
        self.data: Any = None
        self.model: PairModel | None = None
        self.stride = 8

    @property
    def batch_size(self) -> int:
        return self.cfg.data.batch_size

    def describe(self) -> str:
        m = self.cfg.model
        return f"{m.encoder} ({self.cfg.preset or 'custom'}; encoder {'frozen' if m.freeze_encoder else 'trained'})"

    def build_model(self, ctx: RunContext) -> nn.Module:
        tracker = build_tracker(self.cfg)
        self.stride = tracker.feature_stride
        self.data = self._dataset(tracker)
        self.model = PairModel(tracker, self.cfg.model.freeze_encoder)
        return self.model

    def _dataset(self, tracker: SiamFCTracker) -> Any:
        from .datasets import read_dataset
        from .pairs import SequencePairs, VideoPairs

        d, seed = self.cfg.data, self.cfg.run.seed
        if not (d.videos or d.dataset):
            raise ConfigError("track-train: give --videos DIR (label-free pairs) or --dataset DIR (annotated pairs)")
        if d.videos:
            return VideoPairs(d.videos, tracker.tracker_config, self.cfg.pairs, seed=seed)
        return SequencePairs(read_dataset(d.dataset), tracker.tracker_config, self.cfg.pairs, seed=seed)

    def batches(self, model: nn.Module, local_batch: int, ctx: RunContext, start: int) -> Iterator[Any]:
        loader = DataLoader(self.data, batch_sampler=_Batches(start, ctx.info.rank, ctx.info.world, local_batch),
                            num_workers=self.cfg.data.num_workers)
        return iter(loader)

    def inputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return batch[0], batch[1]

    def loss(self, outputs: torch.Tensor, batch: Any) -> StepOutput:
        responses = outputs.float()
        labels = response_labels(batch[2], responses.shape[-1], self.stride, self.cfg.loss.positive_radius)
        labels = labels.to(responses.device)
        loss = siamfc_loss(responses, labels, focal=self.cfg.loss.focal)
        with torch.no_grad():
            peak = responses.flatten(1).argmax(dim=1)
            hit = labels.flatten(1).gather(1, peak[:, None]).mean()
        return StepOutput(loss, {"peak_in_positive": hit})


def train_tracker(cfg: TrackTrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Run :class:`TrackTask` into run folder ``out`` and write the tracking checkpoint ``<out>/tracker``
    (rank 0); returns its folder."""
    task = TrackTask(cfg)
    train(task, out, resume=resume, overwrite=overwrite)
    assert task.model is not None
    tracker = task.model.tracker.freeze_encoder(False).cpu().eval()
    folder = Path(out) / TRACKER_FOLDER
    if not dist.is_initialized() or dist.get_rank() == 0:
        tracker.save_pretrained(folder)
        log.info("tracking checkpoint %s", folder)
    return folder


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
