"""Annotated MP4 writing (constcl_zoo.inference.visualize): H.264, browser-safe, decodable, atomic."""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av", reason="the `video` extra (PyAV) is not installed")

from constcl_zoo.inference.visualize import Mp4Writer, VideoWriteError, draw_box  # noqa: E402


def test_h264_mp4_round_trip(tmp_path) -> None:
    frames = []
    for i in range(12):
        frame = np.full((61, 81, 3), 40, np.uint8)  # odd size: padded to even for yuv420p
        draw_box(frame, (10 + i, 10, 40 + i, 40), label=f"obj {i}")
        frames.append(frame)
    out = tmp_path / "a.mp4"
    with Mp4Writer(out, fps=12.5) as writer:
        for frame in frames:
            writer.write(frame)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(12.5)
    assert len(decoded) == 12 and decoded[0].shape == (62, 82, 3)
    # the drawn box is there (lossy codec: compare coarsely against the undrawn background)
    assert np.abs(decoded[5][:61, :81].astype(int) - frames[5].astype(int)).mean() < 6
    assert not list(tmp_path.glob(".*partial*"))


def test_bad_frames_leave_no_file(tmp_path) -> None:
    out = tmp_path / "b.mp4"
    with pytest.raises(VideoWriteError, match="frame 1 is 20x10"), Mp4Writer(out, fps=10) as writer:
        writer.write(np.zeros((8, 8, 3), np.uint8))
        writer.write(np.zeros((10, 20, 3), np.uint8))
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(VideoWriteError, match="no frames"), Mp4Writer(out, fps=10):
        pass
    with pytest.raises(VideoWriteError, match=r"uint8 \[H, W, 3\]"), Mp4Writer(out, fps=10) as writer:
        writer.write(np.zeros((8, 8), np.float32))
    with pytest.raises(VideoWriteError, match="fps"):
        Mp4Writer(out, fps=0)
