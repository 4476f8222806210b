"""The localization task model: both heads, load(task="localization"), checkpoints, whole-frame clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from constcl_zoo import load
from constcl_zoo.nn.layers import roi_align
from constcl_zoo.tasks.base import TaskConfigError
from constcl_zoo.tasks.localization import ActionLocalizer, ActionTransformerHead, RoiActionHead, TxUnit

ARCH = "constcl_r3d14_w16"
LABELS = ["walk", "run", "jump"]


def _model(**head) -> ActionLocalizer:
    torch.manual_seed(0)
    return load(ARCH, task="localization", labels=LABELS, head=head or None, pretrained=False)


def _inputs(b: int = 2, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    clip = torch.rand(b, 3, 8, 64, 96, generator=g) * 2 - 1
    xy = torch.rand(b, n, 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + 0.2 + torch.rand(b, n, 2, generator=g) * 0.3], -1)
    return clip, boxes


def test_transformer_head_structure_and_shapes() -> None:
    model = _model()
    assert isinstance(model, ActionLocalizer) and model.config.encoder_branch == "region"
    head = model.head
    assert isinstance(head, ActionTransformerHead)
    assert len(head.layers) == 3 and all(isinstance(u, TxUnit) and u.num_heads == 2 for u in head.layers)
    assert head.layers[0].q.in_features == 128 and head.fc.in_features == 128
    clip, boxes = _inputs()
    with torch.no_grad():
        logits = model(clip, boxes)
    assert logits.shape == (2, 3, 3)
    with torch.no_grad():  # any number of boxes; each person's scores do not depend on the others
        one = model(clip, boxes[:, :1])
    torch.testing.assert_close(one, logits[:, :1], rtol=1e-5, atol=1e-5)


def test_tx_unit_is_attention_dropout_residual_norm_ffn_residual_norm() -> None:
    torch.manual_seed(0)
    unit = TxUnit(8, 2, 0.0).eval()
    q, mem = torch.randn(1, 2, 8), torch.randn(1, 5, 8)
    qh = unit.q(q).reshape(1, 2, 2, 4).transpose(1, 2)
    kh = unit.k(mem).reshape(1, 5, 2, 4).transpose(1, 2)
    vh = unit.v(mem).reshape(1, 5, 2, 4).transpose(1, 2)
    att = torch.softmax(qh @ kh.transpose(-1, -2) / 2.0, -1) @ vh
    x = torch.nn.functional.layer_norm(q + att.transpose(1, 2).reshape(1, 2, 8), (8,))
    y = torch.nn.functional.layer_norm(x + unit.ffn2(torch.relu(unit.ffn1(x))), (8,))
    torch.testing.assert_close(unit(q, mem), y)


def test_roi_head_is_slowfast_pooling() -> None:
    model = _model(type="roi").eval()
    assert isinstance(model.head, RoiActionHead) and model.head.dropout.p == 0.5
    clip, boxes = _inputs()
    with torch.no_grad():
        feats = model.forward_features(clip)
        expected = model.head.fc(roi_align(feats.mean(2), boxes, 7).amax(dim=(-2, -1)))
        torch.testing.assert_close(model(clip, boxes), expected)


def test_global_branch_and_checkpoint_round_trip(tmp_path) -> None:
    model = load(ARCH, task="localization", labels=LABELS, branch="global", pretrained=False,
                 head={"label_ids": [3, 7, 11], "num_frames": 4, "short_side": 96})
    assert model.config.encoder_branch == "global" and model.label_ids == (3, 7, 11)
    clip, boxes = _inputs()
    with torch.no_grad():
        before = model(clip, boxes)
    model.save_pretrained(tmp_path / "ckpt")
    again = load(tmp_path / "ckpt")
    assert isinstance(again, ActionLocalizer) and again.labels == tuple(LABELS)
    assert again.config.head == model.config.head
    with torch.no_grad():
        torch.testing.assert_close(again(clip, boxes), before)
    pre = again.clip_preprocess
    assert (pre.cfg.num_frames, pre.cfg.resize_short_side) == (4, 96)
    frames = np.zeros((4, 120, 200, 3), np.uint8)
    assert pre(frames, crop=False).shape == (3, 4, 96, 160)  # whole frame, short side 96
    assert pre(frames).shape == (3, 4, 96, 96)  # the default centre crop is unchanged


def test_seeded_heads_and_errors() -> None:
    a, b = _model(), _model()
    for (name, p), q in zip(a.head.state_dict().items(), b.head.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
    with pytest.raises(TaskConfigError, match="label_ids"):
        load(ARCH, task="localization", labels=LABELS, head={"label_ids": [1, 2]}, pretrained=False)
    with pytest.raises(TaskConfigError, match="needs labels"):
        load(ARCH, task="localization", pretrained=False)
    with pytest.raises(TaskConfigError, match="divisible"):
        load(ARCH, task="localization", labels=LABELS, head={"dim": 9}, pretrained=False)
    clip, _ = _inputs()
    with pytest.raises(ValueError, match="outside"):
        a(clip, torch.full((2, 1, 4), 3.0))
