"""``python -m training <command>``: pretrain, export-checkpoint, publish.

    python -m training pretrain --config cpu_smoke --videos ../shared/data/videos --out runs/smoke
    python -m training pretrain --out runs/smoke --resume                   # continue where it stopped
    torchrun --nproc_per_node 8 -m training pretrain --config paper_k400 --videos k400.csv --out runs/k400
    python -m training export-checkpoint runs/smoke --out checkpoints/smoke
    python -m training publish checkpoints/smoke --repo-id org/constcl-smoke --revision v1

Any config field can be overridden: ``-o optim.lr=0.2 -o data.batch_size=8`` (values are JSON, else strings).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import PRESETS, PretrainConfig, get_preset


def _pretrain(args: argparse.Namespace) -> int:
    from .trainer import pretrain

    out = Path(args.out)
    saved = out / "config.json"
    if args.resume and saved.is_file():
        cfg = PretrainConfig.load(saved)
        if args.config and args.config != cfg.preset:
            raise SystemExit(f"--resume: {saved} was written by preset {cfg.preset!r}, not {args.config!r}")
    elif args.config:
        cfg = get_preset(args.config)
    else:
        raise SystemExit("pretrain: give --config PRESET (or --resume an existing run)")
    overrides = list(args.override)
    if args.videos:
        overrides.append(f"data.videos={Path(args.videos).resolve()}")
    cfg = cfg.replace(overrides)
    if not cfg.data.videos:
        raise SystemExit("pretrain: give --videos DIR_OR_MANIFEST (or -o data.videos=...)")
    pretrain(cfg, out, resume=args.resume)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_checkpoint

    folder = export_checkpoint(Path(args.run), Path(args.out), step=args.step)
    print(f"exported {folder}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from .publish import publish

    url = publish(Path(args.folder), args.repo_id, revision=args.revision, private=args.private,
                  endpoint=args.endpoint, message=args.message)
    print(f"published {url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="self-supervised ConST-CL pretraining (single process or torchrun)")
    p.add_argument("--config", choices=sorted(PRESETS), help="preset to start from")
    p.add_argument("--videos", help="folder of videos (recursive) or a .csv/.txt manifest")
    p.add_argument("--out", required=True, help="run folder (config, checkpoints, logs)")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. optim.lr=0.2 (repeatable)")
    p.set_defaults(func=_pretrain)

    e = sub.add_parser("export-checkpoint", help="write a constcl_zoo checkpoint folder from a run")
    e.add_argument("run", help="run folder written by pretrain")
    e.add_argument("--out", required=True, help="checkpoint folder to write")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    e.set_defaults(func=_export)

    u = sub.add_parser("publish", help="upload a checkpoint folder to the Hugging Face Hub")
    u.add_argument("folder", help="checkpoint folder (export-checkpoint output)")
    u.add_argument("--repo-id", required=True, help="org/name")
    u.add_argument("--revision", default=None, help="tag to create on the uploaded commit")
    u.add_argument("--private", action="store_true")
    u.add_argument("--endpoint", default=None, help="Hub URL (default: huggingface_hub's, honours HF_ENDPOINT)")
    u.add_argument("--message", default=None, help="commit message")
    u.set_defaults(func=_publish)

    from .tasks.tracking.cli import add_parsers as add_tracking_parsers

    add_tracking_parsers(sub)  # eval-tracking, track-train
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
