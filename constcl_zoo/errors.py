"""The package's exception base class.

Every error constcl_zoo raises on purpose derives from :class:`ConstclZooError`, so callers can catch the
package's errors in one place (``except constcl_zoo.ConstclZooError``). Each concrete error also keeps the
builtin base that describes it (``ValueError`` for bad input, ``LookupError`` for missing weights, ...), so code
written against those keeps working. The command lines print a ``ConstclZooError`` as one line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import string
import sys
from collections.abc import Callable, Iterator, Mapping


class ConstclZooError(Exception):
    """Base class of every error raised by constcl_zoo (and by the repository's training / export packages).

    A fix that is spelled one way in Python and another on a command line (``pretrained=False`` /
    ``--random-init``) is written as a ``${name}`` placeholder in the message, with ``fixes={"name": "<the
    Python spelling>"}``: ``str()`` shows the Python spelling, :meth:`describe` the one a command passes.
    """

    def __init__(self, *args: object, fixes: Mapping[str, str] | None = None) -> None:
        super().__init__(*args)
        self.fixes = dict(fixes or {})

    def __str__(self) -> str:
        return self.describe()

    def describe(self, spellings: Mapping[str, str] | None = None) -> str:
        """The message, each fix spelled as ``spellings`` (e.g. ``{"random_init": "--random-init"}``) says,
        else as in Python."""
        text = self.args[0] if len(self.args) == 1 and isinstance(self.args[0], str) else super().__str__()
        fixes = getattr(self, "fixes", None)  # absent if a subclass's __init__ bypasses this one
        if not fixes:
            return text
        names = {**fixes, **{k: v for k, v in (spellings or {}).items() if k in fixes}}
        return string.Template(text).safe_substitute(names)


DEBUG_ENV = "CONSTCL_ZOO_DEBUG"


class UsageError(ConstclZooError, ValueError):
    """A command-line mistake the user can fix (a bad flag value, an unusable output folder, ...)."""


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug`` (show the traceback of an error instead of the one-line message)."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show tracebacks instead of one-line errors (or set {DEBUG_ENV}=1)")


# Optional dependencies (top-level module -> the pyproject.toml extra that installs it).
EXTRAS = {"av": "video", "tqdm": "video", "onnx": "export", "onnxscript": "export", "onnxruntime": "export",
          "fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve", "multipart": "serve",
          "httptools": "serve", "orjson": "serve",
          "tensorboard": "train", "cv2": "train", "kornia": "train", "skimage": "train", "gradio": "demo",
          "ray": "ray"}


def missing_extra(exc: BaseException) -> str | None:
    """For an ImportError caused by a missing optional dependency: a message naming the extra that installs it."""
    for err in _chain(exc):
        if isinstance(err, ModuleNotFoundError) and err.name and err.name.split(".")[0] in EXTRAS:
            module = err.name.split(".")[0]
            return (f"this needs the optional dependency {module!r}, which is not installed: "
                    f"pip install 'constcl-zoo[{EXTRAS[module]}]'")
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def run_command(prog: str, body: Callable[[], int], *, debug: bool = False,
                spellings: Mapping[str, str] | None = None) -> int:
    """Run a command's ``body`` and turn the package's errors into one line on stderr and exit status 2.

    ``ConstclZooError`` (every error the package raises on purpose), ``OSError`` about a file (a missing
    input, a full disk, a folder without write permission) and an ``ImportError`` of a missing optional
    dependency (named with its ``pip install 'constcl-zoo[extra]'``) are user errors: ``"<prog>: error:
    <message>"`` and 2. Anything else is a bug and keeps its traceback. ``spellings`` maps the fixes an error
    names (:meth:`ConstclZooError.describe`) to this command's flags, e.g. ``{"random_init": "--random-init"}``.
    ``debug`` (``--debug``) or ``CONSTCL_ZOO_DEBUG=1`` re-raises every error with its traceback.
    """
    debug = debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ConstclZooError, OSError, ImportError) as exc:
        message = user_message(exc, spellings)
        if debug or message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


def user_message(exc: BaseException, spellings: Mapping[str, str] | None = None) -> str | None:
    """The message to show a user for an error that is theirs to fix — a ``ConstclZooError``, an ``OSError`` about
    a file, an ``ImportError`` of a missing optional dependency — as one line (listings keep their lines); ``None``
    for anything else (a bug: keep its traceback). Used by :func:`run_command` and the demo (``demos/``)."""
    if isinstance(exc, ConstclZooError):
        text = exc.describe(spellings)
    elif isinstance(exc, ImportError):
        text = missing_extra(exc)
    elif isinstance(exc, OSError):
        text = str(exc) if _is_user_oserror(exc) else None
    else:
        text = None
    if text is None:
        return None
    return " ".join(text.split()) if "\n" not in text else _first_lines(text)


def _is_user_oserror(exc: OSError) -> bool:
    return exc.filename is not None or isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError |
                                                  NotADirectoryError | FileExistsError)


def _first_lines(text: str, limit: int = 40) -> str:
    """Listings (missing keys, refused variables) keep their lines; very long ones are cut with a count."""
    lines = text.rstrip().splitlines()
    if len(lines) <= limit:
        return "\n".join(lines)
    return "\n".join([*lines[:limit], f"... ({len(lines) - limit} more lines)"])


class InvalidArgumentError(ConstclZooError, ValueError):
    """A value the package cannot use: a tensor of the wrong shape, an out-of-range size, an unknown option."""


class InvalidTypeError(ConstclZooError, TypeError):
    """An argument of the wrong type (e.g. a uint8 clip where a preprocessed float clip is expected)."""


class DependencyError(ConstclZooError, RuntimeError):
    """An installed dependency lacks what is needed (e.g. an OpenCV build without the HOG people detector)."""
