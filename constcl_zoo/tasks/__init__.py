"""Task models: an encoder from :mod:`constcl_zoo` composed with a small head and its post-processing.

=================  ==========================================  ===================  =============================
task               class                                       encoder branch       what it answers
=================  ==========================================  ===================  =============================
``recognition``    :class:`~.recognition.VideoClassifier`      ``global``           which action a video shows
``tracking``       :class:`~.tracking.SiamFCTracker`           ``region``           where one object is, frame by frame
``localization``   :class:`~.localization.ActionLocalizer`     ``region``           who does what, where, when
=================  ==========================================  ===================  =============================

A task checkpoint is a folder like an encoder's (``config.json`` + ``model.safetensors``) whose config names the
task (:class:`~.base.TaskConfig`); ``load(folder)`` returns the task model, ``load(encoder, task=...)`` puts a
fresh head on an encoder. Task modules are imported on first use, so ``import constcl_zoo`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import ConstclZooError

if TYPE_CHECKING:
    from .base import TaskModel

# task name -> "module:class"; modules are imported lazily by task_class().
_TASKS: dict[str, str] = {
    "recognition": "constcl_zoo.tasks.recognition:VideoClassifier",
    "tracking": "constcl_zoo.tasks.tracking:SiamFCTracker",
    "localization": "constcl_zoo.tasks.localization:ActionLocalizer",
}


class UnknownTaskError(ConstclZooError, ValueError):
    """A task name that no task module provides."""


def list_tasks() -> list[str]:
    """Names accepted by ``load(..., task=NAME)`` and found in task checkpoints."""
    return sorted(_TASKS)


def task_class(name: str) -> type[TaskModel]:
    """The model class of task ``name`` (imports its module on first use)."""
    if name not in _TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; tasks: {', '.join(list_tasks())}")
    module, cls = _TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["UnknownTaskError", "list_tasks", "task_class"]
