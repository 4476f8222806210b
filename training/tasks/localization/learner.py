"""Action localization on the shared engine: AVA-format data, the localizer, binary cross-entropy, frame-mAP.

:class:`LocalizationLearner` is a :class:`training.engine.Learner`: the engine owns the loop, optimizer, schedule,
checkpoints, exact resume and logging. Validation (``run.eval_every`` steps and after the last) is the official
frame-mAP@0.5 of :mod:`.evaluate` — the code of ``python -m training eval-ava`` — on the val split with
ground-truth boxes. :func:`train_localizer` runs the learner and writes ``<out>/model``, a localization task
checkpoint that ``constcl_zoo.load`` reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from constcl_zoo.formats.ava import AvaLabel, AvaRow, read_ava_file, read_excluded, read_labelmap
from constcl_zoo.tasks.localization import ActionLocalizer

from ..._moved import deprecated_names
from ...engine import ConfigError, Learner, RunContext, StepOutput, train
from .config import LocalizationConfig
from .data import AvaClips, collate
from .evaluate import FrameMAP, frame_map

__getattr__ = deprecated_names(__name__)  # LocalizationTask: the old name of LocalizationLearner
log = logging.getLogger("training")
MODEL_DIR = "model"  # <out>/model: the exported localization checkpoint


def build_localizer(cfg: LocalizationConfig, labels: list[AvaLabel]) -> ActionLocalizer:
    """A fresh localizer of ``cfg.model`` for ``labels`` (seeded head; encoder weights if ``pretrained``)."""
    from constcl_zoo import load

    m = cfg.model
    head = {"type": m.head, "num_frames": m.num_frames, "frame_stride": m.frame_stride, "short_side": m.short_side,
            "dropout": m.dropout, "label_ids": [x.id for x in labels]}
    model = load(m.encoder, task="localization", labels=[x.name for x in labels], head=head, branch=m.branch,
                 pretrained=m.pretrained, seed=m.init_seed)
    if not isinstance(model, ActionLocalizer):
        raise ConfigError(f"config model.encoder={m.encoder!r}: loads as {type(model).__name__}, not an encoder "
                          "for a new localization head")
    return model


def localization_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the real persons (``mask [B, N]``) and all classes of ``[B, N, C]``."""
    per = F.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.device), reduction="none").mean(-1)
    mask = mask.to(per.device).float()
    return (per * mask).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def predict(model: ActionLocalizer, data: AvaClips, batch_size: int = 8) -> list[AvaRow]:
    """Detection rows (every box x class with its probability) for every key frame of ``data``."""
    device = next(model.parameters()).device
    rows: list[AvaRow] = []
    ids = model.label_ids
    for start in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
        probs = torch.sigmoid(model(batch["clip"].to(device), batch["boxes"].to(device)).float()).cpu().numpy()
        for b, (vid, ts, boxes) in enumerate(zip(batch["video_id"], batch["timestamp"], batch["orig_boxes"],
                                                 strict=True)):
            for n, box in enumerate(boxes.tolist()):
                rows += [AvaRow(vid, ts, tuple(box), ids[c], float(probs[b, n, c])) for c in range(len(ids))]
    return rows


class _Batches(torch.utils.data.Sampler):
    """Endless micro-batches of key-frame indices: micro-batch ``m`` of process ``rank`` is drawn from
    ``seed, m, rank`` alone, so a resumed run continues with the same samples."""

    def __init__(self, size: int, local_batch: int, seed: int, rank: int, start: int) -> None:
        self.size, self.local_batch, self.seed, self.rank, self.start = size, local_batch, seed, rank, start

    def __iter__(self) -> Iterator[list[int]]:
        m = self.start
        while True:
            rng = np.random.default_rng([self.seed, m, self.rank])
            yield rng.integers(0, self.size, self.local_batch).tolist()
            m += 1

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2**62


