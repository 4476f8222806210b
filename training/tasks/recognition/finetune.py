"""Fine-tuning a recognition classifier on the shared engine: all layers (or the head only), cross-entropy.

``finetune(cfg, out)`` runs :class:`FinetuneLearner` with :func:`training.engine.train` (one process or ``torchrun``;
accumulation, bf16, exact resume are the engine's). The model is a
:class:`~constcl_zoo.tasks.recognition.VideoClassifier` on the encoder's global branch.

Data path: the labelled splits (:mod:`.data`) -> an index of decoded frame counts of the training videos
(:func:`training.data.videos.build_index`; unreadable videos skipped and counted) -> sample number ``p`` of the
run is video ``perm_e[p mod n]`` (:class:`training.data.loader.StreamSampler`) and :class:`.data.ClipDataset`
makes it from a generator seeded with ``(run.seed, p)`` (a clip at a random start, crop + flip). A video that
fails to decode at read time is replaced by the next one and counted (``skipped_videos``). So a sample never
depends on the worker that made it or on a restart: ``--resume`` continues bit for bit.

Evaluation (every ``run.eval_every`` steps and after the last): :func:`.evaluate.evaluate_classifier`, every
validation video's ``eval.clips`` x ``eval.crops`` views (:func:`.features.video_views`), softmax averaged,
top-1/top-5/mean class accuracy logged; the videos are shared out among the processes. At the end the run folder
gets ``metrics.json``, ``confusion.png`` and the task checkpoint ``checkpoint/`` (``load()`` returns it as a
``VideoClassifier``).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from constcl_zoo import GlobalEncoder, PreprocessConfig, load
from constcl_zoo.nn.preprocess import ClipPreprocess
from constcl_zoo.tasks.recognition import RecognitionHeadConfig, VideoClassifier

from ..._moved import deprecated_names
from ...data.loader import build_loader
from ...data.videos import VideoEntry, build_index
from ...engine import ConfigError, Learner, RunContext, StepOutput, train
from .config import FinetuneConfig
from .data import ClipDataset, FinetuneError, load_finetune_splits
from .evaluate import evaluate_classifier, plot_confusion, write_metrics
from .features import ViewSettings

__all__ = ["CHECKPOINT_DIR", "ClipDataset", "FinetuneError", "FinetuneLearner", "build_classifier", "clip_preprocess",
           "finetune", "load_finetune_splits"]
__getattr__ = deprecated_names(__name__)  # FinetuneTask: the old name of FinetuneLearner
log = logging.getLogger("training")

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.png"


def clip_preprocess(cfg: FinetuneConfig, encoder: PreprocessConfig) -> PreprocessConfig:
    """The run's preprocessing: the encoder's, with the ``data`` section's non-zero clip fields."""
    d = cfg.data
    crop = d.crop_size or encoder.crop_size
    short = d.resize_short_side or (d.crop_size if d.crop_size else max(encoder.resize_short_side, crop))
    try:
        return dataclasses.replace(encoder, num_frames=d.num_frames or encoder.num_frames,
                                   frame_stride=d.frame_stride or encoder.frame_stride, crop_size=crop,
                                   resize_short_side=short)
    except ValueError as exc:
        raise ConfigError(f"config data: {exc}") from exc


def build_classifier(cfg: FinetuneConfig, labels: tuple[str, ...]) -> VideoClassifier:
    """The encoder's global branch (pretrained or seeded random init) with the run's preprocessing and a fresh,
    seeded head for ``labels``; in train mode, on the CPU."""
    m = cfg.model
    if not m.encoder:
        raise ConfigError("config model.encoder is empty; give --model ENCODER")
    encoder = load(m.encoder, branch="global", pretrained=not m.random_init, seed=m.init_seed)
    if not isinstance(encoder, GlobalEncoder):
        raise ConfigError(f"config model.encoder={m.encoder!r} is not an encoder (a task checkpoint?); give an "
                          "encoder name or checkpoint folder")
    pre = clip_preprocess(cfg, encoder.config.preprocess)
    if pre != encoder.config.preprocess:  # fine-tuning may use another clip shape than the encoder's pretraining
        encoder.config = dataclasses.replace(encoder.config, preprocess=pre)
        encoder.preprocess = ClipPreprocess(pre)
    if pre.num_frames < encoder.min_frames:
        raise ConfigError(f"config data.num_frames={pre.num_frames}: the encoder needs at least {encoder.min_frames}")
    head = RecognitionHeadConfig(normalize_features=m.normalize_features, dropout=m.dropout)
    classifier = VideoClassifier.from_encoder(encoder, labels=labels, head=head, seed=m.init_seed)
    return classifier.freeze_encoder(m.freeze_encoder).train()


