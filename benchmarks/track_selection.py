"""Tracking selection table: every encoder x tracker head setting, the training-free baselines and OpenCV's
trackers, per sequence, on the real validation sequences and the synthetic validation set.

    python benchmarks/track_selection.py --encoder random=constcl_r3d14_w16@RUN/encoder \\
        --encoder constcl_real=RUN/encoder --encoder synth=constcl_r3d14_w16.synth_cpu \\
        --synthetic DIR --out benchmarks/results/track_selection

``--encoder NAME=MODEL`` (repeatable): a checkpoint folder or registered name; ``NAME=ARCH@MODEL`` is a seeded
random init of ARCH with MODEL's preprocessing. Each encoder runs with every head setting of :data:`HEADS` (a
fresh, untrained head: the numbers measure the features and the tracker's normalisation and tuning). Baselines
(``--baseline``, default all available): ``ncc`` (the package's training-free floor, :data:`NCC_CONFIG`),
``ncc3`` (the same with SiamFC's three scales), OpenCV's ``mil`` / ``kcf`` / ``csrt`` (kcf / csrt need
``opencv-contrib-python-headless``; skipped with a note when missing) and ``static`` (a box that never moves).
``--tracker NAME=CHECKPOINT`` adds a tracking checkpoint as saved (e.g. the shipped default before a change).
``--merge PREVIOUS.json`` keeps the rows of an earlier run (a table measured in parts).

Sequences: ``../shared/data/tracking/*`` (validation only: nothing trains on them) and, with ``--synthetic``,
a GOT-10k folder of synthetic sequences (reported as their mean). OTB one-pass protocol (success = AUC of 21 IoU
thresholds, precision = centre error <= 20 px). Writes ``<out>.json`` (every row, per sequence, wall time, the
machine) and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from constcl_zoo import load
from constcl_zoo.fileio import atomic_write
from constcl_zoo.tasks.tracking import NCC_CONFIG, NCCTracker

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "tracking"

#: head settings of the learned tracker: the replication's (SiamFC's mean correlation on the output stage), then
#: normalisation alone, then the validated setting (ZNCC on res3 with SiamFC's three scales)
HEADS = {
    "mean-out-1s": {"exemplar_size": 63, "search_size": 127, "num_scales": 1},
    "zncc-out-1s": {"exemplar_size": 63, "search_size": 127, "num_scales": 1, "correlation": "zncc"},
    "zncc-res3-1s": {"exemplar_size": 63, "search_size": 127, "num_scales": 1, "correlation": "zncc",
                     "endpoint": "res3"},
    "zncc-res3-3s": {"exemplar_size": 63, "search_size": 127, "num_scales": 3, "correlation": "zncc",
                     "endpoint": "res3"},
}
NCC3_CONFIG = dataclasses.replace(NCC_CONFIG, num_scales=3, scale_step=1.0375, scale_penalty=0.9745, scale_lr=0.59)


def _sequences(synthetic: str | None):
    from training.tasks.tracking.data import read_dataset

    real = read_dataset(REAL) if REAL.is_dir() else []
    synth = read_dataset(synthetic) if synthetic else []
    return real, synth


def _row(name: str, kind: str, make, real, synth, config: dict | None = None) -> dict:
    from training.tasks.tracking.evaluate import evaluate

    started = time.perf_counter()
    ev = evaluate(make, real + synth, name=name, log=None)
    row = {"name": name, "kind": kind, "sequences": {}, "wall_s": round(time.perf_counter() - started, 1),
           "fps": round(ev.fps, 1), "config": config}
    for seq in real:
        m = ev.metrics[seq.name]
        row["sequences"][seq.name] = {"success": round(m.success, 4), "precision": round(m.precision, 4)}
    if synth:
        s = [ev.metrics[seq.name] for seq in synth]
        row["sequences"]["synthetic"] = {"success": round(sum(m.success for m in s) / len(s), 4),
                                         "precision": round(sum(m.precision for m in s) / len(s), 4)}
    real_success = [row["sequences"][seq.name]["success"] for seq in real]
    row["real_mean_success"] = round(sum(real_success) / len(real_success), 4) if real_success else None
    print(json.dumps(row), flush=True)
    return row


def _baselines(names: list[str]) -> dict:
    from training.tasks.tracking.baselines import BaselineUnavailableError, OpenCVTracker, StaticTracker

    makers = {"ncc": lambda: NCCTracker(NCC_CONFIG), "ncc3": lambda: NCCTracker(NCC3_CONFIG),
              "static": StaticTracker}
    out = {}
    for name in names:
        if name in makers:
            out[name] = makers[name]
            continue
        try:
            OpenCVTracker(name)
        except BaselineUnavailableError as exc:
            print(f"skipping {name}: {exc}", flush=True)
            continue
        out[name] = lambda n=name: OpenCVTracker(n)
    return out


def _encoder(spec: str):
    arch, sep, source = spec.partition("@")
    if not sep:
        return spec, {}
    trained = load(source)
    return arch, {"pretrained": False, "preprocess": trained.config.preprocess}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", action="append", default=[], metavar="NAME=MODEL")
    parser.add_argument("--tracker", action="append", default=[], metavar="NAME=CHECKPOINT")
    parser.add_argument("--baseline", action="append", default=None,
                        choices=["ncc", "ncc3", "mil", "kcf", "csrt", "static"])
    parser.add_argument("--heads", nargs="*", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--synthetic", help="GOT-10k folder of synthetic validation sequences")
    parser.add_argument("--merge", type=Path, help="a previous output JSON whose rows are kept (rows of the same "
                                                   "name are measured again)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "track_selection"))
    args = parser.parse_args()
    real, synth = _sequences(args.synthetic)
    if not real and not synth:
        raise SystemExit(f"track_selection: no sequences ({REAL} is missing and no --synthetic)")
    rows = []
    configs = {"ncc": dataclasses.asdict(NCC_CONFIG), "ncc3": dataclasses.asdict(NCC3_CONFIG)}
    for name, make in _baselines(args.baseline or ["ncc", "ncc3", "mil", "kcf", "csrt", "static"]).items():
        rows.append(_row(name, "baseline", make, real, synth, configs.get(name)))
    for item in args.tracker:
        name, _, path = item.partition("=")
        tracker = load(path, task="tracking")
        rows.append(_row(name, "checkpoint", lambda t=tracker: t, real, synth))
    for item in args.encoder:
        name, _, spec = item.partition("=")
        model, kwargs = _encoder(spec)
        for head in args.heads:
            tracker = load(model, task="tracking", head=HEADS[head], **kwargs)
            rows.append(_row(f"{name} {head}", "encoder", lambda t=tracker: t, real, synth,
                             dataclasses.asdict(tracker.tracker_config)))
    if args.merge:
        fresh = {r["name"] for r in rows}
        rows = [r for r in json.loads(args.merge.read_text())["rows"] if r["name"] not in fresh] + rows
    payload = {"benchmark": "track_selection", "machine": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "load_avg": os.getloadavg(), "heads": HEADS, "ncc": dataclasses.asdict(NCC_CONFIG),
               "ncc3": dataclasses.asdict(NCC3_CONFIG), "rows": rows}
    out = Path(args.out)
    atomic_write(out.with_suffix(".json"), json.dumps(payload, indent=2) + "\n")
    columns = [s.name for s in real] + (["synthetic"] if synth else [])
    lines = ["| tracker | " + " | ".join(f"{c} success / precision" for c in columns) + " | real mean success | fps |",
             "|---" * (len(columns) + 3) + "|"]
    for r in rows:
        cells = [f"{r['sequences'][c]['success']:.3f} / {r['sequences'][c]['precision']:.3f}" for c in columns]
        mean = "—" if r["real_mean_success"] is None else f"{r['real_mean_success']:.3f}"
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {mean} | {r['fps']:.1f} |")
    atomic_write(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
