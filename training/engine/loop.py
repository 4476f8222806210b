"""The one training loop: :func:`train` drives a :class:`TrainTask` on one process or under ``torchrun`` (DDP).

One optimizer step = ``run.accum_steps`` micro-batches on every process; ``task.batch_size`` samples in total
(``batch_size / (world * accum_steps)`` per micro-batch and process). Each micro-batch loss is scaled by
:func:`training.engine.optim.loss_scale` (summed vs averaged gradients) before ``backward``. bf16 autocast covers
the forward pass; the task's loss runs outside it. Logs go to TensorBoard (``<run>/tb``), ``<run>/metrics.jsonl``,
``<run>/train.log`` and a tqdm bar (rank 0); the log line, the bar and ``metrics.jsonl`` show the same loss: the
mean over the steps since the previous log line (the line says how many).

A new trainer plugs in by subclassing :class:`TrainTask` (data, model, loss; optionally an evaluation)::

    @dataclass
    class ClassifierConfig(TrainConfig):      # the engine's optim/run sections plus the task's own
        preset: str = ""
        data: MyDataConfig = field(default_factory=MyDataConfig)
        optim: OptimConfig = field(default_factory=OptimConfig)
        run: RunConfig = field(default_factory=RunConfig)

    class ClassifierTask(TrainTask):
        name, unit = "fine-tuning", "clips"
        metric_names = ("accuracy",)

        def __init__(self, cfg: ClassifierConfig):
            self.cfg = cfg

        @property
        def batch_size(self) -> int:
            return self.cfg.data.batch_size

        def build_model(self, ctx):           # on the CPU, in train mode
            return ClipClassifier(load(self.cfg.model.encoder, branch="global"), num_classes)

        def batches(self, model, local_batch, ctx, start):   # endless, resumable at micro-batch `start`
            return iter(build_loader(dataset, local_batch, ctx.info.rank, ctx.info.world, start))

        def inputs(self, batch):
            return (batch["clip"],)           # CPU tensors; the engine moves them to the device

        def loss(self, outputs, batch):
            labels = batch["label"].to(outputs.device)
            accuracy = (outputs.argmax(1) == labels).float().mean()
            return StepOutput(F.cross_entropy(outputs.float(), labels), {"accuracy": accuracy})

        def evaluate(self, model, ctx):       # every run.eval_every steps and after the last
            return {"top1": ...}

    train(ClassifierTask(cfg), out="runs/clf", resume=False)

The engine owns everything else: run folder and ``config.json``, seeding, DDP/SyncBN/compile, the optimizer and
schedule, accumulation and bf16, logging, atomic checkpoints every ``run.checkpoint_every`` steps and exact
``resume`` (model, optimizer, scheduler, every process's RNG and the data position).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from constcl_zoo.fileio import atomic_write

from .checkpoint import apply_training_state, read_latest, save_training_state, staging_folder, write_rng
from .config import ConfigError, TrainConfig
from .distributed import DistInfo, all_reduce_mean, init_distributed
from .logger import RunLogger
from .optim import build_optimizer, build_scheduler, effective_weight_decay, loss_scale
from .run import CONFIG, check_run_dir, clear_run, pick_device, seed_everything, setup_logging

log = logging.getLogger("training")


@dataclass
class RunContext:
    """What a task may need from the engine: the run folder, process group, device and config."""

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
    ``metrics`` (scalars, averaged over micro-batches, processes and the log window; names in the task's
    ``metric_names``) and ``counts`` (summed over the run; names in ``count_names``)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)


class TrainTask:
    """What a trainer provides to :func:`train`: data, model and loss (see the module docstring's example)."""

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

    def log_details(self, row: dict[str, Any]) -> str:
        """Task metrics for the log line (after the loss)."""
        return " ".join(f"{k} {row[k]:.4g}" for k in self.metric_names)

    def summary(self, counts: dict[str, int]) -> dict[str, Any]:
        """Extra entries for ``summary.json`` (``counts``: the run totals of ``count_names``); may log them."""
        return dict(counts)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, DistributedDataParallel) else model


