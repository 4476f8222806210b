"""TF-'same' padding and ROIAlign against references written independently of the implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from constcl_zoo.nn.layers import Conv3dSame, MaxPool3dSame, roi_align, roi_align_mean, same_padding


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (16, 5, 2, (1, 2)),  # stem, time
        (224, 7, 2, (2, 3)),  # stem, space
        (112, 3, 2, (0, 1)),  # stem max-pool 112 -> 56
        (56, 3, 2, (0, 1)),  # stride-2 3x3 conv 56 -> 28
        (14, 3, 2, (0, 1)),
        (8, 3, 1, (1, 1)),  # temporal kernel 3, stride 1
        (8, 1, 1, (0, 0)),
        (225, 7, 2, (3, 3)),  # odd sizes pad symmetrically
        (15, 5, 2, (2, 2)),
    ],
)
def test_same_padding_matches_spec(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def _tf_same_conv_reference(x: np.ndarray, w: np.ndarray, stride: tuple[int, int, int]) -> np.ndarray:
    """Direct loop over output positions using TF's definition: out = ceil(n/s), window start i*s - before."""
    size = x.shape[2:]
    cout, _, *kernel = w.shape
    out_size = [math.ceil(n / s) for n, s in zip(size, stride, strict=True)]
    before = [max((o - 1) * s + k - n, 0) // 2 for o, s, k, n in zip(out_size, stride, kernel, size, strict=True)]
    out = np.zeros((1, cout, *out_size))
    for idx in np.ndindex(*out_size):
        acc = np.zeros(cout)
        for kidx in np.ndindex(*kernel):
            pos = [i * s - b + k for i, s, b, k in zip(idx, stride, before, kidx, strict=True)]
            if all(0 <= p < n for p, n in zip(pos, size, strict=True)):
                acc += w[(slice(None), slice(None), *kidx)] @ x[(0, slice(None), *pos)]
        out[(0, slice(None), *idx)] = acc
    return out


@pytest.mark.parametrize(
    ("size", "kernel", "stride"),
    [((6, 9, 10), (5, 7, 7), (2, 2, 2)), ((5, 7, 7), (1, 3, 3), (1, 2, 2)), ((4, 8, 9), (3, 1, 1), (1, 1, 1))],
)
def test_conv3d_same_equals_explicit_tf_padding(size, kernel, stride):
    torch.manual_seed(0)
    conv = Conv3dSame(2, 3, kernel, stride).double()
    x = torch.randn(1, 2, *size, dtype=torch.float64)
    ref = _tf_same_conv_reference(x.numpy(), conv.weight.detach().numpy(), stride)
    np.testing.assert_allclose(conv(x).detach().numpy(), ref, rtol=1e-10, atol=1e-10)


def test_conv3d_same_is_not_symmetric_padding():
    """The stem at 16x224x224 must differ from a symmetric padding=(2, 3, 3) conv (the classic port bug)."""
    torch.manual_seed(0)
    conv = Conv3dSame(3, 4, (5, 7, 7), (2, 2, 2))
    x = torch.randn(1, 3, 16, 64, 64)
    sym = torch.nn.functional.conv3d(x, conv.weight, stride=2, padding=(2, 3, 3))
    ours = conv(x)
    assert ours.shape == sym.shape
    assert not torch.allclose(ours, sym)
    explicit = torch.nn.functional.conv3d(torch.nn.functional.pad(x, (2, 3, 2, 3, 1, 2)), conv.weight, stride=2)
    torch.testing.assert_close(ours, explicit)


def test_max_pool_same_ignores_padding():
    torch.manual_seed(0)
    x = -1.0 - torch.rand(1, 2, 3, 8, 8)  # all negative: zero padding would win the max
    pool = MaxPool3dSame((1, 3, 3), (1, 2, 2))
    out = pool(x)
    assert out.shape == (1, 2, 3, 4, 4)
    ref = torch.empty_like(out)
    for i in range(4):
        for j in range(4):
            # TF pads (0, 1): window rows 2i..2i+2 clipped to the input
            ref[..., i, j] = x[..., 2 * i:min(2 * i + 3, 8), 2 * j:min(2 * j + 3, 8)].amax(dim=(-2, -1))
    torch.testing.assert_close(out, ref)
    assert (out < 0).all()


def _official_roi_reference(feat: np.ndarray, box_yxyx: np.ndarray, crop: int, offset: float) -> np.ndarray:
    """Loops written from the TF Model Garden formula (boxes in feature-cell units, [y1, x1, y2, x2])."""
    c, h, w = feat.shape
    y1, x1, y2, x2 = box_yxyx
    out = np.zeros((c, crop, crop))
    for i in range(crop):
        y = y1 + (i + offset) * (y2 - y1) / crop
        ya = min(max(math.floor(y), 0), h - 1)
        yb = min(ya + 1, h - 1)
        ly = y - ya
        for j in range(crop):
            x = x1 + (j + offset) * (x2 - x1) / crop
            xa = min(max(math.floor(x), 0), w - 1)
            xb = min(xa + 1, w - 1)
            lx = x - xa
            out[:, i, j] = ((1 - ly) * (1 - lx) * feat[:, ya, xa] + (1 - ly) * lx * feat[:, ya, xb]
                            + ly * (1 - lx) * feat[:, yb, xa] + ly * lx * feat[:, yb, xb])
    return out


def test_roi_align_matches_official_formula():
    gen = torch.Generator().manual_seed(1)
    b, n, c, h, w = 2, 7, 5, 7, 9
    feats = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    xy1 = torch.rand(b, n, 2, generator=gen, dtype=torch.float64) * 0.8
    size = torch.rand(b, n, 2, generator=gen, dtype=torch.float64) * 0.5
    boxes = torch.cat([xy1, (xy1 + size).clamp(max=1.0)], dim=-1)
    boxes[0, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # whole frame: samples past the last cell
    boxes[0, 1] = torch.tensor([0.5, 0.5, 0.52, 0.53])  # narrower than one cell (no minimum size)
    boxes[1, 0] = torch.tensor([0.3, 0.6, 0.3, 0.6])  # empty box
    boxes[1, 1] = torch.tensor([0.95, 0.9, 1.0, 1.0])  # touching the corner
    ours = roi_align(feats, boxes, crop_size=4, sample_offset=0.5)
    assert ours.shape == (b, n, c, 4, 4)
    for bi in range(b):
        for ni in range(n):
            x1, y1, x2, y2 = boxes[bi, ni].tolist()
            ref = _official_roi_reference(feats[bi].numpy(), np.array([y1 * h, x1 * w, y2 * h, x2 * w]), 4, 0.5)
            np.testing.assert_allclose(ours[bi, ni].numpy(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(roi_align_mean(feats, boxes).numpy(), ours.mean(dim=(-2, -1)).numpy())


def test_roi_align_other_crop_and_offset():
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(1, 3, 5, 6, generator=gen, dtype=torch.float64)
    boxes = torch.tensor([[[0.1, 0.2, 0.7, 0.9]]], dtype=torch.float64)
    ours = roi_align(feats, boxes, crop_size=3, sample_offset=0.25)
    ref = _official_roi_reference(feats[0].numpy(), np.array([0.2 * 5, 0.1 * 6, 0.9 * 5, 0.7 * 6]), 3, 0.25)
    np.testing.assert_allclose(ours[0, 0].numpy(), ref, rtol=1e-12, atol=1e-12)


def test_roi_align_constant_feature_and_gradient():
    feats = torch.full((1, 2, 7, 7), 3.0, requires_grad=True)
    boxes = torch.tensor([[[0.1, 0.1, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0]]])
    out = roi_align_mean(feats, boxes)
    torch.testing.assert_close(out, torch.full((1, 2, 2), 3.0))
    out.sum().backward()
    assert feats.grad is not None and feats.grad.sum() > 0
