"""The training package's old module paths and names: they still work, with a DeprecationWarning naming the new
ones (the mechanism of :mod:`constcl_zoo._moved`, over this package's tables; installed by ``import training``).

* :data:`MOVED`: a module that moved whole; the old path imports the same module object.
* :data:`SPLIT`: a module whose names now live in several modules (and may be renamed there); the old path imports
  a read-only view that finds each name where it went.
* :data:`RENAMED`: names renamed inside a module (``TrainTask`` -> ``Learner``); the module's ``__getattr__``
  (:func:`deprecated_names`) answers the old name with the new object.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

from constcl_zoo._moved import MovedModuleFinder, caller_stacklevel, install

# old module path -> new module path (the whole module moved)
MOVED: dict[str, str] = {
    "training.pretrain.videos": "training.data.videos",
    "training.pretrain.augment": "training.data.augment",
    "training.pretrain.task": "training.pretrain.learner",
    "training.tasks.recognition.finetune_config": "training.tasks.recognition.config",
    "training.tasks.recognition.datasets": "training.tasks.recognition.data",
    "training.tasks.recognition.metrics": "training.tasks.recognition.evaluate",
    "training.tasks.tracking.datasets": "training.tasks.tracking.data",
    "training.tasks.tracking.pairs": "training.tasks.tracking.data",
    "training.tasks.tracking.metrics": "training.tasks.tracking.evaluate",
    "training.tasks.localization.task": "training.tasks.localization.learner",
}
HINTS: dict[str, str] = {}

# old module path -> (the modules its names went to, {old name: new name})
SPLIT: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "training.tasks.tracking.train": (("training.tasks.tracking.learner", "training.tasks.tracking.config"), {}),
    "training.tasks.tracking.cli_train": (("training.tasks.tracking.cli",),
                                          {"add_parser": "add_train_parser", "run": "run_train"}),
    "training.tasks.tracking.cli_eval": (("training.tasks.tracking.cli",),
                                         {"add_parser": "add_eval_parser", "run": "run_eval"}),
    "training.tasks.localization.eval_ava": (
        ("training.tasks.localization.cli", "training.tasks.localization.evaluate"),
        {"add_parser": "add_eval_ava_parser", "run": "run_eval_ava"}),
    "training.tasks.recognition.finetune_cli": (("training.tasks.recognition.cli",),
                                                {"add_parser": "add_finetune_parser", "run": "run_finetune"}),
}

# module -> {old name: "new.module:new_name"}
RENAMED: dict[str, dict[str, str]] = {
    "training.engine": {"TrainTask": "training.engine.learner:Learner"},
    "training.engine.loop": {"TrainTask": "training.engine.learner:Learner"},
    "training.pretrain.learner": {"PretrainTask": "training.pretrain.learner:PretrainLearner"},
    "training.pretrain.dataset": {"StreamSampler": "training.data.loader:StreamSampler",
                                  "build_loader": "training.data.loader:build_loader"},
    "training.tasks.localization.data": {"VideoFrames": "training.data.videos:decode_video"},
    "training.tasks.tracking.learner": {"TrackTask": "training.tasks.tracking.learner:TrackLearner"},
    "training.tasks.recognition.finetune": {"FinetuneTask": "training.tasks.recognition.finetune:FinetuneLearner"},
    "training.tasks.localization.learner": {
        "LocalizationTask": "training.tasks.localization.learner:LocalizationLearner"},
    "training.tasks.localization.cli": {"add_parser": "training.tasks.localization.cli:add_train_parser",
                                        "run": "training.tasks.localization.cli:run_train"},
    "training.tasks.localization.calibrate": {"add_parser": "training.tasks.localization.cli:add_calibrate_parser",
                                              "run": "training.tasks.localization.cli:run_calibrate"},
    "training.tasks.recognition.cli": {"add_parser": "training.tasks.recognition.cli:add_probe_parser",
                                       "run": "training.tasks.recognition.cli:run_probe"},
}


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def deprecated_names(module: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` answering the module's old names (:data:`RENAMED`) with a DeprecationWarning."""
    table = RENAMED[module]

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new = table[name].replace(":", ".")
        warnings.warn(f"{module}.{name} is deprecated: it is {new} now; use that", DeprecationWarning, stacklevel=2)
        return _resolve(table[name])

    return __getattr__


class _SplitView(types.ModuleType):
    """An old module path whose names now live in other modules: each attribute is looked up there."""

    def __init__(self, name: str, sources: tuple[str, ...], renames: dict[str, str]) -> None:
        super().__init__(name, f"deprecated: moved to {', '.join(sources)}")
        self._sources, self._renames = sources, renames

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        target = self._renames.get(name, name)
        for source in self._sources:
            module = importlib.import_module(source)
            if hasattr(module, target):
                return getattr(module, target)
        raise AttributeError(f"{self.__name__}.{name} is gone (its names moved to {', '.join(self._sources)})")


class _SplitLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        sources, renames = SPLIT[spec.name]
        warnings.warn(f"{spec.name} is deprecated: its contents moved to {', '.join(sources)}; import them from "
                      "there", DeprecationWarning, stacklevel=caller_stacklevel())
        return _SplitView(spec.name, sources, renames)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class SplitModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths of split modules (:data:`SPLIT`)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(fullname, _SplitLoader()) if fullname in SPLIT else None


install(MovedModuleFinder(MOVED, HINTS))
if not any(isinstance(f, SplitModuleFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, SplitModuleFinder())
