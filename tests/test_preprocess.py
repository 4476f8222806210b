from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from constcl_zoo import ClipPreprocess, PreprocessConfig, load
from constcl_zoo.inference.video import FrameSizeError, iter_video_file

from .conftest import SHARED, TINY
from .test_embed import write_video

VIDEOS = SHARED / "data" / "videos"


def resize_then_crop(pre: ClipPreprocess, frames: np.ndarray) -> torch.Tensor:
    """The reference: F.interpolate over the whole frame, then the centre crop (what ClipPreprocess did before
    it learned to crop first)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    out_h, out_w = pre.output_size(*frames.shape[1:3])
    if (out_h, out_w) != frames.shape[1:3]:
        x = F.interpolate(x, size=(out_h, out_w), mode=pre.cfg.interpolation, align_corners=False, antialias=True)
    crop = pre.cfg.crop_size
    top, left = (out_h - crop) // 2, (out_w - crop) // 2
    lo, hi = pre.cfg.value_range
    x = x[:, :, top:top + crop, left:left + crop].clamp(0, 255) * ((hi - lo) / 255.0) + lo
    return x.permute(1, 0, 2, 3)


def test_model_carries_its_preprocessing():
    model = load(TINY, pretrained=False)
    frames = np.random.default_rng(0).integers(0, 256, size=(8, 240, 320, 3), dtype=np.uint8)
    clip = model.preprocess(frames)
    assert clip.shape == (3, 8, 112, 112) and clip.dtype == torch.float32
    assert -1.0 <= clip.min() and clip.max() <= 1.0
    with torch.no_grad():
        assert model(clip[None]).shape == (1, 512)
    assert "crop_size=112" in repr(model.preprocess)


def test_value_range_and_centre_crop_without_resize():
    pre = ClipPreprocess(PreprocessConfig(crop_size=4, resize_short_side=4))
    frames = np.zeros((2, 4, 10, 3), dtype=np.uint8)
    frames[..., 3:, :] = 255  # columns 3.. white
    frames[..., 7:, 1] = 0  # columns 7.. magenta
    clip = pre(frames)  # crop columns 3..6
    assert clip.shape == (3, 2, 4, 4)
    torch.testing.assert_close(clip[:, :, :, :], torch.ones(3, 2, 4, 4))
    frames[..., 3, 0] = 0
    clip = pre(torch.from_numpy(frames))
    assert clip[0, 0, 0, 0] == -1.0 and clip[1, 0, 0, 0] == 1.0


def test_short_side_resize_keeps_aspect_and_is_batched():
    pre = ClipPreprocess(PreprocessConfig(crop_size=112, resize_short_side=128))
    assert pre.output_size(360, 480) == (128, 171)
    assert pre.output_size(480, 360) == (171, 128)
    frames = torch.full((2, 3, 360, 480, 3), 51, dtype=torch.uint8)
    clip = pre(frames)
    assert clip.shape == (2, 3, 3, 112, 112)
    torch.testing.assert_close(clip, torch.full_like(clip, 51 / 255 * 2 - 1))
    assert pre.frame_indices(10)[:3] == [10, 12, 14] and pre.clip_span == 31


@pytest.mark.parametrize(
    ("frames", "error", "match"),
    [
        (np.zeros((8, 32, 32, 3), dtype=np.float32), TypeError, "uint8"),
        (np.zeros((8, 32, 32), dtype=np.uint8), ValueError, r"\[T, H, W, 3\]"),
        (np.zeros((8, 3, 32, 32), dtype=np.uint8), ValueError, r"got shape \(8, 3, 32, 32\)"),
        (np.zeros((0, 32, 32, 3), dtype=np.uint8), ValueError, "empty"),
        ([[1, 2, 3]], TypeError, "numpy array or torch tensor"),
    ],
)
def test_bad_frames(frames, error, match):
    pre = ClipPreprocess(PreprocessConfig())
    with pytest.raises(error, match=match):
        pre(frames)


def test_crop_larger_than_resize_is_rejected():
    with pytest.raises(ValueError, match="resize_short_side"):
        ClipPreprocess(PreprocessConfig(crop_size=224, resize_short_side=200))


CONFIGS = [PreprocessConfig(), PreprocessConfig(crop_size=112, resize_short_side=128),
           PreprocessConfig(crop_size=112, resize_short_side=112, interpolation="bicubic")]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["224", "128-112", "bicubic"])
def test_crop_first_equals_resize_then_crop_on_real_frames(cfg):
    if not VIDEOS.is_dir():
        pytest.skip(f"real test videos not found at {VIDEOS}")
    pre = ClipPreprocess(cfg)
    for video in sorted(VIDEOS.iterdir()):
        frames = np.stack([f.rgb for f, _ in zip(iter_video_file(video), range(3), strict=False)])
        torch.testing.assert_close(pre(frames), resize_then_crop(pre, frames), atol=1e-4, rtol=0,
                                   msg=lambda m, v=video: f"{v.name}: {m}")


@pytest.mark.parametrize(("h", "w"), [(2, 3), (5, 40), (113, 112), (128, 171), (300, 299), (97, 970), (969, 97)])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_crop_first_equals_resize_then_crop_up_and_down(h, w, interpolation):
    pre = ClipPreprocess(PreprocessConfig(crop_size=112, resize_short_side=128, interpolation=interpolation))
    frames = np.random.default_rng(h * w).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    torch.testing.assert_close(pre(frames), resize_then_crop(pre, frames), atol=1e-4, rtol=0)


def test_absurd_frames_are_refused_naming_the_size():
    pre = ClipPreprocess(PreprocessConfig())
    with pytest.raises(FrameSizeError, match=r"frames \[1, 2, 30000, 3\]: frame size 30000x2 .*aspect ratio"):
        pre(np.zeros((1, 2, 30000, 3), np.uint8))
    with pytest.raises(FrameSizeError, match="a side over 8192 px"):
        pre(torch.zeros((1, 1, 1, 3), dtype=torch.uint8).expand(1, 8200, 8200, 3))  # refused before any copy
    with pytest.raises(FrameSizeError, match="over 35389440 pixels"):
        pre(torch.zeros((1, 1, 1, 3), dtype=torch.uint8).expand(1, 6000, 8000, 3))
    pre(np.zeros((1, 20, 200, 3), np.uint8))  # 10:1 is still accepted


def test_hostile_video_is_refused_before_decoding_to_rgb(tmp_path):
    """A 30000x2 MJPEG (a few KB on disk) gets a clear error from model.embed, not gigabytes of buffers."""
    video = write_video(tmp_path / "wide.avi", np.zeros((4, 2, 30000, 3), np.uint8))
    assert video.stat().st_size < 100_000
    model = load(TINY, pretrained=False)
    with pytest.raises(FrameSizeError, match=r"wide\.avi: video stream: frame size 30000x2"):
        model.embed(video)


def test_crop_first_bounds_memory_of_a_wide_frame():
    """With the limits lifted, a 2x30000 frame (resized whole: 3 x 224 x 3.36M floats, 9 GB) preprocesses in a
    process whose address space may grow by only 1 GB."""
    script = textwrap.dedent("""
        import resource, numpy as np, torch
        from constcl_zoo import ClipPreprocess, PreprocessConfig
        from constcl_zoo.inference import video
        video.MAX_FRAME_SIDE = video.MAX_FRAME_PIXELS = video.MAX_ASPECT_RATIO = 10**9
        pre = ClipPreprocess(PreprocessConfig())
        pre(np.zeros((1, 64, 64, 3), np.uint8))  # import-time and first-call allocations happen before the cap
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.RLIM_INFINITY))
        frame = np.random.default_rng(0).integers(0, 256, (1, 2, 30000, 3), dtype=np.uint8)
        print(tuple(pre(frame).shape))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(3, 1, 224, 224)"
