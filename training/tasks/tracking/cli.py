"""The tracking commands: ``track-train`` (train a SiamFC tracker on the shared engine: :mod:`.learner`) and
``eval-tracking`` (OTB-protocol evaluation of a tracker and OpenCV baselines on a folder of sequences: prints the
table, writes ``metrics.json``, per-sequence boxes and the plots: :mod:`.evaluate`).

    python -m training track-train --config cpu_small --videos ../shared/data/videos --out runs/track
    python -m training eval-tracking --dataset DIR --model CHECKPOINT --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from constcl_zoo.errors import UsageError

from ...engine import add_run_arguments, resolve_config
from .config import PRESETS, TrackTrainConfig


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``track-train``: train a SiamFC tracker on the shared engine (:mod:`.learner`)."""
    p = sub.add_parser("track-train", help="train a SiamFC tracker (label-free from videos, or annotated pairs)")
    add_run_arguments(p, PRESETS)
    p.add_argument("--videos", help="folder / manifest of videos for label-free pairs (data.videos)")
    p.add_argument("--dataset", help="GOT-10k / OTB / VOT folder for annotated pairs (data.dataset)")
    p.add_argument("--encoder", help="encoder: name, checkpoint folder or hf-hub: (model.encoder)")
    p.set_defaults(func=run_train)
    return p


def run_train(args: argparse.Namespace) -> int:
    """Resolve the config (preset, flags, ``-o``), train, write ``<out>/tracker``. Returns 0."""
    from .learner import train_tracker

    extra = [f"data.videos={Path(args.videos).resolve()}"] if args.videos else []
    extra += [f"data.dataset={Path(args.dataset).resolve()}"] if args.dataset else []
    extra += [f"model.encoder={args.encoder}"] if args.encoder else []
    cfg = resolve_config(TrackTrainConfig, PRESETS, args, extra)
    folder = train_tracker(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    print(f"tracking checkpoint: {folder}")
    return 0


def add_eval_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``eval-tracking``: OTB-protocol evaluation of a tracker and baselines (:mod:`.evaluate`)."""
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
    e.set_defaults(func=run_eval)
    return e


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate ``--model`` and the baselines on ``--dataset``; print the table, write the report. Returns 0."""
    from constcl_zoo.tasks.tracking import NCC_CONFIG, NCCTracker
    from constcl_zoo.workflows.loaders import load_tracker

    from .baselines import OpenCVTracker, StaticTracker
    from .data import read_dataset
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
