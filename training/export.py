"""``export-checkpoint``: a pretraining run -> a ``constcl_zoo`` checkpoint folder with a model card.

The folder holds ``config.json`` (the :class:`~constcl_zoo.ModelConfig`, with the preprocessing the weights were
trained for and a ``provenance`` record), ``model.safetensors`` (the whole pretraining network, so ``load()``
serves every branch: ``global``, ``region``, ``full``) and ``README.md`` (model card: recipe, data, steps and the
metrics the run measured).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from constcl_zoo.weights import save_checkpoint

from .checkpoint import latest_checkpoint
from .config import PretrainConfig
from .trainer import build_pretrain_model


def _run_checkpoint(run: Path, step: int | None) -> Path:
    if step is None:
        folder = latest_checkpoint(run)
        if folder is None:
            raise FileNotFoundError(f"{run}: no checkpoint yet (checkpoints/latest is missing)")
        return folder
    folder = run / "checkpoints" / f"step_{step:08d}"
    if not (folder / "model.safetensors").is_file():
        have = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
        raise FileNotFoundError(f"{run}: no checkpoint for step {step}; available: {have}")
    return folder


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def export_checkpoint(run: Path, out: Path, step: int | None = None) -> Path:
    """Write the checkpoint folder ``out`` from run folder ``run`` (latest checkpoint unless ``step``)."""
    config_path = run / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run}: no config.json; is it a run folder written by 'python -m training pretrain'?")
    cfg = PretrainConfig.load(config_path)
    folder = _run_checkpoint(run, step)
    state = json.loads((folder / "state.json").read_text())
    model = build_pretrain_model(cfg)
    weights = load_file(str(folder / "model.safetensors"))
    model.load_state_dict(weights, strict=True)
    metrics = [m for m in _metrics(run) if m["step"] <= state["step"]]
    provenance = {
        "source": "constcl-zoo pretraining (python -m training pretrain)",
        "preset": cfg.preset,
        "steps": state["step"],
        "clips_per_step": cfg.data.batch_size,
        "videos": cfg.data.videos,
        "boxes": cfg.boxes.method,
        "local_weight": cfg.loss.local_weight,
    }
    if metrics:
        provenance["final_loss"] = round(metrics[-1]["loss"], 6)
    model.config = model.config.replace(provenance=provenance)
    save_checkpoint(model.eval(), out)
    (out / "README.md").write_text(model_card(cfg, state["step"], metrics, model.config.to_dict()))
    return out


def model_card(cfg: PretrainConfig, step: int, metrics: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """A Hub model card (YAML front matter + Markdown) for an exported pretraining checkpoint."""
    d, o, loss = cfg.data, cfg.optim, cfg.loss
    pre = config["preprocess"]
    lines = [
        "---",
        "library_name: constcl-zoo",
        "license: apache-2.0",
        "tags:",
        "- video",
        "- self-supervised-learning",
        "- constcl",
        "pipeline_tag: video-classification",
        "---",
        "",
        f"# ConST-CL `{cfg.model.arch}` — {cfg.preset or 'custom'} pretraining, {step} steps",
        "",
        "Self-supervised ConST-CL (Yuan et al., CVPR 2022) pretrained with constcl-zoo's "
        "`python -m training pretrain`.",
        "",
        "```python",
        "from constcl_zoo import load",
        'model = load("THIS_REPO_OR_FOLDER", branch="global")   # or "region", "full"',
        "```",
        "",
        "## Recipe",
        "",
        "| setting | value |",
        "|---|---|",
        f"| architecture | `{cfg.model.arch}` (context length {config['region_head']['context_length'] if config.get('region_head') else '-'}) |",  # noqa: E501
        f"| steps | {step} of {cfg.run.steps} |",
        f"| clips per step | {d.batch_size} (two views each) |",
        f"| clip | {d.num_frames} frames, stride {d.frame_stride}, {d.crop_size}x{d.crop_size} |",
        f"| optimizer | SGD momentum {o.momentum}, LR {o.lr}, warm-up {o.warmup_steps} steps + cosine, "
        f"weight decay {o.weight_decay} on kernels, gradients reduced by {o.grad_reduction} |",
        f"| losses | global NT-Xent tau {loss.global_temperature} x {loss.global_weight} + local tau "
        f"{loss.local_temperature} x {loss.local_weight} |",
        f"| boxes | {cfg.boxes.method}, {cfg.boxes.num_boxes} per view; key frames {d.key_frames} |",
        f"| precision | {cfg.run.precision} |",
        "",
        "## Data",
        "",
        f"Videos from `{d.videos}` (decoder {d.decoder}).",
        "",
        "## Preprocessing at inference",
        "",
        f"{pre['num_frames']} frames every {pre['frame_stride']} decoded frames; resize the shorter side to "
        f"{pre['resize_short_side']}, centre crop {pre['crop_size']}, values in {pre['value_range']} "
        "(`model.preprocess`).",
        "",
        "## Metrics measured during pretraining",
        "",
    ]
    if metrics:
        lines += ["| step | loss | global | local | global accuracy | clips/s |", "|---|---|---|---|---|---|"]
        shown = metrics if len(metrics) <= 8 else [*metrics[:3], *metrics[-5:]]
        for m in shown:
            lines.append(f"| {m['step']} | {m['loss']:.4f} | {m['loss_global']:.4f} | {m['loss_local']:.4f} | "
                         f"{m['global_accuracy']:.3f} | {m['clips_per_s']:.1f} |")
    else:
        lines.append("None recorded.")
    lines += ["", "No downstream evaluation has been run on these weights.", ""]
    return "\n".join(lines)
