"""The model card (Hub README.md) of a checkpoint exported from a pretraining run.

It records the recipe, the data's folder or manifest *name* (never an absolute local path) and the metrics the run
logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..pretrain.config import PretrainConfig

#: the Hugging Face Hub pipeline tag of each kind of checkpoint (the Hub has no tracking tag: object detection is
#: the nearest, as for action localization's per-person boxes)
PIPELINE_TAGS = {None: "feature-extraction", "recognition": "video-classification", "tracking": "object-detection",
                 "localization": "object-detection"}


def front_matter(task: str | None = None, base_model: str | None = None) -> list[str]:
    """The YAML front matter of every card the project writes: library, licence, tags, ``pipeline_tag`` for
    ``task`` (``None``: an encoder) and, for a task checkpoint on a registered encoder, ``base_model``."""
    lines = ["---", "library_name: constcl-zoo", "license: apache-2.0",
             "tags: [video, self-supervised-learning, constcl]", f"pipeline_tag: {PIPELINE_TAGS[task]}"]
    if base_model:
        lines.append(f"base_model: {base_model}")
    return [*lines, "---", ""]


def model_card(cfg: PretrainConfig, step: int, metrics: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """A Hub model card (YAML front matter + Markdown) for an exported pretraining checkpoint."""
    d, o, loss = cfg.data, cfg.optim, cfg.loss
    pre = config["preprocess"]
    lines = [
        *front_matter(),
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
        f"Videos from `{Path(d.videos).name}` (decoder {d.decoder}).",
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
