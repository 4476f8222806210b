"""Training the SiamFC tracker on the shared engine (:mod:`training.engine`): the loss, the model the engine trains
(:class:`PairModel`) and :class:`TrackLearner` (config and presets: :mod:`.config`).

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from constcl_zoo import load
from constcl_zoo.errors import InvalidTypeError
from constcl_zoo.tasks.tracking import SiamFCTracker

from ..._moved import deprecated_names
from ...engine import ConfigError, Learner, RunContext, StepOutput, train
from .config import TrackTrainConfig
from .data import response_labels

__getattr__ = deprecated_names(__name__)  # TrackTask: the old name of TrackLearner

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
            raise InvalidTypeError(f"PairModel got unexpected keyword arguments {sorted(old)}")
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


class TrackLearner(Learner):
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
        from .data import SequencePairs, VideoPairs, read_dataset

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
    """Run :class:`TrackLearner` into run folder ``out`` and write the tracking checkpoint ``<out>/tracker``
    (rank 0); returns its folder."""
    learner = TrackLearner(cfg)
    train(learner, out, resume=resume, overwrite=overwrite)
    assert learner.model is not None
    tracker = learner.model.tracker.freeze_encoder(False).cpu().eval()
    folder = Path(out) / TRACKER_FOLDER
    if not dist.is_initialized() or dist.get_rank() == 0:
        tracker.save_pretrained(folder)
        log.info("tracking checkpoint %s", folder)
    return folder
