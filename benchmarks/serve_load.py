"""Bounded loopback load test of the embedding service, with raw ONNX Runtime throughput in the same run.

    python benchmarks/serve_load.py [--arch constcl_r3d50] [--requests 16] [--concurrency 1 4 16]

Exports ``--arch`` (random init; or takes ``--onnx FILE``), starts ``python -m export serve`` on 127.0.0.1, and for
each concurrency level sends exactly ``--requests`` one-clip ``.npy`` requests from that many concurrent clients
(bounded: a fixed count, a per-request timeout). Reports throughput (clips/s), p50 and p99 latency. Raw ONNX
Runtime on the same file (batches of 1 and ``--max-batch`` clips, the same clip count) is then measured in
``--rounds`` rounds interleaved with the service at the highest concurrency (the server idles while ORT runs):
the ratio of each round is served / best raw, and the report gives the median. The client runs on the same
machine as the server and shares its cores. Writes ``benchmarks/results/serve_load.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server at {url} not ready within {timeout:.0f} s")


async def _level(url: str, payload: bytes, requests: int, clients: int, timeout: float) -> dict[str, float]:
    latencies: list[float] = []
    remaining = iter(range(requests))
    failures = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        for _ in remaining:  # shared iterator: exactly `requests` requests in total
            start = time.perf_counter()
            response = await http.post(url + "/v1/embeddings", files={"file": ("clip.npy", payload)})
            latencies.append(time.perf_counter() - start)
            failures += response.status_code != 200

    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=clients)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": requests, "failures": failures, "seconds": round(wall, 2),
            "clips_per_s": round(requests / wall, 3), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def _raw_ort(onnx_path: Path, clips: int, batch: int) -> dict[str, float]:
    from export.runtime import OnnxEmbedder

    embedder = OnnxEmbedder(onnx_path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, *embedder.clip_shape)).astype(np.float32)
    embedder.run(x[:1])  # warm-up
    done, start = 0, time.perf_counter()
    while done < clips:
        n = min(batch, clips - done)
        embedder.run(x[:n])
        done += n
    wall = time.perf_counter() - start
    return {"batch": batch, "clips": clips, "seconds": round(wall, 2), "clips_per_s": round(clips / wall, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="constcl_r3d50")
    parser.add_argument("--onnx", type=Path, default=None, help="an exported file instead of exporting --arch")
    parser.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="per-request timeout, seconds")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved raw/served rounds at saturation")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load")
    args = parser.parse_args()

    from export.onnx_export import export_from_name
    from export.runtime import OnnxEmbedder

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.onnx
        if onnx_path is None:
            onnx_path = Path(tmp) / f"{args.arch}.onnx"
            print(f"exporting {args.arch} -> {onnx_path}", flush=True)
            export_from_name(args.arch, onnx_path, random_init=True)
        shape = OnnxEmbedder(onnx_path, providers=["CPUExecutionProvider"]).clip_shape
        buffer = io.BytesIO()
        np.save(buffer, np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32))
        payload = buffer.getvalue()
        batches = sorted({1, args.max_batch})
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "export", "serve", str(onnx_path), "--host", "127.0.0.1", "--port", str(port),
               "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
               "--max-clips", str(args.max_batch), "--timeout-s", str(args.timeout)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        levels, rounds = [], []
        top = max(args.concurrency)
        try:
            _wait_ready(url, proc)
            asyncio.run(_level(url, payload, 2, 1, args.timeout))  # warm-up
            for clients in args.concurrency:
                result = asyncio.run(_level(url, payload, args.requests, clients, args.timeout))
                print(result, flush=True)
                levels.append(result)
            # Interleaved rounds (raw ORT here while the idle server waits, then the service at saturation), so
            # that a change of load on a shared machine hits both sides of each ratio alike.
            for k in range(args.rounds):
                raw = {b: _raw_ort(onnx_path, args.requests, b)["clips_per_s"] for b in batches}
                served = asyncio.run(_level(url, payload, args.requests, top, args.timeout))["clips_per_s"]
                rounds.append({"round": k + 1, **{f"raw_batch{b}_clips_per_s": v for b, v in raw.items()},
                               "served_clips_per_s": served, "ratio": round(served / max(raw.values()), 3)})
                print(rounds[-1], flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    ratio = float(np.median([r["ratio"] for r in rounds]))
    report = {"arch": args.arch if args.onnx is None else str(args.onnx), "machine": platform.processor()
              or platform.machine(), "cpus": os.cpu_count(), "max_batch": args.max_batch,
              "max_wait_ms": args.max_wait_ms, "levels": levels, "rounds": rounds,
              "served_over_raw_at_saturation_median": round(ratio, 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"Served vs raw ONNX Runtime, `{report['arch']}`, one clip per request, max batch {args.max_batch}, "
             f"max wait {args.max_wait_ms:g} ms, {report['cpus']} CPUs (client, server and ORT share them).", "",
             "| clients | requests | clips/s | p50 ms | p99 ms | failures |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['clients']} | {r['requests']} | {r['clips_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['failures']} |" for r in levels]
    keys = [k for k in rounds[0] if k.startswith("raw_batch")]
    lines += ["", f"Interleaved rounds at {top} clients ({args.requests} requests) vs raw ONNX Runtime on the same "
                  f"file ({args.requests} clips per batch size), measured just before each:", "",
              "| round | " + " | ".join(k.replace("raw_batch", "raw ORT batch ").replace("_clips_per_s", " clips/s")
                                     for k in keys) + " | served clips/s | served / best raw |",
              "|---" * (len(keys) + 3) + "|"]
    lines += [f"| {r['round']} | " + " | ".join(str(r[k]) for k in keys) + f" | {r['served_clips_per_s']} | "
              f"{r['ratio']:.1%} |" for r in rounds]
    lines += ["", f"Median served / raw at saturation: **{ratio:.1%}** (goal >= 90%)."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
