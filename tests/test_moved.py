"""Moved modules: the old path imports the same module object, with a DeprecationWarning naming the new path
(``constcl_zoo._moved``; tests/test_import_graph.py checks that the repository itself uses only the new paths)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import constcl_zoo
from constcl_zoo._moved import MOVED, new_name


def _fresh_import(old: str):
    """Import ``old`` as if for the first time in this process (the alias is forgotten; the module is not)."""
    for name in [n for n in sys.modules if n == old or n.startswith(old + ".")]:
        del sys.modules[name]
    return importlib.import_module(old)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_imports_the_new_module_with_a_warning(old):
    new = importlib.import_module(MOVED[old])
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated: it moved to {MOVED[old]}") as caught:
        module = _fresh_import(old)
    assert module is new
    assert module.__name__ == module.__spec__.name == MOVED[old]  # the module keeps its own name and spec
    assert caught[0].filename == __file__  # the warning points at the import, not at importlib


def test_names_below_a_moved_package_and_attributes_of_the_package():
    roi_align = importlib.import_module("constcl_zoo.nn.layers.roi_align")  # the module, not the function
    assert new_name("constcl_zoo.layers.roi_align") == "constcl_zoo.nn.layers.roi_align"
    with pytest.warns(DeprecationWarning, match="constcl_zoo.layers.roi_align is deprecated"):
        assert _fresh_import("constcl_zoo.layers.roi_align") is roi_align
    from constcl_zoo.inference import video

    sys.modules.pop("constcl_zoo.video", None)
    vars(constcl_zoo).pop("video", None)
    with pytest.warns(DeprecationWarning, match="constcl_zoo.video is deprecated: it moved to constcl_zoo.inference"):
        assert constcl_zoo.video is video
    with pytest.raises(AttributeError, match="has no attribute 'no_such_module'"):
        constcl_zoo.no_such_module  # noqa: B018


def test_old_names_import_in_a_fresh_interpreter():
    """What a user's code written for the old layout sees: the same classes, one warning per old module."""
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "import constcl_zoo\n"
            "try:\n    from constcl_zoo.model import GlobalEncoder\nexcept DeprecationWarning as w: print(w)\n"
            "warnings.simplefilter('ignore', DeprecationWarning)\n"
            "from constcl_zoo.model import GlobalEncoder\n"
            "from constcl_zoo.weights import load_weights\n"
            "from constcl_zoo.nn.model import GlobalEncoder as G\n"
            "import constcl_zoo.checkpoint as c\n"
            "print(GlobalEncoder is G, load_weights is c.load_weights)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "constcl_zoo.model is deprecated: it moved to constcl_zoo.nn.model; import it from there", "True True"]
