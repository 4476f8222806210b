"""Multi-view crops, clip sampling and the cached feature extraction of the recognition probe."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from constcl_zoo import PreprocessConfig, load
from constcl_zoo.nn.preprocess import ClipPreprocess, spatial_views
from training.tasks.recognition import features as feats
from training.tasks.recognition.data import folder_split
from training.tasks.recognition.features import (
    FeatureError,
    ViewSettings,
    clip_frame_indices,
    extract_features,
    video_views,
)

from .conftest import TINY
from .recognition_data import make_segments, require_videos, write_video


# -- spatial views ---------------------------------------------------------------------------------------------
def _gradient(h: int, w: int, t: int = 3) -> np.ndarray:
    """Smooth frames whose colour encodes the position (a misplaced crop changes the values)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / (w - 1), yy * 255 / (h - 1), (xx + yy) * 255 / (h + w - 2)], -1)
    return np.repeat(img.astype(np.uint8)[None], t, 0)


def _reference_views(pre: ClipPreprocess, frames: np.ndarray, crops: int) -> torch.Tensor:
    """Resize the whole frames (short side), then crop along the long side: the textbook definition."""
    h, w = frames.shape[1:3]
    out_h, out_w = pre.output_size(h, w)
    x = F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(out_h, out_w),
                      mode="bilinear", antialias=True, align_corners=False)
    c = pre.cfg.crop_size
    views = []
    for i in range(crops):
        if out_w >= out_h:
            top, left = (out_h - c) // 2, i * (out_w - c) // max(1, crops - 1)
        else:
            top, left = i * (out_h - c) // max(1, crops - 1), (out_w - c) // 2
        views.append(x[:, :, top:top + c, left:left + c].permute(1, 0, 2, 3) / 127.5 - 1)
    return torch.stack(views)


@pytest.mark.parametrize(("h", "w"), [(240, 320), (320, 180)])
def test_spatial_views_are_crops_along_the_long_side(h, w):
    pre = ClipPreprocess(PreprocessConfig(num_frames=3, crop_size=112, resize_short_side=128))
    frames = _gradient(h, w)
    views = spatial_views(pre, frames, crops=3)
    assert views.shape == (3, 3, 3, 112, 112)
    ref = _reference_views(pre, frames, 3)
    # views are cut on whole source pixels: within half a crop pixel of the gradient's step (~0.016 a pixel)
    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return bool((a - b).abs().mean() < 0.008 and (a - b).abs().max() < 0.05)

    assert close(views, ref)
    # the three views really are different places: first and last touch opposite edges
    axis = 0 if w > h else 1  # channel 0 grows with x, channel 1 with y
    means = [float(v[axis].mean()) for v in views]
    assert means[0] < means[1] < means[2]
    # the centre view is the package's own centre crop
    assert close(views[1], pre(frames)) and close(spatial_views(pre, frames, crops=1)[0], pre(frames))


def test_spatial_views_reject_bad_input():
    pre = ClipPreprocess(PreprocessConfig(crop_size=32, resize_short_side=32))
    with pytest.raises(ValueError, match="crops must be a positive integer"):
        spatial_views(pre, _gradient(40, 50), crops=0)
    with pytest.raises(ValueError, match=r"one clip \[T, H, W, 3\]"):
        spatial_views(pre, _gradient(40, 50)[None], crops=3)
    with pytest.raises(TypeError, match="uint8"):
        spatial_views(pre, _gradient(40, 50).astype(np.float32), crops=3)


# -- temporal sampling ----------------------------------------------------------------------------------------
def test_clip_frame_indices_spread_over_the_whole_video():
    clips = clip_frame_indices(100, num_frames=8, frame_stride=2, clips=3)
    assert [c[0] for c in clips] == [0, 42, 85] and clips[-1][-1] == 99
    assert all(np.diff(c).tolist() == [2] * 7 for c in clips)
    assert clip_frame_indices(100, 8, 2, clips=1) == [list(range(42, 57, 2))]  # the centre window
    # shorter than one window: the last frame repeats
    assert clip_frame_indices(5, 4, 2, clips=2) == [[0, 2, 4, 4], [0, 2, 4, 4]]
    with pytest.raises(FeatureError, match="clips must be a positive integer"):
        ViewSettings(clips=0)


# -- extraction and cache -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = make_segments(tmp_path_factory.mktemp("segments"), segments=2, seg_len=8, sources=2)
    return folder_split(root / "train", "train")


@pytest.fixture(scope="module")
def model():
    return load(TINY, pretrained=False, seed=1)


