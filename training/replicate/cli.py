"""``python -m training replicate --preset cpu --out DIR``: the small-scale replication (see :mod:`.run`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl_zoo.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .config import PRESETS

    p = sub.add_parser("replicate", help="random vs CVRL vs ConST-CL at small scale, and the default model",
                       description=__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), help="what to run (cpu: the README table)")
    p.add_argument("--out", required=True, help="folder for data, runs, the table and the default model")
    p.add_argument("--backgrounds", default=None,
                   help="folder of real videos for backgrounds, textures and pretraining (default: "
                        "../shared/data/videos when it exists, else generated backgrounds; '' : generated)")
    p.add_argument("--vot", default=None, help="a real tracking sequence to evaluate on too (default: "
                   "../shared/data/tracking/vot15_bag when it exists; '' : none)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (skips finished steps)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. run.steps=200 or seeds=[0,1,2] (repeatable)")
    p.set_defaults(func=run)
    return p


def _default(flag: str | None, relative: str) -> str:
    if flag is not None:
        return str(Path(flag).resolve()) if flag else ""  # "": none
    candidate = Path(relative)
    return str(candidate.resolve()) if candidate.exists() else ""


def run(args: argparse.Namespace) -> int:
    from .config import ReplicateConfig, get_preset
    from .run import CONFIG, replicate

    out = Path(args.out)
    if args.resume and (out / CONFIG).is_file():
        cfg = ReplicateConfig.load(out / CONFIG).replace(args.override)
    elif args.resume:
        raise UsageError(f"--resume: {out} holds no replication ({CONFIG} missing); drop --resume")
    elif (out / CONFIG).is_file():
        raise UsageError(f"--out {out} holds a replication; add --resume to continue it or choose another folder")
    elif not args.preset:
        raise UsageError("give --preset (cpu: the README table; smoke: a toy run)")
    else:
        cfg = get_preset(args.preset).replace([
            f"data.backgrounds={_default(args.backgrounds, '../shared/data/videos')}",
            f"data.vot={_default(args.vot, '../shared/data/tracking/vot15_bag')}", *args.override])
    doc = replicate(cfg, out, resume=args.resume)
    print((out / "results.md").read_text())
    print(f"wall time {doc['wall_seconds'] / 60:.1f} min -> {out}/results.{{md,json,png}}")
    return 0
