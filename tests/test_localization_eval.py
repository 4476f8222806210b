"""The AVA formats and the frame-mAP evaluator against the official definition (ActivityNet
``get_ava_performance.py``). Every expected value is derived here by hand from the definition: precision/recall
after each detection in score order, then the VOC AP sum over recall steps."""

from __future__ import annotations

import json

import pytest

from constcl_zoo.formats import ava
from training.__main__ import main as training_main
from training.tasks.localization.evaluate import FrameMapOptionError, frame_map, voc_average_precision

LABELS = [ava.AvaLabel(1, "a"), ava.AvaLabel(2, "b"), ava.AvaLabel(3, "c")]
B1 = (0.1, 0.1, 0.4, 0.9)
B2 = (0.5, 0.1, 0.9, 0.9)
FAR = (0.0, 0.0, 0.05, 0.05)


def gt(key: int, box, action: int, pid: int = 0, video: str = "v") -> ava.AvaRow:
    return ava.AvaRow(video, key, box, action, pid)


def det(key: int, box, action: int, score: float, video: str = "v") -> ava.AvaRow:
    return ava.AvaRow(video, key, box, action, score)


def voc(steps: list[tuple[float, float]]) -> float:
    """VOC AP from the (precision, recall) after each detection, in score order, by the definition."""
    prec = [0.0] + [p for p, _ in steps] + [0.0]
    rec = [0.0] + [r for _, r in steps] + [1.0]
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    return sum((rec[i] - rec[i - 1]) * prec[i] for i in range(1, len(rec)) if rec[i] != rec[i - 1])


def test_pascal_ap_of_a_ranked_list() -> None:
    g = [gt(1, B1, 1), gt(1, B2, 1)]
    d = [det(1, B1, 1, 0.9), det(1, FAR, 1, 0.8), det(1, B2, 1, 0.7)]
    expected = voc([(1.0, 0.5), (0.5, 0.5), (2 / 3, 1.0)])  # = 0.5 * 1 + 0.5 * 2/3
    assert expected == pytest.approx(0.5 + 1 / 3)
    result = frame_map(g, d, LABELS[:1])
    assert result.per_class == {1: pytest.approx(expected)}
    assert result.mean_ap == pytest.approx(expected)


def test_class_with_ground_truth_but_no_detection_counts_zero() -> None:
    g = [gt(1, B1, 1), gt(1, B2, 2)]
    d = [det(1, B1, 1, 0.9)]
    result = frame_map(g, d, LABELS)
    assert result.per_class == {1: 1.0, 2: 0.0}
    assert result.mean_ap == pytest.approx(0.5)  # mmaction2's copy would give 1.0
    assert result.no_ground_truth == [3]  # class 3: no ground truth, out of the mean


def test_detections_on_key_frames_absent_from_the_ground_truth() -> None:
    """Current rule: ignored; the 2018 rule: false positives."""
    g = [gt(1, B1, 1)]
    d = [det(1, B1, 1, 0.5), det(2, B1, 1, 0.9)]  # key frame 2 is not in the ground truth at all
    current = frame_map(g, d, LABELS[:1])
    assert current.mean_ap == 1.0 and current.ignored_key_frames == 1 and current.rule == "current"
    expected_2018 = voc([(0.0, 0.0), (0.5, 1.0)])  # 0.9 FP, then 0.5 TP
    assert expected_2018 == pytest.approx(0.5)
    assert frame_map(g, d, LABELS[:1], rule="2018").mean_ap == pytest.approx(expected_2018)
    # a key frame with ground truth of another class only is a ground-truth key frame: scored under both rules
    g2 = [gt(1, B1, 1), gt(2, B1, 2)]
    for rule in ("current", "2018"):
        assert frame_map(g2, d, LABELS[:2], rule=rule).per_class[1] == pytest.approx(expected_2018)


def _rules_case() -> tuple[list[ava.AvaRow], list[ava.AvaRow], set[str]]:
    """Key frame 1: ground truth of class 1; 2: absent from the ground truth; 3: class 2 only; 4: only class 99
    (not evaluated); 5: a ``video_id, timestamp`` row (a key frame without actions). Returns ground-truth rows,
    detections and the ground truth's key frames."""
    g = [gt(1, B1, 1), gt(3, B1, 2), gt(4, B1, 99)]
    d = [det(1, B1, 1, 0.5),  # true positive
         det(2, B1, 1, 0.9),  # class 1 on a key frame absent from the ground truth
         det(5, B1, 1, 0.85),  # class 1 on the key frame without actions
         det(4, B1, 1, 0.8),  # class 1 on a key frame with a non-evaluated class only
         det(3, B1, 1, 0.7),  # class 1 on a key frame with ground truth of class 2 only
         det(3, B1, 2, 0.6),  # true positive
         det(2, B1, 2, 0.95)]  # class 2 on the key frame absent from the ground truth
    keys = {ava.image_key("v", t) for t in (1, 3, 4, 5)}
    return g, d, keys


