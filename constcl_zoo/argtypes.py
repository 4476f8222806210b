"""What the command lines share (``constcl-zoo``, ``python -m export``, ``python -m training``): argparse value types
and how they spell the fixes that errors name in Python terms."""

from __future__ import annotations

import argparse

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