def test_views_of_a_video_follow_the_sampling(tmp_path, model):
    src = require_videos()[0]
    from constcl_zoo.inference.video import iter_video_file

    frames = [f.rgb for _, f in zip(range(40), iter_video_file(src), strict=False)]
    path = write_video(tmp_path / "long.mp4", frames)
    views = video_views(path, model.preprocess, ViewSettings(clips=2, crops=3))
    assert views.shape == (6, 3, 8, 112, 112)
    decoded = [f.rgb for f in iter_video_file(path)]
    for k, clip in enumerate(clip_frame_indices(len(decoded), 8, 2, 2)):  # clip-major: clip k, crops 0..2
        expected = spatial_views(model.preprocess, np.stack([decoded[i] for i in clip]), crops=3)
        torch.testing.assert_close(views[3 * k:3 * k + 3], expected, atol=1e-5, rtol=0)
    assert not torch.equal(views[0], views[3])  # the two windows are different frames


def test_features_are_the_encoder_of_each_view_and_are_cached(tmp_path, tiny_set, model, monkeypatch):
    settings = ViewSettings(clips=1, crops=3)
    out = extract_features(model, tiny_set, settings, cache_dir=tmp_path, batch_size=2, progress=False)
    assert out.features.shape == (len(tiny_set), 3, 512)
    assert out.labels.tolist() == list(tiny_set.labels)
    assert out.paths == tuple(str(p) for p in tiny_set.paths)
    with torch.inference_mode():
        expected = model(video_views(tiny_set.paths[0], model.preprocess, settings))
    torch.testing.assert_close(out.features[0], expected, atol=1e-5, rtol=1e-5)
    assert out.cache_file is not None and out.cache_file.parent == tmp_path
    inline = extract_features(model, tiny_set, settings, cache_dir=tmp_path / "inline", decode_workers=0,
                              progress=False)  # decoding in this thread instead of ahead in a thread
    torch.testing.assert_close(inline.features, out.features, atol=1e-6, rtol=0)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the features are cached")

    monkeypatch.setattr(feats, "video_views", no_decoding)
    again = extract_features(model, tiny_set, settings, cache_dir=tmp_path, progress=False)
    assert torch.equal(again.features, out.features) and again.cache_file == out.cache_file
    assert again.labels.tolist() == out.labels.tolist() and again.fingerprint == out.fingerprint
    # other views, other weights or a changed video: another fingerprint, so extraction runs again
    with pytest.raises(AssertionError, match="decoded although"):
        extract_features(model, tiny_set, ViewSettings(clips=2, crops=3), cache_dir=tmp_path, progress=False)
    other = load(TINY, pretrained=False, seed=2)
    with pytest.raises(AssertionError, match="decoded although"):
        extract_features(other, tiny_set, settings, cache_dir=tmp_path, progress=False)
    stat = tiny_set.paths[0].stat()
    os.utime(tiny_set.paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded although"):
        extract_features(model, tiny_set, settings, cache_dir=tmp_path, progress=False)


def test_unreadable_videos_are_skipped_and_counted(tmp_path, tiny_set, model, caplog):
    bad = tmp_path / "videos" / "broken.mp4"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00not a video" * 100)
    split = type(tiny_set)("train", (*tiny_set.paths, bad), (*tiny_set.labels, 0), tiny_set.classes)
    with caplog.at_level(logging.WARNING):
        out = extract_features(model, split, ViewSettings(), cache_dir=tmp_path / "cache", progress=False)
    assert out.features.shape[0] == len(tiny_set)
    assert [p for p, _ in out.skipped] == [str(bad)] and "VideoDecodeError" in out.skipped[0][1]
    assert "broken.mp4" in caplog.text
    cached = extract_features(model, split, ViewSettings(), cache_dir=tmp_path / "cache", progress=False)
    assert cached.skipped == out.skipped and torch.equal(cached.features, out.features)

    only_bad = type(tiny_set)("bad", (bad,), (0,), tiny_set.classes)
    with pytest.raises(FeatureError, match="none of its 1 videos decoded"):
        extract_features(model, only_bad, ViewSettings(), cache_dir=tmp_path / "cache", progress=False)


def test_features_need_the_global_branch(tmp_path, tiny_set):
    region = load(TINY, branch="region", pretrained=False)
    with pytest.raises(FeatureError, match="branch='global'"):
        extract_features(region, tiny_set, ViewSettings(), cache_dir=tmp_path, progress=False)