# rule -> (class-1 steps, class-2 steps, ignored key frames), (precision, recall) after each detection by score
RULE_CASES = {
    # frame 2 ignored; class 1: 0.85 FP (5), 0.8 FP (4), 0.7 FP (3), 0.5 TP; class 2: 0.6 TP
    "current": ([(0.0, 0.0)] * 3 + [(1 / 4, 1.0)], [(1.0, 1.0)], 1),
    # every detected key frame scored; class 1: 0.9 FP (2), 0.85, 0.8, 0.7 FP, 0.5 TP; class 2: 0.95 FP, 0.6 TP
    "2018": ([(0.0, 0.0)] * 4 + [(1 / 5, 1.0)], [(0.0, 0.0), (1 / 2, 1.0)], 0),
    # key frames without ground truth of an evaluated class (2, 4, 5) dropped; class 1: 0.7 FP, 0.5 TP; 2: 0.6 TP
    "ignore_empty_frames": ([(0.0, 0.0), (1 / 2, 1.0)], [(1.0, 1.0)], 3),
}


@pytest.mark.parametrize("rule", list(RULE_CASES))
def test_rules_from_their_definitions(rule: str) -> None:
    g, d, keys = _rules_case()
    steps1, steps2, ignored = RULE_CASES[rule]
    ap1, ap2 = voc(steps1), voc(steps2)
    assert (ap1, ap2) == pytest.approx({"current": (0.25, 1.0), "2018": (0.2, 0.5),
                                        "ignore_empty_frames": (0.5, 1.0)}[rule])
    result = frame_map(g, d, LABELS[:2], rule=rule, groundtruth_keys=keys)
    assert result.per_class == {1: pytest.approx(ap1), 2: pytest.approx(ap2)}
    assert result.mean_ap == pytest.approx((ap1 + ap2) / 2)
    assert result.to_dict()["rule"] == rule and result.ignored_key_frames == ignored
    if rule == "current":
        assert frame_map(g, d, LABELS[:2], groundtruth_keys=keys).mean_ap == pytest.approx(result.mean_ap)  # default
        # without the key frame 5 row its detection is ignored too: class 1 is 0.8 FP, 0.7 FP, 0.5 TP
        no_row = frame_map(g, d, LABELS[:2])
        assert no_row.per_class[1] == pytest.approx(voc([(0.0, 0.0)] * 2 + [(1 / 3, 1.0)]))
        assert no_row.ignored_key_frames == 2
    else:
        # excluded key frames go first: excluding frame 2 removes its two rows (the 2018 rule scored them)
        without_2 = frame_map(g, d, LABELS[:2], {ava.image_key("v", 2)}, rule=rule)
        expected_1 = voc([(0.0, 0.0)] * 3 + [(1 / 4, 1.0)]) if rule == "2018" else ap1
        assert without_2.per_class == {1: pytest.approx(expected_1), 2: 1.0}


def test_rule_options_are_checked() -> None:
    with pytest.raises(FrameMapOptionError, match="rule='skip'"):
        frame_map([gt(1, B1, 1)], [det(1, B1, 1, 0.9)], LABELS[:1], rule="skip")
    with pytest.raises(FrameMapOptionError, match="no excluded timestamps"):
        frame_map([gt(1, B1, 1)], [det(1, B1, 1, 0.9)], LABELS[:1], {ava.image_key("v", 2)})
    with pytest.raises(FrameMapOptionError, match="whole seconds.*1.5"):
        frame_map([gt(1.5, B1, 1)], [det(1.5, B1, 1, 0.9)], LABELS[:1], rule="2018")


def test_equal_scores_rank_as_the_official_code_ranks_them() -> None:
    """Ties across key frames: the official ``np.argsort(scores)[::-1]`` puts the later of two equal scores (in the
    order the detections name their key frames) first, so the same detections score differently by file order."""
    g = [gt(1, B1, 1)]
    keys = {ava.image_key("v", 1), ava.image_key("v", 2)}  # key frame 2: a key frame without actions
    tp, fp = det(1, B1, 1, 0.5), det(2, B1, 1, 0.5)
    # [tp, fp] -> ranked fp, tp: precision 0 then 1/2 at recall 1; [fp, tp] -> tp first: precision 1 at recall 1
    assert frame_map(g, [tp, fp], LABELS[:1], groundtruth_keys=keys).mean_ap == pytest.approx(voc([(0, 0), (.5, 1)]))
    assert frame_map(g, [fp, tp], LABELS[:1], groundtruth_keys=keys).mean_ap == pytest.approx(voc([(1, 1), (.5, 1)]))


