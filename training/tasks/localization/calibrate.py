"""``python -m training calibrate-localizer``: per-class action thresholds from held-out data, so that a localizer
says nothing rather than something wrong.

    python -m training calibrate-localizer --model LOCALIZER_DIR --data AVA_DIR --out NEW_DIR [--min-precision 0.9]

The localizer scores every ground-truth person box of the val split of ``AVA_DIR`` (an AVA-format folder as
``train-localizer`` reads it: the same reader, :meth:`~.learner.LocalizationLearner.val_detections`); detections are
matched to the ground truth per class as the official frame-mAP does (:func:`~.evaluate.match_detections`). Per
class, a threshold ``t`` reports the detections with probability >= ``t``; its precision is their fraction of true
positives and its recall their true positives over the class's val boxes. The chosen threshold is the **lowest**
``t`` (among the val probabilities) whose precision is >= ``--min-precision`` *and* that reports at least
``--min-true-positives`` (default 5) true positives, so that one or two lucky detections at the top of a nearly
constant score range do not make a threshold; a class that never reaches both gets 1.0, which ``localize`` never
reports (``reached: false`` in the report).

``NEW_DIR`` is a copy of ``LOCALIZER_DIR`` — ``model.safetensors`` byte for byte, so the sha256 that
``config.json`` records stays valid — whose ``config.json`` carries the thresholds (``head.score_thresholds``) and
the calibration's provenance, plus ``calibration.json`` (per class: threshold, precision and recall at it, val
positives) and the model card with a "What it recognises" section. ``localize()`` then uses those thresholds
whenever the caller gives no ``score_threshold``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from constcl_zoo.card import Markdown, replace_section
from constcl_zoo.errors import UsageError
from constcl_zoo.fileio import atomic_write

from ..._moved import deprecated_names

if TYPE_CHECKING:
    from constcl_zoo.tasks.localization import ActionLocalizer

__getattr__ = deprecated_names(__name__)  # add_parser, run: in .cli now
CALIBRATION = "calibration.json"
CARD_SECTION = "## What it recognises"


@dataclass
class ClassThreshold:
    """The calibration of one class: ``threshold`` (probability; 1.0: never reported), ``reached`` (whether any
    threshold reached the target precision), ``precision`` / ``recall`` of the val detections reported at it
    (precision ``None`` when none is), ``num_reported`` of them, ``num_positives`` (val ground-truth boxes of the
    class) and ``best_precision`` (the highest precision any threshold gives; ``None`` without detections)."""

    threshold: float
    reached: bool
    precision: float | None
    recall: float
    num_reported: int
    num_positives: int
    best_precision: float | None


def choose_threshold(scores: np.ndarray, is_tp: np.ndarray, num_positives: int,
                     min_precision: float, min_true_positives: int = 5) -> ClassThreshold:
    """The lowest threshold ``t`` among ``scores`` ``[D]`` (probabilities) at which the detections with score >= ``t``
    have precision >= ``min_precision`` (``is_tp`` ``[D]``: matched a ground-truth box) with at least
    ``min_true_positives`` true positives; 1.0 when none does."""
    if not 0.0 < min_precision <= 1.0:
        raise UsageError(f"--min-precision must be in (0, 1], got {min_precision}")
    scores, is_tp = np.asarray(scores, np.float64), np.asarray(is_tp, bool)
    order = np.argsort(-scores, kind="stable")
    s, tp = scores[order], np.cumsum(is_tp[order])
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, bool)  # last detection of each distinct score
    thresholds, hits, reported = s[last], tp[last], np.arange(1, len(s) + 1)[last]
    precision = hits / np.maximum(reported, 1)
    best = float(precision.max()) if len(precision) else None
    ok = np.nonzero((precision >= min_precision - 1e-12) & (hits >= min_true_positives))[0]
    if len(ok) == 0:
        return ClassThreshold(1.0, False, None, 0.0, 0, num_positives, best)
    i = ok[-1]  # thresholds descend: the last that reaches the target is the lowest
    return ClassThreshold(float(thresholds[i]), True, float(precision[i]),
                          float(hits[i] / num_positives) if num_positives else 0.0, int(reported[i]), num_positives,
                          best)


def calibrate(model: ActionLocalizer, data_root: str | Path, min_precision: float = 0.9,
              batch_size: int = 8, min_true_positives: int = 5) -> dict[str, Any]:
    """Thresholds for ``model`` from the val split of the AVA-format folder ``data_root``: ``{"classes": [one
    :class:`ClassThreshold` dict + ``label``/``action_id`` per model label, in label order], "val_frame_mAP",
    "num_key_frames", ...}``."""
    from constcl_zoo.checkpoint import sha256_of

    from ...engine import ConfigError
    from .config import LocalizationConfig, LocalizationDataConfig
    from .evaluate import frame_map, match_detections
    from .learner import LocalizationLearner

    cfg = LocalizationConfig(data=LocalizationDataConfig(root=str(data_root), eval_batch_size=batch_size))
    try:
        learner = LocalizationLearner(cfg)
    except ConfigError as exc:
        raise UsageError(f"--data {data_root}: {exc}") from exc
    labelmap = cfg.data.path("labelmap")
    known = {x.id: x.name for x in learner.labels}
    missing = [(name, i) for name, i in zip(model.labels, model.label_ids, strict=True) if i not in known]
    if missing:
        raise UsageError(f"{labelmap}: the model's classes {missing} (label, action id) are not in this label map "
                         f"(it has {sorted(known.items())}); calibrate on the data the localizer was made for")
    truth, rows, keys = learner.val_detections(model)
    matches = match_detections(truth, rows, learner.labels, groundtruth_keys=keys)
    classes = []
    for name, i in zip(model.labels, model.label_ids, strict=True):
        chosen = choose_threshold(matches.scores[i], matches.is_tp[i], matches.num_gt[i], min_precision,
                                  min_true_positives)
        classes.append({"label": name, "action_id": i, **asdict(chosen)})
    return {"min_precision": min_precision, "min_true_positives": min_true_positives, "split": "val",
            "boxes": "ground truth",
            "rule": "per class, the lowest threshold whose val precision >= min_precision with >= min_true_positives "
                    "true positives; 1.0 (never reported) when none reaches both",
            "val_frame_mAP": frame_map(truth, rows, learner.labels, groundtruth_keys=keys).mean_ap,
            "num_key_frames": len(keys),
            "val_annotations_sha256": sha256_of(cfg.data.path("val_csv")), "classes": classes}


def card_section(report: dict[str, Any]) -> str:
    """The model card's "What it recognises" section: each class with its calibrated threshold and val numbers."""
    section = Markdown().add(CARD_SECTION, "").text(
        f"`localize()` reports an action only when its probability reaches the class's "
        f"threshold, calibrated on the held-out val split of the synthetic AVA-format set (ground-truth person "
        f"boxes, {report['num_key_frames']} key frames): the lowest threshold with precision >= "
        f"{report['min_precision']:g} there. A class that never reaches that precision is never reported. "
        "A person doing none of these gets a box and a track, and no action. An explicit "
        "`score_threshold=` overrides these thresholds for every class.")
    rows = []
    for c in report["classes"]:
        threshold = f"{c['threshold']:.3f}" if c["reached"] else "1.0 (never reported)"
        precision = "—" if c["precision"] is None else f"{c['precision']:.3f}"
        if not c["reached"] and c["best_precision"] is not None:
            precision = f"— (best {c['best_precision']:.3f})"
        rows.append((c["label"], threshold, precision, f"{c['recall']:.3f}", c["num_positives"]))
    return section.table(("action", "threshold", "val precision", "val recall", "val positives"), rows).render()


