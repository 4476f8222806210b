"""``python -m training pretrain``: self-supervised ConST-CL pretraining (single process or torchrun)."""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl_zoo.errors import UsageError

from ..engine import add_run_arguments, resolve_config
from .config import PRESETS, PretrainConfig


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("pretrain", help="self-supervised ConST-CL pretraining (single process or torchrun)")
    add_run_arguments(p, PRESETS)
    p.add_argument("--videos", help="folder of videos (recursive) or a .csv/.txt manifest")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from .learner import pretrain

    extra = [f"data.videos={Path(args.videos).resolve()}"] if args.videos else []
    cfg = resolve_config(PretrainConfig, PRESETS, args, extra)
    if not cfg.data.videos:
        raise UsageError("pretrain: give --videos DIR_OR_MANIFEST (or -o data.videos=...)")
    pretrain(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    return 0
