"""Run a replication: generate the benchmark, pretrain and evaluate every (variant, seed), write the table, and
build the default model. Every step is one ``python -m training`` command (recorded in ``<out>/commands.sh``) or
a generator call; a step whose output exists is skipped, so an interrupted run continues with ``--resume``
(a pretraining cut short resumes from its last checkpoint).

Layout of ``<out>``::

    config.json  commands.sh  replicate.log
    data/{pretrain,ava,tracking/{train,val},recognition}/      the generated benchmark
    runs/<variant>_seed<k>/{pretrain,encoder,probe,track_synth,track_vot,loc}/ and result.json
    results.{json,md}  results.png                               the table (:mod:`.report`)
    default/{encoder,tracker,localizer}/ + default.json          the default model (:func:`build_default`)
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from constcl_zoo.errors import ConstclZooError
from constcl_zoo.fileio import atomic_write

from .config import ReplicateConfig

if TYPE_CHECKING:
    from ..tasks.localization.synthetic import SyntheticSpec

log = logging.getLogger("training.replicate")
CONFIG = "config.json"


class ReplicateError(ConstclZooError, RuntimeError):
    """A step of the replication failed; the message names the step and its log file."""


class Steps:
    """Runs ``python -m training`` steps as subprocesses, skipping those whose marker file exists."""

    def __init__(self, out: Path, threads: int) -> None:
        self.out = out
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]),
                                                             os.environ.get("PYTHONPATH", "")) if p)

    def run(self, name: str, marker: Path, argv: list[str], resumable: Path | None = None) -> bool:
        """Run ``python -m training *argv`` unless ``marker`` exists; with ``resumable`` (a run folder) that
        already holds a run, add ``--resume``. Returns whether it ran."""
        if marker.exists():
            return False
        if resumable is not None and (resumable / CONFIG).is_file():
            argv = [*argv, "--resume"]
        cmd = [sys.executable, "-m", "training", *argv]
        logfile = self.out / "logs" / f"{name}.log"
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out / "commands.sh", "a") as f:
            f.write(shlex.join(["python", "-m", "training", *argv]) + "\n")
        log.info("%s: %s", name, shlex.join(argv[:1]))
        start = time.monotonic()
        with open(logfile, "w") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=self.env)
        if rc != 0:
            tail = logfile.read_text(errors="replace").strip().splitlines()[-3:]
            raise ReplicateError(f"step {name} failed (exit {rc}); log: {logfile}: " + " | ".join(tail))
        if not marker.exists():
            raise ReplicateError(f"step {name} finished but wrote no {marker}; log: {logfile}")
        log.info("%s done in %.0f s", name, time.monotonic() - start)
        return True


# -- data ---------------------------------------------------------------------------------------------------------
def _generate(folder: Path, make: Any) -> Path:
    """Write a dataset with ``make(tmp_folder)`` into ``folder`` all-or-nothing (a ``.partial`` folder renamed)."""
    if folder.is_dir():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    make(partial)
    partial.rename(folder)
    return folder


def ava_spec(cfg: ReplicateConfig) -> SyntheticSpec:
    """The synthetic AVA-format set of a replication (``<out>/data/ava``; its val split is held out from every
    localizer the replication trains): generate it alone with ``generate(folder, ava_spec(cfg),
    cfg.data.backgrounds or None)`` from :mod:`training.tasks.localization.synthetic`."""
    from ..tasks.localization.synthetic import SyntheticSpec

    d = cfg.data
    return SyntheticSpec(num_videos=d.ava_videos, val_videos=d.ava_val_videos, speed=d.ava_speed, seed=d.seed + 1)


def prepare_data(cfg: ReplicateConfig, root: Path) -> dict[str, Path]:
    """Generate (or find) every dataset of the benchmark under ``root``; returns their paths."""
    from ..synthetic.recognition import RecognitionSpec, generate_recognition
    from ..synthetic.scene import SceneSpec
    from ..synthetic.tracking import TrackingSpec, generate_tracking
    from ..tasks.localization.synthetic import SyntheticSpec
    from ..tasks.localization.synthetic import generate as generate_ava

    d = cfg.data
    back = d.backgrounds or None
    root.mkdir(parents=True, exist_ok=True)
    paths = {
        "pretrain": _generate(root / "pretrain", lambda p: generate_ava(p, SyntheticSpec(
            num_videos=d.pretrain_videos + 1, val_videos=1, seconds=d.pretrain_seconds, max_people=3,
            seed=d.seed + 100), back)),
        "ava": _generate(root / "ava", lambda p: generate_ava(p, ava_spec(cfg), back)),
        "tracking_train": _generate(root / "tracking" / "train", lambda p: generate_tracking(p, TrackingSpec(
            num_sequences=d.tracking_train, seconds=d.tracking_seconds, scene=SceneSpec(), seed=d.seed + 2), back)),
        "tracking_val": _generate(root / "tracking" / "val", lambda p: generate_tracking(p, TrackingSpec(
            num_sequences=d.tracking_val, seconds=d.tracking_seconds, scene=SceneSpec(), seed=d.seed + 3), back)),
        "recognition": _generate(root / "recognition", lambda p: generate_recognition(p, RecognitionSpec(
            train_per_class=d.recognition_train_per_class, val_per_class=d.recognition_val_per_class,
            seed=d.seed + 4), back)),
    }
    from constcl_zoo.inference.video import list_videos

    videos = sorted((paths["pretrain"] / "videos").glob("*.mp4"))[:d.pretrain_videos]  # the unlabelled ones
    if d.real_videos and back is not None and Path(back).exists():
        videos += [Path(v).resolve() for v in list_videos(back)]
    manifest = root / "pretrain_videos.txt"
    atomic_write(manifest, "".join(f"{v.resolve()}\n" for v in videos))
    paths["pretrain_manifest"] = manifest
    return paths


# -- one (variant, seed) --------------------------------------------------------------------------------------------
def _section_overrides(section: str, obj: Any) -> list[str]:
    return [f"{section}.{f.name}={json.dumps(getattr(obj, f.name))}" for f in fields(obj)]


def pretrain_overrides(cfg: ReplicateConfig, variant: str, seed: int, videos: Path) -> list[str]:
    """``-o`` overrides turning the ``cpu_smoke`` pretraining preset into ``variant`` at ``seed`` with the shared
    budget."""
    p = cfg.pretrain
    arch = p.cvrl_arch if variant == "cvrl" else p.arch
    context = {"cvrl": -1, "constcl_ctx0": 0}.get(variant, p.context_length)
    return [f"model.arch={arch}", f"model.context_length={context}", f"model.init_seed={seed}",
            f"data.videos={videos}", f"data.num_frames={p.num_frames}", f"data.frame_stride={p.frame_stride}",
            f"data.crop_size={p.crop_size}", f"data.decode_short_side={p.decode_short_side}",
            f"data.batch_size={p.batch_size}", f"loss.local_weight={p.local_weight if variant != 'cvrl' else 0.0}",
            *_section_overrides("optim", cfg.optim), *_section_overrides("run", cfg.run), f"run.seed={seed}"]


def write_random_encoder(cfg: ReplicateConfig, seed: int, videos: Path, folder: Path) -> None:
    """The ``random`` variant's encoder: exactly the network the ``constcl`` pretraining starts from."""
    from constcl_zoo.checkpoint import save_checkpoint

    from ..pretrain.config import get_preset
    from ..pretrain.learner import build_pretrain_model

    pcfg = get_preset("cpu_smoke").replace(pretrain_overrides(cfg, "constcl", seed, videos))
    model = build_pretrain_model(pcfg).eval()
    model.config = model.config.replace(provenance={"source": "random init (no pretraining)", "init_seed": seed})
    partial = folder.with_name(folder.name + ".partial")
    save_checkpoint(model, partial)
    partial.rename(folder)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def run_unit(cfg: ReplicateConfig, steps: Steps, data: dict[str, Path], variant: str, seed: int, folder: Path
             ) -> dict[str, Any]:
    """Pretrain (unless ``random``) and evaluate one (variant, seed) in ``folder``; returns its metrics."""
    result_path = folder / "result.json"
    if result_path.is_file():
        return _read_json(result_path)
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{variant}_seed{seed}"
    encoder = folder / "encoder"
    start = time.monotonic()
    if variant == "random":
        if not encoder.is_dir():
            write_random_encoder(cfg, seed, data["pretrain_manifest"], encoder)
    else:
        run = folder / "pretrain"
        steps.run(f"{tag}.pretrain", run / "summary.json", [
            "pretrain", "--config", "cpu_smoke", "--out", str(run),
            *[a for o in pretrain_overrides(cfg, variant, seed, data["pretrain_manifest"]) for a in ("-o", o)]],
            resumable=run)
        steps.run(f"{tag}.export", encoder / "model.safetensors",
                  ["export-checkpoint", str(run), "--out", str(encoder)])
    e = cfg.evaluation
    steps.run(f"{tag}.probe", folder / "probe" / "metrics.json", [
        "probe", "--train", str(data["recognition"] / "train"), "--val", str(data["recognition"] / "val"),
        "--model", str(encoder), "--seed", str(seed), "--no-progress", "--out", str(folder / "probe")])
    head = ["--head", f"exemplar_size={e.exemplar_size}", "--head", f"search_size={e.search_size}",
            "--head", f"num_scales={e.num_scales}"]
    sets = [("track_synth", data["tracking_val"])]
    if cfg.data.vot and Path(cfg.data.vot).exists():
        sets.append(("track_vot", Path(cfg.data.vot)))
    for name, dataset in sets:
        steps.run(f"{tag}.{name}", folder / name / "metrics.json", [
            "eval-tracking", "--dataset", str(dataset), "--model", str(encoder), *head, "--out", str(folder / name)])
    loc = folder / "loc"
    branch = "global" if variant == "cvrl" else "region"
    steps.run(f"{tag}.localization", loc / "model" / "config.json", [
        "train-localizer", "--config", "cpu_small", "--data", str(data["ava"]), "--out", str(loc),
        "-o", f"model.encoder={encoder}", "-o", "model.pretrained=true", "-o", f"model.branch={branch}",
        "-o", f"model.init_seed={seed}", "-o", f"run.seed={seed}", "-o", f"run.steps={e.localization_steps}",
        "-o", f"optim.lr={e.localization_lr}",
        "-o", f"model.freeze_encoder={str(e.localization_freeze_encoder).lower()}"],
        resumable=loc)
    probe = _read_json(folder / "probe" / "metrics.json")
    evals = [json.loads(line) for line in (loc / "eval.jsonl").read_text().splitlines() if line.strip()]
    result: dict[str, Any] = {"variant": variant, "seed": seed, "probe_top1": probe["top1"],
                              "localization_frame_map": evals[-1]["val_frame_mAP"]}
    for name, _ in sets:
        m = _read_json(folder / name / "metrics.json")
        result[f"{name}_success"], result[f"{name}_precision"] = m["success"], m["precision"]
    result["seconds"] = round(time.monotonic() - start, 1)
    atomic_write(result_path, json.dumps(result, indent=2) + "\n")
    return result