def test_fractional_timestamps_are_distinct_key_frames() -> None:
    """Six-decimal keys: 1.0 and 1.5 are two key frames (the 2018 keys merged them into second 1)."""
    assert ava.image_key("v", "0902") == "v,902.000000" and ava.image_key("v", 902.5) == "v,902.500000"
    assert ava.image_key("v", "902.0000004") == ava.image_key("v", 902)  # six decimals, as "%.6f"
    assert ava.image_key_2018("v", "0902") == "v,0902"
    g = [gt(1.0, B1, 1), gt(1.5, B2, 1)]
    d = [det(1.5, FAR, 1, 0.9), det(1.0, B1, 1, 0.8), det(1.5, B2, 1, 0.6)]
    # 0.9 FP (1.5), 0.8 TP (1.0), 0.6 TP (1.5); precision made non-increasing from the right: 2/3 at both steps
    expected = voc([(0.0, 0.0), (1 / 2, 1 / 2), (2 / 3, 1.0)])
    assert expected == pytest.approx(2 / 3)
    assert frame_map(g, d, LABELS[:1]).mean_ap == pytest.approx(expected)
    # a detection at 1.5 where the ground truth has only 1.0 is on an unknown key frame: ignored
    assert frame_map(g[:1], d[:2], LABELS[:1]).mean_ap == 1.0


@pytest.mark.parametrize("others, expected", [(49, voc([(0.0, 0.0)] * 49 + [(1 / 50, 1.0)])), (50, 0.0)])
def test_at_most_50_detections_per_frame(others: int, expected: float) -> None:
    """The cap is per key frame over (box, class) rows of evaluated classes, highest scores kept."""
    g = [gt(1, B1, 1)]
    d = [det(1, FAR, 2, 0.9 - i * 1e-3) for i in range(others)] + [det(1, B1, 1, 0.1)]
    # class-1 AP: the one true positive ranks after the other class's rows only if it survives the cap
    result = frame_map([*g, gt(1, B2, 2)], d, LABELS[:2])
    assert result.per_class[1] == pytest.approx(1.0 if others == 49 else 0.0)
    # the same with the filler rows in class 1 itself: precision 1/50 at full recall
    d1 = [det(1, FAR, 1, 0.9 - i * 1e-3) for i in range(others)] + [det(1, B1, 1, 0.1)]
    assert frame_map(g, d1, LABELS[:1]).per_class[1] == pytest.approx(expected)
    # rows of classes outside the label map do not take places
    d99 = [det(1, FAR, 99, 0.9) for _ in range(60)] + [det(1, B1, 1, 0.1)]
    assert frame_map(g, d99, LABELS[:1]).per_class[1] == 1.0


def test_excluded_timestamps_are_ignored() -> None:
    g = [gt(1, B1, 1), gt(2, B1, 1), gt(3, B1, 2)]
    d = [det(1, B1, 1, 0.9), det(2, FAR, 1, 0.95), det(3, B1, 2, 0.9)]
    excluded = {ava.image_key("v", 2), ava.image_key("v", 3)}
    result = frame_map(g, d, LABELS, excluded, rule="2018")
    assert result.per_class == {1: 1.0}  # frame 2's false positive and ground truth are gone; class 2 has none left
    assert result.num_gt == {1: 1}
    without = frame_map(g, d, LABELS, rule="2018")
    assert without.per_class[1] == pytest.approx(voc([(0.0, 0.0), (0.5, 0.5)]))


def test_each_detection_matches_only_its_best_box() -> None:
    """A detection whose highest-IoU box is taken is a false positive even if another box overlaps >= 0.5."""
    g1, g2 = (0.0, 0.0, 0.5, 1.0), (0.1, 0.0, 0.6, 1.0)  # IoU(g1, g2) = 0.4 / 0.6
    d_best = (0.03, 0.0, 0.53, 1.0)  # IoU 0.47 / 0.53 = 0.89 with g1 (taken), 0.43 / 0.57 = 0.75 with g2
    d = [det(1, g1, 1, 0.9), det(1, d_best, 1, 0.8)]
    result = frame_map([gt(1, g1, 1), gt(1, g2, 1)], d, LABELS[:1])
    assert result.per_class[1] == pytest.approx(voc([(1.0, 0.5), (0.5, 0.5)]))
    # a duplicate of a matched box is a false positive
    dup = frame_map([gt(1, g1, 1)], [det(1, g1, 1, 0.9), det(1, g1, 1, 0.8)], LABELS[:1])
    assert dup.per_class[1] == 1.0  # precision 1 at recall 1 comes first; the duplicate adds no recall


