"""``python -m training train-localizer``: train an action localizer on AVA-format data (the shared engine).

    python -m training train-localizer --config cpu_small --data synth/ --out runs/loc
    python -m training train-localizer --out runs/loc --resume                  # continue where it stopped
    torchrun --nproc_per_node 8 -m training train-localizer --config ava_r3d50 --data ava/ --out runs/ava

Validation (``run.eval_every`` steps and after the last) is the official frame-mAP@0.5 on the val split
(``eval.jsonl``); at the end ``<out>/model`` is a localization checkpoint: ``constcl_zoo.load("<out>/model")``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...engine import add_run_arguments, read_jsonl, resolve_config
from .config import PRESETS, LocalizationConfig


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("train-localizer", help="train an action localizer on AVA-format data", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, PRESETS)
    p.add_argument("--data", help="dataset root in the AVA layout (annotations/, videos/); sets data.root")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from .task import train_localizer

    extra = [f"data.root={Path(args.data).resolve()}"] if args.data else []
    cfg = resolve_config(LocalizationConfig, PRESETS, args, extra)
    summary = train_localizer(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    evals = read_jsonl(Path(args.out) / "eval.jsonl")
    score = f"val frame-mAP@0.5 {evals[-1]['val_frame_mAP']:.4f}; " if evals else ""
    print(f"{score}localization checkpoint written to {summary['model']}")
    return 0
