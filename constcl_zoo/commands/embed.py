"""``constcl-zoo embed INPUT... --out DIR``: sliding-window embeddings of many videos, resumable and sharded.

Inputs are video files, folders (searched recursively for video extensions) or manifests (``.txt`` / ``.lst``:
one path a line, blank lines and ``#`` comments ignored; or ``.csv`` with a ``path`` column; relative to the
manifest's folder). Each video ``V``
gives ``DIR/<name>.safetensors`` where ``<name>`` is ``V``'s path relative to the folder it was found in, as
written in the manifest, or its file name; it holds

* ``embeddings``: float32 ``[N, D]`` (global branch) or ``[N, C, T', H', W']`` (region branch),
* ``start_s``, ``end_s``: float64 ``[N]`` window start / end times in seconds,
* ``start_frame``, ``end_frame``: int64 ``[N]`` decoded-frame indices (first / last frame of each window),

and string metadata (source, model, branch, window settings, decoded frame count, precision). Files are written
to a temporary name and renamed (:func:`constcl_zoo.fileio.atomic_write`), so a file that exists is complete:
a rerun checks it (readable, same settings) and skips it; an unreadable one is recomputed. A rerun whose
settings differ from those of the outputs already in ``DIR`` is refused before any work (``--overwrite``
recomputes them). Each run writes an index (``index.json``, or ``index-rank{R}-of-{W}.json`` when sharded)
listing every finished and failed video of its share, plus the finished ones of earlier runs still in ``DIR``;
it is written even when the run stops early (a full disk stops it; a bad video only fails itself), so it always
describes the folder. Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` in the environment) rank ``R`` takes every
``W``-th video of the sorted input list.
"""

from __future__ import annotations

import argparse
import dataclasses

from ..argtypes import positive_float, positive_int, resolve_deprecated
from ..errors import UsageError
from ..inference.precision import PRECISIONS
from ..workflows.embed_run import RUNNERS, EmbedOptions, run_local


def run_embed(args: argparse.Namespace) -> int:
    """The ``embed`` command; returns the exit status (1 when any video failed)."""
    runner = resolve_deprecated("constcl-zoo embed", "--runner", args.runner, {"--engine": args.engine}, "local")
    if args.model is None and args.random_init:
        raise UsageError("--random-init needs --model (an architecture name, e.g. constcl_r3d14_w16)")
    opts = EmbedOptions(inputs=args.inputs, out=args.out, model=args.model, branch=args.branch,
                        random_init=args.random_init, seed=args.seed, clip_frames=args.clip_frames,
                        stride=args.stride, batch_size=args.batch_size, precision=args.precision, device=args.device,
                        overwrite=args.overwrite, progress=not args.no_progress)
    opts = dataclasses.replace(opts, model=opts.model_name())  # the package's default encoder when none is given
    if runner == "ray":
        from ..workflows.embed_ray import RayOptions, run_ray  # imported only here: Ray is an optional extra

        return run_ray(opts, RayOptions(address=args.address, actors=args.actors, actor_cpus=args.actor_cpus,
                                        decode_cpus=args.decode_cpus))
    return run_local(opts)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``embed`` subcommand."""
    embed = subparsers.add_parser("embed", help="sliding-window embeddings of video files, folders or manifests",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    embed.add_argument("inputs", nargs="+", metavar="INPUT", help="video file, folder, or manifest (.txt/.lst/.csv)")
    embed.add_argument("--out", required=True, help="output folder")
    embed.add_argument("--model", default=None, help="registered name, checkpoint folder or hf-hub:org/repo "
                       "(default: the package's trained default encoder)")
    embed.add_argument("--branch", choices=("global", "region"), default="global")
    embed.add_argument("--random-init", action="store_true",
                       help="random weights (for a model without published weights; smoke tests)")
    embed.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    embed.add_argument("--clip-frames", type=positive_int, default=None,
                       help="frames per window (default: the weights')")
    embed.add_argument("--stride", type=positive_int, default=None, help="decoded frames between window starts")
    embed.add_argument("--batch-size", type=positive_int, default=8)
    embed.add_argument("--precision", choices=PRECISIONS, default="auto")
    embed.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when CUDA is available, else cpu")
    embed.add_argument("--overwrite", action="store_true",
                       help="recompute outputs that already exist (also those made with other settings)")
    embed.add_argument("--no-progress", action="store_true", help="no progress bar")
    ray = embed.add_argument_group("--runner ray (the `ray` extra)")
    ray.add_argument("--runner", choices=RUNNERS, default=None,
                     help="what embeds the videos: local, this process (one rank of torchrun); ray, CPU decode tasks "
                          "feeding a pool of model actors on a Ray cluster, with retries (default: local)")
    ray.add_argument("--engine", choices=RUNNERS, default=None, help=argparse.SUPPRESS)  # deprecated: --runner
    ray.add_argument("--address", default=None,
                     help="Ray cluster to join from one of its machines: auto (the one running here) or HOST:6379 "
                          "(its GCS address); none: start a local one for the run. Not ray:// (Ray Data does not "
                          "run through Ray Client: submit the command as a Ray Job instead)")
    ray.add_argument("--actors", type=positive_int, default=None,
                     help="model actors (default: one per GPU of the cluster, else 1)")
    ray.add_argument("--actor-cpus", type=positive_float, default=1.0, help="CPUs of each CPU model actor")
    ray.add_argument("--decode-cpus", type=positive_float, default=1.0, help="CPUs of each decode task")
    embed.set_defaults(func=run_embed)
    return embed
