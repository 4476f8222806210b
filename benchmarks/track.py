"""Tracking speed: fps of the SiamFC tracker and where the time goes (backbone, correlation, pre/post-processing).

    python benchmarks/track.py                       # CPU at 2 and 1 torch threads; GPU too if available
    python benchmarks/track.py --frames 20 --trackers small-63/127 --threads 2

Runs each tracker frame by frame (``init`` then ``update``, 2 future frames each) on the first ``--frames``
frames of ``../shared/data/tracking/vot15_bag`` (random frames when absent) and reports medians over the updates:
ms/frame (wall) and its CPU time (all threads), pre/post (crops, normalisation, response upsampling, box update:
measured inside the loop), and, timed separately on the same shapes, backbone (the encoder on the scale batch
``[S, 3, 5, X, X]``) and correlation (the head's ``respond``). The machine is recorded with the rows: CPU model
and relevant flags, cores, torch threads, precision plan and the 1-minute load average before and after each
row (a shared machine's load slows every row; the CPU time per frame is what the tracker itself needs).
Writes ``benchmarks/results/track.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from constcl_zoo import load
from constcl_zoo.fileio import atomic_write
from constcl_zoo.tasks.tracking import NCCTracker

ROOT = Path(__file__).resolve().parents[1]
BAG = ROOT.parent / "shared" / "data" / "tracking" / "vot15_bag"

CONFIGS = {  # name -> (arch, head config)
    "small-63/127": ("constcl_r3d14_w16", {"exemplar_size": 63, "search_size": 127}),
    "small-63/127-1scale": ("constcl_r3d14_w16", {"exemplar_size": 63, "search_size": 127, "num_scales": 1}),
    "small-127/255": ("constcl_r3d14_w16", {"exemplar_size": 127, "search_size": 255}),
    "r3d50-127/255": ("constcl_r3d50", {"exemplar_size": 127, "search_size": 255}),
    "default": (None, None),  # the package's default tracker, load(task="tracking")
    "ncc": (None, None),  # the training-free baseline (NCC_CONFIG)
}
DEFAULT = ["small-63/127", "small-63/127-1scale", "r3d50-127/255"]
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> dict:
    """CPU model, the flags that decide the kernels, cores, torch build."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cpu_flags": [f for f in CPU_FLAGS if f in flags], "cores": cores,
            "torch": torch.__version__, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _frames(n: int) -> tuple[list[np.ndarray], np.ndarray]:
    if BAG.is_dir():
        from constcl_zoo.inference.video import iter_image_files
        from training.tasks.tracking.data import read_dataset

        (seq,) = read_dataset(BAG)
        return [f.rgb for f in iter_image_files(seq.frames[:n])], seq.boxes[0]
    rng = np.random.default_rng(0)
    return list(rng.integers(0, 255, (n, 480, 640, 3), dtype=np.uint8)), np.array([280.0, 120, 150, 140])


def _median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def bench(name: str, device: str, threads: int, frames: list[np.ndarray], box: np.ndarray, repeat: int) -> dict:
    from constcl_zoo.inference.precision import resolve_precision

    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    arch, head = CONFIGS[name]
    if name == "ncc":
        tracker = NCCTracker()
    elif name == "default":
        tracker = load(task="tracking", device=device)
    else:
        tracker = load(arch, task="tracking", pretrained=False, head=head, device=device)
    cfg = tracker.tracker_config
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    n = cfg.temporal_radius
    tracker.init(frames[0], box, frames[1:1 + n])
    wall, cpu, pre_post = [], [], []
    for i in range(1, len(frames)):
        before = tracker.timing["pre_post"]
        c0, t0 = time.process_time(), time.perf_counter()
        tracker.update(frames[i], frames[i + 1:i + 1 + n])
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        pre_post.append(tracker.timing["pre_post"] - before)
    skip = min(2, len(wall) - 1)  # the first updates warm the allocator / kernels
    wall, cpu, pre_post = (np.median(v[skip:]) * 1e3 for v in (wall, cpu, pre_post))
    z, x = cfg.exemplar_size, cfg.search_size
    row = {"tracker": name, "arch": arch or type(tracker).__name__, "device": device, "threads": threads,
           "exemplar": z, "search": x, "num_scales": cfg.num_scales, "fps": 1e3 / wall, "ms_per_frame": wall,
           "cpu_ms_per_frame": cpu, "ms_pre_post": pre_post, "updates": len(frames) - 1 - skip}
    if isinstance(tracker, NCCTracker):  # pixels: no backbone; the correlation is inside the update
        return {**row, "precision": "fp32", "ms_backbone": None, "ms_correlation": None,
                "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    clips = torch.rand(cfg.num_scales, 3, cfg.num_frames, x, x, device=device) * 2 - 1
    run = tracker._features_fn()  # the same precision plan as tracking
    feats = run(clips)
    with torch.inference_mode():
        zf = tracker.head.adjust_z(run(clips[:1, :, :, :z, :z]))

    def backbone() -> None:
        run(clips)
        sync()

    def correlation() -> None:
        with torch.inference_mode():
            tracker.head.respond(zf, feats)
        sync()

    return {**row, "precision": str(resolve_precision(tracker.precision, device)),
            "ms_backbone": _median_ms(backbone, repeat), "ms_correlation": _median_ms(correlation, repeat),
            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=14, help="frames tracked per row (the first 2 updates are "
                        "warm-up, not counted)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch CPU thread counts to run")
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats of the backbone / correlation alone")
    parser.add_argument("--trackers", nargs="+", default=DEFAULT, choices=list(CONFIGS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "track"))
    args = parser.parse_args()
    frames, box = _frames(args.frames)
    runs = [("cpu", t) for t in args.threads] + ([("cuda", 1)] if torch.cuda.is_available() else [])
    rows = []
    for device, threads in runs:
        for name in args.trackers:
            row = bench(name, device, threads, frames, box, args.repeat)
            print(json.dumps(row))
            rows.append(row)
    meta = machine()
    atomic_write(args.out + ".json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    atomic_write(args.out + ".md", markdown(meta, rows))


def markdown(meta: dict, rows: list[dict]) -> str:
    """The results table (``track.md``) of ``track.json``'s ``meta`` and ``rows``."""
    lines = [f"{meta['cpu']} ({', '.join(meta['cpu_flags'])}), {meta['cores']} cores, torch {meta['torch']}; "
             f"median over {rows[0]['updates']} updates on vot15_bag frames; 5 frames a step; "
             "load = 1-min load average before / after the row (a shared machine)", "",
             "| tracker | device | threads | scales | fps | ms/frame | CPU ms/frame | backbone ms | correlation ms | "
             "pre/post ms | load |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['tracker']} | {r['device']} | {r['threads']} | {r['num_scales']} | {r['fps']:.3g} | "
              f"{r['ms_per_frame']:.1f} | {r['cpu_ms_per_frame']:.1f} | {_ms(r['ms_backbone'], 0)} | "
              f"{_ms(r['ms_correlation'], 1)} | {r['ms_pre_post']:.1f} | "
              f"{r['load_avg_1min'][0]:.1f} / {r['load_avg_1min'][1]:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def _ms(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
