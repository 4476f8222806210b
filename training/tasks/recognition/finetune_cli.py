"""The ``finetune`` command: fine-tune an encoder with a classifier head on a labelled video dataset.

    python -m training finetune --config cpu_small --train videos/train --val videos/val --model constcl_r3d14_w16 \\
        --random-init --out runs/ft
    python -m training finetune --config ucf101 --ucf101-splits ucfTrainTestlist --split 1 --train UCF-101 \\
        --model cvrl_r3d50.k600_800ep --out runs/ucf101
    torchrun --nproc_per_node 8 -m training finetune --config ucf101 ... --out runs/ucf101
    python -m training finetune --out runs/ucf101 --resume                 # continue where it stopped

Writes the engine's run files (``config.json``, ``checkpoints/``, ``metrics.jsonl``, ``eval.jsonl``, ``tb/``,
``train.log``, ``summary.json``) and, at the end, ``metrics.json`` (top-1, top-5, per-class accuracy, confusion
matrix), ``confusion.png`` and the task checkpoint ``checkpoint/`` (``constcl_zoo.load(RUN/checkpoint)``).
Any config field can be overridden: ``-o optim.lr=0.01 -o model.freeze_encoder=true -o loss.label_smoothing=0.1``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl_zoo.errors import UsageError

from ...engine import add_run_arguments, resolve_config
from .cli import add_dataset_arguments
from .finetune_config import PRESETS, FinetuneConfig


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``finetune`` sub-command to ``subparsers``; its handler is ``args.func`` (= :func:`run`)."""
    p = subparsers.add_parser("finetune", help="fine-tune an encoder with a classifier head (all layers or the head)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, PRESETS)
    add_dataset_arguments(p, "data (recorded in config.json; not needed with --resume)", required=False,
                          split_default=None)
    model = p.add_argument_group("encoder")
    model.add_argument("--model", help="encoder: a registered name, checkpoint folder or hf-hub:... (default: the "
                                       "preset's)")
    model.add_argument("--random-init", action="store_true", help="a seeded random init of --model's architecture "
                                                                  "(the baseline a pretrained encoder must beat)")
    p.set_defaults(func=run)
    return p


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """The dataset and encoder flags as ``-o`` overrides (paths made absolute); ``-o`` itself comes after."""
    def path(value: str) -> str:
        return str(Path(value).resolve())

    extra = []
    if args.ucf101_splits or args.hmdb51_splits:
        fmt = "ucf101" if args.ucf101_splits else "hmdb51"
        extra += [f"data.format={fmt}", f"data.splits={path(args.ucf101_splits or args.hmdb51_splits)}"]
    elif args.train:
        extra.append("data.format=folder")
    if args.train:
        extra.append(f"data.train={path(args.train)}")
    if args.val:
        extra.append(f"data.val={path(args.val)}")
    if args.split is not None:
        extra.append(f"data.split={args.split}")
    if args.model:
        encoder = args.model
        if Path(encoder).exists():  # a local folder: absolute, so the run does not depend on the working directory
            encoder = path(encoder)
        extra.append(f"model.encoder={encoder}")
    if args.random_init:
        extra.append("model.random_init=true")
    return extra


def run(args: argparse.Namespace) -> int:
    from .finetune import finetune

    flags = _flag_overrides(args)
    cfg = resolve_config(FinetuneConfig, PRESETS, args, [*flags, *args.override])
    if not cfg.data.train:
        raise UsageError("finetune: give --train VIDEOS (a folder per class, or the video root with split files)")
    result = finetune(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite,
                      command=getattr(args, "command_line", ""))
    m = result["metrics"]
    print(f"finetune: top-1 {m['top1']:.4f}, top-5 {m['top5']:.4f}, mean class accuracy "
          f"{m['mean_class_accuracy']:.4f} on {m['num_videos']} videos -> {args.out} "
          f"(task checkpoint: {Path(args.out) / 'checkpoint'})")
    return 0
