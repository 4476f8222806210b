"""Tracking evaluation: dataset readers (OTB, GOT-10k, VOT), OTB metrics (== the got10k toolkit's), reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.tasks.tracking.baselines import BaselineUnavailableError, OpenCVTracker, StaticTracker
from training.tasks.tracking.data import (
    TrackingDatasetError,
    polygons_to_xywh,
    read_box_file,
    read_dataset,
)
from training.tasks.tracking.evaluate import dataset_curves, evaluate, sequence_metrics, write_report

cv2 = pytest.importorskip("cv2")


def _images(folder, n, size=(48, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i + 1:08d}.jpg"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def _write_boxes(path, boxes, sep=","):
    path.write_text("".join(sep.join(f"{v:g}" for v in b) + "\n" for b in boxes))


def _random_boxes(rng, n):
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(1, 80, (n, 2))
    return np.concatenate([xy, wh], axis=1)


def test_metrics_equal_got10k_toolkit():
    got10k_metrics = pytest.importorskip("got10k.utils.metrics")
    from got10k.experiments.otb import ExperimentOTB

    rng = np.random.default_rng(0)
    exp = ExperimentOTB.__new__(ExperimentOTB)
    exp.nbins_iou, exp.nbins_ce = 21, 51
    ours, theirs = [], []
    for n in (5, 40, 200):
        gt = _random_boxes(rng, n)
        pred = gt + rng.normal(0, 15, gt.shape)   # near the target: every threshold is exercised
        pred[:, 2:] = np.abs(pred[:, 2:]) + 1
        pred[n // 2:] = _random_boxes(rng, n - n // 2)
        mine = sequence_metrics(pred, gt)
        ref_pred = pred.copy()
        ref_pred[0] = gt[0]
        ious = got10k_metrics.rect_iou(ref_pred, gt)
        errors = got10k_metrics.center_error(ref_pred, gt)
        succ, prec = exp._calc_curves(ious, errors)
        np.testing.assert_allclose(mine.success_curve, succ, atol=1e-12)
        np.testing.assert_allclose(mine.precision_curve, prec, atol=1e-12)
        assert mine.success == pytest.approx(np.mean(succ)) and mine.precision == pytest.approx(prec[20])
        ours.append(mine)
        theirs.append((succ, prec))
    overall = dataset_curves(ours)
    assert overall.success == pytest.approx(np.mean(np.mean([s for s, _ in theirs], axis=0)))
    assert overall.precision == pytest.approx(np.mean([p for _, p in theirs], axis=0)[20])


def test_metrics_perfect_and_missing_frames():
    gt = np.array([[10, 10, 20, 20], [12, 10, 20, 20], [np.nan] * 4, [14, 10, 20, 20]], dtype=float)
    m = sequence_metrics(gt.copy(), gt)
    assert m.precision == 1.0 and m.success == pytest.approx(20 / 21)   # IoU 1 > t for all t < 1
    off = gt.copy()
    off[1:, 0] += 100
    m = sequence_metrics(off, gt)
    assert m.precision == pytest.approx(1 / 3)   # only frame 0 (forced to the ground truth); NaN frame left out


def test_box_file_separators_and_errors(tmp_path):
    for sep in (",", "\t", " ", ", "):
        _write_boxes(tmp_path / "a.txt", [[1, 2, 3, 4], [5, 6, 7, 8]], sep)
        np.testing.assert_array_equal(read_box_file(tmp_path / "a.txt"), [[1, 2, 3, 4], [5, 6, 7, 8]])
    (tmp_path / "b.txt").write_text("1,2,3,4\n1,2,x,4\n")
    with pytest.raises(TrackingDatasetError, match=r"b.txt:2"):
        read_box_file(tmp_path / "b.txt")
    (tmp_path / "c.txt").write_text("1,2,3\n")
    with pytest.raises(TrackingDatasetError, match="expected 4 values"):
        read_box_file(tmp_path / "c.txt")


@pytest.mark.parametrize("content, message", [
    (bytes(range(128, 256)) * 4, "b.txt:1: not text"),
    (b"1e308,1e308,10,10\n", "within"),
    (b"1,2,inf,4\n", "finite"),
    (b"1," * 2000 + b"4\n", "characters"),
])
def test_hostile_box_files_are_one_error_naming_the_line(tmp_path, content, message):
    (tmp_path / "b.txt").write_bytes(content)
    with pytest.raises(TrackingDatasetError, match=message):
        read_box_file(tmp_path / "b.txt")
    (tmp_path / "b.txt").write_bytes(b"1,2,3,4\nnan,nan,nan,nan\n")  # GOT-10k's frames without a target stay
    assert np.isnan(read_box_file(tmp_path / "b.txt")[1]).all()


def test_vot_polygon_to_box():
    poly = np.array([[291.827, 203.603, 396.382, 264.289, 442.173, 185.397, 337.618, 124.711]])
    np.testing.assert_allclose(polygons_to_xywh(poly), [[291.827, 124.711, 442.173 - 291.827, 264.289 - 124.711]])


def test_otb_layouts(tmp_path):
    # plain, tab-separated
    _images(tmp_path / "Basket" / "img", 3)
    _write_boxes(tmp_path / "Basket" / "groundtruth_rect.txt", [[1, 1, 5, 5]] * 3, "\t")
    # two targets (+ an empty annotation, as Human4's .1)
    _images(tmp_path / "Jogging" / "img", 2)
    _write_boxes(tmp_path / "Jogging" / "groundtruth_rect.1.txt", [[1, 1, 5, 5]] * 2)
    _write_boxes(tmp_path / "Jogging" / "groundtruth_rect.2.txt", [[2, 2, 5, 5]] * 2, " ")
    _images(tmp_path / "Human4" / "img", 2)
    (tmp_path / "Human4" / "groundtruth_rect.1.txt").write_text("")
    _write_boxes(tmp_path / "Human4" / "groundtruth_rect.2.txt", [[3, 3, 5, 5]] * 2)
    # trimmed: the benchmark's range for David (frames 300-770), and a frames file
    _images(tmp_path / "David" / "img", 771)
    _write_boxes(tmp_path / "David" / "groundtruth_rect.txt", [[1, 1, 5, 5]] * 471)
    _images(tmp_path / "Cut" / "img", 6)
    _write_boxes(tmp_path / "Cut" / "groundtruth_rect.txt", [[1, 1, 5, 5]] * 3)
    (tmp_path / "Cut" / "Cut_frames.txt").write_text("2,4\n")
    seqs = {s.name: s for s in read_dataset(tmp_path)}
    assert sorted(seqs) == ["Basket", "Cut", "David", "Human4.2", "Jogging.1", "Jogging.2"]
    assert seqs["Jogging.2"].boxes[0, 0] == 2 and len(seqs["Jogging.1"]) == 2
    assert seqs["David"].frames[0].name == "00000300.jpg" and seqs["David"].frames[-1].name == "00000770.jpg"
    assert [f.name for f in seqs["Cut"].frames] == ["00000002.jpg", "00000003.jpg", "00000004.jpg"]
    _images(tmp_path / "Bad" / "img", 4)
    _write_boxes(tmp_path / "Bad" / "groundtruth_rect.txt", [[1, 1, 5, 5]] * 3)
    with pytest.raises(TrackingDatasetError, match="4 images but 3 boxes"):
        read_dataset(tmp_path)


def test_got10k_and_vot_layouts(tmp_path):
    got = tmp_path / "val"
    for name in ("GOT-10k_Val_000001", "GOT-10k_Val_000002"):
        _images(got / name, 3)
        _write_boxes(got / name / "groundtruth.txt", [[1, 1, 5, 5]] * 3)
    (got / "list.txt").write_text("GOT-10k_Val_000002\n")
    assert [s.name for s in read_dataset(got)] == ["GOT-10k_Val_000002"]
    vot = tmp_path / "bag"
    _images(vot / "color", 2)
    _write_boxes(vot / "groundtruth.txt", [[0, 0, 10, 0, 10, 5, 0, 5]] * 2)
    (seq,) = read_dataset(vot)
    np.testing.assert_array_equal(seq.boxes, [[0, 0, 10, 5]] * 2)


def test_evaluate_writes_report(tmp_path):
    _images(tmp_path / "data" / "Seq" / "img", 4)
    gt = [[10, 10, 20, 20], [10, 10, 20, 20], [40, 10, 20, 20], [10, 10, 20, 20]]
    _write_boxes(tmp_path / "data" / "Seq" / "groundtruth_rect.txt", gt)
    seqs = read_dataset(tmp_path / "data")
    static = evaluate(StaticTracker, seqs, name="static", log=None)
    assert static.overall.precision == pytest.approx(3 / 4)
    write_report([static], tmp_path / "out")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) == {"success", "precision", "fps", "sequences"}
    assert set(metrics["sequences"]["Seq"]) == {"success", "precision", "fps"}
    assert metrics["precision"] == pytest.approx(0.75)
    assert (tmp_path / "out" / "boxes" / "Seq.txt").read_text().splitlines()[2] == "10.00,10.00,20.00,20.00"
    for png in ("success.png", "precision.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"


def test_opencv_baselines(tmp_path):
    _images(tmp_path / "Seq" / "img", 3, size=(96, 128))
    _write_boxes(tmp_path / "Seq" / "groundtruth_rect.txt", [[30, 30, 30, 30]] * 3)
    ev = evaluate(lambda: OpenCVTracker("mil"), read_dataset(tmp_path), name="MIL", log=None)
    assert ev.results["Seq"].boxes.shape == (3, 4)
    with pytest.raises(BaselineUnavailableError, match="unknown OpenCV tracker"):
        OpenCVTracker("nope")
    if not hasattr(cv2, "TrackerKCF_create"):
        with pytest.raises(BaselineUnavailableError, match="contrib"):
            OpenCVTracker("kcf")


def test_trackers_with_track_get_rgb_frames(tmp_path):
    _images(tmp_path / "Seq" / "img", 3)
    _write_boxes(tmp_path / "Seq" / "groundtruth_rect.txt", [[5, 5, 10, 10]] * 3)

    class Whole:
        def track(self, frames, box):
            from constcl_zoo.tasks.tracking import TrackResult

            frames = list(frames)
            assert all(isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.shape == (48, 64, 3) for f in frames)
            return TrackResult(np.tile(box, (len(frames), 1)), np.ones(len(frames)), np.full(len(frames), 0.01))

    ev = evaluate(Whole, read_dataset(tmp_path), log=None)
    assert ev.overall.precision == 1.0 and ev.fps == pytest.approx(100.0)
