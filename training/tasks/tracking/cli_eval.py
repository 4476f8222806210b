"""``python -m training eval-tracking``: OTB-protocol (OPE) evaluation of a tracker and OpenCV baselines on a
folder of sequences; prints the table, writes ``metrics.json``, per-sequence boxes and the plots."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from constcl_zoo.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    e = sub.add_parser("eval-tracking", help="OTB-protocol evaluation of a tracker on a folder of sequences")
    e.add_argument("--dataset", required=True, help="OTB / GOT-10k / VOT folder (or one sequence folder)")
    e.add_argument("--model", help="tracking checkpoint (or an encoder: a fresh SiamFC head)")
    e.add_argument("--random-init", action="store_true", help="--model is an architecture name: random weights")
    e.add_argument("--head", action="append", default=[], metavar="KEY=VALUE",
                   help="tracker parameter for an encoder's fresh head, e.g. exemplar_size=63 (repeatable)")
    e.add_argument("--baseline", action="append", default=[], choices=["ncc", "mil", "kcf", "csrt", "static"],
                   help="baseline(s) to evaluate beside it (repeatable): ncc, the package's training-free tracker "
                        "(normalised cross-correlation of pixels in the SiamFC loop; --head changes its "
                        "parameters when no --model is given); OpenCV's mil / kcf / csrt (kcf / csrt need "
                        "opencv-contrib); static, a box that never moves")
    e.add_argument("--out", required=True, help="folder for metrics.json, boxes/, success.png, precision.png")
    e.set_defaults(func=run)
    return e


def run(args: argparse.Namespace) -> int:
    from constcl_zoo.tasks.tracking import NCC_CONFIG, NCCTracker
    from constcl_zoo.workflows.loaders import load_tracker

    from .baselines import OpenCVTracker, StaticTracker
    from .datasets import read_dataset
    from .evaluate import evaluate, format_table, write_report

    if not args.model and not args.baseline:
        raise UsageError("eval-tracking: give --model CHECKPOINT and/or --baseline ncc|mil|kcf|csrt|static")
    sequences = read_dataset(args.dataset)
    evaluations = []
    if args.model:
        tracker = load_tracker(args.model, random_init=args.random_init, head=_head(args.head))
        evaluations.append(evaluate(lambda: tracker, sequences, name=Path(args.model).name))
    ncc_config = NCC_CONFIG if args.model else dataclasses.replace(NCC_CONFIG, **_head(args.head))
    makers = {"static": StaticTracker, "ncc": lambda: NCCTracker(ncc_config)}
    for name in args.baseline:
        make = makers.get(name, lambda n=name: OpenCVTracker(n))
        evaluations.append(evaluate(make, sequences, name=name.upper()))
    write_report(evaluations, args.out)
    print(format_table(evaluations))
    return 0


def _head(items: list[str]) -> dict[str, float | int | bool]:
    import json

    head = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UsageError(f"--head {item!r}: expected KEY=VALUE, e.g. exemplar_size=63")
        try:
            head[key.strip()] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--head {item!r}: the value must be a number or true/false") from exc
    return head
