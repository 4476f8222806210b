"""What a trainer gives the engine: a :class:`Learner` (data, model, loss, optional evaluation), and what the
engine gives back to it: :class:`RunContext` (run folder, process group, device, config) and, per micro-batch, a
:class:`StepOutput`. :func:`training.engine.train` runs a learner; see :mod:`training.engine.loop` for a complete
example.

"Learner" is the engine's word for the unit of training (pretraining is one, every downstream trainer another); a
"task" is a downstream task (recognition, tracking, localization) and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .config import TrainConfig
from .distributed import DistInfo


@dataclass
class RunContext:
    """What a learner may need from the engine: the run folder, process group, device and config."""

    out: Path
    info: DistInfo
    device: torch.device
    cfg: TrainConfig

    def barrier(self) -> None:
        if self.info.world > 1:
            dist.barrier()


@dataclass
class StepOutput:
    """A micro-batch's result: ``loss`` (scalar, before the engine's gradient scale) to back-propagate,
    ``metrics`` (scalars, averaged over micro-batches, processes and the log window; names in the learner's
    ``metric_names``) and ``counts`` (summed over the run; names in ``count_names``)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)


class Learner:
    """What a trainer provides to :func:`~training.engine.train`: data, model and loss (see the example in
    :mod:`training.engine.loop`). Formerly ``TrainTask`` (still importable, deprecated)."""

    name: str = "training"  # first word of the log ("pretraining", "fine-tuning", ...)
    unit: str = "samples"  # what one sample is; throughput is logged as <unit>_per_s
    metric_names: tuple[str, ...] = ()  # metrics.jsonl columns after "loss", in this order
    count_names: tuple[str, ...] = ()  # run totals logged after the throughput columns
    cfg: TrainConfig

    @property
    def batch_size(self) -> int:
        """Samples per optimizer step, over all processes and micro-batches."""
        raise NotImplementedError

    def describe(self) -> str:
        """What is trained, for the first log line."""
        return self.cfg.preset or "custom"

    def setup(self, ctx: RunContext) -> None:
        """Prepare data (e.g. index the videos: rank 0 first, the others after ``ctx.barrier()``). Runs on
        every process after ``config.json`` is written and before :meth:`build_model`."""

    def build_model(self, ctx: RunContext) -> torch.nn.Module:
        """The network to train, on the CPU in train mode (seeded: every process must build the same)."""
        raise NotImplementedError

    def batches(self, model: torch.nn.Module, local_batch: int, ctx: RunContext, start: int) -> Iterator[Any]:
        """An endless iterator of micro-batches of ``local_batch`` samples for this process, starting at
        micro-batch ``start`` of the run (exact resume)."""
        raise NotImplementedError

    def inputs(self, batch: Any) -> tuple[Any, ...]:
        """The model's positional arguments from a batch (CPU tensors; the engine moves tensors to the device
        and, with ``run.channels_last``, 5-D float tensors to channels_last_3d)."""
        raise NotImplementedError

    def loss(self, outputs: Any, batch: Any) -> StepOutput:
        """The micro-batch loss from the model's outputs (computed outside autocast)."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, ctx: RunContext) -> dict[str, float] | None:
        """Optional evaluation, every ``run.eval_every`` steps and after the last (on every process, model in eval
        mode; rank 0's result is logged). ``None``: nothing to evaluate."""
        return None

    def checkpoint_keys(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A resumed checkpoint's model state, named as this learner's model names it (default: unchanged): lets
        a learner resume runs written before its model's wrapping changed."""
        return state

    def log_details(self, row: dict[str, Any]) -> str:
        """Learner metrics for the log line (after the loss)."""
        return " ".join(f"{k} {row[k]:.4g}" for k in self.metric_names)

    def summary(self, counts: dict[str, int]) -> dict[str, Any]:
        """Extra entries for ``summary.json`` (``counts``: the run totals of ``count_names``); may log them."""
        return dict(counts)
