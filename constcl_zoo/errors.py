"""The package's exception base class.

Every error constcl_zoo raises on purpose derives from :class:`ConstclZooError`, so callers can catch the
package's errors in one place (``except constcl_zoo.ConstclZooError``). Each concrete error also keeps the
builtin base that describes it (``ValueError`` for bad input, ``LookupError`` for missing weights, ...), so code
written against those keeps working. The command lines print a ``ConstclZooError`` as one line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


class ConstclZooError(Exception):
    """Base class of every error raised by constcl_zoo (and by the repository's training / export packages)."""


DEBUG_ENV = "CONSTCL_ZOO_DEBUG"


class UsageError(ConstclZooError, ValueError):
    """A command-line mistake the user can fix (a bad flag value, an unusable output folder, ...)."""


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug`` (show the traceback of an error instead of the one-line message)."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show tracebacks instead of one-line errors (or set {DEBUG_ENV}=1)")


def run_command(prog: str, body: Callable[[], int], *, debug: bool = False) -> int:
    """Run a command's ``body`` and turn the package's errors into one line on stderr and exit status 2.

    ``ConstclZooError`` (every error the package raises on purpose) and ``OSError`` about a file (a missing
    input, a full disk, a folder without write permission) are user errors: ``"<prog>: error: <message>"``
    and 2. Anything else is a bug and keeps its traceback. ``debug`` (``--debug``) or ``CONSTCL_ZOO_DEBUG=1``
    re-raises every error with its traceback.
    """
    debug = debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ConstclZooError, OSError) as exc:
        if debug or (isinstance(exc, OSError) and not _is_user_oserror(exc)):
            raise
        message = " ".join(str(exc).split()) if "\n" not in str(exc) else _first_lines(str(exc))
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


def _is_user_oserror(exc: OSError) -> bool:
    return exc.filename is not None or isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError |
                                                  NotADirectoryError | FileExistsError)


def _first_lines(text: str, limit: int = 40) -> str:
    """Listings (missing keys, refused variables) keep their lines; very long ones are cut with a count."""
    lines = text.rstrip().splitlines()
    if len(lines) <= limit:
        return "\n".join(lines)
    return "\n".join([*lines[:limit], f"... ({len(lines) - limit} more lines)"])
