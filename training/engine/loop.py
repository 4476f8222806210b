"""The one training loop: :func:`train` drives a :class:`~training.engine.learner.Learner` on one process or under
``torchrun`` (DDP), in named phases: setup, build, resume, step, evaluate, checkpoint, finish.

One optimizer step = ``run.accum_steps`` micro-batches on every process; ``learner.batch_size`` samples in total
(``batch_size / (world * accum_steps)`` per micro-batch and process). Each micro-batch loss is scaled by
:func:`training.engine.optim.loss_scale` (summed vs averaged gradients) before ``backward``. bf16 autocast covers
the forward pass; the learner's loss runs outside it. Logs go to TensorBoard (``<run>/tb``), ``<run>/metrics.jsonl``,
``<run>/train.log`` and a tqdm bar (rank 0); the log line, the bar and ``metrics.jsonl`` show the same loss: the
mean over the steps since the previous log line (the line says how many).

A new trainer plugs in by subclassing :class:`~training.engine.learner.Learner` (data, model, loss; optionally an
evaluation)::

    @dataclass
    class ClassifierConfig(TrainConfig):      # the engine's preset/optim/run sections, plus the trainer's own
        data: MyDataConfig = field(default_factory=MyDataConfig)

    class ClassifierLearner(Learner):
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

    train(ClassifierLearner(cfg), out="runs/clf", resume=False)

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
from torch.nn.parallel import DistributedDataParallel

from constcl_zoo.fileio import atomic_write

from .._moved import deprecated_names
from .checkpoint import apply_training_state, read_latest, save_training_state, staging_folder, write_rng
from .config import ConfigError, TrainConfig
from .distributed import all_reduce_mean, init_distributed
from .learner import Learner, RunContext, StepOutput
from .logger import RunLogger
from .optim import build_optimizer, build_scheduler, effective_weight_decay, loss_scale
from .run import CONFIG, check_run_dir, clear_run, pick_device, seed_everything, setup_logging

__all__ = ["Learner", "RunContext", "StepOutput", "train"]
__getattr__ = deprecated_names(__name__)  # TrainTask: the old name of Learner

log = logging.getLogger("training")


@dataclass
class _Run:
    """What the phases of one :func:`train` call share: the model (unwrapped, on the device) and what trains it
    (``train_model``: under DDP and/or ``torch.compile``), the optimizer, and the run's position."""

    learner: Learner
    ctx: RunContext
    local_batch: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scale: float  # the gradient scale of a micro-batch loss (summed vs averaged gradients)
    step: int = 0
    micro_step: int = 0  # the data position: micro-batches consumed by every process
    counts: dict[str, int] = field(default_factory=dict)  # run totals of the learner's count_names, checkpointed
    train_model: torch.nn.Module | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The logged metrics: the loss first, then the learner's."""
        return ("loss", *self.learner.metric_names)


