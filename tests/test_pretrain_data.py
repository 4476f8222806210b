"""Pretraining data: listing, frame-exact decoding, skipping bad videos, temporal sampling, augmentation, boxes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from constcl_zoo.formats.boxes import crop_boxes, hflip_boxes
from constcl_zoo.inference.clips import clip_indices
from training.data.augment import augment_view
from training.data.loader import StreamSampler
from training.data.videos import (
    FrameCache,
    VideoDecodeError,
    VideoEntry,
    VideoIndex,
    build_index,
    count_frames,
    list_videos,
    read_frames,
)
from training.pretrain.config import AugmentConfig, BoxConfig, cpu_smoke
from training.pretrain.dataset import PretrainDataset, views_first
from training.pretrain.regions import (
    detector_boxes,
    hog_person_boxes,
    random_boxes,
    random_boxes_official,
    segment_boxes,
    view_boxes,
)
from training.pretrain.sampling import pair_key_frames, sample_gap, sample_view_starts

from .conftest import SHARED

VIDEOS = SHARED / "data" / "videos"
needs_videos = pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"real videos not found at {VIDEOS} (../shared/data)")


# -- listing and decoding ---------------------------------------------------------------------------------------
def test_list_videos_folder_and_manifests(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.mp4", "a/b/y.AVI", "a/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_videos(tmp_path / "a", (".mp4", ".avi"))] == ["y.AVI", "x.mp4"]
    (tmp_path / "list.txt").write_text("# comment\na/x.mp4\n\n/abs/z.mp4\n")
    assert list_videos(tmp_path / "list.txt", ()) == [tmp_path / "a/x.mp4", Path("/abs/z.mp4")]
    (tmp_path / "m.csv").write_text("path,label\na/x.mp4,3\n")
    assert list_videos(tmp_path / "m.csv", ()) == [tmp_path / "a/x.mp4"]
    (tmp_path / "bad.csv").write_text("file\na.mp4\n")
    with pytest.raises(ValueError, match="'path' column"):
        list_videos(tmp_path / "bad.csv", ())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_videos(tmp_path / "missing", ())


@needs_videos
@pytest.mark.parametrize("decoder", ["opencv", "pyav"])
def test_frame_counts_come_from_decoding_not_headers(decoder):
    # tree.avi's header claims 444 frames; 68 decode.
    assert count_frames(VIDEOS / "tree.avi", decoder) == 68
    with pytest.raises(VideoDecodeError, match=r"tree\.avi: frame 70 requested"):
        read_frames(VIDEOS / "tree.avi", [3, 70], decoder)


@needs_videos
@pytest.mark.parametrize("decoder", ["opencv", "pyav"])
def test_read_frames_is_frame_exact(decoder):
    path = VIDEOS / "bikes.mp4"
    everything = read_frames(path, list(range(40)), decoder)
    picked = read_frames(path, [37, 5, 5, 20], decoder)
    np.testing.assert_array_equal(picked, everything[[37, 5, 5, 20]])
    assert picked.dtype == np.uint8 and picked.shape[-1] == 3
    small = read_frames(path, [5], decoder, short_side=64)
    assert min(small.shape[1:3]) == 64


@needs_videos
def test_opencv_and_pyav_agree_on_frame_indices():
    path = VIDEOS / "Megamind.avi"
    cv = read_frames(path, [100], "opencv")[0].astype(np.float32)
    av = read_frames(path, [99, 100, 101], "pyav").astype(np.float32)
    errors = [np.abs(cv - f).mean() for f in av]
    assert int(np.argmin(errors)) == 1, errors  # the same frame, not a neighbour
    assert errors[1] < 3.0


@needs_videos
def test_index_skips_and_counts_bad_videos(tmp_path, caplog):
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp_path / "empty.avi").write_bytes(b"")
    paths = [VIDEOS / "tree.avi", VIDEOS / "bikes.mp4", tmp_path / "garbage.mp4", tmp_path / "empty.avi",
             tmp_path / "gone.mp4"]
    with caplog.at_level(logging.WARNING):
        index = build_index(paths, min_frames=100, cache=tmp_path / "index.json")
    assert [(Path(e.path).name, e.num_frames) for e in index.entries] == [("bikes.mp4", 250)]
    assert set(map(lambda p: Path(p).name, index.skipped)) == {"tree.avi", "garbage.mp4", "empty.avi", "gone.mp4"}
    assert "too short: 68 decoded frames < 100" in index.skipped[str(VIDEOS / "tree.avi")]
    assert sum("skipping video" in r.message for r in caplog.records) == 4
    again = build_index(paths, min_frames=60, cache=tmp_path / "index.json")  # from the cache; tree.avi now fits
    assert sorted(Path(e.path).name for e in again.entries) == ["bikes.mp4", "tree.avi"]
    with pytest.raises(RuntimeError, match="no usable videos"):
        build_index([tmp_path / "empty.avi"], min_frames=1)


@needs_videos
@pytest.mark.parametrize("decoder", ["opencv", "pyav"])
def test_frame_cache_serves_the_decoded_frames(tmp_path, decoder):
    path = VIDEOS / "tree.avi"
    cache = FrameCache(tmp_path / "frames", short_side=48, decoder=decoder)
    want = read_frames(path, [0, 30, 67, 30], decoder, short_side=48)
    np.testing.assert_array_equal(cache.read(path, [0, 30, 67, 30]), want)
    files = list((tmp_path / "frames").glob("*.npy"))
    assert len(files) == 1 and len(cache.frames(path)) == 68  # every decoded frame, once (headers claim 444)
    assert not list((tmp_path / "frames").glob("*.tmp"))
    with pytest.raises(VideoDecodeError, match=r"tree\.avi: frame 68 requested"):
        cache.read(path, [68])
    # a new process reads the file, decodes nothing; another resolution is another file
    np.testing.assert_array_equal(FrameCache(tmp_path / "frames", 48, decoder).read(path, [67]), want[2:3])
    FrameCache(tmp_path / "frames", 32, decoder).frames(path)
    assert len(list((tmp_path / "frames").glob("*.npy"))) == 2


def test_frame_cache_refuses_an_unreadable_video(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError, match="garbage.mp4"):
        FrameCache(tmp_path / "frames", 48).frames(bad)
    assert not list(tmp_path.rglob("*.npy"))  # nothing half-written


@needs_videos
def test_index_and_dataset_read_through_the_frame_cache(tmp_path):
    cache = FrameCache(tmp_path / "frames", short_side=80)
    index = build_index([VIDEOS / "tree.avi", VIDEOS / "bikes.mp4"], min_frames=19, frame_cache=cache)
    assert sorted(e.num_frames for e in index.entries) == [68, 250]
    cfg = cpu_smoke().replace([f"data.videos={VIDEOS}", "data.decode_short_side=80"])
    cached, direct = PretrainDataset(index, cfg, 2, cache)[(3, 0)], PretrainDataset(index, cfg, 2)[(3, 0)]
    # the same sample (same frames, same randomness); decoders resize alike, so equal up to rounding of a few
    assert (cached["clips"] - direct["clips"]).abs().mean() < 0.02
    torch.testing.assert_close(cached["boxes"], direct["boxes"])


# -- temporal sampling ------------------------------------------------------------------------------------------
def test_gap_follows_the_linearly_decreasing_distribution():
    max_offset = 40
    u = (np.arange(200_000) + 0.5) / 200_000
    gaps = np.array([sample_gap(float(x), max_offset) for x in u[::10]])
    hist = np.bincount(gaps, minlength=max_offset) / len(gaps)
    expected = (max_offset - np.arange(max_offset) - 0.5) * 2 / max_offset**2  # density at bin centres
    assert gaps.min() == 0 and gaps.max() < max_offset
    np.testing.assert_allclose(hist[:max_offset - 2], expected[:max_offset - 2], atol=2.5e-3)
    assert hist[:10].sum() > 2 * hist[20:30].sum()


def test_view_starts_range_swap_and_wrap():
    rng = np.random.default_rng(0)
    pairs = [sample_view_starts(100, 16, 2, rng) for _ in range(2000)]
    assert all(0 <= s <= 100 - 31 for p in pairs for s in p)
    assert any(a > b for a, b in pairs) and any(a < b for a, b in pairs)  # randomly swapped
    short = [sample_view_starts(20, 16, 2, rng) for _ in range(200)]  # shorter than one clip: wraps
    assert all(0 <= s < 20 for p in short for s in p)
    assert clip_indices(15, 4, 2, 20, past_end="wrap") == [15, 17, 19, 1]


def test_key_frame_pairing():
    rng = np.random.default_rng(0)
    assert pair_key_frames("center", (0, 50), 8, 4, rng) == (4, 4)
    assert pair_key_frames("nearest", (0, 100), 8, 4, rng) == (7, 0)  # view a ends before view b starts
    assert pair_key_frames("nearest", (100, 0), 8, 4, rng) == (0, 7)
    assert pair_key_frames("nearest", (10, 10), 8, 4, rng) == (4, 4)  # identical views: the centre
    assert pair_key_frames("nearest", (0, 8), 8, 4, rng) == (4, 2)   # overlap: same time, nearest the centres
    draws = {pair_key_frames("random", (0, 0), 8, 4, rng) for _ in range(200)}
    assert len(draws) > 20 and all(0 <= i < 8 and 0 <= j < 8 for i, j in draws)
    with pytest.raises(ValueError, match="pairing"):
        pair_key_frames("middle", (0, 0), 8, 4, rng)


# -- augmentation and boxes -------------------------------------------------------------------------------------
def test_augmentation_is_identical_across_the_frames_of_a_view():
    rng = np.random.default_rng(3)
    frame = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    frames = np.repeat(frame[None], 6, axis=0)
    outs = set()
    for view in (0, 1):
        for _ in range(5):
            clip, _ = augment_view(frames, view, 48, AugmentConfig(), rng)
            assert clip.shape == (3, 6, 48, 48) and clip.dtype == torch.float32
            assert clip.min() >= -1 and clip.max() <= 1
            torch.testing.assert_close(clip, clip[:, :1].expand_as(clip), rtol=0, atol=0)
            outs.add(round(float(clip.mean()), 4))
    assert len(outs) == 10  # every draw differs


@pytest.mark.parametrize("seed", range(6))
def test_boxes_follow_crop_and_flip(seed):
    """A white rectangle drawn on the decoded frame lands where its transformed box says, in the augmented view."""
    h, w = 120, 160
    frame = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = 50, 30, 110, 90
    frame[y1:y2, x1:x2] = 255
    plain = AugmentConfig(jitter_p=0, grayscale_p=0, blur_p=(0, 0), solarize_p=(0, 0), crop_area=(0.6, 1.0))
    rng = np.random.default_rng(seed)
    clip, geometry = augment_view(frame[None].repeat(2, 0), 0, 64, plain, rng)
    box = crop_boxes(torch.tensor([[x1 / w, y1 / h, x2 / w, y2 / h]]), geometry.window)
    if geometry.flipped:
        box = hflip_boxes(box)
    bright = (clip[0, 0] > 0).nonzero()
    assert len(bright) > 0
    got = torch.tensor([bright[:, 1].min(), bright[:, 0].min(), bright[:, 1].max() + 1, bright[:, 0].max() + 1]) / 64
    torch.testing.assert_close(got.float(), box[0], atol=2.5 / 64, rtol=0)


def test_crop_and_flip_box_helpers():
    boxes = torch.tensor([[0.5, 0.5, 0.75, 1.0], [0.0, 0.0, 0.1, 0.1]])
    torch.testing.assert_close(crop_boxes(boxes, (0.5, 0.5, 1.0, 1.0)),
                               torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(hflip_boxes(boxes), torch.tensor([[0.25, 0.5, 0.5, 1.0], [0.9, 0.0, 1.0, 0.1]]))
    torch.testing.assert_close(hflip_boxes(hflip_boxes(boxes)), boxes)
    with pytest.raises(ValueError, match="empty"):
        crop_boxes(boxes, (0.5, 0.2, 0.5, 0.9))


def test_random_boxes_independent_and_official_diagonal():
    rng = np.random.default_rng(0)
    ours = random_boxes(64, rng)
    assert ((ours >= 0) & (ours <= 1)).all() and (ours[:, 2] > ours[:, 0]).all() and (ours[:, 3] > ours[:, 1]).all()
    assert not np.allclose(ours[:, 0], ours[:, 1])
    official = random_boxes_official(64, rng)
    np.testing.assert_array_equal(official[:, 0], official[:, 1])  # every box starts on the diagonal


@needs_videos
@pytest.mark.parametrize("method", ["slic", "felzenszwalb", "hog"])
def test_region_proposals_on_a_real_frame(method):
    frame = read_frames(VIDEOS / "vtest.avi", [100], "opencv")[0]
    cfg = BoxConfig(method=method, num_boxes=16 if method != "hog" else 4)
    rng = np.random.default_rng(0)
    from training.data.augment import ViewGeometry

    full = ViewGeometry((0.0, 0.0, 1.0, 1.0), False)
    boxes = view_boxes(cfg, frame, full, rng, video="vtest.avi", frame_index=100)
    assert boxes.shape == (cfg.num_boxes, 4)
    sizes = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert (sizes > 0).all()
    if method == "hog":  # pedestrians: tall boxes come first
        assert (boxes[0, 3] - boxes[0, 1]) * frame.shape[0] > (boxes[0, 2] - boxes[0, 0]) * frame.shape[1]
    else:  # 16 distinct regions that together cover most of the frame
        assert len({tuple(b) for b in boxes.tolist()}) == 16
    flipped = view_boxes(cfg, frame, ViewGeometry((0.0, 0.0, 1.0, 1.0), True), np.random.default_rng(0),
                         video="vtest.avi", frame_index=100)
    found = len(hog_person_boxes(frame, 4, 600)) if method == "hog" else len(segment_boxes(frame, method, 16, 128))
    assert found >= (1 if method == "hog" else 10)
    # Proposals follow the flip; the random boxes that fill up to num_boxes are drawn in the view directly.
    torch.testing.assert_close(flipped[:found], hflip_boxes(boxes[:found]))


def test_detector_file_boxes(tmp_path):
    (tmp_path / "clip.csv").write_text("frame,x1,y1,x2,y2,score\n10,0.1,0.1,0.3,0.5,0.2\n10,0.5,0.5,0.9,0.9,0.9\n"
                                       "40,0.0,0.0,1.0,1.0,1.0\n")
    got = detector_boxes("/videos/clip.mp4", 18, 4, str(tmp_path))
    np.testing.assert_allclose(got, [[0.5, 0.5, 0.9, 0.9], [0.1, 0.1, 0.3, 0.5]])  # frame 10 is nearest; by score
    cfg = BoxConfig(method="detector", num_boxes=3, detector_dir=str(tmp_path))
    from training.data.augment import ViewGeometry

    boxes = view_boxes(cfg, None, ViewGeometry((0.5, 0.5, 1.0, 1.0), False), np.random.default_rng(0),
                       video="/videos/clip.mp4", frame_index=18)
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 0.8, 0.8]))  # in the crop's coordinates
    assert boxes.shape == (3, 4)  # the box outside the crop and the missing one were replaced by random boxes
    (tmp_path / "bad.csv").write_text("frame,x1,y1,x2,y2\n3,0.5,0.1,0.2,0.4\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: box .* is not normalised"):
        detector_boxes("bad.avi", 3, 2, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no box file"):
        detector_boxes("other.avi", 3, 2, str(tmp_path))


# -- the dataset and the sample stream --------------------------------------------------------------------------
def test_stream_sampler_partitions_and_resumes():
    full = StreamSampler(5, 2, 0, 1, seed=1)
    it = iter(full)
    stream = [k for _ in range(6) for k in next(it)]
    assert [p for p, _ in stream] == list(range(12))
    assert sorted(v for _, v in stream[:5]) == list(range(5))  # one epoch is a permutation
    ranks = [iter(StreamSampler(5, 1, r, 2, seed=1)) for r in range(2)]
    interleaved = [k for _ in range(6) for r in ranks for k in next(r)]
    assert interleaved == stream
    resumed = iter(StreamSampler(5, 2, 0, 1, seed=1, start=3))
    assert [k for _ in range(3) for k in next(resumed)] == stream[6:]


@needs_videos
def test_dataset_samples_are_reproducible_and_replace_bad_videos(tmp_path):
    cfg = cpu_smoke().replace([f"data.videos={VIDEOS}", "boxes.method=slic", "boxes.num_boxes=16",
                               "data.key_frames=nearest"])
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    index = VideoIndex([VideoEntry(str(tmp_path / "broken.mp4"), 300), VideoEntry(str(VIDEOS / "bikes.mp4"), 250)],
                       {})
    ds = PretrainDataset(index, cfg, temporal_stride=2)
    a, b = ds[(7, 1)], ds[(7, 1)]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert a["clips"].shape == (2, 3, 8, 64, 64) and a["boxes"].shape == (2, 16, 4)
    assert int(a["skipped"]) == 0
    c = ds[(8, 1)]
    assert not torch.equal(a["clips"], c["clips"])
    replaced = ds[(7, 0)]  # broken.mp4 fails to decode: the next video is used and the skip is counted
    assert int(replaced["skipped"]) == 1
    batch = {k: torch.stack([a[k], c[k]]) for k in a}
    clips, boxes, keys = views_first(batch)
    torch.testing.assert_close(clips[1], c["clips"][0])
    torch.testing.assert_close(clips[2], a["clips"][1])
    assert boxes.shape == (4, 16, 4) and keys.shape == (4,)
