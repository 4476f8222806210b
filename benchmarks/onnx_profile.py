"""Where ONNX Runtime spends its time, fp32 graph vs int8 graph: per operator type and the slowest nodes.

    python benchmarks/onnx_profile.py [--arch constcl_r3d14_w16] [--batch 8] [--runs 6] [--out PREFIX]

Both graphs come from the project's exporters (``export_onnx``; ``export_int8`` calibrated on windows of
``tree.avi`` and checked on ``bikes.mp4``, as ``benchmarks/embed.py`` does) and run on the same random clips
``[batch, 3, T, crop, crop]`` with ONNX Runtime's own profiler (CPU provider, 2 intra-op threads); the first run is
a warm-up and left out. Per operator type: ms per batch and share of the kernel time. It answers why int8 is or
is not faster on this CPU: how much time sits in nodes int8 does not touch (the fp32 stem convolution, pooling),
and how much faster the quantized part became. Writes ``PREFIX.{json,md}`` (default
``benchmarks/results/onnx_profile_<arch>``) with the CPU model and flags and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VIDEOS = ROOT.parent / "shared" / "data" / "videos"

from benchmarks.embed import cpu_info  # noqa: E402
from constcl_zoo import load  # noqa: E402
from export.onnx import export_onnx  # noqa: E402
from export.onnx.common import input_shape  # noqa: E402
from export.quantize import export_int8  # noqa: E402


def profile(path: Path, clips: np.ndarray, runs: int, threads: int, prefix: Path) -> dict:
    """Run ``path`` ``runs`` + 1 times under ONNX Runtime's profiler; per op type and per node ms per batch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: clips}
    for _ in range(runs + 1):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    warm_up_end = model_runs[0]["ts"] + model_runs[0]["dur"]
    by_op, by_node, order = defaultdict(float), defaultdict(float), {}
    for e in sorted(events, key=lambda e: e.get("ts", 0)):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= warm_up_end:
            node = e["name"].removesuffix("_kernel_time")
            by_op[e["args"]["op_name"]] += e["dur"] / runs
            order.setdefault(node, e["args"]["op_name"])
            by_node[node] += e["dur"] / runs
    # the stem: the first convolution the graph runs
    stem = next((n for n, op in order.items() if op in ("Conv", "FusedConv", "QLinearConv")), None)
    return {
        "model_run_ms_median": round(float(np.median([e["dur"] for e in model_runs[1:]])) / 1e3, 2),
        "ops_ms": {op: round(d / 1e3, 3) for op, d in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "kernel_ms": round(sum(by_op.values()) / 1e3, 2),
        "stem_node": stem,
        "stem_ms": round(by_node[stem] / 1e3, 2) if stem else None,
        "top_nodes": [{"node": n, "op": order[n], "ms": round(d / 1e3, 3)}
                      for n, d in sorted(by_node.items(), key=lambda kv: -kv[1])[:8]],
    }


def markdown(report: dict) -> str:
    fp32, int8 = report["fp32"], report["int8"]
    lines = [f"CPU: {report.get('cpu_model', '?')} ({os.cpu_count()} cores; flags "
             f"{', '.join(report.get('simd_flags') or ['?'])}); load average at start {report['loadavg'][0]:.1f}. "
             f"Model {report['arch']} (random init), batch {report['batch']}, {report['runs']} profiled runs, "
             f"{report['threads']} threads.", "",
             "| graph | run ms/batch (median) | kernel ms/batch | stem conv ms | rest ms | rest vs fp32 |",
             "|---|---|---|---|---|---|"]
    rest32 = fp32["kernel_ms"] - (fp32["stem_ms"] or 0)
    for name, r in (("fp32", fp32), ("int8 (QDQ)", int8)):
        rest = r["kernel_ms"] - (r["stem_ms"] or 0)
        lines.append(f"| {name} | {r['model_run_ms_median']} | {r['kernel_ms']} | {r['stem_ms']} | {rest:.2f} | "
                     f"{rest32 / rest:.2f}x |")
    lines += ["", "| operator | fp32 ms/batch | int8 ms/batch |", "|---|---|---|"]
    for op in sorted(set(fp32["ops_ms"]) | set(int8["ops_ms"]),
                     key=lambda o: -max(fp32["ops_ms"].get(o, 0), int8["ops_ms"].get(o, 0))):
        lines.append(f"| {op} | {fp32['ops_ms'].get(op, '–')} | {int8['ops_ms'].get(op, '–')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="constcl_r3d14_w16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/onnx_profile_<arch>")
    args = parser.parse_args()
    out = args.out or ROOT / "benchmarks" / "results" / f"onnx_profile_{args.arch}"
    report = {**cpu_info(), "loadavg": list(os.getloadavg()), "arch": args.arch, "batch": args.batch,
              "runs": args.runs, "threads": args.threads,
              "command": " ".join(["python benchmarks/onnx_profile.py", *sys.argv[1:]])}
    model = load(args.arch, branch="global", pretrained=False)
    clips = np.random.default_rng(0).standard_normal((args.batch, *input_shape(model.config)), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="onnx-profile-") as tmp:
        tmp = Path(tmp)
        export_onnx(model, tmp / "fp32.onnx")
        export_int8(model, tmp / "int8.onnx", [VIDEOS / "tree.avi"], held_out=[VIDEOS / "bikes.mp4"],
                    calibration_windows=8, source=args.arch)
        for name in ("fp32", "int8"):
            report[name] = profile(tmp / f"{name}.onnx", clips, args.runs, args.threads, tmp / name)
            print(name, json.dumps(report[name]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