class FinetuneLearner(Learner):
    """Supervised fine-tuning of a :class:`VideoClassifier` (see the module docstring)."""

    name, unit = "fine-tuning", "clips"
    metric_names = ("accuracy",)
    count_names = ("skipped_videos",)

    def __init__(self, cfg: FinetuneConfig) -> None:
        self.cfg = cfg
        self.train_split, self.val_split = load_finetune_splits(cfg)  # before the run folder is written
        self.entries: list[VideoEntry] = []
        self.entry_labels: list[int] = []
        self.index_skipped: dict[str, str] = {}
        self.model: VideoClassifier | None = None
        self.ctx: RunContext | None = None
        self.last_metrics: dict[str, Any] | None = None

    @property
    def batch_size(self) -> int:
        return self.cfg.data.batch_size

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train_split.classes

    def describe(self) -> str:
        m = self.cfg.model
        what = "the head" if m.freeze_encoder else "all layers"
        init = "random init" if m.random_init else "pretrained"
        return (f"{what} of {m.encoder} ({init}) on {len(self.classes)} classes, {len(self.train_split)} training / "
                f"{len(self.val_split)} validation videos ({self.cfg.preset or 'custom'})")

    def setup(self, ctx: RunContext) -> None:
        """Count the training videos' decoded frames: rank 0 first (cached), the others read its cache."""
        self.ctx = ctx
        d = self.cfg.data
        cache = Path(d.index_cache) if d.index_cache else ctx.out / "train_index.json"
        paths = list(self.train_split.paths)
        index = None
        if ctx.info.is_main:
            index = build_index(paths, 1, d.decoder, cache, threads=max(2, d.num_workers))
        ctx.barrier()
        if index is None:
            index = build_index(paths, 1, d.decoder, cache)
        label_of = {str(p): label for p, label in zip(paths, self.train_split.labels, strict=True)}
        self.entries = index.entries
        self.entry_labels = [label_of[e.path] for e in index.entries]
        self.index_skipped = {**dict(self.train_split.skipped), **index.skipped}
        log.info("training videos: %d usable, %d skipped; validation videos: %d", len(self.entries),
                 len(self.index_skipped), len(self.val_split))

    def build_model(self, ctx: RunContext) -> torch.nn.Module:
        self.model = build_classifier(self.cfg, self.classes)
        return self.model

    def batches(self, model: torch.nn.Module, local_batch: int, ctx: RunContext, start: int) -> Iterator[Any]:
        dataset = ClipDataset(self.entries, self.entry_labels, self.cfg, model.config.preprocess)
        return iter(build_loader(dataset, local_batch, ctx.info.rank, ctx.info.world, start))  # type: ignore[arg-type]

    def inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return (batch["clip"],)

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> StepOutput:
        labels = batch["label"].to(outputs.device)
        logits = outputs.float()
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.loss.label_smoothing)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return StepOutput(loss, {"accuracy": accuracy}, {"skipped_videos": float(batch["skipped"].sum())})

    def log_details(self, row: dict[str, Any]) -> str:
        return f"train accuracy {row['accuracy']:.3f}"

    def evaluate(self, model: torch.nn.Module, ctx: RunContext) -> dict[str, float]:
        """Top-1 / top-5 / mean class accuracy on the validation split; the full metrics in ``last_metrics``."""
        e = self.cfg.eval
        self.last_metrics = evaluate_classifier(model, self.val_split, ViewSettings(e.clips, e.crops),
                                                batch_size=e.batch_size, decode_workers=e.decode_workers,
                                                bf16=self.cfg.run.precision == "bf16", rank=ctx.info.rank,
                                                world=ctx.info.world)
        return {k: self.last_metrics[k] for k in ("top1", "top5", "mean_class_accuracy")}

    def summary(self, counts: dict[str, int]) -> dict[str, Any]:
        log.info("%d training videos skipped by the index, %d replaced at read time", len(self.index_skipped),
                 counts["skipped_videos"])
        return {"skipped_videos": self.index_skipped, "replaced_at_read": counts["skipped_videos"]}


def _dataset_record(cfg: FinetuneConfig) -> dict[str, Any]:
    d = cfg.data
    return {"format": d.format, "train": d.train, "val": d.val or d.train, "splits": d.splits or None,
            "split": d.split if d.format != "folder" else None}


def finetune(cfg: FinetuneConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
             command: str = "") -> dict[str, Any]:
    """Run (or continue) fine-tuning into ``out``; then write ``metrics.json``, ``confusion.png`` and the task
    checkpoint ``checkpoint/`` (rank 0). Returns the engine's summary plus ``metrics``. ``command``: the command
    line, recorded in the checkpoint's provenance."""
    out = Path(out)
    learner = FinetuneLearner(cfg)
    if overwrite:  # the engine clears its own files; the exports of the run being replaced go too
        for name in (METRICS_FILE, CONFUSION_FILE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    summary = train(learner, out, resume=resume, overwrite=overwrite)
    model, ctx = learner.model, learner.ctx
    assert model is not None and ctx is not None
    if learner.last_metrics is None:  # resumed a run that had already finished: the loop did not evaluate
        model.eval()
        with torch.no_grad():
            learner.evaluate(model, ctx)
    metrics = learner.last_metrics
    assert metrics is not None
    metrics["skipped_videos"] = {"train": len(learner.index_skipped), "replaced_at_read": summary["replaced_at_read"],
                                 **metrics["skipped_videos"]}
    if ctx.info.is_main:
        write_metrics(metrics, out / METRICS_FILE)
        plot_confusion(metrics["confusion_matrix"], learner.classes, out / CONFUSION_FILE,
                       title=f"{cfg.model.encoder} fine-tuned: top-1 {metrics['top1']:.3f} "
                             f"({metrics['num_videos']} videos)")
        classifier = model.eval()
        provenance = {"training": {
            "command": command or "finetune", "config": cfg.to_dict(), "dataset": _dataset_record(cfg),
            "steps": summary["steps"],
            "metrics": {k: metrics[k] for k in ("top1", "top5", "mean_class_accuracy", "num_videos", "chance")}}}
        classifier.config = classifier.config.replace(provenance={**classifier.config.provenance, **provenance})
        classifier.save_pretrained(out / CHECKPOINT_DIR)
        log.info("fine-tuning: top-1 %.4f, top-5 %.4f, mean class accuracy %.4f on %d videos -> %s (task "
                 "checkpoint: %s)", metrics["top1"], metrics["top5"], metrics["mean_class_accuracy"],
                 metrics["num_videos"], out, out / CHECKPOINT_DIR)
    ctx.barrier()
    return {**summary, "metrics": metrics}
