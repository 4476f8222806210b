"""SiamFC tracker: dilated backbone, head, tracking loop geometry, temporal windows, load(task="tracking")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from constcl_zoo import load
from constcl_zoo.nn.backbone import dilate_backbone
from constcl_zoo.nn.model import build_model
from constcl_zoo.registry import arch_config
from constcl_zoo.tasks.tracking import (
    SiamFC,
    SiamFCTracker,
    TrackerConfig,
    TrackerInputError,
    crop_and_resize,
    stage_time_slice,
)

SMALL = {"exemplar_size": 63, "search_size": 127}


@pytest.fixture(scope="module")
def tracker():
    torch.manual_seed(0)
    return load("constcl_r3d14_w16", task="tracking", pretrained=False, head=SMALL)


def test_dilated_backbone_keeps_weights_and_has_stride_8():
    enc = load("constcl_r3d14_w16", branch="region", pretrained=False)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    dilate_backbone(enc.backbone)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    dil = [b.spatial_conv.dilation[1] for s in ("res4", "res5_region") for b in getattr(enc.backbone, s)]
    assert dil == [1, 2]   # one block per stage: each the first of its stage, at half the dilation
    with torch.device("meta"):
        big = build_model(arch_config("constcl_r3d50"), "region")
    dilate_backbone(big.backbone)
    dil = [b.spatial_conv.dilation[1] for s in ("res4", "res5_region") for b in getattr(big.backbone, s)]
    assert dil == [1, 2, 2, 2, 2, 2, 2, 4, 4]
    assert all(b.spatial_conv.stride == (1, 1, 1) for b in big.backbone.res5_region)
    with torch.inference_mode():
        out = enc(torch.randn(1, 3, 5, 127, 127))
    assert out.shape == (1, 512, 3, 16, 16)


def test_dilated_same_padding_is_symmetric_dilation():
    from constcl_zoo.nn.layers import Conv3dSame

    conv = Conv3dSame(4, 4, (1, 3, 3))
    conv.dilation = (1, 2, 2)
    ref = nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 2, 2), dilation=(1, 2, 2), bias=False)
    ref.weight.data.copy_(conv.weight.data)
    x = torch.randn(1, 4, 2, 9, 10)
    torch.testing.assert_close(conv(x), ref(x))


def test_load_tracking_and_roundtrip(tracker, tmp_path):
    assert isinstance(tracker, SiamFCTracker) and tracker.config.encoder_branch == "region"
    assert tracker.tracker_config.exemplar_size == 63 and tracker.feature_stride == 8
    z, x = torch.randn(1, 3, 5, 63, 63), torch.randn(2, 3, 5, 127, 127)
    with torch.inference_mode():
        resp = tracker(z.expand(2, -1, -1, -1, -1), x)
    assert resp.shape == (2, 1, 9, 9)
    tracker.save_pretrained(tmp_path / "ckpt")
    again = load(str(tmp_path / "ckpt"))
    assert isinstance(again, SiamFCTracker) and again.tracker_config == tracker.tracker_config
    with torch.inference_mode():
        torch.testing.assert_close(again(z.expand(2, -1, -1, -1, -1), x), resp)
    glob = load("constcl_r3d14_w16", task="tracking", branch="global", pretrained=False, head=SMALL)
    assert glob.config.encoder_branch == "global"
    with torch.inference_mode():
        assert glob.features(z).shape == (1, 512, 8, 8)


def _moving_square(n=6, step=4, size=(96, 128)):
    frames = np.full((n, *size, 3), 40, dtype=np.uint8)
    boxes = []
    for i in range(n):
        x, y = 30 + step * i, 30
        frames[i, y:y + 24, x:x + 24] = (250, 60, 60)
        frames[i, y + 8:y + 16, x + 8:x + 16] = (20, 220, 20)
        boxes.append((x, y, 24, 24))
    return frames, np.array(boxes, dtype=float)


def test_track_api(tracker):
    frames, gt = _moving_square()
    result = tracker.track(frames, gt[0], precision="fp32")
    assert result.boxes.shape == (6, 4) and result.scores.shape == (6,) and result.fps > 0
    np.testing.assert_array_equal(result.boxes[0], gt[0])
    assert set(tracker.timing) == {"exemplar", "search", "pre_post"}
    tracker.init(frames[0], gt[0])
    box, score = tracker.update(frames[1])
    assert box.shape == (4,) and 0.0 <= score <= 1.0


@pytest.mark.parametrize("box, match", [((0, 0, 0, 10), "empty"), ((500, 500, 10, 10), "outside"),
                                        ((1, 2, 3), "4 finite"), ((np.nan, 0, 5, 5), "4 finite")])
def test_bad_boxes(tracker, box, match):
    frames, _ = _moving_square(2)
    with pytest.raises(TrackerInputError, match=match):
        tracker.init(frames[0], box)


def test_update_before_init_and_bad_frame():
    t = load("constcl_r3d14_w16", task="tracking", pretrained=False, head=SMALL)
    with pytest.raises(TrackerInputError, match="init"):
        t.update(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(TrackerInputError, match="uint8 RGB"):
        t.init(np.zeros((32, 32), np.float32), (1, 1, 5, 5))


def _fake_loop(cfg, peak_offset, calls):
    """A loop whose backend puts the response peak ``peak_offset`` cells (dx, dy) right/down of the centre at
    the unit scale, and records every call."""

    def exemplar(z):
        calls.append(("z", tuple(z.shape)))
        return "Z"

    def respond(state, x):
        calls.append(("x", tuple(x.shape)))
        r = torch.zeros(x.shape[0], 1, 17, 17)
        r[cfg.num_scales // 2, 0, 8 + peak_offset[1], 8 + peak_offset[0]] = 10.0
        return r

    return SiamFC(cfg, (-1.0, 1.0), 8, exemplar, respond)


def test_loop_geometry_scales_in_one_batch_and_exemplar_once():
    cfg = TrackerConfig(window_influence=0.0)
    calls = []
    loop = _fake_loop(cfg, (2, -1), calls)
    frame = np.zeros((200, 300, 3), np.uint8)
    loop.init(frame, (100, 80, 40, 20))
    box, score = loop.update(frame)
    # exemplar side sqrt((40+30)*(20+30)) ~ 59.2 px; search side = that * 255/127; a cell is 8 input px of 255
    z = np.sqrt(70 * 50)
    x = z * 255 / 127
    expected = np.array([2, -1]) * 8 * x / 255
    np.testing.assert_allclose(box[:2] + box[2:] / 2, np.array([120, 90]) + expected, atol=x / 255 * 8 / 16 + 1e-6)
    np.testing.assert_allclose(box[2:], [40, 20])
    assert score > 0.99
    loop.update(frame)
    assert [c[0] for c in calls] == ["z", "x", "x"]
    assert calls[0][1] == (1, 3, 5, 127, 127) and calls[1][1] == (3, 3, 5, 255, 255)


def test_a_runaway_target_stays_on_the_frame():
    """Responses that always peak at the top-left corner drag the target there, never beyond the frame; the crops
    keep the size they had."""
    cfg = TrackerConfig(window_influence=0.0, num_scales=1)
    loop = _fake_loop(cfg, (-8, -8), [])
    frame = np.zeros((120, 160, 3), np.uint8)
    loop.init(frame, (100, 70, 20, 30))
    x_size = loop._state["x_size"]
    for _ in range(20):
        box, _ = loop.update(frame)
        centre = box[:2] + box[2:] / 2
        assert (centre >= 0).all() and centre[0] <= 160 and centre[1] <= 120
    np.testing.assert_allclose(centre, [0.0, 0.0])
    np.testing.assert_allclose(box[2:], [20, 30])
    assert loop._state["x_size"] == pytest.approx(x_size)


def test_temporal_windows_edge_repeat_and_causal():
    tags = [torch.full((4, 4, 3), i, dtype=torch.uint8) for i in range(6)]
    cfg = TrackerConfig()
    loop = SiamFC(cfg, (0.0, 1.0), 8, None, None)
    for t in tags[:3]:
        loop._history.append(t)
    ids = lambda w: [int(f[0, 0, 0]) for f in w]  # noqa: E731
    assert ids(loop._window(tags[3], [tags[4]])) == [1, 2, 3, 4, 4]
    loop._history.clear()
    assert ids(loop._window(tags[0], [tags[1], tags[2]])) == [0, 0, 0, 1, 2]
    causal = SiamFC(TrackerConfig(causal=True), (0.0, 1.0), 8, None, None)
    causal._history.extend(tags[:2])
    assert ids(causal._window(tags[2], [tags[3]])) == [0, 0, 0, 1, 2]


def test_crop_pads_outside_with_color():
    frames = torch.full((1, 10, 10, 3), 200, dtype=torch.uint8)
    crop = crop_and_resize(frames, np.array([0.0, 0.0]), [10], 10, torch.tensor([1.0, 2.0, 3.0]))
    assert crop.shape == (1, 3, 1, 10, 10)
    assert crop[0, :, 0, 0, 0].tolist() == [1.0, 2.0, 3.0] and crop[0, 0, 0, -1, -1] == 200


def _reference_crop(frame, center, size, out, pad):
    """A straightforward sub-pixel crop: the frame on a canvas of the padding colour, output pixel ``u`` sampled
    (bilinear, float64) at ``x1 + (u + 0.5) * size / out - 0.5`` with ``x1 = cx - size / 2`` (pixel centres at
    integer + 0.5 in continuous coordinates, as ``F.interpolate(align_corners=False)``)."""
    margin = int(np.ceil(size)) + 2
    h, w = frame.shape[:2]
    canvas = np.empty((h + 2 * margin, w + 2 * margin, 3))
    canvas[:] = pad
    canvas[margin:margin + h, margin:margin + w] = frame
    s = size / out
    coords = lambda c: c - size / 2 + (np.arange(out) + 0.5) * s - 0.5 + margin  # noqa: E731
    xs, ys = coords(center[0]), coords(center[1])
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = (xs - x0)[None, :, None], (ys - y0)[:, None, None]
    g = lambda yy, xx: canvas[yy][:, xx]  # noqa: E731
    return ((1 - fy) * ((1 - fx) * g(y0, x0) + fx * g(y0, x0 + 1))
            + fy * ((1 - fx) * g(y0 + 1, x0) + fx * g(y0 + 1, x0 + 1)))


@pytest.mark.parametrize("center, size, out", [
    ((60.0, 40.0), 31.0, 31),      # inside, one output pixel per input pixel
    ((60.3, 40.7), 23.4, 31),      # inside, sub-pixel centre, upsampled
    ((57.25, 44.5), 70.0, 31),     # inside, sub-pixel, downsampled
    ((5.6, 3.2), 40.3, 27),        # partly outside (top-left): the padding colour blends in
    ((95.5, 70.9), 61.7, 33),      # partly outside (bottom-right)
    ((-10.0, 30.0), 30.0, 15),     # mostly outside
])
def test_crop_matches_padded_canvas_reference(center, size, out):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    frame = np.ascontiguousarray(np.repeat(np.repeat(frame[::4, ::4], 4, 0), 4, 1))  # smooth-ish
    pad = frame.reshape(-1, 3).mean(0)
    got = crop_and_resize([frame, frame[::-1].copy()], np.array(center), [size], out, torch.from_numpy(pad))
    assert got.shape == (1, 3, 2, out, out)
    for t, f in enumerate((frame, frame[::-1])):
        want = _reference_crop(f.astype(np.float64), np.array(center), size, out, pad)
        # cv2 samples at 1/32-pixel positions (<= 1/64 px off: <= 255/64 grey levels at a full-range step) and
        # rounds to uint8 (0.5): a half-pixel error would be ~100 at this frame's steps
        err = np.abs(got[0, :, t].permute(1, 2, 0).numpy() - want)
        assert err.max() <= 255 / 64 + 0.5 + 1e-6 and err.mean() < 0.6, (err.max(), err.mean())


def test_crop_aligned_equals_interpolated_padded_crop():
    """An integer-aligned crop equals F.interpolate(bilinear, align_corners=False) of the padded region (same
    sample points; upsampled, the outermost output ring reads the pixels just outside the region where
    F.interpolate repeats the region's edge)."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    pad = np.array([10.0, 20.0, 30.0])
    canvas = np.empty((50 + 40, 60 + 40, 3))
    canvas[:] = pad
    canvas[20:70, 20:80] = frame
    for (x1, y1, size), out in (((10, 5, 24), 24), ((-6, 30, 32), 16), ((40, -8, 30), 45)):
        region = torch.from_numpy(canvas[y1 + 20:y1 + 20 + size, x1 + 20:x1 + 20 + size]).permute(2, 0, 1)[None]
        want = F.interpolate(region, size=(out, out), mode="bilinear", align_corners=False)[0]
        got = crop_and_resize([frame], np.array([x1 + size / 2, y1 + size / 2]), [size], out, pad)[0, :, 0]
        ring = 1 if out > size else 0
        inner = (slice(None), slice(ring, out - ring), slice(ring, out - ring))
        assert (got.double() - want)[inner].abs().max() <= 255 / 64 + 0.5


def test_output_stage_runs_on_the_needed_time_slices_only():
    """stage_time_slice == the whole stage's slice within float rounding (the smaller convolutions may take another
    summation order: 4.8e-7 apart on AVX-512 CPUs), for the centre and every other slice (causal: the last), on a
    res5 of two temporal-kernel-3 blocks (the walk back widens the interval block by block)."""
    from constcl_zoo.config import BackboneConfig
    from constcl_zoo.nn.backbone import _stage

    torch.manual_seed(0)
    cfg = BackboneConfig(width=4, temporal_kernels=((1,), (1,), (3,), (3, 1, 3)))
    stage = _stage(cfg, 3, 64).eval()
    for m in stage.modules():
        if isinstance(m, nn.BatchNorm3d):
            nn.init.normal_(m.running_mean)
    x = torch.randn(2, 64, 5, 6, 6)
    with torch.inference_mode():
        full = stage(x)
        for t in range(5):
            torch.testing.assert_close(stage_time_slice(stage, x, t), full[:, :, t], rtol=1e-5, atol=1e-5)
    calls = []
    hooks = [b.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[2])) for b in stage]
    with torch.inference_mode():
        stage_time_slice(stage, x, 2)
        stage_time_slice(stage, x, 0)
    for h in hooks:
        h.remove()
    # slice 2: block 2 needs 1..3, block 1 (kernel 1) 1..3, block 0 0..4; slice 0: 0..1, 0..1, 0..2
    assert calls == [5, 3, 3, 3, 2, 2]


