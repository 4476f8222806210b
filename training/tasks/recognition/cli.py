"""The recognition commands: ``probe`` (a linear probe of a frozen encoder: :mod:`.probe`) and ``finetune`` (an
encoder with a classifier head on the engine: :mod:`.finetune`). Each command's ``--help`` description is below.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from constcl_zoo.errors import UsageError

from ..._moved import deprecated_names
from ...engine import add_run_arguments, resolve_config
from .config import PRESETS, FinetuneConfig, ProbeSettings
from .data import load_splits
from .evaluate import compute_metrics, plot_confusion, write_metrics
from .features import SplitFeatures, ViewSettings, default_cache_dir, extract_features, weights_digest
from .probe import save_head, train_probe

CHECKPOINT_DIR = "checkpoint"
__getattr__ = deprecated_names(__name__)  # add_parser, run: the probe's, now add_probe_parser, run_probe

log = logging.getLogger(__name__)

# The --help descriptions, as the commands' own modules had them.
PROBE_DESCRIPTION = """\
The ``probe`` command: linear probe of a frozen encoder on a labelled video dataset.

    python -m training probe --train videos/train --val videos/val --model constcl_r3d50 --out runs/probe
    python -m training probe --ucf101-splits ucfTrainTestlist --split 1 --train UCF-101 --model M --out RUN \\
        --clips 10 --crops 3 --train-clips 2 --train-crops 1
    python -m training probe --hmdb51-splits testTrainMulti_7030_splits --train hmdb51 --model M --out RUN

Writes ``RUN/metrics.json`` (top-1, top-5, per-class accuracy, confusion matrix), ``RUN/confusion.png``,
``RUN/head.safetensors`` (``weight`` ``[C, D]``, ``bias`` ``[C]``) and ``RUN/probe.json`` (labels, settings,
encoder, feature caches, training summary). Features are cached (``--cache-dir``), so rerunning with other probe
settings (``--l2-normalize``, ``--weight-decay``, ...) takes seconds.
"""

FINETUNE_DESCRIPTION = """\
The ``finetune`` command: fine-tune an encoder with a classifier head on a labelled video dataset.

    python -m training finetune --config cpu_small --train videos/train --val videos/val --model constcl_r3d14_w16 \\
        --random-init --out runs/ft
    python -m training finetune --config ucf101 --ucf101-splits ucfTrainTestlist --split 1 --train UCF-101 \\
        --model cvrl_r3d50.k600_800ep --out runs/ucf101
    torchrun --nproc_per_node 8 -m training finetune --config ucf101 ... --out runs/ucf101
    python -m training finetune --out runs/ucf101 --resume                 # continue where it stopped

