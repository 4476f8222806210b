"""ONNX export of the tracker and the ONNX Runtime tracker: same boxes as PyTorch on a real sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from constcl_zoo import load

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

BAG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tracking" / "vot15_bag"


@pytest.mark.slow  # ~160 s on 2 busy cores (two dynamo exports + 2 x 10 tracked frames)
def test_onnx_tracker_matches_pytorch_on_vot15_bag(tmp_path):
    from export.__main__ import main as export_main
    from export.runtime import OnnxTracker
    from training.tasks.tracking.data import read_dataset

    if not BAG.is_dir():
        pytest.skip(f"{BAG} not present (shared data)")
    (seq,) = read_dataset(BAG)
    frames = [str(p) for p in seq.frames[:10]]
    tracker = load("constcl_r3d14_w16", task="tracking", pretrained=False,
                   head={"exemplar_size": 63, "search_size": 127})
    tracker.save_pretrained(tmp_path / "ckpt")
    # python -m export onnx TRACKING_CHECKPOINT dispatches on the model's task (dynamo exporter + ORT self-check)
    assert export_main(["onnx", str(tmp_path / "ckpt"), "--out", str(tmp_path / "onnx")]) == 0
    assert {p.name for p in (tmp_path / "onnx").iterdir()} == {"exemplar.onnx", "search.onnx", "tracker.json"}
    from constcl_zoo.inference.video import iter_image_files

    rgb = [f.rgb for f in iter_image_files(frames)]
    want = tracker.track(rgb, seq.boxes[0], precision="fp32")
    ort = OnnxTracker(tmp_path / "onnx")
    got = ort.track(rgb, seq.boxes[0])
    np.testing.assert_allclose(got.boxes, want.boxes, atol=0.05)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-3)
    ort.init(rgb[0], seq.boxes[0], rgb[1:3])
    box, _ = ort.update(rgb[1], rgb[2:4])
    np.testing.assert_allclose(box, want.boxes[1], atol=0.05)
