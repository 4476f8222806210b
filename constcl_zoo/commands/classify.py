"""``constcl-zoo classify VIDEO... --model CHECKPOINT``: action recognition of whole videos, JSON lines out.

One line per video (sorted by name, as ``embed`` orders its inputs):
``{"video": PATH, "top": [{"label": ..., "prob": ...}, ...], "windows": N}``,
or ``{"video": PATH, "error": "..."}`` for a video that could not be read (the others still run; exit status 1).
Inputs are files, folders and manifests, as for ``constcl-zoo embed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UsageError
from ..inference.precision import PRECISIONS


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("classify", help="classify videos with a recognition checkpoint (JSON lines)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="video files, folders or manifests (.txt/.lst/.csv)")
    p.add_argument("--model", default=None, help="recognition checkpoint: folder, 'hf-hub:org/repo' or name "
                   "(required: the package ships no recognition model)")
    p.add_argument("--top-k", type=int, default=5, help="labels per video (default 5)")
    p.add_argument("--out", default=None, help="write the JSON lines here instead of stdout")
    p.add_argument("--clip-frames", type=int, default=None, help="frames per window (default: the weights')")
    p.add_argument("--stride", type=int, default=None, help="decoded frames between window starts")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from .._factory import load
    from ..inference.video import VideoError
    from ..tasks.recognition import VideoClassifier
    from ..workflows.embed_run import collect_jobs

    if args.model is None:
        raise UsageError("--model: classify needs a recognition checkpoint, and the package ships none (its default "
                         "models are an encoder, a tracker and a localizer); train one with `python -m training "
                         "probe` or `finetune`")
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    jobs = collect_jobs(args.inputs)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load(args.model, device=device)
    if not isinstance(model, VideoClassifier):
        raise UsageError(f"--model {args.model} is not a recognition checkpoint (it loads as "
                         f"{type(model).__name__}); train one with `python -m training probe` or `finetune`")
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    failed = 0
    try:
        for job in jobs:
            try:
                result = model.classify(job.source, top_k=min(args.top_k, model.num_classes),
                                        clip_frames=args.clip_frames, stride=args.stride,
                                        batch_size=args.batch_size, precision=args.precision)
                line = {"video": str(job.source), **result.to_dict()}
            except (VideoError, OSError) as exc:
                failed += 1
                line = {"video": str(job.source), "error": f"{type(exc).__name__}: {exc}"}
                print(f"constcl-zoo classify: FAILED {job.source}: {exc}", file=sys.stderr)
            out.write(json.dumps(line) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out:
        print(f"constcl-zoo classify: {len(jobs) - failed} video(s) classified, {failed} failed -> "
              f"{Path(args.out)}", file=sys.stderr)
    return 1 if failed else 0
