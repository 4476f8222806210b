"""Evaluating a recognition run: a classifier on the validation split (:func:`evaluate_classifier`: every
video's views, softmax averaged, shared out among processes) and the metrics (top-1, top-5, per-class accuracy,
confusion matrix; JSON + PNG)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from constcl_zoo.errors import ConstclZooError
from constcl_zoo.fileio import atomic_write

from .data import FinetuneError, LabelledSplit
from .features import ViewSettings, prefetched, video_views

log = logging.getLogger("training")


class MetricsError(ConstclZooError, ValueError):
    """Scores and labels that do not fit together."""


def compute_metrics(scores: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics of class scores ``[N, C]`` (any monotone score: probabilities or logits) against labels ``[N]``.

    ``top1`` / ``top5``: fraction of videos whose label is the best / among the 5 best (``top5`` uses
    ``min(5, C)``). ``per_class_accuracy``: top-1 accuracy of each class's videos (``None`` for a class without
    videos); ``mean_class_accuracy`` averages the classes that have videos. ``confusion_matrix[i][j]``: videos of
    class ``i`` predicted as ``j``.
    """
    if scores.ndim != 2 or scores.shape[1] != len(classes):
        raise MetricsError(f"scores must be [N, {len(classes)}] (one column per class), got {tuple(scores.shape)}")
    if labels.shape != (scores.shape[0],):
        raise MetricsError(f"labels must be [{scores.shape[0]}], got {tuple(labels.shape)}")
    n, c = scores.shape
    if n == 0:
        raise MetricsError("no videos to evaluate")
    labels = labels.long().cpu()
    ranked = scores.float().cpu().topk(min(5, c), dim=1).indices
    pred = ranked[:, 0]
    confusion = torch.zeros(c, c, dtype=torch.int64)
    confusion.index_put_((labels, pred), torch.ones(n, dtype=torch.int64), accumulate=True)
    counts = confusion.sum(dim=1)
    per_class = [float(confusion[i, i] / counts[i]) if counts[i] else None for i in range(c)]
    present = [a for a in per_class if a is not None]
    return {
        "num_videos": n,
        "num_classes": c,
        "top1": float((pred == labels).float().mean()),
        "top5": float((ranked == labels[:, None]).any(dim=1).float().mean()),
        "top5_k": min(5, c),
        "mean_class_accuracy": sum(present) / len(present),
        "chance": 1.0 / c,
        "classes": list(classes),
        "per_class_accuracy": dict(zip(classes, per_class, strict=True)),
        "per_class_videos": dict(zip(classes, counts.tolist(), strict=True)),
        "confusion_matrix": confusion.tolist(),
    }


def write_metrics(metrics: dict[str, Any], path: str | os.PathLike) -> Path:
    """``metrics.json``, atomically."""
    return atomic_write(path, json.dumps(metrics, indent=2) + "\n")


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike,
                   title: str = "") -> Path:
    """A PNG of the confusion matrix, each row normalised to the fraction of its class's videos (counts written
    in the cells when there are at most 30 classes; class names on the axes up to 60), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(confusion, dtype=torch.float64)
    c = counts.shape[0]
    rows = (counts / counts.sum(dim=1, keepdim=True).clamp_min(1)).numpy()
    side = min(40.0, max(4.0, 0.3 * c + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    try:
        image = ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        if title:
            ax.set_title(title)
        if c <= 60:
            ax.set_xticks(range(c), labels=list(classes), rotation=90, fontsize=8)
            ax.set_yticks(range(c), labels=list(classes), fontsize=8)
        if c <= 30:
            for i in range(c):
                for j in range(c):
                    if counts[i, j]:
                        ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                                color="white" if rows[i, j] > 0.5 else "black")
        fig.tight_layout()
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def evaluate_classifier(model: torch.nn.Module, split: LabelledSplit, settings: ViewSettings, *, batch_size: int = 16,
                        decode_workers: int = 1, bf16: bool = False, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """:func:`compute_metrics` of a classifier (``model(clips) -> logits``, in eval mode) on ``split``: each video's
    ``settings`` views (:func:`~.features.video_views`), softmax averaged; process ``rank`` of ``world`` takes
    every ``world``-th video and the rows are gathered. Videos that fail to decode are skipped and listed in
    ``metrics["skipped_videos"]``; :class:`~.data.FinetuneError` when none decodes."""
    mine = list(range(rank, len(split), world))
    device = next(model.parameters()).device
    rows: list[tuple[int, torch.Tensor]] = []
    failed: list[tuple[str, str]] = []
    work = [split.paths[i] for i in mine]
    for i, (path, views) in zip(mine, prefetched(work, lambda p: video_views(p, model.preprocess, settings),
                                                   decode_workers), strict=True):
        if isinstance(views, Exception):
            log.warning("validation: skipping %s: %s", path, " ".join(str(views).split()))
            failed.append((str(path), f"{type(views).__name__}: {views}"))
            continue
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = torch.cat([model(chunk.to(device)) for chunk in views.split(batch_size)])
        rows.append((i, logits.float().softmax(dim=-1).mean(dim=0).cpu()))
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (rows, failed))
        rows = [r for part in gathered for r in part[0]]
        failed = [f for part in gathered for f in part[1]]
    if not rows:
        raise FinetuneError(f"none of the {len(split)} validation videos decoded (first failure: "
                            f"{failed[0] if failed else 'none'}); check the validation split")
    rows.sort(key=lambda r: r[0])
    scores = torch.stack([s for _, s in rows])
    labels = torch.tensor([split.labels[i] for i, _ in rows])
    metrics = compute_metrics(scores, labels, split.classes)
    metrics["skipped_videos"] = {"val": len(failed), "val_paths": failed}
    return metrics
