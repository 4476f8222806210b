"""Seconds per key frame of ``localize`` on CPU, split into person detection (OpenCV HOG), backbone and head.

    python benchmarks/localize.py                       # constcl_r3d14_w16 and constcl_r3d50 on vtest.avi
    python benchmarks/localize.py --archs constcl_r3d50 --num-frames 32 --short-side 400   # the paper's test clips

Random weights (speed does not depend on them); the first ``--seconds`` of the video, one key frame a second.
Writes ``benchmarks/results/localize.{json,md}`` with the CPU (model, SIMD flags, cores) and the load average before
and after each model: the machine may be shared, and other processes' load slows every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.embed_scale import cpu_info
from constcl_zoo import load
from constcl_zoo.fileio import atomic_write
from constcl_zoo.inference.embed import frames_of


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default="../shared/data/videos/vtest.avi")
    parser.add_argument("--archs", nargs="+", default=["constcl_r3d14_w16", "constcl_r3d50"])
    parser.add_argument("--num-frames", type=int, default=0, help="clip frames (0: the encoder's)")
    parser.add_argument("--short-side", type=int, default=0, help="clip short side (0: the encoder's)")
    parser.add_argument("--head", default="transformer", choices=["transformer", "roi"])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", default="benchmarks/results/localize")
    args = parser.parse_args()

    frames_iter, _ = frames_of(args.video)
    first = next(frames_iter)
    fps = 1.0 / first.duration_s if first.duration_s else 25.0
    frames = [first.rgb] + [f.rgb for f, _ in zip(frames_iter, range(int(args.seconds * fps) - 1), strict=False)]
    video = np.stack(frames)
    machine = {**cpu_info(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    rows = []
    for arch in args.archs:
        model = load(arch, task="localization", labels=[f"a{i}" for i in range(60)], pretrained=False,
                     head={"type": args.head, "num_frames": args.num_frames, "short_side": args.short_side})
        pre = model.clip_preprocess.cfg
        load_before = os.getloadavg()
        start = time.perf_counter()
        result = model.localize(video, fps=fps, score_threshold=1.0)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        n = len(result.frames)
        persons = sum(len(f.persons) for f in result.frames)
        t = result.timings
        rows.append({"arch": arch, "head": args.head, "clip": f"{pre.num_frames}x{pre.resize_short_side} (stride "
                     f"{pre.frame_stride})", "key_frames": n, "persons": persons,
                     "detection_s": t["detection"] / n, "backbone_s": t["backbone"] / n, "head_s": t["head"] / n,
                     "preprocess_s": t["preprocess"] / n, "total_s": wall / n,
                     "loadavg_before": [round(x, 2) for x in load_before],
                     "loadavg_after": [round(x, 2) for x in load_after]})
        print(rows[-1], flush=True)
    lines = [f"`localize` on the first {args.seconds:g} s of `{Path(args.video).name}` ({video.shape[2]}x"
             f"{video.shape[1]}), one key frame a second, CPU: {machine['cpu']} ({machine['cores']} cores, "
             f"{machine['threads']} threads; flags {', '.join(machine['flags']) or '-'}), torch {machine['torch']}. "
             "Seconds per key frame (random weights, HOG person detector at short side 600, fp32). Load average "
             "(1 min) before -> after each model: a shared machine's other processes slow every number.", "",
             "| arch | head | clip (frames x short side) | persons / key frame | detection | backbone | head | "
             "total (incl. decode, preprocess) | load before -> after |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['arch']}` | {r['head']} | {r['clip']} | {r['persons'] / r['key_frames']:.1f} | "
                     f"{r['detection_s']:.3f} | {r['backbone_s']:.3f} | {r['head_s']:.4f} | {r['total_s']:.3f} | "
                     f"{r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f} |")
    atomic_write(args.out + ".md", "\n".join(lines) + "\n")
    atomic_write(args.out + ".json", json.dumps({"machine": machine, "video": args.video, "seconds": args.seconds,
                                                 "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
