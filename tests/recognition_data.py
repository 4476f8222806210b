"""A small labelled video set cut from the real videos in ../shared/data/videos, for the recognition tests.

Class = the source video; each source gives ``segments`` consecutive ``seg_len``-frame segments written as their
own small videos (160x120 MPEG-4); segment ``s`` goes to ``val`` when ``s % 3 == 1``, else to ``train``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from .conftest import SHARED

VIDEOS = SHARED / "data" / "videos"


def require_videos() -> list[Path]:
    if not VIDEOS.is_dir():
        pytest.skip(f"real videos not found at {VIDEOS} (../shared/data is not beside this checkout)")
    return sorted(p for p in VIDEOS.iterdir() if p.is_file())


def write_video(path: Path, frames: list, size: tuple[int, int] = (160, 120), rate: int = 25) -> Path:
    """Encode uint8 RGB frames ``[H, W, 3]`` to ``path`` (MPEG-4), resized to ``size`` (width, height)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(width=size[0], height=size[1])
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_segments(root: Path, segments: int = 8, seg_len: int = 8, sources: int | None = None) -> Path:
    """``root/{train,val}/<source>/<source>_<s>.mp4``; returns ``root``."""
    from constcl_zoo.inference.video import iter_video_file

    for src in require_videos()[:sources]:
        frames = [f.rgb for f in itertools.islice(iter_video_file(src), seg_len * segments)]
        assert len(frames) == seg_len * segments, f"{src} decodes fewer than {seg_len * segments} frames"
        for s in range(segments):
            split = "val" if s % 3 == 1 else "train"
            write_video(root / split / src.stem / f"{src.stem}_{s}.mp4", frames[s * seg_len:(s + 1) * seg_len])
    return root
