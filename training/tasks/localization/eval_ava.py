"""``python -m training eval-ava``: the official AVA frame-mAP of a detections CSV, written as JSON.

    python -m training eval-ava --gt ava_val_v2.2.csv --detections results.csv \
        --labelmap ava_action_list_v2.2_for_activitynet_2019.pbtxt --excluded ava_val_excluded_timestamps_v2.2.csv \
        --out result.json

writes ``{"mAP": ..., "per_class": {id: AP}, ..., "frames_without_gt": ...}`` (see :mod:`.evaluate`) and prints
the mAP. Detections on key frames without ground truth are false positives, as in the official ActivityNet code;
``--frames-without-gt ignore`` drops them instead (mmaction2's default).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl_zoo.errors import UsageError

from .evaluate import FRAMES_WITHOUT_GT, evaluate_files, write_result


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``eval-ava`` to a subcommand parser; its handler is ``args.func`` (:func:`run`)."""
    p = subparsers.add_parser("eval-ava", help="official AVA frame-mAP@0.5 of a detections CSV",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, help="ground-truth CSV (video_id,timestamp,x1,y1,x2,y2,action_id,person_id)")
    p.add_argument("--detections", required=True,
                   help="detections CSV (video_id,timestamp,x1,y1,x2,y2,action_id,score)")
    p.add_argument("--labelmap", required=True, help="label map pbtxt of the evaluated classes")
    p.add_argument("--excluded", default=None, help="excluded timestamps CSV (video_id,timestamp)")
    p.add_argument("--frames-without-gt", default="false-positive",
                   choices=[x.replace("_", "-") for x in FRAMES_WITHOUT_GT],
                   help="detections on key frames without ground truth: false positives (the official evaluator, "
                        "default) or ignored")
    p.add_argument("--out", default=None, help="JSON file to write the result to")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate (user errors: :class:`UsageError`, answered in one line by ``python -m training``)."""
    for flag in ("gt", "detections", "labelmap", "excluded"):
        value = getattr(args, flag)
        if value is not None and not Path(value).is_file():
            raise UsageError(f"--{flag}: no file at {value}")
    result = evaluate_files(args.gt, args.detections, args.labelmap, args.excluded,
                            frames_without_gt=args.frames_without_gt.replace("-", "_"))
    if args.out:
        write_result(args.out, result)
    print(f"frame-mAP@0.5 {result.mean_ap:.4f} over {len(result.per_class)} classes with ground truth "
          f"(detections on key frames without ground truth: {args.frames_without_gt})"
          + (f" (written to {args.out})" if args.out else ""))
    return 0
