"""``constcl-zoo <command>``: the package's command line.

Each subcommand is a module of :mod:`constcl_zoo.commands` with ``add_parser(subparsers)`` (setting ``func``);
user errors are one line on stderr and exit status 2 (``--debug`` after the command, or ``CONSTCL_ZOO_DEBUG=1``,
shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .argtypes import CLI_SPELLINGS
from .errors import add_debug_flag, run_command

PROG = "constcl-zoo"
COMMANDS = ("constcl_zoo.commands.embed", "constcl_zoo.commands.classify", "constcl_zoo.commands.track",
            "constcl_zoo.commands.localize")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog=PROG, description="ConST-CL video representations.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        add_debug_flag(importlib.import_module(name).add_parser(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"{PROG} {args.command}", lambda: args.func(args), debug=args.debug,
                       spellings=CLI_SPELLINGS)


if __name__ == "__main__":
    sys.exit(main())