# -- the default model ----------------------------------------------------------------------------------------------
def _local_score(r: dict[str, Any]) -> float:
    keys = [k for k in ("localization_frame_map", "track_synth_success", "track_vot_success") if k in r]
    return sum(r[k] for k in keys) / len(keys)


def build_default(cfg: ReplicateConfig, steps: Steps, data: dict[str, Path], results: list[dict[str, Any]],
                  out: Path) -> dict[str, Any]:
    """The default model from the best ``constcl`` run (highest mean of its local metrics): its encoder, its
    localizer, and a tracker whose head is trained on the synthetic tracking sequences — kept if it tracks
    better (mean success over the evaluation sets) than the untrained head, else the untrained head."""
    done = out / "default.json"
    if done.is_file():
        return _read_json(done)
    candidates = [r for r in results if r["variant"] == "constcl"]
    if not candidates:
        raise ReplicateError("the default model needs the 'constcl' variant in 'variants'")
    best = max(candidates, key=_local_score)
    unit = out.parent / "runs" / f"constcl_seed{best['seed']}"
    e, dc = cfg.evaluation, cfg.default
    track_run = out / "tracker_run"
    steps.run("default.track_train", track_run / "tracker" / "config.json", [
        "track-train", "--config", "cpu_small", "--dataset", str(data["tracking_train"]), "--encoder",
        str(unit / "encoder"), "--out", str(track_run), "-o", "model.random_init=false",
        "-o", f"model.head.exemplar_size={e.exemplar_size}", "-o", f"model.head.search_size={e.search_size}",
        "-o", f"model.head.num_scales={e.num_scales}",
        "-o", f"run.steps={dc.tracker_steps}", "-o", f"data.batch_size={dc.tracker_batch_size}",
        "-o", f"optim.lr={dc.tracker_lr}", "-o", f"optim.warmup_steps={max(1, dc.tracker_steps // 10)}",
        "-o", f"run.checkpoint_every={max(1, dc.tracker_steps // 2)}", "-o", f"run.seed={best['seed']}"],
        resumable=track_run)
    sets = [n for n in ("track_synth", "track_vot") if f"{n}_success" in best]
    trained: dict[str, float] = {}
    for name in sets:
        dataset = data["tracking_val"] if name == "track_synth" else Path(cfg.data.vot)
        steps.run(f"default.{name}", out / f"{name}_trained" / "metrics.json", [
            "eval-tracking", "--dataset", str(dataset), "--model", str(track_run / "tracker"),
            "--out", str(out / f"{name}_trained")])
        m = _read_json(out / f"{name}_trained" / "metrics.json")
        trained[f"{name}_success"], trained[f"{name}_precision"] = m["success"], m["precision"]
    mean_success = {"trained": sum(trained[f"{n}_success"] for n in sets) / len(sets),
                    "untrained": sum(best[f"{n}_success"] for n in sets) / len(sets)}
    head = "trained" if mean_success["trained"] > mean_success["untrained"] else "untrained"
    for name in ("encoder", "tracker", "localizer"):
        shutil.rmtree(out / name, ignore_errors=True)
    shutil.copytree(unit / "encoder", out / "encoder")
    shutil.copytree(unit / "loc" / "model", out / "localizer")
    if head == "trained":
        shutil.copytree(track_run / "tracker", out / "tracker")
    else:
        from constcl_zoo import load

        load(str(unit / "encoder"), task="tracking", head={
            "exemplar_size": e.exemplar_size, "search_size": e.search_size, "num_scales": e.num_scales,
        }).save_pretrained(out / "tracker")
    summary = {"source_run": f"runs/constcl_seed{best['seed']}", "selection": "highest mean of the local metrics "
               "(localization frame-mAP, tracking success) among the constcl runs", "unit": best,
               "tracker_head": head, "tracker_trained": trained,
               "tracker_untrained": {k: best[k] for k in best if k.startswith("track_")},
               "tracker_mean_success": mean_success}
    atomic_write(done, json.dumps(summary, indent=2) + "\n")
    return summary


