"""What every task model shares: :class:`TaskConfig` (the ``config.json`` of a task checkpoint) and
:class:`TaskModel` (an encoder + a head).

A task checkpoint is self-contained: ``model.safetensors`` holds the encoder's branch (``encoder.*``) and the head
(``head.*``), so a checkpoint never depends on another file staying where it was, and strict key checking covers
the whole model. (Storing only the head plus a pinned reference to the encoder would save the encoder's size for
frozen-encoder probes; we chose one self-contained file: for the R3D-50 global branch that costs 127 MB, for the
small models under 3 MB.)
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..checkpoint import state_dict_for_save, write_checkpoint
from ..config import ModelConfig, PreprocessConfig, dataclass_from_dict, read_config_json, to_jsonable
from ..errors import ConstclZooError
from ..fileio import atomic_write
from ..nn.model import ConstCLBase, build_model
from ..nn.preprocess import ClipPreprocess
from ..registry import task_class

TASK_FORMAT_VERSION = 1
_ENCODER_BRANCHES = ("global", "region")


class TaskConfigError(ConstclZooError, ValueError):
    """A task config that cannot describe a model (unknown task, bad labels, wrong branch, bad field)."""


@dataclass(frozen=True)
class TaskConfig:
    """A task model: which task, its labels, its head's config and the encoder it sits on.

    ``encoder`` is the encoder's full :class:`~constcl_zoo.config.ModelConfig` (with its preprocessing and
    provenance); ``encoder_branch`` is ``"global"`` or ``"region"``; ``head`` is the task's head config dataclass
    (e.g. :class:`~constcl_zoo.tasks.recognition.RecognitionHeadConfig`).
    """

    task: str
    encoder: ModelConfig
    encoder_branch: str
    head: Any
    labels: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.encoder_branch not in _ENCODER_BRANCHES:
            raise TaskConfigError(f"encoder_branch must be one of {list(_ENCODER_BRANCHES)}, "
                                  f"got {self.encoder_branch!r}")
        if len(set(self.labels)) != len(self.labels):
            dupes = sorted({x for x in self.labels if self.labels.count(x) > 1})
            raise TaskConfigError(f"labels must be unique; repeated: {dupes}")
        if any(not isinstance(x, str) or not x for x in self.labels):
            raise TaskConfigError("labels must be non-empty strings")

    @property
    def arch(self) -> str:
        return self.encoder.arch

    @property
    def preprocess(self) -> PreprocessConfig:
        """The weights' preprocessing: the encoder's."""
        return self.encoder.preprocess

    def replace(self, **changes: Any) -> TaskConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": TASK_FORMAT_VERSION, "task": self.task, "labels": list(self.labels),
                "head": to_jsonable(dataclasses.asdict(self.head)), "encoder_branch": self.encoder_branch,
                "encoder": self.encoder.to_dict(), "provenance": to_jsonable(self.provenance)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskConfig:
        data = dict(data)
        version = data.pop("format_version", None)
        if version != TASK_FORMAT_VERSION:
            raise TaskConfigError(f"task config format_version {version!r} is not supported "
                                  f"(this release reads {TASK_FORMAT_VERSION})")
        data.pop("weights", None)
        expected = {"task", "labels", "head", "encoder_branch", "encoder", "provenance"}
        unknown, missing = sorted(set(data) - expected), sorted(expected - set(data) - {"provenance"})
        if unknown or missing:
            raise TaskConfigError(f"config: unknown field(s) {unknown}, missing field(s) {missing}")
        model_cls = task_class(data["task"])
        labels = data["labels"]
        if not isinstance(labels, list):
            raise TaskConfigError(f"config.labels: expected a list of names, got {type(labels).__name__}")
        try:
            head = dataclass_from_dict(model_cls.head_config_class, data["head"], path="config.head")
            encoder = ModelConfig.from_dict(data["encoder"])
        except (TypeError, ValueError) as exc:
            raise TaskConfigError(str(exc)) from exc
        return cls(task=data["task"], encoder=encoder, encoder_branch=data["encoder_branch"], head=head,
                   labels=tuple(labels), provenance=dict(data.get("provenance") or {}))

    def to_json(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        payload = {**self.to_dict(), **(extra or {})}
        atomic_write(path, json.dumps(payload, indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> TaskConfig:
        path = Path(path)
        data = read_config_json(path, TaskConfigError)
        try:
            return cls.from_dict(data)
        except ConstclZooError as exc:
            raise TaskConfigError(f"{path}: {exc}") from exc


def is_task_config(data: dict[str, Any]) -> bool:
    """Whether a parsed ``config.json`` describes a task checkpoint (rather than an encoder)."""
    return isinstance(data, dict) and "task" in data


class TaskModel(nn.Module):
    """An encoder (``self.encoder``, a :class:`~constcl_zoo.nn.model.ConstCLBase`) and a task head (``self.head``).

    Subclasses set ``task``, ``head_config_class`` and ``default_branch``, and implement :meth:`build_head` and
    :meth:`init_head`. ``preprocess`` is the encoder's: the preprocessing that belongs to the weights.
    :meth:`freeze_encoder` trains the head alone (the one way every trainer freezes an encoder).
    """

    task: ClassVar[str]
    head_config_class: ClassVar[type]
    default_branch: ClassVar[str] = "global"
    needs_labels: ClassVar[bool] = False

    def __init__(self, config: TaskConfig, encoder: ConstCLBase | None = None) -> None:
        super().__init__()
        if config.task != self.task:
            raise TaskConfigError(f"{type(self).__name__} is the {self.task!r} task, the config says {config.task!r}")
        if self.needs_labels and not config.labels:
            raise TaskConfigError(f"the {self.task!r} task needs labels (e.g. load(encoder, task={self.task!r}, "
                                  f"labels=['walk', 'run']))")
        if encoder is not None and (encoder.config != config.encoder or encoder.branch != config.encoder_branch):
            raise TaskConfigError("the encoder passed does not match config.encoder / config.encoder_branch")
        self.config = config
        self.encoder = encoder if encoder is not None else build_model(config.encoder, config.encoder_branch)
        self.head = self.build_head(config)
        self.encoder_frozen = False

    # -- what a subclass provides ---------------------------------------------------------------------------
    def build_head(self, config: TaskConfig) -> nn.Module:
        raise NotImplementedError

    def init_head(self, generator: torch.Generator) -> None:
        """Initialise the head's parameters from ``generator`` (seeded: same seed, same head)."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------------
    def freeze_encoder(self, frozen: bool = True) -> TaskModel:
        """Train the head only (``frozen``), or the whole model again (``frozen=False``).

        A frozen encoder gets no gradients (``requires_grad`` off: autograd records nothing through it) and stays
        in eval mode whatever :meth:`train` is called with, so its BatchNorm statistics stay as loaded. Not saved
        with the checkpoint: it is how a model is trained, not what it is. Returns ``self``.
        """
        self.encoder.requires_grad_(not frozen)
        self.encoder_frozen = frozen
        return self.train(self.training)

    def train(self, mode: bool = True) -> TaskModel:
        """``nn.Module.train``, except that a frozen encoder (:meth:`freeze_encoder`) stays in eval mode."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    @property
    def preprocess(self) -> ClipPreprocess:
        return self.encoder.preprocess

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    @property
    def description(self) -> str:
        """Names the model in messages: ``"<task> model on the <encoder branch> branch"``."""
        return f"{self.task} model on the {self.config.encoder_branch} branch"

    @property
    def branch(self) -> str:
        """Deprecated: "branch" means an encoder branch; use :attr:`description` (or ``config.encoder_branch``)."""
        warnings.warn("TaskModel.branch is deprecated: use TaskModel.description (a display string) or "
                      "config.encoder_branch (the encoder's branch)", DeprecationWarning, stacklevel=2)
        return f"{self.task} on {self.config.encoder_branch}"

    @classmethod
    def from_encoder(cls, encoder: ConstCLBase, *, labels: tuple[str, ...] | list[str] = (),
                     head: Any = None, seed: int = 0) -> TaskModel:
        """A fresh, seeded head on ``encoder`` (pretrained or not). ``head``: a head config or a dict of its
        fields (defaults otherwise)."""
        if encoder.branch not in _ENCODER_BRANCHES:
            raise TaskConfigError(f"a task model sits on the 'global' or 'region' branch, not {encoder.branch!r}")
        config = TaskConfig(task=cls.task, encoder=encoder.config, encoder_branch=encoder.branch,
                            head=cls._head_config(head), labels=tuple(labels),
                            provenance={"encoder": dict(encoder.config.provenance)})
        model = cls(config, encoder=encoder)
        param = next(encoder.parameters(), None)
        if param is not None:
            model.head.to(device=param.device, dtype=param.dtype)
        model.init_head(torch.Generator().manual_seed(seed))
        return model

    @classmethod
    def _head_config(cls, head: Any) -> Any:
        if head is None:
            return cls.head_config_class()
        if isinstance(head, cls.head_config_class):
            return head
        if isinstance(head, dict):
            try:
                return dataclass_from_dict(cls.head_config_class, head, path="head")
            except (TypeError, ValueError) as exc:
                raise TaskConfigError(str(exc)) from exc
        raise TaskConfigError(f"head must be a {cls.head_config_class.__name__} or a dict of its fields, "
                              f"got {type(head).__name__}")

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the task checkpoint: ``config.json`` (:class:`TaskConfig` + sha256) and ``model.safetensors``."""
        return write_checkpoint(self.config, state_dict_for_save(self), directory, branch=self.config.encoder_branch)

    def extra_repr(self) -> str:
        return f"task={self.task!r}, arch={self.config.arch!r}, labels={len(self.labels)}"
