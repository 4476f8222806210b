"""model.embed(): sliding windows over whole videos, streaming decode, precision, clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from constcl_zoo import EmptyVideoError, VideoDecodeError, VideoTooShortError, WindowSpec, load
from constcl_zoo.inference.embed import iter_windows
from constcl_zoo.inference.precision import cpu_has_native_bf16, resolve_precision
from constcl_zoo.inference.video import Frame, iter_video_file

from .conftest import SHARED, TINY

VIDEOS = SHARED / "data" / "videos"


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    """Write uint8 RGB frames ``[T, H, W, 3]`` as an MJPEG AVI (intra-only, every frame decodes)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuvj420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def random_frames(t: int, h: int = 72, w: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def need_shared_videos() -> None:
    if not VIDEOS.is_dir():
        pytest.skip(f"real test videos not found at {VIDEOS} (the shared data folder beside the repository)")


@pytest.fixture(scope="module")
def tiny_global():
    return load(TINY, branch="global", pretrained=False, seed=1)


def test_window_spec_defaults_follow_the_weights(tiny_global):
    spec = WindowSpec.from_preprocess(tiny_global.preprocess)
    cfg = tiny_global.config.preprocess
    assert (spec.clip_frames, spec.frame_stride, spec.stride) == (cfg.num_frames, cfg.frame_stride,
                                                                  cfg.num_frames * cfg.frame_stride)
    assert spec.span == (cfg.num_frames - 1) * cfg.frame_stride + 1
    custom = WindowSpec(clip_frames=4, frame_stride=2, stride=3)
    # windows at 0, 3, 6, 9: frames 0,2,4,6 | 3,5,7,9 | 6,8,10,12 | 9,11,13,15; 1 is in none
    assert [i for i in range(13) if custom.needs(i)] == [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert not WindowSpec(clip_frames=2, frame_stride=3, stride=8).needs(1)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        WindowSpec(4, 2, 0)


def test_embed_array_equals_the_model_on_each_window(tiny_global):
    frames = random_frames(47)
    out = tiny_global.embed(frames, fps=10.0, batch_size=2, precision="fp32", stride=10)
    spec = out.spec  # 8 frames every 2: span 15; starts 0, 10, 20, 30 (40 + 15 > 47)
    assert out.start_frame.tolist() == [0, 10, 20, 30] and out.end_frame.tolist() == [14, 24, 34, 44]
    np.testing.assert_allclose(out.start_s, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(out.end_s, [1.5, 2.5, 3.5, 4.5])  # last frame's time + its duration
    assert out.num_frames == 47 and out.embeddings.shape == (4, 512)
    with torch.inference_mode():
        for k, start in enumerate(out.start_frame):
            clip = tiny_global.preprocess(frames[start:start + spec.span:spec.frame_stride])
            torch.testing.assert_close(out.embeddings[k], tiny_global(clip[None])[0], rtol=1e-5, atol=1e-5)


def test_region_embed_gives_dense_features():
    region = load(TINY, branch="region", pretrained=False)
    out = region.embed(random_frames(16), fps=25.0, precision="fp32")
    assert out.embeddings.shape == (1, 512, 4, 4, 4)
    with torch.inference_mode():
        ref = region(region.preprocess(random_frames(16)[0:15:2])[None])
    torch.testing.assert_close(out.embeddings, ref, rtol=1e-5, atol=1e-5)


def test_embed_real_video_trusts_decoded_frames(tiny_global):
    need_shared_videos()
    path = VIDEOS / "tree.avi"  # the header claims 444 frames; 68 decode
    out = tiny_global.embed(path, batch_size=3, precision="fp32")
    assert out.num_frames == 68
    spec = out.spec
    assert len(out) == (68 - spec.span) // spec.stride + 1
    assert out.source == str(path)
    # times are the container's presentation times: increasing, each window ends after it starts
    assert np.all(np.diff(out.start_s) > 0) and np.all(out.end_s > out.start_s)
    decoded = np.stack([f.rgb for f in iter_video_file(path)])
    again = tiny_global.embed(decoded, fps=15.0, batch_size=4, precision="fp32")
    torch.testing.assert_close(out.embeddings, again.embeddings, rtol=1e-5, atol=1e-5)


def test_decoding_is_streamed(tiny_global):
    """The producer is consumed lazily: when window k is ready, no frame beyond its last has been decoded."""
    produced = []

    def frames():
        for i in range(200):
            produced.append(i)
            yield Frame(i, i / 10, 0.1, np.zeros((40, 40, 3), np.uint8))

    spec = WindowSpec(clip_frames=8, frame_stride=2, stride=16)
    for k, window in enumerate(iter_windows(frames(), tiny_global.preprocess, spec, "<gen>")):
        assert window.end_frame == k * 16 + 14
        assert len(produced) == window.end_frame + 1


def test_auto_precision_matches_fp32(tiny_global):
    frames = random_frames(31, seed=2)
    ref = tiny_global.embed(frames, fps=10.0, precision="fp32").embeddings
    plan = resolve_precision("auto", "cpu")
    assert plan.dtype == ("bf16" if cpu_has_native_bf16() else "fp32") and plan.channels_last
    assert not resolve_precision("fp32", "cpu").channels_last
    model = load(TINY, branch="global", pretrained=False, seed=1)
    for precision in ("auto", "bf16"):  # bf16 forced: emulated where the CPU has no native bf16
        got = model.embed(frames, fps=10.0, precision=precision).embeddings
        assert torch.nn.functional.cosine_similarity(got, ref).min() >= 0.999, precision
    with pytest.raises(ValueError, match="precision must be one of"):
        model.embed(frames, fps=10.0, precision="fp16")


def test_short_video_names_file_and_frame(tiny_global, tmp_path):
    path = write_video(tmp_path / "short.avi", random_frames(9))
    with pytest.raises(VideoTooShortError, match=r"short\.avi: 9 decoded frame\(s\).*spans 15.*frame 8"):
        tiny_global.embed(path)


def test_corrupt_and_empty_videos_raise_clear_errors(tiny_global, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match=r"junk\.mp4"):
        tiny_global.embed(junk)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=r"empty\.avi"):
        tiny_global.embed(empty)
    audio_only = tmp_path / "audio.wav"
    _write_audio(audio_only)
    with pytest.raises(EmptyVideoError, match=r"audio\.wav: the file has no video stream"):
        tiny_global.embed(audio_only)
    with pytest.raises(FileNotFoundError, match="no video file at"):
        tiny_global.embed(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="needs fps > 0"):
        tiny_global.embed(random_frames(20))


def _write_audio(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_missing_pyav_says_which_extra(tiny_global, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'constcl-zoo\[video\]'"):
        tiny_global.embed(tmp_path / "any.mp4")
