"""The localization commands: ``train-localizer`` (:mod:`.learner`), ``calibrate-localizer`` (:mod:`.calibrate`)
and ``eval-ava`` (:mod:`.evaluate`). Each command's ``--help`` description is below.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl_zoo.errors import UsageError

from ..._moved import deprecated_names
from ...engine import add_run_arguments, read_jsonl, resolve_config
from . import calibrate as calibrate_module
from .calibrate import CALIBRATION, calibrate, write_calibrated
from .config import PRESETS, LocalizationConfig
from .evaluate import RULES, evaluate_files, write_result

__getattr__ = deprecated_names(__name__)  # add_parser, run: train-localizer's, now add_train_parser, run_train

# The --help descriptions, as the commands' own modules had them.
TRAIN_DESCRIPTION = """\
``python -m training train-localizer``: train an action localizer on AVA-format data (the shared engine).

    python -m training train-localizer --config cpu_small --data synth/ --out runs/loc
    python -m training train-localizer --out runs/loc --resume                  # continue where it stopped
    torchrun --nproc_per_node 8 -m training train-localizer --config ava_r3d50 --data ava/ --out runs/ava

Validation (``run.eval_every`` steps and after the last) is the official frame-mAP@0.5 on the val split
(``eval.jsonl``); at the end ``<out>/model`` is a localization checkpoint: ``constcl_zoo.load("<out>/model")``.
"""

CALIBRATE_DESCRIPTION = calibrate_module.__doc__

EVAL_AVA_DESCRIPTION = """\
``python -m training eval-ava``: the official AVA frame-mAP of a detections CSV, written as JSON.

    python -m training eval-ava --gt ava_val_v2.2.csv --detections results.csv \
        --labelmap ava_action_list_v2.2_for_activitynet_2019.pbtxt --out result.json

writes ``{"mAP": ..., "per_class": {id: AP}, ..., "rule": ..., "ignored_key_frames": N}`` (see :mod:`.evaluate`)
and prints the mAP. ``--rule current`` (the default) is the current ActivityNet evaluator, the one AVA v2.2
results are reported with: ``video_id,timestamp`` rows of the ground truth mark key frames without actions,
detections on key frames absent from the ground truth are ignored, timestamps may be fractional.
``--rule 2018`` is the 2018 evaluator (whole-second key frames, ``--excluded`` timestamps dropped, every other
detected key frame scored); ``--rule ignore-empty-frames`` mmaction2's (detections on key frames without ground
truth of an evaluated class dropped).
"""


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``train-localizer``: train an action localizer on the shared engine (:mod:`.learner`)."""
    p = sub.add_parser("train-localizer", help="train an action localizer on AVA-format data",
                       description=TRAIN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p, PRESETS)
    p.add_argument("--data", help="dataset root in the AVA layout (annotations/, videos/); sets data.root")
    p.set_defaults(func=run_train)
    return p