def _to_device(x: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(x, torch.Tensor):
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 5 and x.is_floating_point():
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x
    return x


def _configure_process(cfg: TrainConfig, device: torch.device, info: DistInfo) -> None:
    run = cfg.run
    if run.threads > 0:
        torch.set_num_threads(run.threads)
    if run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not run.deterministic
    seed_everything(run.seed + info.rank)


def train(task: TrainTask, out: str | Path, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run (or continue, with ``resume``) ``task`` into run folder ``out``; returns the summary dict.

    ``out`` must not hold a run unless ``resume`` (continue from its newest readable checkpoint) or
    ``overwrite`` (delete its checkpoints and logs first).
    """
    cfg, out = task.cfg, Path(out)
    check_run_dir(out, resume, overwrite)  # every process, before any of them writes
    device = pick_device(cfg.run.device)
    info = init_distributed(device)
    ctx = RunContext(out, info, device, cfg)
    if info.is_main:
        if overwrite:
            clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    setup_logging(out, info)
    _configure_process(cfg, device, info)

    run, o = cfg.run, cfg.optim
    per_step = info.world * run.accum_steps
    if task.batch_size % per_step or task.batch_size < 2 * per_step:
        raise ConfigError(f"batch size {task.batch_size} must be a multiple of world size x run.accum_steps "
                          f"({info.world} x {run.accum_steps}) with at least 2 samples per micro-batch")
    local_batch = task.batch_size // per_step
    if info.is_main:
        cfg.save(out / CONFIG)
    task.setup(ctx)

    model = task.build_model(ctx)
    if run.sync_bn and info.world > 1:
        if device.type != "cuda":
            raise ConfigError("run.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    decay = effective_weight_decay(o.weight_decay, o.grad_reduction, info.world, run.accum_steps)
    optimizer = build_optimizer(model, o.lr, o.momentum, o.nesterov, decay)
    scheduler = build_scheduler(optimizer, o.lr, o.warmup_steps, run.steps)
    scale = loss_scale(o.grad_reduction, info.world, run.accum_steps)

    step, micro_step = 0, 0
    counts_total = dict.fromkeys(task.count_names, 0)  # run totals, checkpointed
    if resume:
        state = read_latest(out, info.rank)
        if state is None:
            log.info("--resume: no checkpoint in %s yet, starting from scratch", out)
        else:
            meta = apply_training_state(state, model, optimizer, scheduler)
            if meta.get("world") not in (None, info.world):
                raise ConfigError(f"{state.folder} was written by {meta['world']} processes; resume with the same "
                                  "number")
            step, micro_step = meta["step"], meta["micro_step"]
            counts_total.update({k: v for k, v in meta.get("counts", {}).items() if k in counts_total})
            log.info("resumed from %s: step %d, data position %d micro-batches", state.folder, step, micro_step)

    train_model: torch.nn.Module = model
    if info.world > 1:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if run.compile:
        train_model = torch.compile(train_model)
    batches = task.batches(model, local_batch, ctx, micro_step)

    logger = RunLogger(out, task, info.is_main, run.steps, step, run.progress)
    amp = run.precision == "bf16"
    names = ("loss", *task.metric_names)
    began = time.perf_counter()
    log.info("%s %s on %s x %d process(es): %d %s/step (%d per micro-batch and process, %d accumulation), "
             "steps %d -> %d", task.name, task.describe(), device, info.world, task.batch_size, task.unit,
             local_batch, run.accum_steps, step, run.steps)

    while step < run.steps:
        # Per micro-batch values summed in float64: the metrics (loss first), then the counts.
        sums = torch.zeros(len(names) + len(task.count_names), dtype=torch.float64)
        for a in range(run.accum_steps):
            t0 = time.perf_counter()
            batch = next(batches)
            logger.waited(time.perf_counter() - t0)
            inputs = tuple(_to_device(x, device, run.channels_last) for x in task.inputs(batch))
            last = a == run.accum_steps - 1
            sync = contextlib.nullcontext() if last or info.world == 1 else train_model.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    outputs = train_model(*inputs)
                result = task.loss(outputs, batch)
                (result.loss * scale).backward()
            values = [result.loss, *(result.metrics.get(k, 0.0) for k in task.metric_names),
                      *(result.counts.get(k, 0.0) for k in task.count_names)]
            sums += torch.tensor([float(v.item() if isinstance(v, torch.Tensor) else v) for v in values],
                                 dtype=torch.float64)
            micro_step += 1
            logger.samples(local_batch)
        if o.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        avg = all_reduce_mean(sums / run.accum_steps)
        for i, k in enumerate(task.count_names):
            counts_total[k] += round(float(avg[len(names) + i]) * run.accum_steps * info.world)
        if not math.isfinite(float(avg[0])):
            raise FloatingPointError(f"step {step}: loss is {float(avg[0])}; lower optim.lr or check the data")
        logger.step(avg[:len(names)])
        if step % run.log_every == 0 or step == run.steps or step == 1:
            logger.log(step, dict(zip(names, logger.window_means(), strict=True)), lr, info.world, counts_total)
        if (run.eval_every and step % run.eval_every == 0) or step == run.steps:
            _evaluate(task, model, ctx, logger, step)
        if step % run.checkpoint_every == 0 or step == run.steps:
            _checkpoint(ctx, step, micro_step, model, optimizer, scheduler, run.keep_checkpoints, counts_total)

    logger.close()
    seconds = time.perf_counter() - began
    log.info("done: %d steps in %.1f s", step, seconds)
    summary = {"steps": step, "seconds": seconds, "history": logger.history, **task.summary(counts_total)}
    if info.is_main:
        atomic_write(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    ctx.barrier()
    return summary


def _evaluate(task: TrainTask, model: torch.nn.Module, ctx: RunContext, logger: RunLogger, step: int) -> None:
    model.eval()
    try:
        with torch.no_grad():
            result = task.evaluate(_unwrap(model), ctx)
    finally:
        model.train()
    if result is not None:
        logger.log_eval(step, result)


def _checkpoint(ctx: RunContext, step: int, micro_step: int, model: torch.nn.Module,
                optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, keep: int,
                counts: dict[str, int]) -> None:
    staging = staging_folder(ctx.out, step)
    if ctx.info.is_main:
        staging.mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    write_rng(staging, ctx.info.rank)
    ctx.barrier()
    if ctx.info.is_main:
        folder = save_training_state(ctx.out, step, micro_step, _unwrap(model), optimizer, scheduler,
                                     {"world": ctx.info.world, "counts": counts}, keep)
        log.info("checkpoint %s", folder)
    ctx.barrier()
