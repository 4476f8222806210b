"""``constcl-zoo localize VIDEO``: who does what, where and when — an annotated MP4 and JSON.

    constcl-zoo localize video.mp4 --model my_localizer/ --out annotated.mp4 --json results.json
    constcl-zoo localize video.mp4 --boxes people.csv --model my_localizer/ --out annotated.mp4
    constcl-zoo localize video.mp4 --out tracks.mp4          # no --model: person boxes and tracks only

Person boxes come from ``--boxes`` (an AVA-format CSV ``video_id,timestamp,x1,y1,x2,y2,action_id,score``: rows of
this video — ``video_id`` = the file's stem, or every row when the file holds one video — with score >=
``--box-threshold``; key frames at its timestamps) or from OpenCV's HOG people detector on key frames every
``--interval`` seconds (``--detector model.onnx``: a user-supplied ONNX person detector, see
:mod:`constcl_zoo.inference.detection`). ``--model``: a localization checkpoint, or an encoder with ``--labels``
(an untrained head: for trying the pipeline only). Actions shown: those whose probability reaches
``--score-threshold`` when given, else the model's calibrated per-class thresholds (``python -m training
calibrate-localizer``), else 0.5; a person with none keeps its box and track without an action.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import ConstclZooError, UsageError
from ..formats.ava import read_boxes_csv


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``localize`` to a subcommand parser; its handler is ``args.func`` (:func:`run`)."""
    p = subparsers.add_parser("localize", help="spatio-temporal action localization of a video",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", help="video file")
    p.add_argument("--model", default=None, help="localization checkpoint (folder, hf-hub:...) or encoder name "
                   "(default: the package's trained default localizer)")
    p.add_argument("--no-actions", action="store_true", help="person boxes and tracks only (no action model)")
    p.add_argument("--labels", default=None, help="with an encoder --model: comma-separated action names")
    p.add_argument("--random-init", action="store_true",
                   help="with an encoder --model and --labels: a seeded random init instead of its weights")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init and of the new action head")
    p.add_argument("--boxes", default=None, help="person boxes CSV (AVA format, with scores)")
    p.add_argument("--box-threshold", type=float, default=0.0, help="minimum person score (boxes CSV or detector)")
    p.add_argument("--detector", default=None, help="ONNX person detector (default: OpenCV HOG)")
    p.add_argument("--hog-short-side", type=int, default=600, help="HOG detector: frame short side in px")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between key frames (detector boxes)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="minimum action probability shown, for every class (default: the model's calibrated "
                        "per-class thresholds, else 0.5)")
    p.add_argument("--top-k", type=int, default=3, help="actions per person at most")
    p.add_argument("--out", default=None, help="annotated H.264 MP4 to write")
    p.add_argument("--json", default=None, help="results JSON to write")
    p.add_argument("--device", default="cpu", help="torch device of the model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _progress(total: int | None, desc: str, disable: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is optional
        return None, lambda n: None
    bar = tqdm(total=total, desc=desc, unit="frame", disable=disable, file=sys.stderr, leave=False)

    def update(n: int) -> None:
        bar.update(n - bar.n)

    return bar, update


def run(args: argparse.Namespace) -> int:
    """Run ``localize`` (user errors: :class:`UsageError`, answered in one line by ``constcl-zoo``)."""
    from ..tasks.localization import localize

    video = Path(args.video)
    hog = _check(args, video)
    model = _model(args)
    boxes = read_boxes_csv(args.boxes, video.stem, args.box_threshold) if args.boxes else None
    detector = None
    if boxes is None:
        from ..inference.detection import OnnxPersonDetector

        detector = OnnxPersonDetector(args.detector) if args.detector else hog
    bar, update = _progress(None, "localize", args.no_progress)
    try:
        result = localize(model, video, boxes=boxes, detector=detector, person_threshold=args.box_threshold,
                          score_threshold=args.score_threshold, top_k=args.top_k, interval_s=args.interval,
                          progress=update)
    finally:
        if bar is not None:
            bar.close()
    _write(args, result, video)
    persons = sum(len(f.persons) for f in result.frames)
    print(f"{video.name}: {len(result.frames)} key frames, {persons} person boxes, {result.num_tracks} tracks"
          + (f" -> {args.out}" if args.out else "") + (f", {args.json}" if args.json else ""))
    return 0


def _check(args: argparse.Namespace, video: Path) -> Any:
    """Refuse unusable arguments before any work; the HOG detector when no ONNX one is given (its settings checked
    here too)."""
    from ..inference.detection import HogPersonDetector
    from ..tasks.localization import LocalizationInputError, check_interval

    if not video.is_file():
        raise UsageError(f"no video file at {video}")
    if not args.out and not args.json:
        raise UsageError("nothing to write: give --out annotated.mp4 and/or --json results.json")
    if args.out and Path(args.out).suffix.lower() != ".mp4":
        raise UsageError(f"--out {args.out}: the annotated video is written as .mp4 (H.264)")
    if args.score_threshold is not None and not 0 <= args.score_threshold <= 1:
        raise UsageError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    try:
        check_interval(args.interval)
        hog = HogPersonDetector(short_side=args.hog_short_side) if not args.detector else None
    except ConstclZooError as exc:
        flag = "--interval" if isinstance(exc, LocalizationInputError) else "--hog-short-side"
        raise UsageError(f"{flag}: {exc}") from None
    if not math.isfinite(args.box_threshold):
        raise UsageError(f"--box-threshold must be a finite number, got {args.box_threshold}")
    return hog


def _model(args: argparse.Namespace) -> Any:
    """The action model (``None`` with ``--no-actions``: boxes and tracks only)."""
    from ..workflows.loaders import load_localizer

    if args.no_actions:
        if args.model or args.labels or args.random_init:
            raise UsageError("--no-actions runs the person detector and tracks only; drop --model / --labels / "
                             "--random-init")
        return None
    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    return load_localizer(args.model, labels, device=args.device, random_init=args.random_init, seed=args.seed)


def _write(args: argparse.Namespace, result: Any, video: Path) -> None:
    """The results JSON and / or the annotated MP4."""
    from ..fileio import atomic_write
    from ..tasks.localization import write_annotated

    if args.json:
        atomic_write(args.json, json.dumps(result.to_dict(), indent=1) + "\n")
    if args.out:
        bar, update = _progress(result.num_frames, "write", args.no_progress)
        try:
            write_annotated(result, video, args.out, progress=update)
        finally:
            if bar is not None:
                bar.close()
