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
# Each module has add_parser(subparsers) -> its parser, with set_defaults(func=...): a new subcommand is one line.
COMMANDS = ("training.pretrain.cli", "training.tasks.recognition.cli", "training.tasks.recognition.finetune_cli",
            "training.tasks.tracking.cli_train", "training.tasks.tracking.cli_eval", "training.tasks.localization.cli",
            "training.tasks.localization.calibrate", "training.tasks.localization.eval_ava", "training.replicate.cli",
            "training.replicate.install", "training.replicate.ship", "training.release.checkpoint",
            "training.release.publish", "training.release.convert_tf")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        add_debug_flag(importlib.import_module(name).add_parser(sub))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join([*PROG.split(), *argv])  # what provenance records as "the command"
    return run_command(PROG, lambda: args.func(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
