"""``python -m training ship-default``: the selection rules of issue 19 on hand-made tables."""

from __future__ import annotations

from training.replicate.ship import select


def _row(name: str, kind: str, bag: float, car: float) -> dict:
    return {"name": name, "kind": kind, "sequences": {"bag": {"success": bag, "precision": 0.0},
                                                      "car": {"success": car, "precision": 0.0},
                                                      "synthetic": {"success": 0.9, "precision": 0.0}},
            "real_mean_success": (bag + car) / 2, "config": {"num_scales": 1} if kind == "baseline" else None}


BASE = [_row("ncc", "baseline", 0.50, 0.70), _row("ncc3", "baseline", 0.60, 0.72), _row("mil", "baseline", 0.40, 0.15),
        _row("static", "baseline", 0.08, 0.32), _row("random h", "encoder", 0.50, 0.60)]
PROBE = {"rows": [{"model": "E", "init": "trained", "top1": 0.5, "mean_class_recall": 0.45},
                  {"model": "E", "init": "random", "top1": 0.4, "mean_class_recall": 0.35}]}


def test_a_learned_tracker_below_static_on_one_sequence_is_not_shipped() -> None:
    # mean 0.655 beats ncc (0.60) and mil, but car 0.31 <= static 0.32: the training-free best ships (ncc3, 0.66)
    rows = [*BASE, _row("constcl h", "encoder", 0.99, 0.31)]
    decision = select({"rows": rows}, PROBE, {"constcl": "E"})
    assert decision["tracker"]["kind"] == "training_free" and decision["tracker"]["row"]["name"] == "ncc3"
    assert any("car: 0.310 <= static 0.320" in r for r in decision["reasons"])


def test_a_learned_tracker_that_beats_every_floor_ships() -> None:
    rows = [*BASE, _row("constcl h", "encoder", 0.55, 0.75)]
    decision = select({"rows": rows}, PROBE, {"constcl": "E"})
    assert decision["tracker"] == {"kind": "learned", "row": rows[-1]}


def test_a_learned_tracker_must_beat_random_init_with_the_same_head() -> None:
    rows = [*BASE, _row("constcl h", "encoder", 0.52, 0.59), _row("constcl g", "encoder", 0.1, 0.1)]
    decision = select({"rows": rows}, PROBE, {"constcl": "E"})
    assert decision["tracker"]["kind"] == "training_free"
    assert any("car: 0.590 <= random init 0.600" in r for r in decision["reasons"])


def test_the_encoder_ships_only_when_its_probe_beats_random_init() -> None:
    assert select({"rows": BASE}, PROBE, {"constcl": "E"})["encoder"] == "constcl"
    worse = {"rows": [{**PROBE["rows"][0], "mean_class_recall": 0.30}, PROBE["rows"][1]]}
    decision = select({"rows": BASE}, worse, {"constcl": "E"})
    assert decision["encoder"] is None and any("does not beat" in r for r in decision["reasons"])
