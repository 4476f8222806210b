"""The ``probe`` command: linear probe of a frozen encoder on a labelled video dataset.

    python -m training probe --train videos/train --val videos/val --model constcl_r3d50 --out runs/probe
    python -m training probe --ucf101-splits ucfTrainTestlist --split 1 --train UCF-101 --model M --out RUN \\
        --clips 10 --crops 3 --train-clips 2 --train-crops 1
    python -m training probe --hmdb51-splits testTrainMulti_7030_splits --train hmdb51 --model M --out RUN

Writes ``RUN/metrics.json`` (top-1, top-5, per-class accuracy, confusion matrix), ``RUN/confusion.png``,
``RUN/head.safetensors`` (``weight`` ``[C, D]``, ``bias`` ``[C]``) and ``RUN/probe.json`` (labels, settings,
encoder, feature caches, training summary). Features are cached (``--cache-dir``), so rerunning with other probe
settings (``--l2-normalize``, ``--weight-decay``, ...) takes seconds.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from constcl_zoo.errors import UsageError

from .datasets import load_splits
from .features import SplitFeatures, ViewSettings, default_cache_dir, extract_features, weights_digest
from .metrics import compute_metrics, plot_confusion, write_metrics
from .probe import ProbeSettings, save_head, train_probe

CHECKPOINT_DIR = "checkpoint"

log = logging.getLogger(__name__)



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

def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``probe`` sub-command to ``subparsers``; its handler is ``args.func`` (= :func:`run`)."""
    defaults = ProbeSettings()
    p = subparsers.add_parser("probe", help="linear probe of a frozen encoder (features cached on disk)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.set_defaults(func=run)
    return p


def _views(count: int, flag: str) -> int:
    if count < 1:
        raise UsageError(f"{flag} must be >= 1, got {count}")
    return count


def _features_record(features: SplitFeatures) -> dict[str, Any]:
    return {"videos": len(features.paths), "views": asdict(features.settings), "fingerprint": features.fingerprint,
            "cache_file": str(features.cache_file) if features.cache_file else None,
            "skipped": [{"path": p, "reason": r} for p, r in features.skipped]}


def run(args: argparse.Namespace) -> int:
    """Extract (or read cached) features, train the probe, evaluate; write the run folder. Returns 0."""
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
