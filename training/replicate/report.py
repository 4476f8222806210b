"""The replication table: per variant, mean and spread over seeds of every metric, as Markdown, JSON and a plot,
beside what the paper reports at full scale."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

from constcl_zoo.fileio import atomic_write

from .config import ReplicateConfig

METRICS: tuple[tuple[str, str, str], ...] = (  # key, column title, kind
    ("probe_top1", "linear probe top-1", "holistic"),
    ("track_synth_success", "tracking success (synthetic)", "local"),
    ("track_synth_precision", "tracking precision (synthetic)", "local"),
    ("track_vot_success", "tracking success (vot15_bag)", "local"),
    ("track_vot_precision", "tracking precision (vot15_bag)", "local"),
    ("localization_frame_map", "localization frame-mAP", "local"),
)
VARIANT_NAMES = {"random": "random init", "cvrl": "CVRL (global loss only)",
                 "constcl": "ConST-CL (context length {context})", "constcl_ctx0": "ConST-CL, context length 0"}
# What the paper reports at full scale (R3D-50, Kinetics-400 pretraining): Tables 1, 2 and 6, each figure as the
# paper prints it (tests/test_paper_figures.py checks every one against the named table of the paper's text).
PAPER = ("At full scale the paper reports (R3D-50, Kinetics-400 pretraining, 200k steps, about 850 epochs): "
         "Kinetics-400 linear top-1 CVRL 66.1 vs ConST-CL 66.6 (Table 2: the holistic task is not hurt); OTB2015 "
         "tracking precision / success CVRL 75.4 / 53.7 vs ConST-CL 78.1 / 55.2 (Table 1); AVA v2.2 frame-mAP with "
         "ground-truth / detected person boxes CVRL 24.9 / 18.4 vs ConST-CL 31.1 / 24.1 (Table 1); context length 0 "
         "(vanilla region contrast) below context length 5 on AVA-Kinetics frame-mAP (35.3 vs 37.6 with "
         "ground-truth boxes) and OTB2015 precision (75.4 vs 79.0), though not on success (56.6 vs 55.4) (Table 6).")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summarise(results: list[dict[str, Any]], variants: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``{variant: {metric: {"mean", "std", "values"}}}`` over the seeds present."""
    table: dict[str, dict[str, Any]] = {}
    for v in variants:
        rows = sorted((r for r in results if r["variant"] == v), key=lambda r: r["seed"])
        if not rows:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
        for key, _, _ in METRICS:
            values = [r[key] for r in rows if key in r]
            if values:
                m, s = mean_std(values)
                entry[key] = {"mean": m, "std": s, "values": values}
        table[v] = entry
    return table


def _markdown(cfg: ReplicateConfig, table: dict[str, dict[str, Any]], default: dict[str, Any] | None,
              wall: float) -> str:
    keys = [(k, title) for k, title, _ in METRICS if any(k in e for e in table.values())]
    lines = [f"Replication preset `{cfg.preset}`: {len(cfg.seeds)} seed(s) ({', '.join(map(str, cfg.seeds))}), "
             f"{cfg.run.steps} pretraining steps of {cfg.pretrain.batch_size} clips "
             f"({cfg.pretrain.num_frames}x{cfg.pretrain.crop_size}x{cfg.pretrain.crop_size}) for every pretrained "
             f"variant; mean ± sample std over seeds. Wall time {wall / 60:.1f} min on {_cpu()}.", "",
             "| variant | " + " | ".join(t for _, t in keys) + " |", "|---|" + "---|" * len(keys)]
    for v, entry in table.items():
        name = VARIANT_NAMES[v].format(context=cfg.pretrain.context_length)
        cells = [f"{entry[k]['mean']:.3f} ± {entry[k]['std']:.3f}" if k in entry else "—" for k, _ in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "constcl" in table and "cvrl" in table:
        cells = []
        for k, _ in keys:
            a, b = table["constcl"].get(k), table["cvrl"].get(k)
            cells.append(f"{a['mean'] - b['mean']:+.3f}" if a and b else "—")
        lines.append("| ConST-CL − CVRL | " + " | ".join(cells) + " |")
    lines += ["", PAPER]
    if default:
        lines += ["", f"Default model: `{default['source_run']}` ({default['selection']}); tracker head: "
                  f"{default['tracker_head']} (mean success trained {default['tracker_mean_success']['trained']:.3f}"
                  f" vs untrained {default['tracker_mean_success']['untrained']:.3f})."]
    return "\n".join(lines) + "\n"


def _plot(table: dict[str, dict[str, Any]], cfg: ReplicateConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(k, title) for k, title, _ in METRICS if any(k in e for e in table.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.4), squeeze=False)
    names = list(table)
    for ax, (k, title) in zip(axes[0], keys, strict=True):
        for i, v in enumerate(names):
            if k not in table[v]:
                continue
            e = table[v][k]
            ax.bar(i, e["mean"], yerr=e["std"], capsize=3, color=f"C{i}", alpha=0.8)
            ax.scatter([i] * len(e["values"]), e["values"], color="k", s=8, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"replicate --preset {cfg.preset}: mean ± std over seeds (dots: seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(cfg: ReplicateConfig, results: list[dict[str, Any]], default: dict[str, Any] | None,
                 wall: float, out: Path) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out``; returns the JSON document."""
    table = summarise(results, cfg.variants)
    doc = {"preset": cfg.preset, "seeds": list(cfg.seeds), "wall_seconds": round(wall, 1), "cpu": _cpu(),
           "table": table, "runs": results, "default": default, "paper": PAPER}
    atomic_write(out / "results.json", json.dumps(doc, indent=2) + "\n")
    atomic_write(out / "results.md", _markdown(cfg, table, default, wall))
    _plot(table, cfg, out / "results.png")
    return doc


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
