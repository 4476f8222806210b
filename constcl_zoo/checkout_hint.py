"""What ``python -m training`` (or ``export`` / ``demos``) says outside a checkout of the repository.

The ``training``, ``export`` and ``demos`` packages live in the repository, not in the wheel: they read data and
results beside the checkout (``../shared``, ``benchmarks/results``). The wheel installs one placeholder package under
each name (``packaging/outside_checkout/``) that only calls :func:`refuse`. Inside a checkout the real package wins:
Python looks in the working directory (``python -m``) or on ``sys.path`` before the installed placeholder.
"""

from __future__ import annotations

import sys

REPOSITORY_PACKAGES = ("training", "export", "demos")


def hint(package: str) -> str:
    """The one line that says where ``python -m <package>`` runs."""
    return (f"`python -m {package}` runs from the repository root of a constcl-zoo checkout (clone it, cd into it, "
            "pip install -e \".[train,export,serve,demo]\"); the installed package has only `constcl_zoo` and the "
            "`constcl-zoo` command")


def refuse(package: str) -> None:
    """Called by a placeholder package on import: one line on stderr and exit status 2 under ``python -m``;
    ``ModuleNotFoundError`` (with the same line) for a plain import, so ``except ImportError`` code keeps working."""
    if sys.argv[:1] == ["-m"]:  # runpy imports the package while argv[0] is still "-m"
        print(f"error: {hint(package)}", file=sys.stderr)
        raise SystemExit(2)
    raise ModuleNotFoundError(hint(package), name=package)
