"""The package's exception base class.

Every error constcl_zoo raises on purpose derives from :class:`ConstclZooError`, so callers can catch the
package's errors in one place (``except constcl_zoo.ConstclZooError``). Each concrete error also keeps the
builtin base that describes it (``ValueError`` for bad input, ``LookupError`` for missing weights, ...), so code
written against those keeps working. The command lines print a ``ConstclZooError`` as one line and exit 2.
"""

from __future__ import annotations


class ConstclZooError(Exception):
    """Base class of every error raised by constcl_zoo (and by the repository's training / export packages)."""
