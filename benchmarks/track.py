"""Tracking speed: fps of the SiamFC tracker and where the time goes (backbone, correlation, pre/post-processing).

    python benchmarks/track.py                       # CPU (torch threads = --threads, default 2); GPU if available
    python benchmarks/track.py --frames 20 --archs constcl_r3d14_w16

Runs each tracker on the first ``--frames`` frames of ``../shared/data/tracking/vot15_bag`` (random frames when
absent). Backbone = the encoder on the scale batch (``[S, 3, 5, X, X]``), correlation = the head (adjust convs +
cross-correlation), pre/post = the rest of an update (crops, normalisation, upsampling, box update). Writes
``benchmarks/results/track.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from constcl_zoo import load
from constcl_zoo.fileio import atomic_write

ROOT = Path(__file__).resolve().parents[1]
BAG = ROOT.parent / "shared" / "data" / "tracking" / "vot15_bag"

CONFIGS = {  # name -> (arch, exemplar, search)
    "small-63/127": ("constcl_r3d14_w16", 63, 127),
    "small-127/255": ("constcl_r3d14_w16", 127, 255),
    "r3d50-127/255": ("constcl_r3d50", 127, 255),
}


def _frames(n: int) -> tuple[list[np.ndarray], np.ndarray]:
    if BAG.is_dir():
        from constcl_zoo.video import iter_image_files
        from training.tasks.tracking.datasets import read_dataset

        (seq,) = read_dataset(BAG)
        return [f.rgb for f in iter_image_files(seq.frames[:n])], seq.boxes[0]
    rng = np.random.default_rng(0)
    return list(rng.integers(0, 255, (n, 480, 640, 3), dtype=np.uint8)), np.array([280.0, 120, 150, 140])


def _time(fn, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def bench(name: str, device: str, frames: list[np.ndarray], box: np.ndarray, repeat: int) -> dict:
    arch, z, x = CONFIGS[name]
    tracker = load(arch, task="tracking", pretrained=False, head={"exemplar_size": z, "search_size": x},
                   device=device)
    result = tracker.track(frames, box)
    cfg = tracker.tracker_config
    clips = torch.rand(cfg.num_scales, 3, cfg.num_frames, x, x, device=device) * 2 - 1
    run = tracker._features_fn()  # the same precision plan as tracking
    feats = run(clips)
    with torch.inference_mode():
        zf = tracker.head.adjust_z(run(clips[:1, :, :, :z, :z]))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def backbone() -> None:
        run(clips)
        sync()

    def correlation() -> None:
        with torch.inference_mode():
            tracker.head.correlate(zf, tracker.head.adjust_x(feats))
        sync()

    per_frame = float(np.median(result.times[1:]))
    t_backbone, t_corr = _time(backbone, repeat), _time(correlation, repeat)
    return {"tracker": name, "arch": arch, "device": device, "exemplar": z, "search": x,
            "fps": 1.0 / per_frame, "ms_per_frame": per_frame * 1e3, "ms_backbone": t_backbone * 1e3,
            "ms_correlation": t_corr * 1e3, "ms_pre_post": max(per_frame - t_backbone - t_corr, 0.0) * 1e3,
            "frames": len(frames)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trackers", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "track"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames, box = _frames(args.frames)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for name in args.trackers:
            row = bench(name, device, frames, box, args.repeat)
            print(json.dumps(row))
            rows.append(row)
    meta = {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine()}
    atomic_write(args.out + ".json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [f"torch {meta['torch']}, {args.threads} CPU threads; median over {args.frames} vot15_bag frames; "
             "3 scales x 5 frames a step", "",
             "| tracker | device | fps | ms/frame | backbone ms | correlation ms | pre/post ms |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['tracker']} | {r['device']} | {r['fps']:.2f} | {r['ms_per_frame']:.0f} | "
              f"{r['ms_backbone']:.0f} | {r['ms_correlation']:.1f} | {r['ms_pre_post']:.0f} |" for r in rows]
    atomic_write(args.out + ".md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