def test_iou_threshold_is_inclusive() -> None:
    box = (0.0, 0.0, 0.5, 1.0)
    half = (0.0, 0.0, 0.25, 1.0)  # IoU exactly 0.5
    assert frame_map([gt(1, box, 1)], [det(1, half, 1, 0.9)], LABELS[:1]).per_class[1] == 1.0


def test_voc_average_precision_no_detections() -> None:
    import numpy as np

    assert voc_average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0


def test_formats_round_trip(tmp_path) -> None:
    rows = [gt(902, B1, 12, 0, video="-5KQ66BBWC4"), gt(902, B1, 80, 0, video="-5KQ66BBWC4")]
    ava.write_ava_csv(tmp_path / "gt.csv", rows)
    text = (tmp_path / "gt.csv").read_text()
    assert text.splitlines()[0] == "-5KQ66BBWC4,0902,0.100,0.100,0.400,0.900,12,0"
    back = ava.read_ava_csv(tmp_path / "gt.csv")
    assert [(r.video_id, r.timestamp, r.action_id, r.value) for r in back] == [("-5KQ66BBWC4", 902, 12, 0.0),
                                                                                ("-5KQ66BBWC4", 902, 80, 0.0)]
    persons = ava.group_persons(back)
    assert list(persons) == ["-5KQ66BBWC4,902.000000"] and persons["-5KQ66BBWC4,902.000000"][0].actions == {12, 80}

    # the official label maps: 'item { name id }' (evaluated) and 'label { name label_id label_type }' (all)
    (tmp_path / "eval.pbtxt").write_text('item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\n'
                                         'item {\n  name: "crouch/kneel"\n  id: 3\n}\n')
    (tmp_path / "all.pbtxt").write_text('label {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n'
                                        '  label_type: PERSON_MOVEMENT\n}\n')
    assert ava.read_labelmap(tmp_path / "eval.pbtxt") == [ava.AvaLabel(1, "bend/bow (at the waist)"),
                                                         ava.AvaLabel(3, "crouch/kneel")]
    assert ava.read_labelmap(tmp_path / "all.pbtxt") == [ava.AvaLabel(1, "bend/bow (at the waist)")]
    ava.write_labelmap(tmp_path / "w.pbtxt", LABELS)
    assert ava.read_labelmap(tmp_path / "w.pbtxt") == LABELS
    ava.write_excluded(tmp_path / "ex.csv", [("v", 7)])
    assert ava.read_excluded(tmp_path / "ex.csv") == {"v,7.000000"}
    # fractional timestamps are written with six decimals and read back exactly; a "video_id, timestamp" row
    # is a key frame without actions: no box row, but one of the file's key frames
    ava.write_ava_csv(tmp_path / "frac.csv", [gt(902.5, B1, 12)])
    assert (tmp_path / "frac.csv").read_text().startswith("v,902.500000,")
    (tmp_path / "frac.csv").write_text((tmp_path / "frac.csv").read_text() + "v,0903\n")
    read = ava.read_ava_file(tmp_path / "frac.csv")
    assert [r.timestamp for r in read.rows] == [902.5] and read.keys == {"v,902.500000", "v,903.000000"}

    # detected person boxes: empty action, score, threshold
    (tmp_path / "people.csv").write_text("v,0001,0.1,0.1,0.4,0.9,,0.95\nv,0001,0.5,0.1,0.9,0.9,-1,0.2\n")
    people = ava.read_person_boxes(tmp_path / "people.csv", threshold=0.5)
    assert people == {"v,1.000000": [((0.1, 0.1, 0.4, 0.9), 0.95)]}


@pytest.mark.parametrize("content, fragment", [
    ("video_id,timestamp,x1,y1,x2,y2,action_id,person_id\n", "no header"),
    ("v,1,0.1,0.1,0.4\n", "7 or 8 columns"),
    ("v,1,10,20,300,400,1,0\n", "not normalised"),
])
def test_bad_csv_names_file_and_line(tmp_path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ava.AvaFormatError, match=fragment) as info:
        ava.read_ava_csv(path)
    assert f"{path}:1" in str(info.value)


