"""The model card (Hub README.md) of a checkpoint exported from a pretraining run, built with the project's one
card builder (:class:`constcl_zoo.card.ModelCard`).

It records the recipe, the data's folder or manifest *name* (never an absolute local path) and the metrics the run
logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from constcl_zoo.card import PIPELINE_TAGS, ModelCard

from ..pretrain.config import PretrainConfig

__all__ = ["PIPELINE_TAGS", "front_matter", "model_card"]


def front_matter(task: str | None = None, base_model: str | None = None) -> list[str]:
    """The YAML front matter of every card the project writes (:class:`~constcl_zoo.card.ModelCard`'s first
    lines): library, licence, tags, ``pipeline_tag`` for ``task`` (``None``: an encoder) and, for a task checkpoint
    on a registered encoder, ``base_model``."""
    return list(ModelCard(task, base_model).lines)


def model_card(cfg: PretrainConfig, step: int, metrics: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """A Hub model card (YAML front matter + Markdown) for an exported pretraining checkpoint."""
    d, o, loss = cfg.data, cfg.optim, cfg.loss
    pre = config["preprocess"]
    context = config["region_head"]["context_length"] if config.get("region_head") else "-"
    card = ModelCard().title(f"ConST-CL `{cfg.model.arch}` — {cfg.preset or 'custom'} pretraining, {step} steps")
    card.text("Self-supervised ConST-CL (Yuan et al., CVPR 2022) pretrained with constcl-zoo's "
              "`python -m training pretrain`.")
    card.code("python", "from constcl_zoo import load",
              'model = load("THIS_REPO_OR_FOLDER", branch="global")   # or "region", "full"').add("")
    card.section("Recipe").table(("setting", "value"), [
        ("architecture", f"`{cfg.model.arch}` (context length {context})"),
        ("steps", f"{step} of {cfg.run.steps}"),
        ("clips per step", f"{d.batch_size} (two views each)"),
        ("clip", f"{d.num_frames} frames, stride {d.frame_stride}, {d.crop_size}x{d.crop_size}"),
        ("optimizer", f"SGD momentum {o.momentum}, LR {o.lr}, warm-up {o.warmup_steps} steps + cosine, "
                      f"weight decay {o.weight_decay} on kernels, gradients reduced by {o.grad_reduction}"),
        ("losses", f"global NT-Xent tau {loss.global_temperature} x {loss.global_weight} + local tau "
                   f"{loss.local_temperature} x {loss.local_weight}"),
        ("boxes", f"{cfg.boxes.method}, {cfg.boxes.num_boxes} per view; key frames {d.key_frames}"),
        ("precision", cfg.run.precision)]).add("")
    card.section("Data").text(f"Videos from `{Path(d.videos).name}` (decoder {d.decoder}).")
    card.section("Preprocessing at inference").text(
        f"{pre['num_frames']} frames every {pre['frame_stride']} decoded frames; resize the shorter side to "
        f"{pre['resize_short_side']}, centre crop {pre['crop_size']}, values in {pre['value_range']} "
        "(`model.preprocess`).")
    card.section("Metrics measured during pretraining")
    if metrics:
        shown = metrics if len(metrics) <= 8 else [*metrics[:3], *metrics[-5:]]
        card.table(("step", "loss", "global", "local", "global accuracy", "clips/s"), [
            (m["step"], f"{m['loss']:.4f}", f"{m['loss_global']:.4f}", f"{m['loss_local']:.4f}",
             f"{m['global_accuracy']:.3f}", f"{m['clips_per_s']:.1f}") for m in shown])
    else:
        card.add("None recorded.")
    return card.add("", "No downstream evaluation has been run on these weights.").render()
