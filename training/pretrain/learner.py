"""Self-supervised ConST-CL pretraining on the shared engine: the video data, the network and the two losses.

``pretrain(cfg, out)`` runs :class:`PretrainLearner` with :func:`training.engine.train` on one process or under
``torchrun``. Each micro-batch loss is ``global_weight * global + local_weight * local``; logged metrics are the
total loss, both terms and the global top-1 accuracy; ``skipped_videos`` counts videos replaced at read time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from constcl_zoo import PreprocessConfig, PretrainModel, load

from .._moved import deprecated_names
from ..data.loader import build_loader
from ..data.videos import FrameCache, VideoIndex, build_index, list_videos
from ..engine import ConfigError, Learner, RunContext, StepOutput, train
from .config import PretrainConfig
from .dataset import PretrainDataset, views_first
from .losses import global_contrastive_loss, local_contrastive_loss

__getattr__ = deprecated_names(__name__)  # PretrainTask: the old name of PretrainLearner
log = logging.getLogger("training")


def build_pretrain_model(cfg: PretrainConfig) -> PretrainModel:
    """The ``constcl_zoo`` pretraining network of the run, seeded init, preprocessing matching the data config."""
    d = cfg.data
    overrides: dict[str, Any] = {"preprocess": PreprocessConfig(
        num_frames=d.num_frames, frame_stride=d.frame_stride, crop_size=d.crop_size, resize_short_side=d.crop_size)}
    if cfg.model.context_length >= 0:
        overrides["region_head"] = {"context_length": cfg.model.context_length}
    model = load(cfg.model.arch, branch="full", pretrained=False, seed=cfg.model.init_seed, **overrides)
    if not isinstance(model, PretrainModel):
        raise ConfigError(f"config model.arch={cfg.model.arch!r}: not a pretraining network (ConST-CL or CVRL)")
    if model.config.region_head is not None and d.num_frames < model.min_frames:
        raise ConfigError(f"config data.num_frames={d.num_frames}: too short for context length "
                          f"{model.config.region_head.context_length}: {model.min_frames} frames are needed")
    return model.train()


class PretrainLearner(Learner):
    """ConST-CL pretraining: two augmented views per video, region boxes on their key frames."""

    name, unit = "pretraining", "clips"
    metric_names = ("loss_global", "loss_local", "global_accuracy")
    count_names = ("skipped_videos",)

    def __init__(self, cfg: PretrainConfig) -> None:
        self.cfg = cfg
        self.index: VideoIndex | None = None
        self.frame_cache: FrameCache | None = None

    @property
    def batch_size(self) -> int:
        return self.cfg.data.batch_size

    def describe(self) -> str:
        return f"{self.cfg.model.arch} ({self.cfg.preset or 'custom'})"

    def setup(self, ctx: RunContext) -> None:
        """Index the videos: rank 0 counts decoded frames (cached), the others read its cache."""
        d = self.cfg.data
        cache = Path(d.index_cache) if d.index_cache else ctx.out / "video_index.json"
        paths = list_videos(d.videos, d.extensions)
        min_frames = d.min_video_frames or self.cfg.clip_span
        frames = None
        if d.frame_cache:  # a relative folder lives in the run folder
            frames = FrameCache(ctx.out / d.frame_cache, d.decode_short_side, d.decoder)
        index = None
        if ctx.info.is_main:
            index = build_index(paths, min_frames, d.decoder, cache, threads=max(2, d.num_workers),
                                frame_cache=frames)
        ctx.barrier()
        if index is None:
            index = build_index(paths, min_frames, d.decoder, cache, frame_cache=frames)
        log.info("videos: %d usable, %d skipped (of %d listed)", len(index), len(index.skipped), len(paths))
        self.index, self.frame_cache = index, frames

    def build_model(self, ctx: RunContext) -> torch.nn.Module:
        return build_pretrain_model(self.cfg)

    def batches(self, model: torch.nn.Module, local_batch: int, ctx: RunContext, start: int) -> Iterator[Any]:
        bb = model.config.backbone
        dataset = PretrainDataset(self.index, self.cfg, bb.stem_stride[0] * bb.stem_pool_stride[0], self.frame_cache)
        return iter(build_loader(dataset, local_batch, ctx.info.rank, ctx.info.world, start))

    def inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return views_first(batch)

    def loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> StepOutput:
        lc = self.cfg.loss
        g = global_contrastive_loss(outputs["global_embeddings"], lc.global_temperature)
        total = lc.global_weight * g["loss"]
        local = None
        if "inst_a2b" in outputs:
            local = local_contrastive_loss(outputs["inst_a"], outputs["inst_b"], outputs["inst_a2b"],
                                           outputs["inst_b2a"], outputs["target_a"], outputs["target_b"],
                                           lc.local_temperature)
            total = total + lc.local_weight * local["loss"]
        return StepOutput(total, {"loss_global": g["loss"], "loss_local": local["loss"] if local else 0.0,
                                  "global_accuracy": g["accuracy"]},
                          {"skipped_videos": float(batch["skipped"].sum())})

    def log_details(self, row: dict[str, Any]) -> str:
        return f"global {row['loss_global']:.4f} local {row['loss_local']:.4f} acc {row['global_accuracy']:.3f}"

    def summary(self, counts: dict[str, int]) -> dict[str, Any]:
        skipped = self.index.skipped if self.index is not None else {}
        log.info("%d videos skipped by the index, %d replaced at read time", len(skipped), counts["skipped_videos"])
        return {"skipped_videos": skipped, "replaced_at_read": counts["skipped_videos"]}


def pretrain(cfg: PretrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run (or continue, with ``resume``) pretraining into run folder ``out``; returns a summary dict."""
    return train(PretrainLearner(cfg), out, resume=resume, overwrite=overwrite)
