"""Labelled splits: a folder per class, UCF101 and HMDB51 split files; missing videos skipped and counted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from constcl_zoo import ConstclZooError
from training.tasks.recognition.data import (
    DatasetError,
    LabelledSplit,
    SplitFileError,
    folder_split,
    hmdb51_splits,
    load_splits,
    ucf101_splits,
)

from .recognition_data import require_videos


def _link(real: Path, target: Path) -> Path:
    """``target`` -> a real video (a symlink; the readers only need the file to exist)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(real.resolve())
    return target


@pytest.fixture
def real() -> list[Path]:
    return require_videos()


def test_folder_split_labels_by_sorted_subfolder(tmp_path, real):
    for cls, n in (("b_walk", 2), ("a_run", 1)):
        for i in range(n):
            _link(real[i], tmp_path / "train" / cls / "sub" / f"v{i}.avi")
    (tmp_path / "train" / "a_run" / "notes.txt").write_text("not a video")
    _link(real[0], tmp_path / "val" / "b_walk" / "x.mp4")
    train, val = load_splits("folder", tmp_path / "train", tmp_path / "val")
    assert train.classes == ("a_run", "b_walk")
    assert [p.name for p in train.paths] == ["v0.avi", "v0.avi", "v1.avi"]
    assert train.labels == (0, 1, 1)
    assert train.class_counts() == [1, 2]
    assert val.classes == train.classes and val.labels == (1,)  # val labels follow train's class order


def test_folder_split_refuses_val_classes_train_lacks(tmp_path, real):
    _link(real[0], tmp_path / "train" / "a" / "v.avi")
    _link(real[0], tmp_path / "val" / "zzz" / "v.avi")
    with pytest.raises(DatasetError, match="zzz"):
        load_splits("folder", tmp_path / "train", tmp_path / "val")
    with pytest.raises(DatasetError, match="--val"):
        load_splits("folder", tmp_path / "train", None)
    with pytest.raises(DatasetError, match="sub-folder"):
        folder_split(tmp_path / "train" / "a")


def _ucf(tmp_path: Path, real: list[Path], train_lines: str, test_lines: str) -> tuple[Path, Path]:
    splits, root = tmp_path / "ucfTrainTestlist", tmp_path / "UCF-101"
    splits.mkdir()
    # CRLF line ends, as in the official files
    (splits / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 Skiing\r\n")
    (splits / "trainlist01.txt").write_text(train_lines)
    (splits / "testlist01.txt").write_text(test_lines)
    _link(real[0], root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
    _link(real[1], root / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi")
    _link(real[2], root / "Skiing" / "v_Skiing_g01_c01.avi")
    _link(real[3], root / "HandstandPushups" / "v_HandStandPushups_g01_c01.avi")
    return splits, root


def test_ucf101_splits(tmp_path, real, caplog):
    splits, root = _ucf(tmp_path, real,
                        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                        "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n"
                        "Skiing/v_Skiing_g01_c01.avi 3\n"
                        "Skiing/v_Skiing_g02_c01.avi 3\n",  # not on disk
                        "HandstandPushups/v_HandStandPushups_g01_c01.avi\n\n")
    with caplog.at_level(logging.WARNING):
        train, test = ucf101_splits(splits, root, split=1)
    assert train.classes == ("ApplyEyeMakeup", "HandstandPushups", "Skiing")
    assert train.labels == (0, 1, 2) and len(train) == 3
    assert train.skipped == ((str(root / "Skiing" / "v_Skiing_g02_c01.avi"), "file not found"),)
    assert "v_Skiing_g02_c01.avi" in caplog.text  # the warning names the file
    assert test.labels == (1,)  # the class is the folder's, not the file name's
    assert test.paths[0].is_file()
    assert load_splits("ucf101", root, None, splits, 1)[1] == test


@pytest.mark.parametrize(("train_lines", "test_lines", "where", "what"), [
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\n", "", "trainlist01.txt:1", "label"),
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nSkiing/v_Skiing_g01_c01.avi 2\n", "x\n",
     "trainlist01.txt:2", "disagrees"),
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 9\n", "", "trainlist01.txt:1", "1..3"),
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n", "\nSurfing/v_Surfing_g01.avi\n", "testlist01.txt:2",
     "classInd"),
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n", "Skiing/v_Skiing_g01_c01.avi 3\n", "testlist01.txt:1",
     "expected"),
])
def test_ucf101_bad_lines_name_file_and_line(tmp_path, real, train_lines, test_lines, where, what):
    splits, root = _ucf(tmp_path, real, train_lines, test_lines)
    with pytest.raises(SplitFileError, match=what) as err:
        ucf101_splits(splits, root)
    assert where in str(err.value)
    assert isinstance(err.value, ConstclZooError) and isinstance(err.value, ValueError)


