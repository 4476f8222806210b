"""The task model a command line's ``--model`` means: a trained task model as saved, or an encoder with a fresh head.

Shared by ``constcl-zoo track`` / ``localize``, ``python -m training eval-tracking`` and the demo, so the flags mean
the same everywhere. Everything goes through :func:`constcl_zoo.load` (``config_only=True`` says what a name is
without loading it); the errors are :class:`~constcl_zoo.errors.UsageError` naming the flags (``--model``,
``--random-init``, ``--labels``, ``--causal``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..tasks.base import TaskConfig
from ..tasks.localization import ActionLocalizer
from ..tasks.tracking import NCCTracker, PixelTrackerConfig, SiamFCTracker


def load_tracker(model: str | None, causal: bool = False, random_init: bool = False,
                 head: dict[str, Any] | None = None) -> SiamFCTracker | NCCTracker:
    """A tracking checkpoint as saved, or an encoder with a fresh SiamFC head (``head``: tracker parameters;
    a registered name loads its published weights, a seeded random init with ``random_init``). ``None``: the
    package's default tracker."""
    from .._factory import load

    trained = model is None or isinstance(load(model, config_only=True), TaskConfig | PixelTrackerConfig)
    if not trained:
        kwargs = {"pretrained": not random_init} if not Path(model).exists() else {}  # a folder: its own weights
        return load(model, task="tracking", head={"causal": causal, **(head or {})}, **kwargs)
    if random_init:
        raise UsageError(f"--random-init: --model {model or '(default)'} is a tracker as saved; give an "
                         "architecture name (e.g. constcl_r3d14_w16) for a random init with a fresh head")
    if head:
        raise UsageError(f"--model {model or '(default)'} is a trained tracker: its head parameters are fixed")
    tracker = load(model, task="tracking") if model is not None else load(task="tracking")
    model = model or "(the default tracker)"
    if not isinstance(tracker, SiamFCTracker | NCCTracker):
        raise UsageError(f"--model {model}: a {tracker.task!r} checkpoint, not a tracker")
    if causal and not tracker.tracker_config.causal:
        raise UsageError(f"--model {model} was trained non-causal; --causal needs a causal tracker")
    return tracker


def load_localizer(model: str | None, labels: Sequence[str] | None = None, device: str = "cpu",
                   name: str = "--model", random_init: bool = False, seed: int = 0) -> ActionLocalizer:
    """A localization checkpoint, or (with ``labels``) an encoder with a fresh action head — its published weights
    (a registered name) or its saved ones (a folder), a seeded random init with ``random_init``; a checkpoint of
    another task raises :class:`UsageError` (naming the field ``name``). ``None``: the package's default
    localizer."""
    from .._factory import load

    if model is None:
        if labels:
            raise UsageError("--labels needs an encoder --model to put a new action head on")
        if random_init:
            raise UsageError("--random-init needs --model (an architecture name, e.g. constcl_r3d14_w16)")
        return load(task="localization", device=device)
    if random_init and not labels:
        raise UsageError("--random-init gives an encoder random weights: add --labels walk,run,... for its new "
                         "action head")
    model_ = load(model, task="localization", labels=labels, pretrained=not random_init, seed=seed,
                  device=device) if labels else load(model, device=device)
    if not isinstance(model_, ActionLocalizer):
        raise UsageError(f"{name} {model} is not a localization checkpoint; give one, or an encoder "
                         f"with --labels walk,run,...")
    return model_


__all__ = ["load_localizer", "load_tracker"]
