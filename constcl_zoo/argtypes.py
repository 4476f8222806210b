"""What the command lines share (``constcl-zoo``, ``python -m export``, ``python -m training``): argparse value types
and how they spell the fixes that errors name in Python terms."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

from .errors import UsageError

# How the command lines spell the fixes that errors name in Python terms (see ConstclZooError.describe).
CLI_SPELLINGS = {"random_init": "--random-init"}


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def resolve_deprecated(prog: str, option: str, given: str | None, aliases: Mapping[str, str | None],
                       default: str) -> str:
    """The value of ``option`` (e.g. ``--precision``) when it may also be given by deprecated spellings.

    ``given``: the option's own value (``None``: not given); ``aliases``: each deprecated spelling and the value it
    stands for where it was used (``None`` where not, e.g. ``{"--fp16": "fp16", "--int8": None}``). Each spelling
    used still works and prints one line on stderr naming its replacement; spellings that disagree (with each other
    or with ``option``) are a :class:`~constcl_zoo.errors.UsageError`. Nothing given: ``default``.
    """
    used = {old: value for old, value in aliases.items() if value is not None}
    for old, value in used.items():
        print(f"{prog}: warning: {old} is deprecated; use {option} {value}", file=sys.stderr)
    given_as = [*used, *([f"{option} {given}"] if given is not None else [])]
    values = {*used.values(), *([given] if given is not None else [])}
    if len(values) > 1:
        raise UsageError(f"{' and '.join(given_as)} disagree: give one {option}")
    return values.pop() if values else default
