"""Training and validation of an action localizer on AVA-format data (``python -m training train-localizer``).

Split like the shared training engine wants a task: :class:`LocalizationTask` owns the model, the datasets, the
loss (binary cross-entropy over every (person, class), padding boxes masked) and the validation (the official
frame-mAP of :mod:`.evaluate`, the same code as ``eval-ava``); :func:`train` is a minimal single-process driver
(AdamW, linear warm-up + cosine) used until the task runs on ``training/engine/``.

    python -m training train-localizer --data synth/ --out runs/loc --arch constcl_r3d14_w16 --steps 300
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from constcl_zoo.ava import AvaRow, read_ava_csv, read_excluded, read_labelmap
from constcl_zoo.errors import UsageError, add_debug_flag, run_command
from constcl_zoo.fileio import atomic_write

from .data import AvaClips, collate
from .evaluate import FrameMAP, frame_map


@dataclass(frozen=True)
class LocalizationData:
    """AVA-layout files (defaults: the names of AVA v2.2 and of the synthetic generator under ``root``)."""

    root: str
    train_csv: str = "annotations/ava_train_v2.2.csv"
    val_csv: str = "annotations/ava_val_v2.2.csv"
    labelmap: str = "annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt"
    excluded: str = "annotations/ava_val_excluded_timestamps_v2.2.csv"
    videos: str = "videos"

    def path(self, name: str) -> Path:
        return Path(self.root) / getattr(self, name)


@dataclass(frozen=True)
class LocalizationTrainConfig:
    data: LocalizationData
    encoder: str = "constcl_r3d14_w16"  # a name, checkpoint folder or hf-hub repo
    pretrained: bool = False
    branch: str = "region"
    head: dict = field(default_factory=lambda: {"type": "transformer"})
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    seed: int = 0
    num_threads: int = 0
    freeze_encoder: bool = False  # train the head only (the encoder in eval mode, no gradients)


class LocalizationTask:
    """Model, data, loss and validation of action localization (what a training engine needs from a task)."""

    def __init__(self, config: LocalizationTrainConfig) -> None:
        self.config = config
        self.labels = read_labelmap(config.data.path("labelmap"))

    def build_model(self, seed: int | None = None) -> torch.nn.Module:
        from constcl_zoo import load

        cfg = self.config
        head = {**cfg.head, "label_ids": [x.id for x in self.labels]}
        return load(cfg.encoder, task="localization", labels=[x.name for x in self.labels], head=head,
                    branch=cfg.branch, pretrained=cfg.pretrained, seed=cfg.seed if seed is None else seed)

    def dataset(self, model: torch.nn.Module, split: str) -> AvaClips:
        d = self.config.data
        return AvaClips(d.path(f"{split}_csv"), d.path("videos"), self.labels, model.clip_preprocess,
                        excluded=d.path("excluded") if split == "val" and d.path("excluded").is_file() else None)

    @staticmethod
    def loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """Mean binary cross-entropy over the real (person, class) pairs of the batch."""
        logits = model(batch["clip"], batch["boxes"])
        per = F.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="none").mean(-1)
        mask = batch["mask"].float()
        return (per * mask).sum() / mask.sum().clamp(min=1)

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, data: AvaClips, batch_size: int = 8) -> list[AvaRow]:
        """Detection rows (every box x class with its probability) for every key frame of ``data``."""
        was_training = model.training
        model.eval()
        rows: list[AvaRow] = []
        ids = model.label_ids
        for start in range(0, len(data), batch_size):
            batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
            probs = torch.sigmoid(model(batch["clip"], batch["boxes"])).numpy()
            for b, (vid, ts, boxes) in enumerate(zip(batch["video_id"], batch["timestamp"], batch["orig_boxes"],
                                                     strict=True)):
                for n, box in enumerate(boxes.tolist()):
                    rows += [AvaRow(vid, ts, tuple(box), ids[c], float(probs[b, n, c])) for c in range(len(ids))]
        model.train(was_training)
        return rows

    def validate(self, model: torch.nn.Module, data: AvaClips | None = None) -> FrameMAP:
        """Frame-mAP on the val split with ground-truth boxes (the official definition, as ``eval-ava``)."""
        d = self.config.data
        data = data or self.dataset(model, "val")
        excluded = read_excluded(d.path("excluded")) if d.path("excluded").is_file() else set()
        return frame_map(read_ava_csv(d.path("val_csv")), self.predict(model, data), self.labels, excluded)


def _lr(step: int, cfg: LocalizationTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train(config: LocalizationTrainConfig, out: str | os.PathLike | None = None, log: bool = True
          ) -> tuple[torch.nn.Module, dict]:
    """Train (minimal single-process driver), validate, and (with ``out``) write ``out/model`` (a localization
    checkpoint ``load()`` reads), ``out/metrics.json`` and ``out/config.json``. Returns (model, metrics)."""
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    task = LocalizationTask(config)
    torch.manual_seed(config.seed)
    model = task.build_model()
    data = task.dataset(model, "train")
    gen = torch.Generator().manual_seed(config.seed)
    if config.freeze_encoder:
        model.encoder.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    model.train()
    if config.freeze_encoder:
        model.encoder.eval()
    losses, start = [], time.perf_counter()
    for step in range(config.steps):
        index = torch.randint(len(data), (config.batch_size,), generator=gen).tolist()
        batch = collate([data[i] for i in index])
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, config)
        loss = task.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if log and (step + 1) % 25 == 0:
            print(f"step {step + 1}/{config.steps} loss {np.mean(losses[-25:]):.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    model.eval()
    result = task.validate(model)
    metrics = {"val_frame_mAP": result.mean_ap, "per_class": result.to_dict()["per_class"],
               "final_loss": float(np.mean(losses[-10:])) if losses else None, "steps": config.steps,
               "seconds": time.perf_counter() - start}
    if out is not None:
        out = Path(out)
        model.save_pretrained(out / "model")
        atomic_write(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        atomic_write(out / "config.json", json.dumps(asdict(config), indent=2) + "\n")
    return model, metrics


PROG = "python -m training train-localizer"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train-localizer", help="train an action localizer on AVA-format data",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset root in the AVA layout (annotations/, videos/)")
    p.add_argument("--out", required=True, help="run folder (model/, metrics.json, config.json)")
    p.add_argument("--encoder", default="constcl_r3d14_w16", help="encoder name or checkpoint")
    p.add_argument("--pretrained", action="store_true", help="load the encoder's weights (default: random init)")
    p.add_argument("--branch", default="region", choices=["region", "global"])
    p.add_argument("--head", default="transformer", choices=["transformer", "roi"])
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--frame-stride", type=int, default=1)
    p.add_argument("--short-side", type=int, default=96)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--freeze-encoder", action="store_true", help="train the head only")
    add_debug_flag(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        if not Path(args.data, "annotations").is_dir():
            raise UsageError(f"--data {args.data}: expected an AVA layout with annotations/ and videos/")
        config = LocalizationTrainConfig(
            data=LocalizationData(args.data), encoder=args.encoder, pretrained=args.pretrained, branch=args.branch,
            head={"type": args.head, "num_frames": args.num_frames, "frame_stride": args.frame_stride,
                  "short_side": args.short_side}, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
            seed=args.seed, freeze_encoder=args.freeze_encoder)
        _, metrics = train(config, args.out)
        print(f"val frame-mAP@0.5 {metrics['val_frame_mAP']:.4f}; model written to {Path(args.out) / 'model'}")
        return 0

    return run_command(PROG, body, debug=getattr(args, "debug", False))
