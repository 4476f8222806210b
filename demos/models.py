"""The demo's models: which checkpoint each tab uses, loaded once (on first use) and shared by every request.

:func:`resolve` is the one place that turns a ``--tracker`` / ``--localizer`` / ``--model`` value into a model;
an omitted value means the package's default model of that kind (``constcl_zoo.load(task=...)`` with no name).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

Kind = Literal["tracking", "localization", "embedding"]
KINDS: tuple[Kind, ...] = ("tracking", "localization", "embedding")


def resolve(kind: Kind, name: str | None, random_init: bool = False) -> Any:
    """Load the model a tab needs: ``kind`` "tracking" (a ``SiamFCTracker``), "localization" (an
    ``ActionLocalizer``) or "embedding" (a global-branch encoder). ``name``: a checkpoint folder, a registered
    name or ``hf-hub:`` repo; ``None``: the package's default model of that kind. ``random_init``: an architecture
    name gets random weights (no published ones needed)."""
    from constcl_zoo import load
    from constcl_zoo.workflows.loaders import load_localizer, load_tracker

    if kind == "tracking":
        return load(task="tracking") if name is None else load_tracker(name, random_init=random_init)
    if kind == "localization":
        return load(task="localization") if name is None else load_localizer(name, name="--localizer")
    if kind == "embedding":
        if name is None:
            return load(branch="global")
        return load(name, branch="global", **({"pretrained": False} if random_init and not Path(name).exists()
                                              else {}))
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")


def sample_video() -> Path | None:
    """The package's bundled sample video, or ``None`` where the default models are not installed."""
    import constcl_zoo

    try:
        path = constcl_zoo.sample_video()
    except constcl_zoo.WeightsNotAvailableError:
        return None
    return path if path.is_file() else None


class Models:
    """The three models of the demo, each loaded on first use and then reused; :meth:`use` also serialises the
    requests that use one model (a tracker keeps per-video state while it tracks)."""

    def __init__(self, tracker: str | None = None, localizer: str | None = None, encoder: str | None = None,
                 random_init: bool = False) -> None:
        self.names: dict[Kind, str | None] = {"tracking": tracker, "localization": localizer, "embedding": encoder}
        self.random_init = random_init
        self._loaded: dict[Kind, Any] = {}
        self._locks = {kind: threading.Lock() for kind in KINDS}

    def describe(self, kind: Kind) -> str:
        """The model's name as the page shows it (a checkpoint folder by its own name)."""
        name = self.names[kind]
        return "the default model" if name is None else Path(name).name if Path(name).is_dir() else name

    @contextlib.contextmanager
    def use(self, kind: Kind) -> Iterator[Any]:
        """``with models.use("tracking") as tracker:`` — the loaded model, held for this request only."""
        with self._locks[kind]:
            if kind not in self._loaded:
                self._loaded[kind] = resolve(kind, self.names[kind], self.random_init)
            yield self._loaded[kind]

    def loaded(self, kind: Kind) -> Any | None:
        """The model if it has been loaded already (for tests and diagnostics), else ``None``."""
        return self._loaded.get(kind)
