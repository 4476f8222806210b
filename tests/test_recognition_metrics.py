"""Recognition metrics: top-1, top-5, per-class accuracy, confusion matrix, and its PNG."""

from __future__ import annotations

import json

import pytest
import torch

from training.tasks.recognition.evaluate import MetricsError, compute_metrics, plot_confusion, write_metrics

CLASSES = ["a", "b", "c", "d", "e", "f", "g"]


def _scores(rankings: list[list[int]]) -> torch.Tensor:
    """Scores whose ranking of the classes is the given order (first = best)."""
    s = torch.zeros(len(rankings), len(CLASSES))
    for i, order in enumerate(rankings):
        for rank, cls in enumerate(order):
            s[i, cls] = len(CLASSES) - rank
    return s


def test_metrics_by_hand():
    scores = _scores([
        [0, 1, 2, 3, 4, 5, 6],  # label 0: top-1
        [1, 0, 2, 3, 4, 5, 6],  # label 0: top-2
        [2, 3, 4, 5, 6, 1, 0],  # label 0: rank 7, not in the top 5
        [1, 2, 3, 4, 5, 6, 0],  # label 1: top-1
        [0, 1, 2, 3, 4, 5, 6],  # label 2: rank 3
    ])
    labels = torch.tensor([0, 0, 0, 1, 2])
    m = compute_metrics(scores, labels, CLASSES)
    assert m["top1"] == pytest.approx(2 / 5)
    assert m["top5"] == pytest.approx(4 / 5) and m["top5_k"] == 5
    assert m["per_class_accuracy"] == {"a": pytest.approx(1 / 3), "b": 1.0, "c": 0.0, "d": None, "e": None,
                                       "f": None, "g": None}
    assert m["mean_class_accuracy"] == pytest.approx((1 / 3 + 1 + 0) / 3)  # classes without videos left out
    assert m["per_class_videos"]["a"] == 3
    cm = m["confusion_matrix"]
    assert cm[0][0] == 1 and cm[0][1] == 1 and cm[0][2] == 1 and cm[1][1] == 1 and cm[2][0] == 1
    assert sum(map(sum, cm)) == 5 and m["chance"] == pytest.approx(1 / 7)


def test_top5_with_fewer_classes_is_top_c():
    m = compute_metrics(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([0, 0]), ["x", "y"])
    assert m["top1"] == 0.5 and m["top5"] == 1.0 and m["top5_k"] == 2


def test_metrics_reject_mismatched_inputs():
    with pytest.raises(MetricsError, match=r"\[N, 7\]"):
        compute_metrics(torch.zeros(3, 6), torch.zeros(3, dtype=torch.long), CLASSES)
    with pytest.raises(MetricsError, match=r"labels must be \[3\]"):
        compute_metrics(torch.zeros(3, 7), torch.zeros(4, dtype=torch.long), CLASSES)


def test_json_and_png_are_written(tmp_path):
    m = compute_metrics(_scores([[0, 1, 2, 3, 4, 5, 6]] * 3), torch.tensor([0, 0, 1]), CLASSES)
    assert json.loads(write_metrics(m, tmp_path / "metrics.json").read_text()) == m
    png = plot_confusion(m["confusion_matrix"], CLASSES, tmp_path / "confusion.png", title="test")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] >= 300 and image.shape[1] >= 300
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file