class LocalizationLearner(Learner):
    """Action localization: clips around key frames with their persons' boxes and multi-label actions."""

    name, unit = "localization training", "key frames"

    def __init__(self, cfg: LocalizationConfig) -> None:
        self.cfg = cfg
        if not cfg.data.root:
            raise ConfigError("config data.root='': give the AVA-layout dataset folder (--data DIR or "
                              "-o data.root=DIR)")
        for name in ("train_csv", "val_csv", "labelmap"):
            if not cfg.data.path(name).is_file():
                raise ConfigError(f"config data.{name}: no file at {cfg.data.path(name)} (data.root is expected "
                                  "to hold an AVA layout: annotations/, videos/)")
        self.labels = read_labelmap(cfg.data.path("labelmap"))
        self.model: ActionLocalizer | None = None
        self._val: AvaClips | None = None

    @property
    def batch_size(self) -> int:
        return self.cfg.data.batch_size

    def describe(self) -> str:
        m = self.cfg.model
        return f"{m.encoder} + {m.head} head on {self.cfg.data.root} ({self.cfg.preset or 'custom'})"

    def build_model(self, ctx: RunContext | None = None) -> torch.nn.Module:
        """The localizer; with ``model.freeze_encoder`` its encoder is frozen
        (:meth:`~constcl_zoo.tasks.base.TaskModel.freeze_encoder`: no gradients, eval mode)."""
        self.model = build_localizer(self.cfg, self.labels).freeze_encoder(self.cfg.model.freeze_encoder).train()
        return self.model

    def checkpoint_keys(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Runs written with a frozen encoder before the localizer froze it itself wrapped it (``localizer.*``
        keys): read as the localizer's own."""
        prefix = "localizer."
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
        return state

    def dataset(self, model: ActionLocalizer, split: str) -> AvaClips:
        d = self.cfg.data
        excluded = d.path("excluded") if split == "val" and d.path("excluded").is_file() else None
        return AvaClips(d.path(f"{split}_csv"), d.path("videos"), self.labels, model.clip_preprocess,
                        excluded=excluded)

    def batches(self, model: torch.nn.Module, local_batch: int, ctx: RunContext, start: int) -> Iterator[Any]:
        assert self.model is not None
        data = self.dataset(self.model, "train")
        sampler = _Batches(len(data), local_batch, self.cfg.run.seed, ctx.info.rank, start)
        workers = self.cfg.data.num_workers
        return iter(torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                                persistent_workers=workers > 0))

    def inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["clip"], batch["boxes"]

    def loss(self, outputs: torch.Tensor, batch: dict[str, Any]) -> StepOutput:
        return StepOutput(localization_loss(outputs, batch["labels"], batch["mask"]))

    def val_detections(self, model: ActionLocalizer) -> tuple[list[AvaRow], list[AvaRow], set[str]]:
        """The val split scored by ``model`` on its ground-truth person boxes (eval mode): ``(ground-truth rows,
        detection rows (every box x class with its probability), the ground truth's key frames)``, the key frames
        of the excluded-timestamps file left out of both."""
        d = self.cfg.data
        if self._val is None:
            self._val = self.dataset(model, "val")
        excluded = read_excluded(d.path("excluded")) if d.path("excluded").is_file() else set()
        was_training = model.training
        model.eval()
        try:
            rows = predict(model, self._val, d.eval_batch_size)
        finally:
            model.train(was_training)
        gt = read_ava_file(d.path("val_csv"))
        return [r for r in gt.rows if r.key not in excluded], rows, gt.keys - excluded

    def validate(self, model: ActionLocalizer) -> FrameMAP:
        """Frame-mAP@0.5 on the val split with ground-truth boxes (the current official evaluator, as ``eval-ava``),
        on the key frames the val dataset reads: those of the excluded-timestamps file are left out of both."""
        truth, rows, keys = self.val_detections(model)
        return frame_map(truth, rows, self.labels, groundtruth_keys=keys)

    def evaluate(self, model: torch.nn.Module, ctx: RunContext) -> dict[str, float]:
        assert self.model is not None
        was_training = model.training
        result = self.validate(self.model)
        model.train(was_training)  # a frozen encoder stays in eval mode
        log.info("val frame-mAP@0.5 %.4f over %d classes", result.mean_ap, len(result.per_class))
        return {"val_frame_mAP": result.mean_ap}


def train_localizer(cfg: LocalizationConfig, out: str | Path, resume: bool = False,
                    overwrite: bool = False) -> dict[str, Any]:
    """Train (or continue, with ``resume``) into run folder ``out`` and write ``<out>/model`` (a localization
    checkpoint for ``constcl_zoo.load``); returns the engine's summary plus ``"model"`` (its path)."""
    learner = LocalizationLearner(cfg)
    summary = train(learner, out, resume=resume, overwrite=overwrite)
    folder = Path(out) / MODEL_DIR
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if learner.model is not None and rank == 0:
        learner.model.float().cpu().eval().save_pretrained(folder)
        log.info("wrote the localization checkpoint %s", folder)
    return {**summary, "model": str(folder)}
