"""Module paths that moved: the old path still imports, as the same module object, with a DeprecationWarning that
names the new one.

One mechanism for every moved module: a finder on ``sys.meta_path``, installed when this module is imported (first
thing in ``import constcl_zoo``), answers the old names in :data:`MOVED` (and everything below a moved package)
with the new module; ``constcl_zoo.<old name>`` as an attribute goes through it too (``constcl_zoo.__getattr__``).
No file is left behind at an old path. A repository package with moves of its own installs another finder over its
own table (``training._moved``): :class:`MovedModuleFinder` takes the table.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

# old module path -> new module path (a moved package maps its submodules too)
MOVED: dict[str, str] = {
    "constcl_zoo.backbone": "constcl_zoo.nn.backbone",
    "constcl_zoo.heads": "constcl_zoo.nn.heads",
    "constcl_zoo.layers": "constcl_zoo.nn.layers",
    "constcl_zoo.model": "constcl_zoo.nn.model",
    "constcl_zoo.preprocess": "constcl_zoo.nn.preprocess",
    "constcl_zoo.embed": "constcl_zoo.inference.embed",
    "constcl_zoo.precision": "constcl_zoo.inference.precision",
    "constcl_zoo.video": "constcl_zoo.inference.video",
    "constcl_zoo.visualize": "constcl_zoo.inference.visualize",
    "constcl_zoo.detection": "constcl_zoo.inference.detection",
    "constcl_zoo.boxes": "constcl_zoo.formats.boxes",
    "constcl_zoo.ava": "constcl_zoo.formats.ava",
    "constcl_zoo.weights": "constcl_zoo.checkpoint",
    "constcl_zoo.commands.argtypes": "constcl_zoo.argtypes",
    "constcl_zoo.commands.embed_ray": "constcl_zoo.workflows.embed_ray",
    "constcl_zoo.tasks.localization_infer": "constcl_zoo.tasks.localization.infer",
    "constcl_zoo.factory": "constcl_zoo._factory",
    "constcl_zoo.pretrained": "constcl_zoo.registry",
}
# What to use instead, where the new module is internal (its name starts with "_").
HINTS: dict[str, str] = {"constcl_zoo.factory": "use constcl_zoo.load"}


def new_name(old: str, table: dict[str, str] = MOVED) -> str | None:
    """The module path that replaced ``old`` (a moved module, or a module below a moved package, of ``table``),
    else ``None``."""
    if old in table:
        return table[old]
    parent = old.rpartition(".")[0]
    while parent:
        if parent in table:
            return f"{table[parent]}.{old[len(parent) + 1:]}"
        parent = parent.rpartition(".")[0]
    return None


def message(old: str, new: str, table: dict[str, str] = MOVED, hints: dict[str, str] = HINTS) -> str:
    root = next((o for o in sorted(table, key=len, reverse=True) if old == o or old.startswith(o + ".")), old)
    hint = f" ({hints[root]})" if root in hints else ""
    return f"{old} is deprecated: it moved to {new}{hint}; import it from there"


def caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the code doing the import. ``warnings`` itself steps over
    importlib's bootstrap frames; this steps over ours, ``importlib.import_module`` and a package's ``__getattr__``."""
    level, frame = 1, sys._getframe(1).f_back
    while frame is not None:
        name = frame.f_code.co_filename
        if not ("importlib" in name and "_bootstrap" in name):
            level += 1
            internal = name == __file__ or frame.f_globals.get("__name__") == "importlib" or \
                frame.f_code.co_name == "__getattr__"  # a package's __getattr__ that called attribute()
            if not internal:
                break
        frame = frame.f_back
    return level


class _Alias(importlib.abc.Loader):
    """Loads an old path as the module at its new path (imported normally, under its own name and spec)."""

    def __init__(self, new: str, warning: str) -> None:
        self.new, self.warning = new, warning
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        warnings.warn(self.warning, DeprecationWarning, stacklevel=caller_stacklevel())
        module = importlib.import_module(self.new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__spec__ = self._spec  # the import system set the old path's spec on it: give the module its own back


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths of moved modules (``table``: old path -> new path; ``hints``: what to use instead, by
    old path; by default :data:`MOVED` and :data:`HINTS`)."""

    def __init__(self, table: dict[str, str] = MOVED, hints: dict[str, str] = HINTS) -> None:
        self.table, self.hints = table, hints

    def find_spec(self, fullname: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        new = new_name(fullname, self.table)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(new, message(fullname, new, self.table, self.hints)))


def install(finder: MovedModuleFinder | None = None) -> None:
    """Put ``finder`` (default: the one over :data:`MOVED`) first on ``sys.meta_path``, once per table."""
    finder = finder or MovedModuleFinder()
    if not any(isinstance(f, MovedModuleFinder) and f.table is finder.table for f in sys.meta_path):
        sys.meta_path.insert(0, finder)


def attribute(package: str, name: str) -> types.ModuleType:
    """``package.name`` for a moved module ``name`` (a package's ``__getattr__``); AttributeError otherwise."""
    old = f"{package}.{name}"
    if new_name(old) is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return importlib.import_module(old)


install()
