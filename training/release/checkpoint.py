"""``export-checkpoint``: a pretraining run -> a ``constcl_zoo`` checkpoint folder with a model card.

The folder holds ``config.json`` (the :class:`~constcl_zoo.ModelConfig`, with the preprocessing the weights were
trained for and a ``provenance`` record), ``model.safetensors`` (the whole pretraining network, so ``load()``
serves every branch: ``global``, ``region``, ``full``) and ``README.md`` (model card: recipe, data, steps and the
metrics the run measured). Neither records an absolute local path: the training videos are named by their folder
or manifest file name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl_zoo.checkpoint import save_checkpoint
from constcl_zoo.errors import UsageError
from constcl_zoo.fileio import atomic_write

from ..engine import read_jsonl, read_latest
from ..engine.checkpoint import read_training_state
from ..engine.run import CONFIG, METRICS
from ..pretrain.config import PretrainConfig
from .card import model_card


def _run_state(run: Path, step: int | None):
    if step is None:
        state = read_latest(run, rank=None)
        if state is None:
            raise UsageError(f"{run}: no checkpoint yet; train longer or lower run.checkpoint_every")
        return state
    folder = run / "checkpoints" / f"step_{step:08d}"
    if not folder.is_dir():
        have = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
        raise UsageError(f"{run}: no checkpoint for --step {step}; available: {have}")
    return read_training_state(folder, rank=None)


def export_checkpoint(run: Path, out: Path, step: int | None = None) -> Path:
    """Write the checkpoint folder ``out`` from run folder ``run`` (its newest readable checkpoint unless
    ``step``)."""
    from ..pretrain.learner import build_pretrain_model

    config_path = run / CONFIG
    if not config_path.is_file():
        raise UsageError(f"{run}: no {CONFIG}; is it a run folder written by 'python -m training pretrain'?")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    cfg = PretrainConfig.load(config_path)
    state = _run_state(run, step)
    model = build_pretrain_model(cfg)
    model.load_state_dict(state.model, strict=True)
    metrics = [m for m in read_jsonl(run / METRICS) if m["step"] <= state.step]
    provenance = {
        "source": "constcl-zoo pretraining (python -m training pretrain)",
        "preset": cfg.preset,
        "steps": state.step,
        "clips_per_step": cfg.data.batch_size,
        "videos": Path(cfg.data.videos).name,
        "boxes": cfg.boxes.method,
        "local_weight": cfg.loss.local_weight,
    }
    if metrics:
        provenance["final_loss"] = round(metrics[-1]["loss"], 6)
    model.config = model.config.replace(provenance=provenance)
    save_checkpoint(model.eval(), out)
    atomic_write(out / "README.md", model_card(cfg, state.step, metrics, model.config.to_dict()))
    return out


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    e = sub.add_parser("export-checkpoint", help="write a constcl_zoo checkpoint folder from a pretraining run")
    e.add_argument("run", type=Path, help="run folder written by pretrain")
    e.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest readable)")
    e.set_defaults(func=_run)
    return e


def _run(args: argparse.Namespace) -> int:
    folder = export_checkpoint(args.run, args.out, step=args.step)
    print(f"exported {folder}")
    return 0