Writes the engine's run files (``config.json``, ``checkpoints/``, ``metrics.jsonl``, ``eval.jsonl``, ``tb/``,
``train.log``, ``summary.json``) and, at the end, ``metrics.json`` (top-1, top-5, per-class accuracy, confusion
matrix), ``confusion.png`` and the task checkpoint ``checkpoint/`` (``constcl_zoo.load(RUN/checkpoint)``).
Any config field can be overridden: ``-o optim.lr=0.01 -o model.freeze_encoder=true -o loss.label_smoothing=0.1``.
"""


def add_dataset_arguments(parser: argparse.ArgumentParser, title: str, *, required: bool,
                          split_default: int | None) -> None:
    """The labelled-video options the recognition commands share: ``--train``, ``--val`` and the dataset format
    (a folder per class, ``--ucf101-splits`` or ``--hmdb51-splits`` with ``--split``)."""
    data = parser.add_argument_group(title)
    data.add_argument("--train", required=required,
                      help="training videos: a folder per class, or the video root with --ucf101/--hmdb51-splits")
    data.add_argument("--val", help="validation videos: a folder per class (same classes as --train); with split "
                                    "files, the root of the test videos (default: --train)")
    fmt = data.add_mutually_exclusive_group()
    fmt.add_argument("--ucf101-splits", metavar="DIR", help="UCF101 split folder (classInd.txt, trainlist0N.txt, "
                                                            "testlist0N.txt)")
    fmt.add_argument("--hmdb51-splits", metavar="DIR", help="HMDB51 split folder (<class>_test_split<N>.txt)")
    data.add_argument("--split", type=int, default=split_default,
                      help="split number with --ucf101/--hmdb51-splits (default 1)")


def add_probe_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``probe`` sub-command to ``subparsers``; its handler is ``args.func`` (= :func:`run_probe`)."""
    defaults = ProbeSettings()
    p = subparsers.add_parser("probe", help="linear probe of a frozen encoder (features cached on disk)",
                              description=PROBE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_arguments(p, "data", required=True, split_default=1)
    model = p.add_argument_group("encoder and features")
    model.add_argument("--model", default=None, help="encoder: a registered name, checkpoint folder or hf-hub:... "
                                                      "(default: the package's default encoder)")
    model.add_argument("--random-init", action="store_true", help="a seeded random init of --model's architecture "
                                                                  "(the baseline a pretrained encoder must beat)")
    model.add_argument("--clips", type=int, default=1, help="clips along each validation video (default 1)")
    model.add_argument("--crops", type=int, default=1, help="spatial crops per clip: 1 centre, 3 along the long "
                                                            "side (default 1)")
    model.add_argument("--train-clips", type=int, help="clips per training video (default: --clips)")
    model.add_argument("--train-crops", type=int, help="crops per training clip (default: --crops)")
    model.add_argument("--device", default="cpu", help="device of the encoder and the probe (default cpu)")
    model.add_argument("--batch-size", type=int, default=16, help="views per forward pass (default 16)")
    model.add_argument("--decode-workers", type=int, default=1, help="videos decoded ahead in threads (default 1)")
    model.add_argument("--cache-dir", help=f"feature cache (default {default_cache_dir()})")
    probe = p.add_argument_group("probe")
    probe.add_argument("--l2-normalize", action="store_true", help="L2-normalise each view's feature first")
    probe.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                       help=f"L2 penalty on the weights (default {defaults.weight_decay})")
    probe.add_argument("--optimizer", choices=("lbfgs", "adam"), default=defaults.optimizer,
                       help="lbfgs: full batch (default); adam: mini-batch for feature sets too large for that")
    probe.add_argument("--max-iter", type=int, default=defaults.max_iter, help="L-BFGS iterations")
    probe.add_argument("--epochs", type=int, default=defaults.epochs, help="Adam epochs")
    probe.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate")
    probe.add_argument("--seed", type=int, default=0, help="seed of the probe and of --random-init (default 0)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_probe)
    return p


def _views(count: int, flag: str) -> int:
    if count < 1:
        raise UsageError(f"{flag} must be >= 1, got {count}")
    return count


def _features_record(features: SplitFeatures) -> dict[str, Any]:
    return {"videos": len(features.paths), "views": asdict(features.settings), "fingerprint": features.fingerprint,
            "cache_file": str(features.cache_file) if features.cache_file else None,
            "skipped": [{"path": p, "reason": r} for p, r in features.skipped]}


def run_probe(args: argparse.Namespace) -> int:
    """``probe``: extract (or read cached) features, train the probe, evaluate; write the run folder. Returns 0."""
    from constcl_zoo import load
    from constcl_zoo.registry import default_model_name

    if args.model is None and args.random_init:
        raise UsageError("--random-init needs --model (an architecture name, e.g. constcl_r3d14_w16)")
    args.model = args.model or default_model_name()  # the package's default encoder, as every command

    val_views = ViewSettings(_views(args.clips, "--clips"), _views(args.crops, "--crops"))
    train_views = ViewSettings(_views(args.train_clips or args.clips, "--train-clips"),
                               _views(args.train_crops or args.crops, "--train-crops"))
    settings = ProbeSettings(l2_normalize=args.l2_normalize, weight_decay=args.weight_decay,
                             optimizer=args.optimizer, max_iter=args.max_iter, epochs=args.epochs, lr=args.lr,
                             seed=args.seed)
    fmt = "ucf101" if args.ucf101_splits else "hmdb51" if args.hmdb51_splits else "folder"
    train_split, val_split = load_splits(fmt, args.train, args.val, args.ucf101_splits or args.hmdb51_splits,
                                         args.split)
    model = load(args.model, branch="global", pretrained=not args.random_init, seed=args.seed, device=args.device)
    common = {"cache_dir": args.cache_dir, "batch_size": args.batch_size, "decode_workers": args.decode_workers,
              "progress": not args.no_progress}
    train = extract_features(model, train_split, train_views, **common)
    val = extract_features(model, val_split, val_views, **common)

    head, summary = train_probe(train, settings, device=args.device)
    scores = head.scores(val.features)
    metrics = compute_metrics(scores, val.labels, val.classes)
    metrics["skipped_videos"] = {"train": len(train.skipped), "val": len(val.skipped)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics, out / "metrics.json")
    plot_confusion(metrics["confusion_matrix"], val.classes, out / "confusion.png",
                   title=f"{args.model}: top-1 {metrics['top1']:.3f} ({metrics['num_videos']} videos)")
    info = {"settings": asdict(settings),
            "encoder": {"model": str(args.model), "arch": model.config.arch, "pretrained": not args.random_init,
                        "seed": args.seed if args.random_init else None, "weights_sha256": weights_digest(model),
                        "config": model.config.to_dict()},
            "dataset": {"format": fmt, "train": str(args.train), "val": str(args.val or args.train),
                        "splits": args.ucf101_splits or args.hmdb51_splits,
                        "split": args.split if fmt != "folder" else None},
            "features": {"train": _features_record(train), "val": _features_record(val)},
            "training": summary,
            "metrics": {k: metrics[k] for k in ("top1", "top5", "mean_class_accuracy", "num_videos", "chance")}}
    save_head(head, out, info)
    classifier = head.to_classifier(model, provenance={"training": {
        "command": "probe", "settings": info["settings"], "dataset": info["dataset"], "metrics": info["metrics"]}})
    classifier.save_pretrained(out / CHECKPOINT_DIR)
    print(f"probe: top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}, mean class accuracy "
          f"{metrics['mean_class_accuracy']:.4f} on {metrics['num_videos']} videos "
          f"({len(train.paths)} training videos; skipped {len(train.skipped)} train, {len(val.skipped)} val) "
          f"-> {out} (task checkpoint: {out / CHECKPOINT_DIR})")
    return 0


def add_finetune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``finetune`` sub-command to ``subparsers``; its handler is ``args.func`` (= :func:`run_finetune`)."""
    p = subparsers.add_parser("finetune", help="fine-tune an encoder with a classifier head (all layers or the head)",
                              description=FINETUNE_DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, PRESETS)
    add_dataset_arguments(p, "data (recorded in config.json; not needed with --resume)", required=False,
                          split_default=None)
    model = p.add_argument_group("encoder")
    model.add_argument("--model", help="encoder: a registered name, checkpoint folder or hf-hub:... (default: the "
                                       "preset's)")
    model.add_argument("--random-init", action="store_true", help="a seeded random init of --model's architecture "
                                                                  "(the baseline a pretrained encoder must beat)")
    p.set_defaults(func=run_finetune)
    return p


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """The dataset and encoder flags as ``-o`` overrides (paths made absolute); ``-o`` itself comes after."""
    def path(value: str) -> str:
        return str(Path(value).resolve())

    extra = []
    if args.ucf101_splits or args.hmdb51_splits:
        fmt = "ucf101" if args.ucf101_splits else "hmdb51"
        extra += [f"data.format={fmt}", f"data.splits={path(args.ucf101_splits or args.hmdb51_splits)}"]
    elif args.train:
        extra.append("data.format=folder")
    if args.train:
        extra.append(f"data.train={path(args.train)}")
    if args.val:
        extra.append(f"data.val={path(args.val)}")
    if args.split is not None:
        extra.append(f"data.split={args.split}")
    if args.model:
        encoder = args.model
        if Path(encoder).exists():  # a local folder: absolute, so the run does not depend on the working directory
            encoder = path(encoder)
        extra.append(f"model.encoder={encoder}")
    if args.random_init:
        extra.append("model.random_init=true")
    return extra


def run_finetune(args: argparse.Namespace) -> int:
    """``finetune``: resolve the config (preset, flags, ``-o``) and fine-tune into ``--out``. Returns 0."""
    from .finetune import finetune

    flags = _flag_overrides(args)
    cfg = resolve_config(FinetuneConfig, PRESETS, args, [*flags, *args.override])
    if not cfg.data.train:
        raise UsageError("finetune: give --train VIDEOS (a folder per class, or the video root with split files)")
    result = finetune(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite,
                      command=getattr(args, "command_line", ""))
    m = result["metrics"]
    print(f"finetune: top-1 {m['top1']:.4f}, top-5 {m['top5']:.4f}, mean class accuracy "
          f"{m['mean_class_accuracy']:.4f} on {m['num_videos']} videos -> {args.out} "
          f"(task checkpoint: {Path(args.out) / 'checkpoint'})")
    return 0
