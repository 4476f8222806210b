"""Which one limits pretraining: the data loader or the training step?

    python benchmarks/pretrain_data.py --videos ../shared/data/videos [--config cpu_smoke] [--workers 0 1 2]
    python benchmarks/pretrain_data.py --config paper_k400 --step-only --batch 32   # on a GPU: the paper model

Measures (1) clips/s produced by the pretraining ``DataLoader`` (decode, two augmented views, boxes) with N
workers, and (2) the training step rate (forward, both losses, backward, SGD step; synthetic clips of the same
shape, so no data wait) in clips/s, plus the achieved TFLOP/s of the step (FLOPs of one step counted with
``torch.utils.flop_counter``). Prints a table and writes ``benchmarks/results/pretrain_data_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.data.loader import build_loader  # noqa: E402
from training.data.videos import build_index, list_videos  # noqa: E402
from training.engine.optim import build_optimizer  # noqa: E402
from training.pretrain.config import PRESETS, PretrainConfig, get_preset  # noqa: E402
from training.pretrain.dataset import PretrainDataset  # noqa: E402
from training.pretrain.learner import build_pretrain_model  # noqa: E402
from training.pretrain.losses import global_contrastive_loss, local_contrastive_loss  # noqa: E402
from training.pretrain.regions import random_boxes  # noqa: E402


def loader_rate(cfg: PretrainConfig, workers: int, batches: int, batch: int) -> dict[str, float]:
    """Clips/s from the loader (after one warm-up batch, which includes worker start-up)."""
    cfg = cfg.replace([f"data.num_workers={workers}"])
    paths = list_videos(cfg.data.videos, cfg.data.extensions)
    index = build_index(paths, cfg.data.min_video_frames or cfg.clip_span, cfg.data.decoder)
    dataset = PretrainDataset(index, cfg, temporal_stride=2)
    it = iter(build_loader(dataset, batch, 0, 1, 0))
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    return {"workers": workers, "clips_per_s": batches * batch / seconds, "batches": batches, "batch": batch}


def step_rate(cfg: PretrainConfig, steps: int, batch: int, device: torch.device) -> dict[str, float]:
    """Training steps on synthetic clips: clips/s and achieved TFLOP/s (bf16 autocast if the config says so)."""
    d = cfg.data
    model = build_pretrain_model(cfg).to(device)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    opt = build_optimizer(model, 0.01, 0.9, False, 1e-6)
    gen = torch.Generator().manual_seed(0)
    clips = torch.randn(2 * batch, 3, d.num_frames, d.crop_size, d.crop_size, generator=gen).to(device)
    if cfg.run.channels_last:
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
    import numpy as np

    boxes = torch.from_numpy(random_boxes(2 * batch * cfg.boxes.num_boxes, np.random.default_rng(0)))
    boxes = boxes.reshape(2 * batch, cfg.boxes.num_boxes, 4).to(device)
    amp = cfg.run.precision == "bf16"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(clips, boxes)
        loss = global_contrastive_loss(out["global_embeddings"])["loss"]
        if "inst_a2b" in out:
            loss = loss + cfg.loss.local_weight * local_contrastive_loss(
                out["inst_a"], out["inst_b"], out["inst_a2b"], out["inst_b2a"], out["target_a"], out["target_b"],
                cfg.loss.local_temperature)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    step()  # warm-up (cuDNN autotuning, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    return {"clips_per_s": batch / seconds, "seconds_per_step": seconds, "batch": batch,
            "tflop_per_step": flops / 1e12, "achieved_tflops": flops / seconds / 1e12, "precision": cfg.run.precision}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu_smoke", choices=sorted(PRESETS))
    parser.add_argument("--videos", default=str(ROOT.parent / "shared" / "data" / "videos"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=4, help="timed loader batches per worker count")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--batch", type=int, default=0, help="clips per batch (default: the preset's)")
    parser.add_argument("--step-only", action="store_true", help="skip the loader (e.g. no videos on a GPU box)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("-o", "--override", action="append", default=[])
    parser.add_argument("--json", default=None, help="output (default benchmarks/results/pretrain_data_<device>.json)")
    args = parser.parse_args(argv)

    cfg = get_preset(args.config).replace([f"data.videos={args.videos}", *args.override])
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.run.threads > 0 and device.type == "cpu":
        torch.set_num_threads(cfg.run.threads)
    batch = args.batch or cfg.data.batch_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'}, " \
        f"{torch.get_num_threads()} threads)"
    result: dict[str, object] = {"config": args.config, "arch": cfg.model.arch, "device": name,
                                 "clip": f"{cfg.data.num_frames}x{cfg.data.crop_size}x{cfg.data.crop_size}",
                                 "torch": torch.__version__, "loader": [], "step": None}
    if not args.step_only:
        for w in args.workers:
            result["loader"].append(loader_rate(cfg, w, args.batches, batch))
    result["step"] = step_rate(cfg, args.steps, batch, device)

    print(f"{args.config} ({cfg.model.arch}, clips {result['clip']}, batch {batch}) on {name}")
    print("| what | clips/s |")
    print("|---|---|")
    for row in result["loader"]:
        print(f"| loader, {row['workers']} worker(s) | {row['clips_per_s']:.2f} |")
    s = result["step"]
    print(f"| training step ({s['precision']}) | {s['clips_per_s']:.2f} |")
    print(f"achieved {s['achieved_tflops']:.3f} TFLOP/s ({s['tflop_per_step']:.3f} TFLOP per step of {batch} clips)")
    if result["loader"]:
        best = max(r["clips_per_s"] for r in result["loader"])
        result["limit"] = "data loader" if best < s["clips_per_s"] else "training step"
        print(f"limited by: {result['limit']}")
    out = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / \
        f"pretrain_data_{device.type}_{args.config}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
