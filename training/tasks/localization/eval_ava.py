"""``python -m training eval-ava``: the official AVA frame-mAP of a detections CSV, written as JSON.

    python -m training eval-ava --gt ava_val_v2.2.csv --detections results.csv \
        --labelmap ava_action_list_v2.2_for_activitynet_2019.pbtxt --out result.json

writes ``{"mAP": ..., "per_class": {id: AP}, ..., "rule": ..., "ignored_key_frames": N}`` (see :mod:`.evaluate`)
and prints the mAP. ``--rule current`` (the default) is the current ActivityNet evaluator, the one AVA v2.2
results are reported with: ``video_id,timestamp`` rows of the ground truth mark key frames without actions,
detections on key frames absent from the ground truth are ignored, timestamps may be fractional.
``--rule 2018`` is the 2018 evaluator (whole-second key frames, ``--excluded`` timestamps dropped, every other
detected key frame scored); ``--rule ignore-empty-frames`` mmaction2's (detections on key frames without ground
truth of an evaluated class dropped).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl_zoo.errors import UsageError

from .evaluate import RULES, evaluate_files, write_result


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``eval-ava`` to a subcommand parser; its handler is ``args.func`` (:func:`run`)."""
    p = subparsers.add_parser("eval-ava", help="official AVA frame-mAP@0.5 of a detections CSV",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, help="ground-truth CSV (video_id,timestamp,x1,y1,x2,y2,action_id,person_id; "
                   "video_id,timestamp rows: key frames without actions)")
    p.add_argument("--detections", required=True,
                   help="detections CSV (video_id,timestamp,x1,y1,x2,y2,action_id,score)")
    p.add_argument("--labelmap", required=True, help="label map pbtxt of the evaluated classes")
    p.add_argument("--rule", default="current", choices=[x.replace("_", "-") for x in RULES],
                   help="current: the official evaluator since 2020 (default; AVA v2.2); 2018: the 2018 evaluator "
                        "(with --excluded); ignore-empty-frames: mmaction2's")
    p.add_argument("--excluded", default=None,
                   help="excluded timestamps CSV (video_id,timestamp), with --rule 2018 or ignore-empty-frames")
    p.add_argument("--out", default=None, help="JSON file to write the result to")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate (user errors: :class:`UsageError`, answered in one line by ``python -m training``)."""
    for flag in ("gt", "detections", "labelmap", "excluded"):
        value = getattr(args, flag)
        if value is not None and not Path(value).is_file():
            raise UsageError(f"--{flag}: no file at {value}")
    if args.excluded is not None and args.rule == "current":
        raise UsageError("--excluded: the current official evaluator takes no excluded timestamps (detections on "
                         "key frames absent from --gt are ignored); drop it, or add --rule 2018")
    result = evaluate_files(args.gt, args.detections, args.labelmap, args.excluded, rule=args.rule.replace("-", "_"))
    if args.out:
        write_result(args.out, result)
    ignored = (f"; {result.ignored_key_frames} detected key frames ignored" if result.ignored_key_frames else "")
    print(f"frame-mAP@0.5 {result.mean_ap:.4f} over {len(result.per_class)} classes with ground truth "
          f"(rule {args.rule}{ignored})" + (f" (written to {args.out})" if args.out else ""))
    return 0