def test_ucf101_bad_class_index_and_missing_list(tmp_path, real):
    splits, root = _ucf(tmp_path, real, "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n", "")
    with pytest.raises(SplitFileError, match="trainlist02.txt: split file not found"):
        ucf101_splits(splits, root, split=2)
    (splits / "classInd.txt").write_text("1 A\n3 C\n")
    with pytest.raises(SplitFileError, match=r"classInd.txt:2: class index 3 out of order"):
        ucf101_splits(splits, root)


def test_hmdb51_splits(tmp_path, real, caplog):
    splits, root = tmp_path / "testTrainMulti_7030_splits", tmp_path / "hmdb51"
    splits.mkdir()
    (splits / "wave_test_split1.txt").write_text("w1.avi 1 \nw2.avi 2 \nw3.avi 0 \nw4.avi 1 \n")
    (splits / "brush_hair_test_split1.txt").write_text("b1.avi 2\nb2.avi 1\n")
    (splits / "wave_test_split2.txt").write_text("w1.avi 2\n")  # another split: ignored
    for name, cls in (("w1", "wave"), ("w2", "wave"), ("w3", "wave"), ("b1", "brush_hair"), ("b2", "brush_hair")):
        _link(real[0], root / cls / f"{name}.avi")
    with caplog.at_level(logging.WARNING):
        train, test = hmdb51_splits(splits, root, split=1)
    assert train.classes == ("brush_hair", "wave")
    def named(split: LabelledSplit) -> list[tuple[str, int]]:
        return sorted((p.name, label) for p, label in zip(split.paths, split.labels, strict=True))

    assert named(train) == [("b2.avi", 0), ("w1.avi", 1)]
    assert [s[0] for s in train.skipped] == [str(root / "wave" / "w4.avi")] and "w4.avi" in caplog.text
    assert named(test) == [("b1.avi", 0), ("w2.avi", 1)]
    assert load_splits("hmdb51", root, root, splits, 1) == (train, test)

    (splits / "wave_test_split1.txt").write_text("w1.avi 1\nw2.avi 3\n")
    with pytest.raises(SplitFileError, match=r"wave_test_split1.txt:2: expected '<video> <0\|1\|2>'"):
        hmdb51_splits(splits, root, split=1)
    with pytest.raises(SplitFileError, match="_test_split3.txt"):
        hmdb51_splits(splits, root, split=3)


def test_a_split_whose_videos_are_all_missing_is_an_error(tmp_path):
    splits = tmp_path / "s"
    splits.mkdir()
    (splits / "run_test_split1.txt").write_text("a.avi 1\nb.avi 2\n")
    with pytest.raises(DatasetError, match="none of its 1 listed videos exists"):
        hmdb51_splits(splits, tmp_path / "nowhere")


def test_labelled_split_checks_labels(tmp_path):
    paths = (tmp_path / "a.avi", tmp_path / "b.avi")
    with pytest.raises(ValueError, match="label 2"):
        LabelledSplit("t", paths, (0, 2), ("x", "y"))
    with pytest.raises(ValueError, match="2 paths but 1 labels"):
        LabelledSplit("t", paths, (0,), ("x", "y"))
