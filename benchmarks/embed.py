"""Embedding speed on this machine: network modes, GEMM peak, decode+preprocess, and peak RSS on long videos.

    python benchmarks/embed.py [--arch constcl_r3d50] [--batch 1] [--iters 3] [--skip compile ort]
    python benchmarks/embed.py --device cuda --batch 1 8 32      # GPU: batch sweep, ORT with the CUDA provider

* GEMM peak: fp32 and bf16 ``n x n`` matmuls (best of n = 256..2048), measured in child processes before and after
  the network modes, best of both (the "% of peak" denominators; on a shared machine both may be low).
* Network modes on random clips ``[batch, 3, T, crop, crop]``: eager fp32, fp32 channels_last_3d, bf16 autocast +
  channels_last_3d, ``torch.compile`` (fp32, inductor; compile time reported apart) and ONNX Runtime (CPU provider;
  sessions without intra-op spinning, so an idle session does not slow the mode timed after it).
  ms/clip, clips/s, achieved GFLOP/s (FLOPs of one clip counted by ``torch.utils.flop_counter``) and its share of
  the measured GEMM peak of the same dtype, and the minimum cosine of the embeddings vs eager fp32.
* ONNX Runtime int8 (``python -m export onnx --precision int8``: QDQ, per-channel weights), calibrated on windows of
  ``tree.avi`` and checked on ``bikes.mp4`` (mean cosine vs fp32 PyTorch on those held-out windows, in the note
  with the speed-up over ORT fp32 in the same rounds). int8 speed depends on the CPU's int8 dot-product
  instructions (AVX512-VNNI / AVX-VNNI): the report records which the CPU has.
* Decode + preprocess: windows/s of ``constcl_zoo.inference.embed.iter_windows`` over real videos (no network).
* Peak RSS: ``model.embed`` (precision auto) in a fresh process on a long video made by concatenating a real clip
  1x, 2x, 4x, 8x (stream copy, no re-encode); streaming decode keeps it flat as the length doubles.

Writes ``benchmarks/results/embed_<arch>.json`` and ``.md``. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VIDEOS = ROOT.parent / "shared" / "data" / "videos"

from constcl_zoo import load  # noqa: E402
from constcl_zoo.inference.embed import WindowSpec, iter_windows  # noqa: E402
from constcl_zoo.inference.precision import resolve_precision  # noqa: E402
from constcl_zoo.inference.video import iter_video_file  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0, device: str = "cpu") -> float:
    """Sustained ``n x n`` matmul GFLOP/s in ``dtype`` on ``device``."""
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev).to(dtype), torch.randn(n, n, device=dev).to(dtype)
    a @ b
    sync(dev)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    sync(dev)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def gemm_child(device: str) -> None:
    """Print the GEMM peaks as JSON: the best of several sizes, per dtype.

    Runs in its own process: on this machine, conv3d in the same process ran ~50x slower after the 2048^3 fp32
    matmuls (cause not pinned down), which would have poisoned the network timings.
    """
    native = resolve_precision("auto", device).dtype == "bf16"
    big = (256, 512, 1024, 2048) if device == "cpu" else (2048, 4096, 8192)
    # emulated bf16 (no native support) manages ~1 GFLOP/s: a 2048^3 matmul would take a minute
    sizes = {"fp32": big, "bf16": big if native else (256,)}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    print(json.dumps({k: round(max(gemm_gflops(dtypes[k], n, 1.0, device) for n in v), 2) for k, v in sizes.items()}))


def measure_gemm(device: str) -> dict[str, float]:
    """GEMM peaks from a child process (see :func:`gemm_child`)."""
    out = subprocess.run([sys.executable, __file__, "--gemm-child", "--device", device], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def clip_flops(model: torch.nn.Module, clip: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(clip[:1])
    return counter.get_total_flops()


Mode = tuple[str, Callable[[], torch.Tensor], str]  # (dtype, call, note)


def bench_modes(arch: str, batch: int, iters: int, skip: set[str], device: str = "cpu") -> tuple[list[dict], int]:
    """Time every mode round-robin (``iters`` rounds, one call per mode per round, after one warm-up call each)
    and keep each mode's fastest call: on a shared machine, load from other jobs then hits all modes alike and
    the minimum is the least disturbed measurement. The median is reported too."""
    dev = torch.device(device)
    model = load(arch, branch="global", pretrained=False, device=dev)
    pre = model.config.preprocess
    gen = torch.Generator().manual_seed(0)
    clip = torch.randn(batch, 3, pre.num_frames, pre.crop_size, pre.crop_size, generator=gen).to(dev)
    flops = clip_flops(model, clip)
    modes, skipped = torch_modes(arch, model, clip, skip, dev)
    with tempfile.TemporaryDirectory() as tmp:
        if "ort" not in skip:
            modes.update(ort_modes(arch, clip, skip, dev, Path(tmp)))
        outputs, times = time_modes(modes, iters, dev)
    return result_rows(modes, outputs, times, batch, flops, skipped), flops


def torch_modes(arch: str, model: torch.nn.Module, clip: torch.Tensor, skip: set[str],
                dev: torch.device) -> tuple[dict[str, Mode], list[dict]]:
    """The PyTorch modes (eager, channels_last_3d, bf16 where native, torch.compile) and the rows of those skipped."""
    auto = resolve_precision("auto", dev)
    modes: dict[str, Mode] = {"eager fp32": ("fp32", lambda: model(clip), "")}
    cl_model = load(arch, branch="global", pretrained=False, device=dev).to(memory_format=torch.channels_last_3d)
    cl_clip = clip.contiguous(memory_format=torch.channels_last_3d)
    modes["fp32 channels_last_3d"] = ("fp32", lambda: cl_model(cl_clip),
                                      "= precision auto here" if (auto.dtype, auto.channels_last) == ("fp32", True)
                                      else "")

    def bf16() -> torch.Tensor:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            return cl_model(cl_clip)

    skipped = []
    if auto.dtype == "bf16" or "force-bf16" in skip:
        modes["bf16 autocast + channels_last_3d"] = ("bf16", bf16, "= precision auto here" if auto.dtype == "bf16"
                                                     else "")
    else:  # emulated bf16 runs at about a GFLOP/s (see the bf16 GEMM): minutes per clip
        skipped.append({"mode": "bf16 autocast + channels_last_3d", "batch": len(clip), "dtype": "bf16",
                        "ms_per_clip": None, "ms_per_clip_median": None, "clips_per_s": None, "gflops": None,
                        "cosine_vs_fp32": None,
                        "note": "not run: no native bf16 on this device (emulated; --force-bf16 runs it)"})
    if "compile" not in skip:
        compiled = torch.compile(load(arch, branch="global", pretrained=False, device=dev))
        modes["torch.compile fp32"] = ("fp32", lambda: compiled(clip), "")
    return modes, skipped


def ort_modes(arch: str, clip: torch.Tensor, skip: set[str], dev: torch.device, tmp: Path) -> dict[str, Mode]:
    """ONNX Runtime fp32 (and int8 on the CPU) on the same clips, exported into ``tmp``."""
    from export.onnx import export_onnx
    from export.runtime import OnnxEmbedder

    provider = "CUDAExecutionProvider" if dev.type == "cuda" else "CPUExecutionProvider"
    export_onnx(load(arch, branch="global", pretrained=False), tmp / "m.onnx", source=arch)
    try:
        # No spinning: the modes run round-robin in this one process, and the spinning threads of an idle ORT
        # session steal the CPU of whatever runs next (measured on the tiny model: fp32 / int8 ORT alternating
        # 130 / 127 ms per batch with spinning, 96 / 89 without, 99 / 88 each alone with spinning).
        embedder = OnnxEmbedder(tmp / "m.onnx", providers=[provider], spinning=False)
    except RuntimeError as exc:  # e.g. the CPU onnxruntime wheel on a GPU machine
        print(f"ONNX Runtime skipped: {exc}", flush=True)
        return {}
    x = clip.cpu().numpy()  # ORT takes host arrays: the timing includes the copies, as a service pays them
    modes: dict[str, Mode] = {f"ONNX Runtime ({provider.removesuffix('ExecutionProvider')})": (
        "fp32", lambda: torch.from_numpy(embedder.run(x)).to(dev), "")}
    if "int8" not in skip and dev.type == "cpu":
        from export.quantize import export_int8

        start = time.perf_counter()
        int8 = export_int8(load(arch, branch="global", pretrained=False), tmp / "int8.onnx",
                           [VIDEOS / "tree.avi"], held_out=[VIDEOS / "bikes.mp4"], calibration_windows=8,
                           source=arch)
        int8_embedder = OnnxEmbedder(int8.path, providers=[provider], spinning=False)
        modes["ONNX Runtime int8 (CPU)"] = (
            "int8", lambda: torch.from_numpy(int8_embedder.run(x)), f"held-out mean cosine "
            f"{int8.mean_cosine:.4f}, top-1 agreement {int8.top1_agreement:.0%}; export + calibration "
            f"{time.perf_counter() - start:.0f} s")
    return modes


def time_modes(modes: dict[str, Mode], iters: int, dev: torch.device) -> tuple[dict, dict[str, list[float]]]:
    """One warm-up call per mode (its output kept), then ``iters`` round-robin rounds of timed calls (seconds)."""
    outputs, times = {}, {name: [] for name in modes}
    with torch.inference_mode():
        for name, (_, call, _) in modes.items():  # warm-up (and, for torch.compile, compilation)
            start = time.perf_counter()
            outputs[name] = call().float()
            sync(dev)
            if name == "torch.compile fp32":
                modes[name] = (*modes[name][:2], f"compile + first call {time.perf_counter() - start:.0f} s")
        for _ in range(iters):
            for name, (_, call, _) in modes.items():
                start = time.perf_counter()
                call()
                sync(dev)
                times[name].append(time.perf_counter() - start)
    return outputs, times


def result_rows(modes: dict[str, Mode], outputs: dict, times: dict[str, list[float]], batch: int, flops: int,
                skipped: list[dict]) -> list[dict]:
    """One row per mode (fastest and median call, GFLOP/s, worst cosine vs eager fp32), skipped modes in place."""
    reference = outputs["eager fp32"]
    results = []
    ort_fp32 = next((float(np.median(times[n])) for n in times if n.startswith("ONNX Runtime (")), None)
    for name, (dtype, _, note) in modes.items():
        best, median = min(times[name]), float(np.median(times[name]))
        if dtype == "int8" and ort_fp32:
            note = f"{ort_fp32 / median:.2f}x ORT fp32 (medians); " + note
        cos = torch.nn.functional.cosine_similarity(outputs[name], reference).min().item()
        results.append({"mode": name, "batch": batch, "dtype": dtype, "ms_per_clip": round(1000 * best / batch, 1),
                        "ms_per_clip_median": round(1000 * median / batch, 1), "clips_per_s": round(batch / best, 3),
                        "gflops": round(flops * batch / best / 1e9, 1), "cosine_vs_fp32": round(cos, 6), "note": note})
        print(results[-1], flush=True)
        if name == "fp32 channels_last_3d":
            results += skipped
    return results


def bench_decode(arch: str, videos: list[Path]) -> list[dict]:
    preprocess = load(arch, branch="global", pretrained=False).preprocess
    spec = WindowSpec.from_preprocess(preprocess)
    rows = []
    for video in videos:
        counter = [0]
        start = time.perf_counter()
        windows = sum(1 for _ in iter_windows(iter_video_file(video), preprocess, spec, str(video), counter))
        seconds = time.perf_counter() - start
        first = next(iter_video_file(video)).rgb.shape
        rows.append({"video": video.name, "size": f"{first[1]}x{first[0]}", "frames": counter[0], "windows": windows,
                     "frames_per_s": round(counter[0] / seconds, 1), "windows_per_s": round(windows / seconds, 2)})
        print(rows[-1], flush=True)
    return rows


def concat_video(source: Path, repeats: int, out: Path) -> Path:
    """``source`` repeated ``repeats`` times into ``out`` by stream copy (timestamps shifted, no re-encode)."""
    import av

    with av.open(str(source)) as first:
        duration = first.streams.video[0].duration
        time_base = first.streams.video[0].time_base
    with av.open(str(out), "w") as dst:
        with av.open(str(source)) as src:
            stream = dst.add_stream_from_template(src.streams.video[0])
        for k in range(repeats):
            with av.open(str(source)) as src:
                for packet in src.demux(src.streams.video[0]):
                    if packet.dts is None:
                        continue
                    packet.pts += k * duration
                    packet.dts += k * duration
                    packet.stream = stream
                    packet.time_base = time_base
                    dst.mux(packet)
    return out


def rss_child(arch: str, video: str) -> None:
    """Run in a fresh process: embed ``video``, print JSON with peak RSS."""
    model = load(arch, branch="global", pretrained=False)
    start = time.perf_counter()
    result = model.embed(video, batch_size=4)
    print(json.dumps({"windows": len(result), "frames": result.num_frames, "seconds": time.perf_counter() - start,
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). ``getrusage``'s ru_maxrss is no good in a child: Linux carries
    the parent's peak over fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_rss(arch: str, source: Path, repeats: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in repeats:
            video = concat_video(source, k, Path(tmp) / f"long{k}{source.suffix}")
            out = subprocess.run([sys.executable, __file__, "--arch", arch, "--rss-child", str(video)],
                                 capture_output=True, text=True, check=True).stdout
            row = {"repeats": k, **json.loads(out.strip().splitlines()[-1])}
            row["peak_rss_mb"], row["seconds"] = round(row["peak_rss_mb"], 1), round(row["seconds"], 1)
            rows.append(row)
            print(row, flush=True)
    return rows


def markdown(report: dict) -> str:
    peak = report["gemm_gflops"]
    lines = [f"`{report['arch']}`, {report['flops_per_clip'] / 1e9:.1f} GFLOP per clip; {report['device_name']} "
             f"({report['cpus']} CPUs), torch {report['torch']}; native bf16: "
             f"{report['native_bf16']}; `precision=\"auto\"` resolves to `{report['auto_precision']}` here. "
             f"Measured GEMM peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.3g} GFLOP/s.",
             f"CPU: {report.get('cpu_model', '?')}; int8 dot-product instructions: "
             f"{', '.join(report.get('int8_flags') or ['none (no AVX512-VNNI / AVX-VNNI)'])}.", "",
             f"Modes timed round-robin, {report['iters']} rounds after a warm-up call each; ms/clip is the fastest "
             f"call (the least disturbed on a shared machine), the median beside it.", "",
             "| mode | batch | ms/clip | median ms/clip | clips/s | GFLOP/s | % of GEMM peak | cosine vs fp32 | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["modes"]:
        if r["clips_per_s"] is None:
            lines.append(f"| {r['mode']} | {r['batch']} | – | – | – | – | – | – | {r['note']} |")
            continue
        pct = f"{100 * r['gflops'] / peak[r['dtype']]:.0f}%" if r["dtype"] in peak else "–"
        lines.append(f"| {r['mode']} | {r['batch']} | {r['ms_per_clip']} | {r['ms_per_clip_median']} | "
                     f"{r['clips_per_s']} | "
                     f"{r['gflops']} | {pct} | "
                     f"{r['cosine_vs_fp32']:.6f} | {r['note']} |")
    lines += ["", "Decode + preprocess (PyAV, one thread for preprocessing; no network):", "",
              "| video | size | frames | windows | frames/s | windows/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['video']} | {r['size']} | {r['frames']} | {r['windows']} | {r['frames_per_s']} | "
              f"{r['windows_per_s']} |" for r in report["decode"]]
    if report["rss"]:
        lines += ["", f"Peak RSS of `model.embed` (`{report['rss_arch']}`, precision auto, batch 4) on "
                      f"`{report['rss_source']}` concatenated k times, each in a fresh process:",
                  "", "| k | frames | windows | seconds | peak RSS MB |", "|---|---|---|---|---|"]
        lines += [f"| {r['repeats']} | {r['frames']} | {r['windows']} | {r['seconds']} | {r['peak_rss_mb']} |"
                  for r in report["rss"]]
    return "\n".join(lines) + "\n"


def cpu_info() -> dict:
    """The CPU's model name and its int8 dot-product flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return {}
    model, flags = "?", set()
    for line in info.read_text(errors="replace").splitlines():
        if line.startswith("model name") and model == "?":
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    present = [f for f in wanted if f in flags]
    return {"cpu_model": model, "int8_flags": [f for f in present if "vnni" in f or f == "amx_int8"],
            "simd_flags": present}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="constcl_r3d50")
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes (a sweep)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (GPU: RSS skipped, ORT with CUDA)")
    parser.add_argument("--iters", type=int, default=3, help="round-robin rounds")
    parser.add_argument("--skip", nargs="*", default=[], choices=["compile", "ort", "int8", "decode", "rss"],
                        help="parts to skip")
    parser.add_argument("--force-bf16", action="store_true", help="run bf16 even where it is emulated (slow)")
    parser.add_argument("--rss-repeats", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rss-video", type=Path, default=VIDEOS / "bikes.mp4")
    parser.add_argument("--rss-arch", default=None, help="network of the RSS runs (default: --arch)")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/embed_<arch>")
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gemm-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        return rss_child(args.arch, args.rss_child)
    if args.gemm_child:
        return gemm_child(args.device)
    skip = set(args.skip) | ({"rss"} if args.device != "cpu" else set())
    if args.force_bf16:
        skip.add("force-bf16")  # bench_modes reads it as "run bf16 even if emulated"
    gemm = measure_gemm(args.device)
    print("GEMM GFLOP/s", gemm, flush=True)
    modes = []
    for batch in args.batch:
        rows, flops = bench_modes(args.arch, batch, args.iters, skip, args.device)
        modes += rows
    after = measure_gemm(args.device)  # the machine may be shared: the peak is the best of before and after the modes
    gemm = {k: max(v, after[k]) for k, v in gemm.items()}
    print("GEMM GFLOP/s (best of before/after)", gemm, flush=True)
    videos = [v for v in (VIDEOS / "bikes.mp4", VIDEOS / "vtest.avi") if v.is_file()]
    decode = [] if "decode" in skip else bench_decode(args.arch, videos)
    have_rss_video = args.rss_video.is_file()
    args.rss_arch = args.rss_arch or args.arch
    rss = bench_rss(args.rss_arch, args.rss_video, args.rss_repeats) if "rss" not in skip and have_rss_video else []
    device_name = (torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
                   else platform.processor() or platform.machine())
    auto = resolve_precision("auto", args.device)
    report = {"arch": args.arch, "device": args.device, "device_name": device_name, "batches": args.batch,
              "iters": args.iters, "flops_per_clip": flops, "cpus": os.cpu_count(), "torch": torch.__version__,
              "native_bf16": auto.dtype == "bf16", "auto_precision": str(auto),
              "gemm_gflops": gemm, "modes": modes, "decode": decode, "rss_source": args.rss_video.name, "rss": rss,
              "rss_arch": args.rss_arch, **cpu_info(),
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    suffix = "" if args.device == "cpu" else "_" + args.device.replace(":", "")
    out = args.out or ROOT / "benchmarks" / "results" / f"embed_{args.arch}{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
