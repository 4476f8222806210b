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
fresh head on an encoder. Task modules are imported on first use (the task names are registered in
:mod:`constcl_zoo.registry`), so ``import constcl_zoo`` stays cheap. :mod:`.loaders`: the task model a command
line's ``--model`` means (``load_tracker``, ``load_localizer``).
"""

from __future__ import annotations

from ..registry import UnknownTaskError, list_tasks, task_class

__all__ = ["UnknownTaskError", "list_tasks", "task_class"]
