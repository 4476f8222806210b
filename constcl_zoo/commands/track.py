"""``constcl-zoo track VIDEO_OR_IMAGE_DIR --box x,y,w,h [--model M] --out annotated.mp4 --boxes-out boxes.txt``.

Tracks one object from the box given on the first frame through a video file or a folder of images (sorted by
name) with a SiamFC tracker (:mod:`constcl_zoo.tasks.tracking`), shows a progress bar, and writes the boxes
(``x,y,w,h`` a line, the OTB format) and / or an annotated H.264 MP4 that plays in a browser. Bad input — a box
that is empty or outside the frame, a missing, empty or unreadable video or frame — is one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..errors import UsageError
from ..formats.boxes import parse_box


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``track`` on a ``constcl-zoo`` subparsers object."""
    p = subparsers.add_parser("track", help="track one object through a video (SiamFC)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", nargs="?", help="video file, or a folder of images (frames in name order)")
    p.add_argument("--box", help="the object on the first frame: x,y,w,h in pixels")
    p.add_argument("--sample", action="store_true",
                   help="track in the sample video shipped with the package (its first person, unless --box)")
    p.add_argument("--model", default=None,
                   help="a tracking checkpoint, or an encoder (name / folder / hf-hub:) to put a fresh SiamFC head "
                        "on (default: the package's default tracker; a registered name means its published weights)")
    p.add_argument("--random-init", action="store_true",
                   help="with an architecture name: a seeded random init instead of its published weights")
    p.add_argument("--pretrained", action="store_true", help=argparse.SUPPRESS)  # deprecated: now the default
    p.add_argument("--baseline", choices=("ncc",), default=None,
                   help="track with the training-free baseline instead of a model: ncc, normalised "
                        "cross-correlation of grayscale pixels in the same SiamFC loop (the floor a learned "
                        "tracker must beat)")
    p.add_argument("--out", help="annotated video to write (.mp4, H.264)")
    p.add_argument("--boxes-out", help="boxes to write: x,y,w,h,confidence a line (confidence in [0, 1])")
    p.add_argument("--causal", action="store_true", help="use past frames only (live video; see the docs)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """The ``track`` command (run by :func:`constcl_zoo.cli.main`: user errors are one line, exit status 2)."""
    from ..fileio import atomic_write
    from ..tasks.tracking import format_boxes, track_video
    from ..workflows.loaders import load_tracker

    if args.sample:
        if args.video:
            raise UsageError(f"give a video or --sample, not both (got {args.video})")
        from ..registry import read_index, sample_video

        args.video = str(sample_video())
        args.box = args.box or ",".join(str(v) for v in read_index()["sample"]["init_box"])
    if not args.video:
        raise UsageError("give a video file or image folder (or --sample for the shipped sample video)")
    if not args.box:
        raise UsageError("give --box x,y,w,h: the object on the first frame, in pixels")
    box = parse_box(args.box)
    if not args.out and not args.boxes_out:
        raise UsageError("nothing to write: give --out annotated.mp4 and/or --boxes-out boxes.txt")
    if args.out and Path(args.out).suffix.lower() != ".mp4":
        raise UsageError(f"--out {args.out}: annotated videos are written as .mp4 (H.264)")
    source = Path(args.video)
    if not source.exists():
        raise FileNotFoundError(f"no video file or image folder at {source}")
    if args.baseline and args.model:
        raise UsageError(f"give --model or --baseline, not both (got --model {args.model} --baseline {args.baseline})")
    if args.baseline:
        from ..tasks.tracking import NCC_CONFIG, NCCTracker

        tracker = NCCTracker(dataclasses.replace(NCC_CONFIG, causal=args.causal))
    else:
        tracker = load_tracker(args.model, args.causal, args.random_init)
    bar = _progress(_count_frames(source), enabled=not args.no_progress)
    try:
        result = track_video(tracker, source, box, out=args.out, precision=args.precision,
                             progress=lambda i: bar.update(1))
    finally:
        bar.close()
    if args.boxes_out:
        atomic_write(args.boxes_out, format_boxes(result.boxes, result.scores))
    written = " and ".join(p for p in (args.out, args.boxes_out) if p)
    print(f"tracked {len(result)} frames at {result.fps:.1f} fps (tracker time); wrote {written}", file=sys.stderr)
    return 0


def _count_frames(source: Path) -> int | None:
    if source.is_dir():
        from ..inference.video import list_image_frames

        return len(list_image_frames(source))
    return None  # headers lie about frame counts (video.py); the bar counts up without a total


def _progress(total: int | None, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        enabled = False

        class _Null:
            def update(self, n: int) -> None: ...
            def close(self) -> None: ...

        return _Null()
    return tqdm(total=total, unit="frame", disable=not enabled, dynamic_ncols=True, file=sys.stderr)
