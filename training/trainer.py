"""The pretraining loop: ``pretrain(cfg, out)`` on one process or under ``torchrun`` (DDP).

One optimizer step = ``run.accum_steps`` micro-batches on every process; ``data.batch_size`` clips in total
(``batch_size / (world * accum_steps)`` per micro-batch and process). Each micro-batch loss
``global + local_weight * local`` is scaled by :func:`training.optim.loss_scale` (summed vs averaged gradients).
Logs go to TensorBoard (``<run>/tb``), ``<run>/metrics.jsonl``, ``<run>/train.log`` and a tqdm bar (rank 0).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from constcl_zoo import PreprocessConfig, PretrainModel, load

from .checkpoint import (
    latest_checkpoint,
    load_training_state,
    save_training_state,
    staging_folder,
    write_rng,
)
from .config import PretrainConfig
from .dataset import PretrainDataset, build_loader, views_first
from .distributed import DistInfo, all_reduce_mean, init_distributed
from .losses import global_contrastive_loss, local_contrastive_loss
from .optim import build_optimizer, build_scheduler, effective_weight_decay, loss_scale
from .videos import build_index, list_videos

log = logging.getLogger("training")


def build_pretrain_model(cfg: PretrainConfig) -> PretrainModel:
    """The ``constcl_zoo`` pretraining network of the run, seeded init, preprocessing matching the data config."""
    d = cfg.data
    overrides: dict[str, Any] = {"preprocess": PreprocessConfig(
        num_frames=d.num_frames, frame_stride=d.frame_stride, crop_size=d.crop_size, resize_short_side=d.crop_size)}
    if cfg.model.context_length >= 0:
        overrides["region_head"] = {"context_length": cfg.model.context_length}
    model = load(cfg.model.arch, branch="full", pretrained=False, seed=cfg.model.init_seed, **overrides)
    if not isinstance(model, PretrainModel):
        raise TypeError(f"{cfg.model.arch}: expected a pretraining network")
    if model.config.region_head is not None and d.num_frames < model.min_frames:
        raise ValueError(f"data.num_frames={d.num_frames} is too short for context length "
                         f"{model.config.region_head.context_length}: {model.min_frames} frames are needed")
    return model.train()


def _device(cfg: PretrainConfig) -> torch.device:
    if cfg.run.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(cfg.run.device)


def _setup_logging(out: Path, info: DistInfo) -> None:
    fmt = logging.Formatter(f"%(asctime)s [rank {info.rank}] %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_constcl", False):
            root.removeHandler(h)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if info.is_main:
        handlers.append(logging.FileHandler(out / "train.log"))
    for h in handlers:
        h.setFormatter(fmt)
        h.setLevel(logging.INFO if info.is_main else logging.WARNING)
        h._constcl = True  # type: ignore[attr-defined]
        root.addHandler(h)


def _barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, DistributedDataParallel) else model


def pretrain(cfg: PretrainConfig, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Run (or continue, with ``resume``) pretraining into run folder ``out``; returns a summary dict."""
    out = Path(out)
    device = _device(cfg)
    info = init_distributed(device)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    _barrier(info)
    _setup_logging(out, info)
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    if cfg.run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.use_deterministic_algorithms(True)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not cfg.run.deterministic
    random.seed(cfg.run.seed + info.rank)
    np.random.seed(cfg.run.seed + info.rank)
    torch.manual_seed(cfg.run.seed + info.rank)

    run, d = cfg.run, cfg.data
    per_step = info.world * run.accum_steps
    if d.batch_size % per_step or d.batch_size < 2 * per_step:
        raise ValueError(f"data.batch_size={d.batch_size} must be a multiple of world size x accum_steps "
                         f"({info.world} x {run.accum_steps}) with at least 2 clips per micro-batch")
    local_batch = d.batch_size // per_step
    if not 0 <= cfg.optim.warmup_steps < run.steps:
        raise ValueError(f"optim.warmup_steps={cfg.optim.warmup_steps} must be below run.steps={run.steps} (the "
                         f"learning rate would stay near 0)")
    if info.is_main:
        cfg.save(out / "config.json")

    # Data: rank 0 counts decoded frames (cached), the others read its cache.
    cache = Path(d.index_cache) if d.index_cache else out / "video_index.json"
    paths = list_videos(d.videos, d.extensions)
    min_frames = d.min_video_frames or cfg.clip_span
    index = None
    if info.is_main:
        index = build_index(paths, min_frames, d.decoder, cache, threads=max(2, d.num_workers))
    _barrier(info)
    if index is None:
        index = build_index(paths, min_frames, d.decoder, cache)
    log.info("videos: %d usable, %d skipped (of %d listed)", len(index), len(index.skipped), len(paths))

    model = build_pretrain_model(cfg)
    temporal_stride = model.config.backbone.stem_stride[0] * model.config.backbone.stem_pool_stride[0]
    if run.sync_bn and info.world > 1:
        if device.type != "cuda":
            raise ValueError("run.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    o = cfg.optim
    decay = effective_weight_decay(o.weight_decay, o.grad_reduction, info.world, run.accum_steps)
    optimizer = build_optimizer(model, o.lr, o.momentum, o.nesterov, decay)
    scheduler = build_scheduler(optimizer, o.lr, o.warmup_steps, run.steps)
    scale = loss_scale(o.grad_reduction, info.world, run.accum_steps)

    step, micro_step = 0, 0
    if resume:
        folder = latest_checkpoint(out)
        if folder is None:
            log.info("--resume: no checkpoint in %s yet, starting from scratch", out)
        else:
            meta = load_training_state(folder, model, optimizer, scheduler, info.rank)
            if meta.get("world") not in (None, info.world):
                raise ValueError(f"{folder} was written by {meta['world']} processes; resume with the same number")
            step, micro_step = meta["step"], meta["micro_step"]
            log.info("resumed from %s: step %d, data position %d micro-batches", folder, step, micro_step)

    train_model: torch.nn.Module = model
    if info.world > 1:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if run.compile:
        train_model = torch.compile(train_model)

    dataset = PretrainDataset(index, cfg, temporal_stride)
    loader = build_loader(dataset, local_batch, info.rank, info.world, micro_step)
    batches = iter(loader)

    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    bar = None
    if info.is_main and run.progress:
        from tqdm import tqdm

        bar = tqdm(total=run.steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True, file=sys.stderr)
    amp = run.precision == "bf16"
    metrics_file = out / "metrics.jsonl"
    history: list[dict[str, float]] = []
    window_start, window_wait, window_clips = time.perf_counter(), 0.0, 0
    window = torch.zeros(4, dtype=torch.float64)  # loss sums over the log window (total, global, local, acc)
    window_steps = 0
    skipped_total = 0
    began = time.perf_counter()
    log.info("pretraining %s (%s) on %s x %d process(es): %d clips/step (%d per micro-batch and process, "
             "%d accumulation), steps %d -> %d", cfg.model.arch, cfg.preset or "custom", device, info.world,
             d.batch_size, local_batch, run.accum_steps, step, run.steps)

    while step < run.steps:
        sums = torch.zeros(5, dtype=torch.float64)
        for a in range(run.accum_steps):
            t0 = time.perf_counter()
            batch = next(batches)
            window_wait += time.perf_counter() - t0
            clips, boxes, key_frames = views_first(batch)
            clips = clips.to(device, non_blocking=True)
            if run.channels_last:
                clips = clips.contiguous(memory_format=torch.channels_last_3d)
            boxes, key_frames = boxes.to(device), key_frames.to(device)
            last = a == run.accum_steps - 1
            sync = contextlib.nullcontext() if last or info.world == 1 else train_model.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    outputs = train_model(clips, boxes, key_frames)
                g = global_contrastive_loss(outputs["global_embeddings"], cfg.loss.global_temperature)
                total = cfg.loss.global_weight * g["loss"]
                local = None
                if "inst_a2b" in outputs:
                    local = local_contrastive_loss(
                        outputs["inst_a"], outputs["inst_b"], outputs["inst_a2b"], outputs["inst_b2a"],
                        outputs["target_a"], outputs["target_b"], cfg.loss.local_temperature)
                    total = total + cfg.loss.local_weight * local["loss"]
                (total * scale).backward()
            sums += torch.tensor([total.item(), g["loss"].item(), local["loss"].item() if local else 0.0,
                                  g["accuracy"].item(), float(batch["skipped"].sum())], dtype=torch.float64)
            micro_step += 1
            window_clips += clips.shape[0] // 2
        if o.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        avg = all_reduce_mean(sums / run.accum_steps)
        skipped_total += round(float(avg[4]) * run.accum_steps * info.world)
        window += avg[:4]
        window_steps += 1
        if not math.isfinite(float(avg[0])):
            raise FloatingPointError(f"step {step}: loss is {float(avg[0])}; lower optim.lr or check the data")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(avg[0]):.4f}", lr=f"{lr:.3g}")
        if step % run.log_every == 0 or step == run.steps or step == 1:
            elapsed = time.perf_counter() - window_start
            clips_per_s = window_clips * info.world / max(elapsed, 1e-9)
            mean = (window / window_steps).tolist()  # means over the steps since the last log line
            row = {"step": step, "loss": mean[0], "loss_global": mean[1], "loss_local": mean[2],
                   "global_accuracy": mean[3], "lr": lr, "clips_per_s": clips_per_s,
                   "data_wait_fraction": window_wait / max(elapsed, 1e-9), "skipped_videos": skipped_total}
            history.append(row)
            if writer is not None:
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(k if k.startswith("loss") else f"train/{k}", v, step)
                with open(metrics_file, "a") as f:
                    f.write(json.dumps(row) + "\n")
            log.info("step %d/%d loss %.4f (global %.4f, local %.4f) acc %.3f lr %.4g %.1f clips/s data-wait %.0f%%",
                     step, run.steps, row["loss"], row["loss_global"], row["loss_local"], row["global_accuracy"],
                     lr, clips_per_s, 100 * row["data_wait_fraction"])
            window_start, window_wait, window_clips = time.perf_counter(), 0.0, 0
            window, window_steps = torch.zeros(4, dtype=torch.float64), 0
        if step % run.checkpoint_every == 0 or step == run.steps:
            _checkpoint(out, step, micro_step, model, optimizer, scheduler, info, run.keep_checkpoints)

    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - began
    log.info("done: %d steps in %.1f s; %d videos skipped by the index, %d replaced at read time", step, seconds,
             len(index.skipped), skipped_total)
    summary = {"steps": step, "seconds": seconds, "history": history, "skipped_videos": index.skipped,
               "replaced_at_read": skipped_total}
    if info.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _barrier(info)
    return summary


def _checkpoint(out: Path, step: int, micro_step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, info: DistInfo, keep: int) -> None:
    staging = staging_folder(out, step)
    if info.is_main:
        staging.mkdir(parents=True, exist_ok=True)
    _barrier(info)
    write_rng(staging, info.rank)
    _barrier(info)
    if info.is_main:
        folder = save_training_state(out, step, micro_step, _unwrap(model), optimizer, scheduler,
                                     {"world": info.world}, keep)
        log.info("checkpoint %s", folder)
    _barrier(info)