def train(learner: Learner, out: str | Path, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run (or continue, with ``resume``) ``learner`` into run folder ``out``; returns the summary dict.

    ``out`` must not hold a run unless ``resume`` (continue from its newest readable checkpoint) or
    ``overwrite`` (delete its checkpoints and logs first).
    """
    ctx, local_batch = _setup(learner, Path(out), resume, overwrite)
    run = _build(learner, ctx, local_batch)
    if resume:
        _resume(run)
    _parallelize(run)
    # A DataLoader draws its workers' base seed from the global RNG when iterated: without the fork, a resumed run
    # would make that draw from the restored state and shift every later random op (dropout) of the run.
    with torch.random.fork_rng(devices=[]):
        batches = learner.batches(run.model, local_batch, ctx, run.micro_step)
    r = ctx.cfg.run
    logger = RunLogger(ctx.out, learner, ctx.info.is_main, r.steps, run.step, r.progress)
    began = time.perf_counter()
    log.info("%s %s on %s x %d process(es): %d %s/step (%d per micro-batch and process, %d accumulation), "
             "steps %d -> %d", learner.name, learner.describe(), ctx.device, ctx.info.world, learner.batch_size,
             learner.unit, local_batch, r.accum_steps, run.step, r.steps)
    while run.step < r.steps:
        lr = _step(run, batches, logger)
        if run.step % r.log_every == 0 or run.step == r.steps or run.step == 1:
            logger.log(run.step, dict(zip(run.names, logger.window_means(), strict=True)), lr, ctx.info.world,
                       run.counts)
        if (r.eval_every and run.step % r.eval_every == 0) or run.step == r.steps:
            _evaluate(run, logger)
        if run.step % r.checkpoint_every == 0 or run.step == r.steps:
            _checkpoint(run)
    return _finish(run, logger, time.perf_counter() - began)


def _setup(learner: Learner, out: Path, resume: bool, overwrite: bool) -> tuple[RunContext, int]:
    """The run folder (refused if used, cleared with ``overwrite``), the process group, logging, this process's
    settings and seed, ``config.json``; then the learner's own set-up. Returns the context and the per-process
    micro-batch size."""
    cfg = learner.cfg
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
    _configure_process(cfg, device, info.rank)
    per_step = info.world * cfg.run.accum_steps
    if learner.batch_size % per_step or learner.batch_size < 2 * per_step:
        raise ConfigError(f"batch size {learner.batch_size} must be a multiple of world size x run.accum_steps "
                          f"({info.world} x {cfg.run.accum_steps}) with at least 2 samples per micro-batch")
    if info.is_main:
        cfg.save(out / CONFIG)
    learner.setup(ctx)
    return ctx, learner.batch_size // per_step


def _configure_process(cfg: TrainConfig, device: torch.device, rank: int) -> None:
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
    seed_everything(run.seed + rank)


def _build(learner: Learner, ctx: RunContext, local_batch: int) -> _Run:
    """The learner's model on the device (SyncBN, channels_last_3d as configured), its optimizer and schedule."""
    run, o, world = ctx.cfg.run, ctx.cfg.optim, ctx.info.world
    model = learner.build_model(ctx)
    if run.sync_bn and world > 1:
        if ctx.device.type != "cuda":
            raise ConfigError("run.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(ctx.device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    decay = effective_weight_decay(o.weight_decay, o.grad_reduction, world, run.accum_steps)
    optimizer = build_optimizer(model, o.lr, o.momentum, o.nesterov, decay)
    scheduler = build_scheduler(optimizer, o.lr, o.warmup_steps, run.steps)
    return _Run(learner, ctx, local_batch, model, optimizer, scheduler,
                loss_scale(o.grad_reduction, world, run.accum_steps), counts=dict.fromkeys(learner.count_names, 0))


def _resume(run: _Run) -> None:
    """Continue from the run's newest readable checkpoint (model, optimizer, schedule, RNG, data position and run
    totals), or from scratch when it has none."""
    ctx = run.ctx
    state = read_latest(ctx.out, ctx.info.rank)
    if state is None:
        log.info("--resume: no checkpoint in %s yet, starting from scratch", ctx.out)
        return
    state.model = run.learner.checkpoint_keys(state.model)
    meta = apply_training_state(state, run.model, run.optimizer, run.scheduler)
    if meta.get("world") not in (None, ctx.info.world):
        raise ConfigError(f"{state.folder} was written by {meta['world']} processes; resume with the same number")
    run.step, run.micro_step = meta["step"], meta["micro_step"]
    run.counts.update({k: v for k, v in meta.get("counts", {}).items() if k in run.counts})
    log.info("resumed from %s: step %d, data position %d micro-batches", state.folder, run.step, run.micro_step)


def _parallelize(run: _Run) -> None:
    """What trains: the model under DDP (several processes) and ``torch.compile`` (``run.compile``)."""
    ctx, model = run.ctx, run.model
    train_model = model
    if ctx.info.world > 1:
        train_model = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if ctx.cfg.run.compile:
        train_model = torch.compile(train_model)
    run.train_model = train_model


def _to_device(x: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(x, torch.Tensor):
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 5 and x.is_floating_point():
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x
    return x


def _micro_batch(run: _Run, batch: Any, last: bool) -> StepOutput:
    """Forward (bf16 autocast as configured) and scaled backward of one micro-batch; gradients are synchronised
    across processes on the ``last`` micro-batch of the step only."""
    ctx, learner = run.ctx, run.learner
    inputs = tuple(_to_device(x, ctx.device, ctx.cfg.run.channels_last) for x in learner.inputs(batch))
    sync = contextlib.nullcontext() if last or ctx.info.world == 1 else run.train_model.no_sync()
    with sync:
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=ctx.cfg.run.precision == "bf16"):
            outputs = run.train_model(*inputs)
        result = learner.loss(outputs, batch)
        (result.loss * run.scale).backward()
    return result


def _step(run: _Run, batches: Iterator[Any], logger: RunLogger) -> float:
    """One optimizer step: ``run.accum_steps`` micro-batches, gradient clipping, the update and the schedule;
    metrics averaged over micro-batches and processes go to the logger. Returns the step's learning rate."""
    learner, r, o = run.learner, run.ctx.cfg.run, run.ctx.cfg.optim
    n = len(run.names)
    # Per micro-batch values summed in float64: the metrics (loss first), then the counts.
    sums = torch.zeros(n + len(learner.count_names), dtype=torch.float64)
    for a in range(r.accum_steps):
        t0 = time.perf_counter()
        batch = next(batches)
        logger.waited(time.perf_counter() - t0)
        result = _micro_batch(run, batch, last=a == r.accum_steps - 1)
        values = [result.loss, *(result.metrics.get(k, 0.0) for k in learner.metric_names),
                  *(result.counts.get(k, 0.0) for k in learner.count_names)]
        sums += torch.tensor([float(v.item() if isinstance(v, torch.Tensor) else v) for v in values],
                             dtype=torch.float64)
        run.micro_step += 1
        logger.samples(run.local_batch)
    if o.clip_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), o.clip_grad_norm)
    lr = run.optimizer.param_groups[0]["lr"]
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.step += 1
    avg = all_reduce_mean(sums / r.accum_steps)
    for i, k in enumerate(learner.count_names):
        run.counts[k] += round(float(avg[n + i]) * r.accum_steps * run.ctx.info.world)
    if not math.isfinite(float(avg[0])):
        raise FloatingPointError(f"step {run.step}: loss is {float(avg[0])}; lower optim.lr or check the data")
    logger.step(avg[:n])
    return lr


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, DistributedDataParallel) else model