def run_train(args: argparse.Namespace) -> int:
    """Resolve the config (preset, ``--data``, ``-o``), train, write ``<out>/model``. Returns 0."""
    from .learner import train_localizer

    extra = [f"data.root={Path(args.data).resolve()}"] if args.data else []
    cfg = resolve_config(LocalizationConfig, PRESETS, args, extra)
    summary = train_localizer(cfg, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    evals = read_jsonl(Path(args.out) / "eval.jsonl")
    score = f"val frame-mAP@0.5 {evals[-1]['val_frame_mAP']:.4f}; " if evals else ""
    print(f"{score}localization checkpoint written to {summary['model']}")
    return 0


def add_calibrate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``calibrate-localizer``: per-class action thresholds from held-out data (:mod:`.calibrate`)."""
    p = sub.add_parser("calibrate-localizer", help="per-class action thresholds of a localizer from held-out data",
                       description=CALIBRATE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="localization checkpoint folder (config.json, model.safetensors)")
    p.add_argument("--data", required=True, help="AVA-format dataset folder (annotations/, videos/); its val split")
    p.add_argument("--out", required=True, help="folder for the calibrated copy of the checkpoint")
    p.add_argument("--min-precision", type=float, default=0.9, help="target val precision per class (default 0.9)")
    p.add_argument("--min-true-positives", type=int, default=5,
                   help="true positives the threshold must report on val (default 5): support for the precision")
    p.add_argument("--batch-size", type=int, default=8, help="key frames per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it exists")
    p.set_defaults(func=run_calibrate)
    return p


def run_calibrate(args: argparse.Namespace) -> int:
    """Calibrate (user errors: :class:`UsageError`, one line from ``python -m training``)."""
    from constcl_zoo import load
    from constcl_zoo.tasks.localization import ActionLocalizer

    model_dir, out = Path(args.model), Path(args.out)
    if not (model_dir / "config.json").is_file():
        raise UsageError(f"--model {model_dir}: no config.json there; give a localization checkpoint folder")
    if out.resolve() == model_dir.resolve():
        raise UsageError("--out must differ from --model (the calibrated copy never replaces its source)")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"--out {out} exists and is not empty; add --overwrite or choose another folder")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    model = load(str(model_dir))
    if not isinstance(model, ActionLocalizer):
        raise UsageError(f"--model {model_dir}: a {type(model).__name__}, not a localization checkpoint")
    if args.min_true_positives < 1:
        raise UsageError(f"--min-true-positives must be >= 1, got {args.min_true_positives}")
    report = calibrate(model, args.data, args.min_precision, args.batch_size, args.min_true_positives)
    provenance = {"command": getattr(args, "command_line", "python -m training calibrate-localizer"),
                  "source_model": model_dir.name, "data": str(args.data), "min_precision": args.min_precision}
    write_calibrated(model_dir, out, report, provenance)
    calibrated = load(str(out))  # reloads: the sha256 record holds and the thresholds parse
    assert isinstance(calibrated, ActionLocalizer) and calibrated.calibrated
    print(f"val frame-mAP@0.5 {report['val_frame_mAP']:.4f} on {report['num_key_frames']} key frames; "
          f"thresholds for precision >= {args.min_precision:g}:")
    for c in report["classes"]:
        best = "-" if c["best_precision"] is None else f"{c['best_precision']:.3f}"
        at = (f"precision {c['precision']:.3f}, recall {c['recall']:.3f}" if c["reached"] else
              f"never reaches it (best precision {best})")
        print(f"  {c['label']:<12} {c['threshold']:.3f}  {at}, {c['num_positives']} val positives")
    print(f"calibrated localizer written to {out} ({CALIBRATION})")
    return 0


def add_eval_ava_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``eval-ava`` to a subcommand parser; its handler is ``args.func`` (:func:`run_eval_ava`)."""
    p = subparsers.add_parser("eval-ava", help="official AVA frame-mAP@0.5 of a detections CSV",
                              description=EVAL_AVA_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", required=True, help="ground-truth CSV (video_id,timestamp,x1,y1,x2,y2,action_id,person_id; "
                   "video_id,timestamp rows: key frames without actions)")
    p.add_argument("--detections", required=True,
                   help="detections CSV (video_id,timestamp,x1,y1,x2,y2,action_id,score)")
    p.add_argument("--labelmap", required=True, help="label map pbtxt of the evaluated classes")
    p.add_argument("--rule", default="current", choices=[x.replace("_", "-") for x in RULES],
                   help="current: the official evaluator since 2020 (default; AVA v2.2); 2018: the 2018 evaluator "
                        "(with --excluded); ignore-empty-frames: mmaction2's")
    p.add_argument("--excluded", default=None,
                   help="excluded timestamps CSV (video_id,timestamp), with --rule 2018 or ignore-empty-frames")
    p.add_argument("--out", default=None, help="JSON file to write the result to")
    p.set_defaults(func=run_eval_ava)
    return p


def run_eval_ava(args: argparse.Namespace) -> int:
    """Evaluate (user errors: :class:`UsageError`, answered in one line by ``python -m training``)."""
    for flag in ("gt", "detections", "labelmap", "excluded"):
        value = getattr(args, flag)
        if value is not None and not Path(value).is_file():
            raise UsageError(f"--{flag}: no file at {value}")
    if args.excluded is not None and args.rule == "current":
        raise UsageError("--excluded: the current official evaluator takes no excluded timestamps (detections on "
                         "key frames absent from --gt are ignored); drop it, or add --rule 2018")
    result = evaluate_files(args.gt, args.detections, args.labelmap, args.excluded, rule=args.rule.replace("-", "_"))
    if args.out:
        write_result(args.out, result)
    ignored = (f"; {result.ignored_key_frames} detected key frames ignored" if result.ignored_key_frames else "")
    print(f"frame-mAP@0.5 {result.mean_ap:.4f} over {len(result.per_class)} classes with ground truth "
          f"(rule {args.rule}{ignored})" + (f" (written to {args.out})" if args.out else ""))
    return 0
