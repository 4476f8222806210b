"""Classification metrics of a recognition run: top-1, top-5, per-class accuracy, confusion matrix (JSON + PNG)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from constcl_zoo.errors import ConstclZooError
from constcl_zoo.fileio import atomic_write


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