def _evaluate(run: _Run, logger: RunLogger) -> None:
    """The learner's evaluation (model in eval mode, no gradients); its result goes to ``eval.jsonl``."""
    model = run.model
    model.eval()
    try:
        with torch.no_grad():
            result = run.learner.evaluate(_unwrap(model), run.ctx)
    finally:
        model.train()
    if result is not None:
        logger.log_eval(run.step, result)


def _checkpoint(run: _Run) -> None:
    """An atomic checkpoint of the step: every process writes its RNG state, rank 0 the rest."""
    ctx = run.ctx
    staging = staging_folder(ctx.out, run.step)
    if ctx.info.is_main:
        staging.mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    write_rng(staging, ctx.info.rank)
    ctx.barrier()
    if ctx.info.is_main:
        folder = save_training_state(ctx.out, run.step, run.micro_step, _unwrap(run.model), run.optimizer,
                                     run.scheduler, {"world": ctx.info.world, "counts": run.counts},
                                     ctx.cfg.run.keep_checkpoints)
        log.info("checkpoint %s", folder)
    ctx.barrier()


def _finish(run: _Run, logger: RunLogger, seconds: float) -> dict[str, Any]:
    """Close the logs and write ``summary.json`` (rank 0); returns the summary."""
    logger.close()
    log.info("done: %d steps in %.1f s", run.step, seconds)
    summary = {"steps": run.step, "seconds": seconds, "history": logger.history,
               **run.learner.summary(run.counts)}
    if run.ctx.info.is_main:
        atomic_write(run.ctx.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    run.ctx.barrier()
    return summary
