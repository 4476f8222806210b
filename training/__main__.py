"""``python -m training <command>``: pretrain, probe, finetune, track-train, eval-tracking, train-localizer,
calibrate-localizer, eval-ava, replicate, install-default, ship-default, export-checkpoint, publish, convert-tf.

    python -m training pretrain --config cpu_smoke --videos ../shared/data/videos --out runs/smoke
    python -m training pretrain --out runs/smoke --resume                   # continue where it stopped
    torchrun --nproc_per_node 8 -m training pretrain --config paper_k400 --videos k400.csv --out runs/k400
    python -m training probe --train videos/train --val videos/val --model constcl_r3d50 --out runs/probe
    python -m training finetune --config ucf101 --ucf101-splits ucfTrainTestlist --train UCF-101 --model M --out RUN
    python -m training export-checkpoint runs/smoke --out checkpoints/smoke
    python -m training publish checkpoints/smoke --repo-id org/constcl-smoke --revision v1
    python -m training convert-tf r3d_1x_k600_800ep.tar.gz --out checkpoints/cvrl_k600
    python -m training train-localizer --config cpu_small --data synth --out runs/loc
    python -m training calibrate-localizer --model runs/loc/model --data synth --out runs/loc_calibrated
    python -m training replicate --preset cpu --out runs/replicate          # the README table, ~1 h on 2 cores
    python -m training install-default runs/replicate                      # ship its default model in the package
    python -m training eval-ava --gt GT.csv --detections DET.csv --labelmap LABELS.pbtxt --out result.json

Any config field can be overridden: ``-o optim.lr=0.2 -o data.batch_size=8`` (values are JSON, else strings).
User errors are one line on stderr and exit status 2 (the traceback: ``--debug`` after the command, or
``CONSTCL_ZOO_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from constcl_zoo.errors import add_debug_flag, run_command

PROG = "python -m training"
# "module:function": function(subparsers) adds one subcommand and returns its parser, with set_defaults(func=...);
# a new subcommand is one line. A task's commands live in its cli.py.
COMMANDS = ("training.pretrain.cli:add_parser",
            "training.tasks.recognition.cli:add_probe_parser", "training.tasks.recognition.cli:add_finetune_parser",
            "training.tasks.tracking.cli:add_train_parser", "training.tasks.tracking.cli:add_eval_parser",
            "training.tasks.localization.cli:add_train_parser", "training.tasks.localization.cli:add_calibrate_parser",
            "training.tasks.localization.cli:add_eval_ava_parser",
            "training.replicate.cli:add_parser", "training.replicate.install:add_parser",
            "training.replicate.ship:add_parser",
            "training.release.checkpoint:add_parser", "training.release.publish:add_parser",
            "training.release.convert_tf:add_parser")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for entry in COMMANDS:
        module, _, function = entry.partition(":")
        add_debug_flag(getattr(importlib.import_module(module), function)(sub))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join([*PROG.split(), *argv])  # what provenance records as "the command"
    return run_command(PROG, lambda: args.func(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
