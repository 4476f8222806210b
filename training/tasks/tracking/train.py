"""Training the SiamFC tracker: the loss, the model to optimise and a minimal driver.

    python -m training track-train --videos ../shared/data/videos --encoder ENCODER --out RUN   # label-free
    python -m training track-train --dataset GOT10K/train --encoder ENCODER --out RUN          # annotated

Loss: SiamFC's balanced logistic loss (positives and negatives each weigh one half) or, with ``focal=True``, a
focal loss (alpha 0.25, gamma 2) as VFS / VINCE. ``freeze_backbone=True`` trains only the head (VFS / VINCE's
frozen-feature protocol; the encoder stays in eval mode, BN statistics untouched); ``False`` fine-tunes the whole
tracker (the paper's setting). The result is a tracking checkpoint (``<out>/tracker``) that ``load()`` reads.

The shared engine (``training/engine/``) had not landed when this was written: :func:`train_tracker` is a small
single-process loop around the parts the engine will take — :class:`~.pairs.SequencePairs` /
:class:`~.pairs.VideoPairs` (the dataset), :class:`~constcl_zoo.tasks.tracking.SiamFCTracker` (the model) and
:func:`siamfc_loss` (the loss).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from constcl_zoo.fileio import atomic_write
from constcl_zoo.tasks.tracking import SiamFCTracker

from .pairs import PairConfig, response_labels


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
class TrackTrainConfig:
    """``steps`` of ``batch_size`` pairs; AdamW at ``lr`` with cosine decay; ``weight_decay``."""

    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 5e-4
    freeze_backbone: bool = True
    focal: bool = False
    positive_radius: float = 16.0
    num_workers: int = 0
    log_every: int = 10
    seed: int = 0
    pairs: PairConfig = field(default_factory=PairConfig)


def normalise(clips: torch.Tensor, tracker: SiamFCTracker) -> torch.Tensor:
    """[0, 255] clips -> the weights' value range."""
    lo, hi = tracker.config.preprocess.value_range
    return clips * ((hi - lo) / 255.0) + lo


def train_tracker(tracker: SiamFCTracker, data: Dataset, cfg: TrackTrainConfig, out: str | Path,
                  log: Any = print) -> Path:
    """Train ``tracker`` on pairs from ``data`` and save the tracking checkpoint to ``<out>/tracker``; the loss
    curve goes to ``<out>/log.jsonl``. Returns the checkpoint folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    tracker.train()
    if cfg.freeze_backbone:
        tracker.encoder.eval()
        tracker.encoder.requires_grad_(False)
    params = [p for p in tracker.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, cfg.steps)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers, drop_last=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    stride = tracker.feature_stride
    lines, step, t0 = [], 0, time.time()
    while step < cfg.steps:
        for z, x, shift in loader:
            z, x = normalise(z, tracker), normalise(x, tracker)
            with torch.set_grad_enabled(not cfg.freeze_backbone):
                fz, fx = tracker.features(z), tracker.features(x)
            responses = tracker.head(fz, fx)
            labels = response_labels(shift, responses.shape[-1], stride, cfg.positive_radius)
            loss = siamfc_loss(responses, labels, focal=cfg.focal)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            step += 1
            with torch.no_grad():
                peak = responses.flatten(1).argmax(dim=1)
                hit = labels.flatten(1).gather(1, peak[:, None]).mean().item()
            lines.append(json.dumps({"step": step, "loss": loss.item(), "peak_in_positive": hit,
                                     "lr": sched.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 1)}))
            if log and (step % cfg.log_every == 0 or step == 1):
                log(f"step {step}/{cfg.steps} loss {loss.item():.4f} peak-in-positive {hit:.2f} "
                    f"({time.time() - t0:.0f} s)")
            if step >= cfg.steps:
                break
    atomic_write(out / "log.jsonl", "\n".join(lines) + "\n")
    atomic_write(out / "train_config.json", json.dumps(asdict(cfg), indent=2) + "\n")
    tracker.eval()
    tracker.requires_grad_(True)
    return tracker.save_pretrained(out / "tracker")
