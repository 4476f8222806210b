"""``python -m training eval-tracking`` and ``python -m training track-train`` (registered by
``training/__main__.py`` through :func:`add_parsers`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _eval(args: argparse.Namespace) -> int:
    from constcl_zoo.commands.track import load_tracker

    from .baselines import OpenCVTracker, StaticTracker
    from .datasets import read_dataset
    from .evaluate import evaluate, format_table, write_report

    sequences = read_dataset(args.dataset)
    evaluations = []
    if args.model:
        tracker = load_tracker(args.model)
        evaluations.append(evaluate(lambda: tracker, sequences, name=Path(args.model).name))
    for name in args.baseline:
        make = StaticTracker if name == "static" else (lambda n=name: OpenCVTracker(n))
        evaluations.append(evaluate(make, sequences, name=name.upper()))
    if not evaluations:
        raise SystemExit("eval-tracking: give --model CHECKPOINT and/or --baseline mil|kcf|csrt|static")
    write_report(evaluations, args.out)
    print(format_table(evaluations))
    return 0


def _train(args: argparse.Namespace) -> int:
    from constcl_zoo import load

    from .datasets import read_dataset
    from .pairs import PairConfig, SequencePairs, VideoPairs
    from .train import TrackTrainConfig, train_tracker

    head = json.loads(args.head) if args.head else {}
    kwargs = {"pretrained": False} if args.random_init else {}
    tracker = load(args.encoder, task="tracking", branch=args.branch, head=head, **kwargs)
    pairs = PairConfig(max_gap=args.max_gap, pairs_per_epoch=max(args.steps * args.batch_size, 1))
    if bool(args.videos) == bool(args.dataset):
        raise SystemExit("track-train: give exactly one of --videos (label-free) or --dataset (annotated)")
    data = VideoPairs(args.videos, tracker.tracker_config, pairs) if args.videos else \
        SequencePairs(read_dataset(args.dataset), tracker.tracker_config, pairs)
    cfg = TrackTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           freeze_backbone=not args.finetune, focal=args.focal, pairs=pairs)
    folder = train_tracker(tracker, data, cfg, args.out)
    print(f"tracking checkpoint: {folder}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval-tracking", help="OTB-protocol evaluation of a tracker on a folder of sequences")
    e.add_argument("--dataset", required=True, help="OTB / GOT-10k / VOT folder (or one sequence folder)")
    e.add_argument("--model", help="tracking checkpoint (or an encoder: a fresh SiamFC head)")
    e.add_argument("--baseline", action="append", default=[], choices=["mil", "kcf", "csrt", "static"],
                   help="OpenCV baseline(s) to evaluate beside it (repeatable)")
    e.add_argument("--out", required=True, help="folder for metrics.json, boxes/, success.png, precision.png")
    e.set_defaults(func=_eval)

    t = sub.add_parser("track-train", help="train a SiamFC tracker (label-free from videos, or annotated)")
    t.add_argument("--encoder", required=True, help="encoder: name, checkpoint folder or hf-hub:")
    t.add_argument("--random-init", action="store_true", help="with an architecture name: random init")
    t.add_argument("--branch", default="region", choices=["region", "global"])
    t.add_argument("--videos", help="folder / manifest of videos for label-free pairs")
    t.add_argument("--dataset", help="GOT-10k / OTB / VOT folder for annotated pairs")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--max-gap", type=int, default=10)
    t.add_argument("--finetune", action="store_true", help="train the backbone too (default: frozen)")
    t.add_argument("--focal", action="store_true", help="focal loss instead of the balanced logistic loss")
    t.add_argument("--head", help='tracker config fields as JSON, e.g. \'{"exemplar_size": 63, "search_size": 127}\'')
    t.set_defaults(func=_train)
