"""The README's model table, computed from the registry: parameters and compute per architecture.

    python benchmarks/model_table.py [--json benchmarks/results/model_table.json]

Counts are exact (networks are built on the meta device, so this takes seconds). Parameters follow the TF
convention of the official code: BN moving statistics included. Compute is one forward pass of the global branch
on one clip of the weights' input size, in GMACs (the paper's "FLOPs") as counted by
``torch.utils.flop_counter`` (which reports 2 x MACs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from constcl_zoo import build_model, list_models, list_pretrained
from constcl_zoo.registry import arch_config


def _params(module: torch.nn.Module) -> int:
    return sum(v.numel() for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked"))


def describe(arch: str) -> dict[str, object]:
    config = arch_config(arch)
    pre = config.preprocess
    with torch.device("meta"):
        glob = build_model(config, "global")
        full = build_model(config, "full")
        clip = torch.empty(1, 3, pre.num_frames, pre.crop_size, pre.crop_size)
    with FlopCounterMode(display=False) as counter:
        glob(clip)
    return {
        "arch": arch,
        "family": config.family,
        "input": f"{pre.num_frames}x{pre.crop_size}x{pre.crop_size} (stride {pre.frame_stride})",
        "feature_dim": config.feature_dim,
        "params_branch_m": round(_params(glob.backbone) / 1e6, 2),
        "params_pretrain_m": round(_params(full) / 1e6, 2),
        "gmacs_per_clip": round(counter.get_total_flops() / 2e9, 2),
        "weights": [w for w in list_pretrained() if w.split(".")[0] == arch],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "model_table.json")
    args = parser.parse_args()
    rows = [describe(arch) for arch in list_models()]
    print("| arch | family | input (T x H x W) | feature dim | params, one branch (M) | params, pretraining "
          "network (M) | GMACs / clip | published weights |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['arch']}` | {r['family']} | {r['input']} | {r['feature_dim']} | {r['params_branch_m']} | "
              f"{r['params_pretrain_m']} | {r['gmacs_per_clip']} | {', '.join(r['weights']) or 'none yet'} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
