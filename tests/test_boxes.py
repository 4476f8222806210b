"""Box formats and IoU (constcl_zoo.formats.boxes), against pixel masks."""

from __future__ import annotations

import numpy as np
import torch

from constcl_zoo.formats.boxes import box_area, box_iou, xywh_to_xyxy, xyxy_to_xywh


def _mask(box: np.ndarray, size: int = 40) -> np.ndarray:
    m = np.zeros((size, size), bool)
    x1, y1, x2, y2 = box.astype(int)
    m[y1:y2, x1:x2] = True
    return m


def test_iou_equals_mask_overlap() -> None:
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 40, (30, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1).astype(float)  # some empty ones too
    masks = [_mask(b) for b in boxes]
    expected = np.array([[(ma & mb).sum() / (ma | mb).sum() if (ma | mb).any() else 0.0 for mb in masks]
                         for ma in masks])
    np.testing.assert_allclose(box_iou(boxes, boxes), expected, atol=1e-12)
    np.testing.assert_allclose(box_iou(torch.tensor(boxes), torch.tensor(boxes)).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(box_iou(boxes[:10], boxes[10:20], pairwise=False),
                               np.diag(expected[:10, 10:20]), atol=1e-12)
    np.testing.assert_allclose(box_area(boxes), [m.sum() for m in masks])


def test_xywh_round_trip() -> None:
    xywh = np.array([[10.0, 20.0, 30.0, 5.0], [0.5, 0.25, 0.0, 1.0]])
    xyxy = xywh_to_xyxy(xywh)
    np.testing.assert_array_equal(xyxy, [[10, 20, 40, 25], [0.5, 0.25, 0.5, 1.25]])
    np.testing.assert_array_equal(xyxy_to_xywh(xyxy), xywh)
    assert torch.equal(xyxy_to_xywh(xywh_to_xyxy(torch.tensor(xywh))), torch.tensor(xywh))