def with_card_section(card: str, report: dict[str, Any]) -> str:
    """``card`` with its "What it recognises" section replaced by (or, when absent, followed by) the report's."""
    return replace_section(card, CARD_SECTION, card_section(report))


def write_calibrated(model_dir: str | Path, out: str | Path, report: dict[str, Any],
                     provenance: dict[str, Any]) -> Path:
    """Copy the checkpoint ``model_dir`` to ``out`` with ``report``'s thresholds in ``config.json``
    (``head.score_thresholds``; ``provenance["calibration"]``), ``calibration.json`` and the card section; the
    weights file is copied unchanged and its recorded sha256 checked. Written all-or-nothing."""
    from constcl_zoo.checkpoint import sha256_of
    from constcl_zoo.tasks.base import TaskConfig

    model_dir, out = Path(model_dir), Path(out)
    source = model_dir / "config.json"
    data = json.loads(source.read_text())
    weights = data.get("weights")
    if not isinstance(weights, dict) or "file" not in weights or "sha256" not in weights:
        raise UsageError(f"{source}: no 'weights' record (file, sha256); give a localization checkpoint folder")
    config = TaskConfig.from_dict(data)
    thresholds = tuple(float(c["threshold"]) for c in report["classes"])
    head = config.head.__class__(**{**asdict(config.head), "score_thresholds": thresholds})
    config = config.replace(head=head, provenance={**config.provenance, "calibration": provenance})
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for file in model_dir.iterdir():
        if file.is_file() and file.name not in ("config.json", CALIBRATION):
            shutil.copy2(file, partial / file.name)
    if sha256_of(partial / weights["file"]) != weights["sha256"]:
        raise UsageError(f"{model_dir / weights['file']}: sha256 differs from the one {source} records; the "
                         "checkpoint is corrupted")
    config.to_json(partial / "config.json", extra={"weights": weights})
    atomic_write(partial / CALIBRATION, json.dumps({**provenance, **report}, indent=2) + "\n")
    card = partial / "README.md"
    atomic_write(card, with_card_section(card.read_text() if card.is_file() else "", report))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out
