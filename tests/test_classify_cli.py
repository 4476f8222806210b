"""``constcl-zoo classify``: JSON lines per video from a recognition checkpoint; clear errors."""

from __future__ import annotations

import json

import pytest

from constcl_zoo import load
from constcl_zoo.cli import main

from .conftest import SHARED

VIDEOS = SHARED / "data" / "videos"
pytestmark = pytest.mark.skipif(not VIDEOS.is_dir(), reason="../shared/data/videos is not beside this checkout")
LABELS = ["street", "cartoon", "tree"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clf")
    load("constcl_r3d14_w16", task="recognition", labels=LABELS, pretrained=False).save_pretrained(folder)
    return folder


def test_classify_writes_json_lines(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "labels.jsonl"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    status = main(["classify", str(VIDEOS / "tree.avi"), str(broken), "--model", str(checkpoint), "--top-k", "2",
                   "--out", str(out), "--precision", "fp32"])
    assert status == 1  # one video failed; the other was classified
    rows = {r["video"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {str(VIDEOS / "tree.avi"), str(broken)}
    good, bad = rows[str(VIDEOS / "tree.avi")], rows[str(broken)]
    top = good["top"]
    assert len(top) == 2 and {t["label"] for t in top} <= set(LABELS) and top[0]["prob"] >= top[1]["prob"]
    assert good["windows"] >= 1 and "error" in bad and "broken.mp4" in capsys.readouterr().err
    # the same numbers as the Python API
    result = load(checkpoint).classify(VIDEOS / "tree.avi", top_k=2, precision="fp32")
    assert [t["label"] for t in top] == [label for label, _ in result.top]
    assert [t["prob"] for t in top] == pytest.approx([p for _, p in result.top], abs=1e-5)


def test_classify_refuses_an_encoder(tmp_path, capsys) -> None:
    encoder = tmp_path / "enc"
    load("constcl_r3d14_w16", pretrained=False).save_pretrained(encoder)
    assert main(["classify", str(VIDEOS / "tree.avi"), "--model", str(encoder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a recognition checkpoint" in err[0] and "Traceback" not in err[0]
    assert main(["classify", str(VIDEOS / "tree.avi"), "--model", str(encoder), "--top-k", "0"]) == 2


def test_classify_without_model_says_why_in_one_line(capsys) -> None:
    assert main(["classify", str(VIDEOS / "tree.avi")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--model: classify needs a recognition checkpoint, and the package ships none" in line