def test_eval_ava_command(tmp_path, capsys) -> None:
    ava.write_ava_csv(tmp_path / "gt.csv", [gt(1, B1, 1), gt(1, B2, 2)])
    ava.write_ava_csv(tmp_path / "det.csv", [det(1, B1, 1, 0.9), det(1, B1, 2, 0.8)], scores=True)
    ava.write_labelmap(tmp_path / "labels.pbtxt", LABELS)
    assert training_main(["eval-ava", "--gt", str(tmp_path / "gt.csv"), "--detections", str(tmp_path / "det.csv"),
                          "--labelmap", str(tmp_path / "labels.pbtxt"), "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["mAP"] == pytest.approx(0.5) and result["per_class"] == {"1": 1.0, "2": 0.0}
    assert "frame-mAP@0.5 0.5000" in capsys.readouterr().out

    assert result["rule"] == "current" and result["ignored_key_frames"] == 0

    # the rules case as files, key frame 5 as a "video_id,timestamp" row written by hand
    g, d, _ = _rules_case()
    ava.write_ava_csv(tmp_path / "gt2.csv", g)
    (tmp_path / "gt2.csv").write_text((tmp_path / "gt2.csv").read_text() + "v,0005\n")
    ava.write_ava_csv(tmp_path / "det2.csv", d, scores=True)
    for flag, expected in (("current", (0.25 + 1.0) / 2), ("2018", (0.2 + 0.5) / 2),
                           ("ignore-empty-frames", (0.5 + 1.0) / 2)):
        assert training_main(["eval-ava", "--gt", str(tmp_path / "gt2.csv"), "--detections", str(tmp_path / "det2.csv"),
                              "--labelmap", str(tmp_path / "labels.pbtxt"), "--rule", flag,
                              "--out", str(tmp_path / f"{flag}.json")]) == 0
        written = json.loads((tmp_path / f"{flag}.json").read_text())
        assert written["rule"] == flag.replace("-", "_") and written["mAP"] == pytest.approx(expected)
        assert f"(rule {flag}" in capsys.readouterr().out

    # the 2018 rule with the excluded-timestamps file: frame 2 out, class 1 is 0.85, 0.8, 0.7 FP, 0.5 TP
    ava.write_excluded(tmp_path / "ex.csv", [("v", 2)])
    assert training_main(["eval-ava", "--gt", str(tmp_path / "gt2.csv"), "--detections", str(tmp_path / "det2.csv"),
                          "--labelmap", str(tmp_path / "labels.pbtxt"), "--rule", "2018", "--excluded",
                          str(tmp_path / "ex.csv"), "--out", str(tmp_path / "ex.json")]) == 0
    assert json.loads((tmp_path / "ex.json").read_text())["mAP"] == pytest.approx((0.25 + 1.0) / 2)
    capsys.readouterr()
    assert training_main(["eval-ava", "--gt", str(tmp_path / "gt2.csv"), "--detections", str(tmp_path / "det2.csv"),
                          "--labelmap", str(tmp_path / "labels.pbtxt"), "--excluded", str(tmp_path / "ex.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--excluded" in err and "--rule 2018" in err

    # fractional timestamps in the files: 1.5 is its own key frame; a detection on 2.5 (absent) is ignored
    (tmp_path / "gt3.csv").write_text("v,1.0,0.1,0.1,0.4,0.9,1,0\nv,1.5,0.5,0.1,0.9,0.9,1,0\n")
    (tmp_path / "det3.csv").write_text("v,1.5,0.0,0.0,0.05,0.05,1,0.9\nv,1.000000,0.1,0.1,0.4,0.9,1,0.8\n"
                                       "v,1.5,0.5,0.1,0.9,0.9,1,0.6\nv,2.5,0.0,0.0,0.05,0.05,1,0.99\n")
    assert training_main(["eval-ava", "--gt", str(tmp_path / "gt3.csv"), "--detections", str(tmp_path / "det3.csv"),
                          "--labelmap", str(tmp_path / "labels.pbtxt"), "--out", str(tmp_path / "frac.json")]) == 0
    frac = json.loads((tmp_path / "frac.json").read_text())
    assert frac["mAP"] == pytest.approx(2 / 3) and frac["ignored_key_frames"] == 1  # as in the in-memory case
    assert "1 detected key frames ignored" in capsys.readouterr().out

    assert training_main(["eval-ava", "--gt", str(tmp_path / "missing.csv"), "--detections",
                          str(tmp_path / "det.csv"), "--labelmap", str(tmp_path / "labels.pbtxt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--gt: no file at" in err