def test_tracker_features_equal_full_encoder_slice(tracker):
    x = torch.randn(2, 3, 5, 63, 63)
    with torch.inference_mode():
        full = tracker.encoder(x)
        torch.testing.assert_close(tracker.features(x), full[:, :, full.shape[2] // 2], rtol=0, atol=0)


def test_head_respond_equals_adjust_then_correlate():
    """respond (adjust_x folded into the exemplar, correlation as a GEMM) == adjust both sides, then a mean
    cross-correlation by convolution; shared exemplar (tracking) and pairs (training)."""
    from constcl_zoo.tasks.tracking import SiamFCHead

    torch.manual_seed(0)
    head = SiamFCHead(64, TrackerConfig(adjust_channels=32)).eval()
    for m in (head.adjust_x, head.adjust_z):
        nn.init.normal_(m.bias)
    nn.init.normal_(head.norm.running_mean)

    def reference(z, x):
        zf, xf = head.adjust_z(z), head.adjust_x(x)
        b, c, h, w = xf.shape
        zf = zf.expand(b, -1, -1, -1)
        out = F.conv2d(xf.reshape(1, b * c, h, w), zf, groups=b).reshape(b, 1, h - zf.shape[2] + 1, -1)
        return head.norm(out / (c * zf.shape[-2] * zf.shape[-1]))

    with torch.no_grad():
        for bz in (1, 3):
            z, x = torch.randn(bz, 64, 5, 6), torch.randn(3, 64, 13, 11)
            got = head(z, x)
            assert got.shape == (3, 1, 9, 6)
            torch.testing.assert_close(got, reference(z, x), rtol=1e-5, atol=1e-5)