# -- the whole run --------------------------------------------------------------------------------------------------
def replicate(cfg: ReplicateConfig, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Run (or continue) the replication into ``out``; returns the report (see :mod:`.report`)."""
    from tqdm.auto import tqdm

    from .report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / CONFIG)  # on --resume: the stored config with any overrides, i.e. what the rest runs with
    handler = logging.FileHandler(out / "replicate.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    start = time.monotonic()
    clock = out / "wall_seconds.json"  # accumulated over resumed sessions
    before = _read_json(clock)["seconds"] if clock.is_file() else 0.0
    try:
        steps = Steps(out, cfg.run.threads or 2)
        data = prepare_data(cfg, out / "data")
        units = [(v, s) for v in cfg.variants for s in cfg.seeds]
        results = []
        for variant, seed in tqdm(units, desc="replicate", unit="run"):
            results.append(run_unit(cfg, steps, data, variant, seed, out / "runs" / f"{variant}_seed{seed}"))
            atomic_write(clock, json.dumps({"seconds": before + time.monotonic() - start}) + "\n")
        default = build_default(cfg, steps, data, results, out / "default") if "constcl" in cfg.variants else None
        wall = before + time.monotonic() - start
        atomic_write(clock, json.dumps({"seconds": wall}) + "\n")
        return write_report(cfg, results, default, wall, out)
    finally:
        log.removeHandler(handler)


