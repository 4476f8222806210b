"""``python -m training track-train``: train a SiamFC tracker on the shared engine (see :mod:`.train`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...engine import add_run_arguments, resolve_config
from .train import PRESETS, TrackTrainConfig


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("track-train", help="train a SiamFC tracker (label-free from videos, or annotated pairs)")
    add_run_arguments(p, PRESETS)
    p.add_argument("--videos", help="folder / manifest of videos for label-free pairs (data.videos)")
    p.add_argument("--dataset", help="GOT-10k / OTB / VOT folder for annotated pairs (data.dataset)")
    p.add_argument("--encoder", help="encoder: name, checkpoint folder or hf-hub: (model.encoder)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from .train import train_tracker

    extra = [f"data.videos={Path(args.videos).resolve()}"] if args.videos else []
    extra += [f"data.dataset={Path(args.dataset).resolve()}"] if args.dataset else []
    extra += [f"model.encoder={args.encoder}"] if args.encoder else []
    cfg = resolve_config(TrackTrainConfig, PRESETS, args, extra)
    folder = train_tracker(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    print(f"tracking checkpoint: {folder}")
    return 0
