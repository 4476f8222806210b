"""Run logging: log-window means, ``metrics.jsonl`` / ``eval.jsonl``, TensorBoard scalars, the log line and the
tqdm bar (rank 0 writes; every process keeps the history).

The loss shown everywhere (log line, bar, ``metrics.jsonl``, TensorBoard) is one number: the mean over the steps
since the previous log line (``run.log_every``; step 1 is logged alone). ``metrics.jsonl`` is appended a line at a
time (a log stream; a torn last line of a killed run is ignored by :func:`training.engine.run.read_jsonl`), and
rewritten atomically on resume so that it holds no step twice; TensorBoard purges the steps after the checkpoint.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .run import EVAL_METRICS, METRICS, truncate_jsonl

if TYPE_CHECKING:
    from .learner import Learner

log = logging.getLogger("training")


class RunLogger:
    """Collects per-step metric means and writes a row every log step (see the module docstring)."""

    def __init__(self, out: Path, learner: Learner, is_main: bool, total_steps: int, start_step: int,
                 progress: bool) -> None:
        self.out, self.learner, self.is_main, self.total_steps = out, learner, is_main, total_steps
        self.history: list[dict[str, Any]] = []
        self.writer = self.bar = None
        if is_main:
            for name in (METRICS, EVAL_METRICS):  # rows of steps after the checkpoint are logged again
                truncate_jsonl(out / name, start_step)
            from torch.utils.tensorboard import SummaryWriter

            tb = out / "tb"
            self.writer = SummaryWriter(str(tb), purge_step=start_step + 1 if tb.exists() else None)
            if progress:
                from tqdm import tqdm

                self.bar = tqdm(total=total_steps, initial=start_step, desc=learner.name, unit="step",
                                dynamic_ncols=True, file=sys.stderr)
        self._reset()

    def _reset(self) -> None:
        self.window: torch.Tensor | None = None  # float64 sums over the log window, one per metric
        self.window_steps, self.window_samples, self.window_wait = 0, 0, 0.0
        self.window_start = time.perf_counter()

    def waited(self, seconds: float) -> None:
        """Time spent waiting for a batch."""
        self.window_wait += seconds

    def samples(self, n: int) -> None:
        """Samples this process trained on."""
        self.window_samples += n

    def step(self, means: torch.Tensor) -> None:
        """One optimizer step's metric means (over micro-batches and processes)."""
        self.window = means.clone() if self.window is None else self.window + means
        self.window_steps += 1
        if self.bar is not None:
            self.bar.update(1)

    def window_means(self) -> list[float]:
        return (self.window / self.window_steps).tolist()

    def log(self, step: int, means: dict[str, float], lr: float, world: int, counts: dict[str, int]) -> None:
        """Write the row of ``step`` (metric means over the window) and start a new window."""
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        rate = self.window_samples * world / elapsed
        unit = self.learner.unit
        row = {"step": step, **means, "lr": lr, f"{unit}_per_s": rate,
               "data_wait_fraction": self.window_wait / elapsed, **counts}
        self.history.append(row)
        n = self.window_steps
        if self.writer is not None:
            for k, v in row.items():
                if k != "step":
                    self.writer.add_scalar(k if k.startswith("loss") else f"train/{k}", v, step)
            with open(self.out / METRICS, "a") as f:
                f.write(json.dumps(row) + "\n")
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {row['loss']:.4f} (mean of {n} step{'s' * (n > 1)}), lr {lr:.3g}")
        log.info("step %d/%d loss %.4f (mean of %d step%s) %s lr %.4g %.1f %s/s data-wait %.0f%%", step,
                 self.total_steps, row["loss"], n, "s" * (n > 1), self.learner.log_details(row), lr, rate, unit,
                 100 * row["data_wait_fraction"])
        self._reset()

    def log_eval(self, step: int, result: dict[str, float]) -> None:
        """An evaluation's scalars: ``eval.jsonl``, TensorBoard ``eval/*`` and the log."""
        row = {"step": step, **result}
        if self.writer is not None:
            for k, v in result.items():
                self.writer.add_scalar(f"eval/{k}", v, step)
            with open(self.out / EVAL_METRICS, "a") as f:
                f.write(json.dumps(row) + "\n")
        log.info("eval step %d: %s", step, " ".join(f"{k} {v:.4g}" for k, v in result.items()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
