"""``constcl-zoo embed`` at scale on this machine: the plain CLI, torchrun with 2 processes and Ray with 2 CPUs.

    python benchmarks/embed_scale.py [--model constcl_r3d14_w16] [--short 6] [--out benchmarks/results/embed_scale]

The input is a skewed-length manifest made from the real videos in ../shared/data/videos, written to a temporary
folder: short cuts (the first 32-64 frames of each, re-encoded as H.264), the real videos themselves, and
concatenations (a video repeated 2x and 3x by stream copy, ``benchmarks/embed.py``'s ``concat_video``). Each
runner runs in a fresh process into a fresh output folder (random weights, ``--precision fp32``); wall time
includes the process start, the model load and, for Ray, starting the local cluster (run in a network namespace
of its own, loopback only, where permitted). videos/s and clips/s (windows embedded) per runner. Writes
``PREFIX.{json,md}`` (``--out``, default ``benchmarks/results/embed_scale``) with the CPU model, flags and load.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
RESULTS = ROOT / "benchmarks" / "results"

from benchmarks.embed import concat_video  # noqa: E402
from constcl_zoo.inference.video import iter_video_file  # noqa: E402
from constcl_zoo.inference.visualize import Mp4Writer  # noqa: E402


def cut(source: Path, frames: int, out: Path) -> Path:
    """The first ``frames`` frames of ``source`` as an H.264 MP4 (the package's writer)."""
    with Mp4Writer(out, fps=25) as writer:
        for frame in itertools.islice(iter_video_file(source), frames):
            writer.write(frame.rgb)
    return out


def make_inputs(folder: Path, short: int) -> Path:
    """The skewed manifest (see the module docstring); its path."""
    names = []
    sources = sorted(VIDEOS.glob("*.*"))
    for i, (src, frames) in enumerate(zip(itertools.cycle(sources), [32, 48, 64] * short)):
        if i >= short:
            break
        names.append(cut(src, frames, folder / f"short{i}_{src.stem}.mp4").name)
    for src in sources:
        link = folder / src.name
        link.symlink_to(src)
        names.append(link.name)
    for src, times in ((VIDEOS / "tree.avi", 3), (VIDEOS / "bikes.mp4", 2)):
        names.append(concat_video(src, times, folder / f"{src.stem}_x{times}{src.suffix}").name)
    manifest = folder / "manifest.txt"
    manifest.write_text("\n".join(names) + "\n")
    return manifest


def loopback_only(cmd: list[str]) -> list[str]:
    """``cmd`` in a network namespace of its own with only ``lo`` up, when this user may create one."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]
    return cmd


def time_runner(name: str, cmd: list[str], out: Path, env: dict[str, str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    indexes = [json.loads(p.read_text()) for p in out.glob("index*.json")]
    videos = [v for index in indexes for v in index["videos"]]
    windows = sum(v["num_windows"] for v in videos)
    return {"runner": name, "videos": len(videos), "windows": windows, "wall_s": round(wall, 2),
            "videos_per_s": round(len(videos) / wall, 3), "clips_per_s": round(windows / wall, 2),
            "command": " ".join(cmd)}


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in have]
                break
    return {"cpu": model, "flags": flags, "cores": os.cpu_count(), "loadavg_at_start": os.getloadavg()}


def markdown(report: dict) -> str:
    lines = [f"CPU: {report['cpu']} ({report['cores']} cores; flags {', '.join(report['flags'])}); load average at "
             f"start {report['loadavg_at_start'][0]:.1f}. Model {report['model']} (random init, fp32), "
             f"{report['inputs']} videos ({report['frames']} frames).", "",
             "| runner | videos | clips | wall s | videos/s | clips/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['runner']} | {r['videos']} | {r['windows']} | {r['wall_s']} | {r['videos_per_s']} | "
              f"{r['clips_per_s']} |" for r in report["results"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="constcl_r3d14_w16")
    parser.add_argument("--short", type=int, default=6, help="short cuts in the manifest")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS / "embed_scale",
                        help="results prefix: writes PREFIX.json and PREFIX.md")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    common = ["--model", args.model, "--random-init", "--precision", "fp32", "--no-progress",
              "--batch-size", str(args.batch_size)]
    with tempfile.TemporaryDirectory(prefix="embed-scale-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        manifest = make_inputs(tmp / "in", args.short)
        inputs = manifest.read_text().split()
        frames = sum(sum(1 for _ in iter_video_file(tmp / "in" / n)) for n in inputs)
        cli = [sys.executable, "-m", "constcl_zoo", "embed", str(manifest)]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    "-m", "constcl_zoo", "embed", str(manifest)]
        runners = [("plain CLI (1 process, 2 threads)", cli, {"OMP_NUM_THREADS": "2"}),
                   ("torchrun (2 processes x 1 thread)", torchrun, {"OMP_NUM_THREADS": "1"}),
                   ("Ray (local, 2 CPUs: decode tasks + 1 model actor)", loopback_only(cli), {})]
        results = []
        for i, (name, cmd, extra) in enumerate(runners):
            out = tmp / f"out{i}"
            full = [*cmd, "--out", str(out), *common] + (["--runner", "ray"] if "Ray" in name else [])
            results.append(time_runner(name, full, out, {**env, **extra}))
            print(results[-1], flush=True)
    report = {**cpu_info(), "model": args.model, "inputs": len(inputs), "frames": frames, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
