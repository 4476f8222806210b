"""Bounded loopback load test of the embedding service, with raw ONNX Runtime throughput in the same run.

    python benchmarks/serve_load.py [--arch constcl_r3d50] [--requests 16] [--concurrency 1 4 16]
        [--formats multipart npy raw v2]

Exports ``--arch`` (random init; or takes ``--onnx FILE``), starts ``python -m export serve`` on 127.0.0.1, and for
each request format (:func:`request_body`) and concurrency level sends exactly ``--requests`` one-clip requests
from that many concurrent clients (bounded: a fixed count, a per-request timeout; a minimal keep-alive client
sending prepared bytes, so the load generator's own CPU stays small). Reports throughput (clips/s), p50 and p99
latency, the CPU time per request of the server process (its process CPU clock, via psutil) and of the load
generator (its own), and the server's per-stage split read from its ``/metrics`` (``constcl_stage_seconds`` and
friends; absent on servers without them). Raw ONNX Runtime on the same file (batches of 1 and ``--max-batch``
clips, the same clip count, with and without ORT's spinning threads) is then measured in ``--rounds`` rounds
interleaved with the service at the highest concurrency (the server idles while ORT runs): each round gives
served / best raw, and the service's own CPU per request = server CPU per request - raw ORT's CPU per clip (at the
batch size nearest the served mean, spinning as the server does), and, from the server's own thread clocks, its
event-loop thread plus its model thread outside ORT's calls. The report gives the medians and the machine's
load average (the client runs on the same machine as the server and shares its cores). Writes
``benchmarks/results/serve_load.json`` and ``.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> dict:
    """The server's ``/readyz`` JSON once it is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            response = httpx.get(url + "/readyz", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server at {url} not ready within {timeout:.0f} s")


FORMATS = ("multipart", "npy", "raw", "v2")


Request = tuple[str, bytes, dict[str, str]]  # path, body, headers


def request_body(fmt: str, clips: np.ndarray, model: str) -> Request:
    """``(path, body, headers)`` of one request carrying ``clips`` in format ``fmt`` (built once, sent many times,
    so the load generator spends no CPU on encoding): ``multipart`` (a form field ``file`` holding a ``.npy``,
    today's clients), ``npy`` (the ``.npy`` file as the body), ``raw`` (the float32 bytes, shape and dtype in
    headers) or ``v2`` (KServe v2 ``infer`` with binary tensor data in and out)."""
    buffer = io.BytesIO()
    np.save(buffer, clips)
    npy = buffer.getvalue()
    if fmt == "multipart":
        boundary = "constcl-load-boundary"
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clip.npy"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + npy + f"\r\n--{boundary}--\r\n".encode()
        return "/v1/embeddings", body, {"content-type": f"multipart/form-data; boundary={boundary}"}
    if fmt == "npy":
        return "/v1/embeddings", npy, {"content-type": "application/x-npy"}
    if fmt == "raw":
        return "/v1/embeddings", clips.tobytes(), {"content-type": "application/octet-stream",
                                                   "x-clips-shape": ",".join(map(str, clips.shape)),
                                                   "x-clips-dtype": str(clips.dtype)}
    if fmt == "v2":
        head = json.dumps({"inputs": [{"name": "clip", "shape": list(clips.shape), "datatype": "FP32",
                                       "parameters": {"binary_data_size": clips.nbytes}}],
                           "parameters": {"binary_data_output": True}}).encode()
        return f"/v2/models/{model}/infer", head + clips.tobytes(), {
            "content-type": "application/octet-stream", "inference-header-content-length": str(len(head))}
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def scrape(url: str) -> dict[str, float]:
    """The service's Prometheus samples (``name{labels}`` -> value); empty if it has no /metrics."""
    try:
        text = httpx.get(url + "/metrics", timeout=10).text
    except httpx.TransportError:
        return {}
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                samples[key] = float(value)
    return samples


STAGES = ("read", "validate", "decode", "queue", "ort", "encode")


def _split(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """Per-request ms of each server stage (wall; ``_cpu``: CPU of the thread doing it) and of each server thread."""
    def per_request(key: str) -> float | None:
        if key not in after:
            return None
        return round((after[key] - before.get(key, 0.0)) * 1000 / requests, 3)

    split = {}
    for stage in STAGES:
        split[f"{stage}_ms"] = per_request(f'constcl_stage_seconds_sum{{stage="{stage}"}}')
        split[f"{stage}_cpu_ms"] = per_request(f'constcl_stage_cpu_seconds_sum{{stage="{stage}"}}')
    for thread in ("event_loop", "model"):
        split[f"{thread}_thread_cpu_ms"] = per_request(f'constcl_thread_cpu_seconds{{thread="{thread}"}}')
    runs = after.get("constcl_batch_size_count", 0.0) - before.get("constcl_batch_size_count", 0.0)
    if runs:
        split["mean_batch"] = round((after["constcl_batch_size_sum"] - before["constcl_batch_size_sum"]) / runs, 2)
    return {k: v for k, v in split.items() if v is not None}


class Connection:
    """A minimal HTTP/1.1 keep-alive client for prepared requests: the load generator spends its CPU on sockets,
    not on an HTTP library (httpx took ~2 ms of CPU per 1.2 MB request, as much as a tenth of the model's)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        """``(status, body)`` of one request (``head``: request line and headers, ending in a blank line)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        self.writer.write(head)
        self.writer.write(body)
        await self.writer.drain()
        lines = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
        reply = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection") == b"close":
            await self.close()
        return int(lines[0].split()[1]), reply

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.reader = self.writer = None


async def _level(url: str, request: tuple[str, bytes, dict[str, str]], requests: int, clients: int,
                 timeout: float, server: psutil.Process, clips: int = 1) -> dict[str, float]:
    """``requests`` requests (of ``clips`` clips each) from ``clients`` concurrent clients: throughput, latency,
    and the CPU time per request of the server process and of this load generator (process CPU clocks)."""
    path, body, headers = request
    host, port = url.removeprefix("http://").split(":")
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    latencies: list[float] = []
    remaining = iter(range(requests))
    failures = 0

    async def client() -> None:
        nonlocal failures
        connection = Connection(host, int(port))
        try:
            for _ in remaining:  # shared iterator: exactly `requests` requests in total
                start = time.perf_counter()
                status, _ = await asyncio.wait_for(connection.post(head, body), timeout)
                latencies.append(time.perf_counter() - start)
                failures += status != 200
        finally:
            await connection.close()

    metrics = await asyncio.to_thread(scrape, url)
    server_cpu, own_cpu, busy = sum(server.cpu_times()[:2]), time.process_time(), _busy_seconds()
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    server_cpu, own_cpu = sum(server.cpu_times()[:2]) - server_cpu, time.process_time() - own_cpu
    others = max(0.0, _busy_seconds() - busy - server_cpu - own_cpu)  # other jobs on the machine meanwhile
    split = _split(metrics, await asyncio.to_thread(scrape, url), requests)
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": requests, "failures": failures, "seconds": round(wall, 2),
            "clips_per_s": round(requests * clips / wall, 3), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "server_cpu_ms_per_request": round(server_cpu * 1000 / requests, 3),
            "client_cpu_ms_per_request": round(own_cpu * 1000 / requests, 3),
            "others_cpu_share": round(others / (wall * (os.cpu_count() or 1)), 3), **split}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``) and its widest vector extension, else what ``platform`` says."""
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text()
        names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
        flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
        vector = next((v for v in ("avx512f", "avx2", "avx") if v in flags), "no AVX")
        if names:
            return f"{names[0]} ({vector})"
    return platform.processor() or platform.machine()


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes, all CPUs)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _service_threads_cpu(level: dict[str, float], clips: int) -> float | None:
    """The service's own CPU per clip on its threads, from its metrics: the event loop (HTTP, parsing, checks,
    replies) plus the model thread outside ORT's calls (ORT's pool threads are ORT's); ``None`` without them."""
    keys = ("event_loop_thread_cpu_ms", "model_thread_cpu_ms", "ort_cpu_ms")
    if not all(key in level for key in keys):
        return None
    return round((level[keys[0]] + level[keys[1]] - level[keys[2]]) / clips, 3)


def _raw_ort(onnx_path: Path, clips: int, batch: int, spinning: bool) -> dict[str, float]:
    """Raw ONNX Runtime on ``clips`` clips in batches of ``batch``: throughput and this process's CPU per clip
    (``spinning``: ORT's default, idle threads spin; the service runs without)."""
    from export.runtime import OnnxEmbedder

    embedder = OnnxEmbedder(onnx_path, providers=["CPUExecutionProvider"], spinning=spinning)
    x = np.random.default_rng(0).standard_normal((batch, *embedder.clip_shape)).astype(np.float32)
    embedder.run(x[:1])  # warm-up
    done, start, cpu, busy = 0, time.perf_counter(), time.process_time(), _busy_seconds()
    while done < clips:
        n = min(batch, clips - done)
        embedder.run(x[:n])
        done += n
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    others = max(0.0, _busy_seconds() - busy - cpu)
    return {"batch": batch, "clips": clips, "seconds": round(wall, 2), "clips_per_s": round(clips / wall, 3),
            "cpu_ms_per_clip": round(cpu * 1000 / clips, 3),
            "others_cpu_share": round(others / (wall * (os.cpu_count() or 1)), 3)}


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="constcl_r3d50")
    parser.add_argument("--onnx", type=Path, default=None, help="an exported file instead of exporting --arch")
    parser.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=["multipart", "npy", "v2"],
                        help="request formats, each measured at every level (see request_body)")
    parser.add_argument("--clips-per-request", type=int, default=1, help="clips in each request (at most "
                        "--max-batch, the server's clip limit here)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="per-request timeout, seconds")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved raw/served rounds at saturation")
    parser.add_argument("--ort-spinning", action="store_true", help="serve with ORT's spinning threads (serve's "
                        "--ort-spinning; /readyz says which)")
    parser.add_argument("--label", default="", help="a note for the report (e.g. the commit and machine load)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load")
    return parser.parse_args()


def _serve_command(args: argparse.Namespace, onnx_path: Path, port: int) -> list[str]:
    """``python -m export serve`` as the benchmark runs it (the clip limit: one full batch per request)."""
    cmd = [sys.executable, "-m", "export", "serve", str(onnx_path), "--host", "127.0.0.1", "--port", str(port),
           "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
           "--max-clips", str(args.max_batch), "--timeout-s", str(args.timeout)]
    return cmd + (["--ort-spinning"] if args.ort_spinning else [])


def _measure_levels(args: argparse.Namespace, url: str, requests: dict[str, Request], server) -> list[dict]:
    """Every format at every concurrency level (after a warm-up per format)."""
    levels = []
    for fmt, request in requests.items():
        asyncio.run(_level(url, request, 2, 1, args.timeout, server))  # warm-up
        for clients in args.concurrency:
            result = {"format": fmt, **asyncio.run(_level(url, request, args.requests, clients, args.timeout,
                                                          server, args.clips_per_request))}
            print(result, flush=True)
            levels.append(result)
    return levels


def _round_row(round_index: int, fmt: str, raw: dict, served: dict, batches: list[int], spins: bool,
               args: argparse.Namespace) -> dict:
    """One round's row of a format: the service at saturation against raw ORT measured in the same round."""
    k = args.clips_per_request
    best = max(r["clips_per_s"] for r in raw.values())
    nearest = min(batches, key=lambda b: abs(b - served.get("mean_batch", args.max_batch)))
    model_cpu = raw[nearest, spins]["cpu_ms_per_clip"]  # as the server runs ORT
    own = served["server_cpu_ms_per_request"] / k - model_cpu
    return {"round": round_index + 1, "format": fmt,
            **{f"raw_batch{b}{'' if spin else '_nospin'}_clips_per_s": r["clips_per_s"]
               for (b, spin), r in raw.items()},
            **{f"raw_batch{b}{'' if spin else '_nospin'}_cpu_ms_per_clip": r["cpu_ms_per_clip"]
               for (b, spin), r in raw.items()},
            "served_clips_per_s": served["clips_per_s"],
            "ratio": round(served["clips_per_s"] / best, 3),
            "server_cpu_ms_per_clip": round(served["server_cpu_ms_per_request"] / k, 3),
            "client_cpu_ms_per_clip": round(served["client_cpu_ms_per_request"] / k, 3),
            "others_cpu_share": served["others_cpu_share"],
            "raw_others_cpu_share": max(r["others_cpu_share"] for r in raw.values()),
            "mean_batch": served.get("mean_batch"), "model_cpu_ms_per_clip": model_cpu,
            "service_cpu_ms_per_clip": round(own, 3),
            "service_threads_cpu_ms_per_clip": _service_threads_cpu(served, k),
            "service_over_model": round(own / model_cpu, 3)}


def _measure_rounds(args: argparse.Namespace, url: str, requests: dict[str, Request], server, onnx_path: Path,
                    spins: bool) -> list[dict]:
    """Interleaved rounds (raw ORT here while the idle server waits, then the service at saturation), so that a
    change of load on a shared machine hits both sides of each ratio alike."""
    batches, k, top = sorted({1, args.max_batch}), args.clips_per_request, max(args.concurrency)
    rounds = []
    for round_index in range(args.rounds):
        raw = {(b, spin): _raw_ort(onnx_path, args.requests * k, b, spin) for b in batches for spin in (True, False)}
        for fmt, request in requests.items():
            served = asyncio.run(_level(url, request, args.requests, top, args.timeout, server, k))
            rounds.append(_round_row(round_index, fmt, raw, served, batches, spins, args))
            print(rounds[-1], flush=True)
    return rounds


def _measure(args: argparse.Namespace, onnx_path: Path) -> tuple[list[dict], list[dict], bool]:
    """``(levels, rounds, whether the server's ORT threads spin)`` against a server started for them."""
    from export.runtime import OnnxEmbedder

    shape = OnnxEmbedder(onnx_path, providers=["CPUExecutionProvider"]).clip_shape
    clip = np.random.default_rng(1).standard_normal((args.clips_per_request, *shape)).astype(np.float32)
    requests = {fmt: request_body(fmt, clip, onnx_path.stem) for fmt in args.formats}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(_serve_command(args, onnx_path, port), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    server = psutil.Process(proc.pid)
    try:
        spins = _wait_ready(url, proc).get("ort_spinning", True)  # older servers: ORT's default
        levels = _measure_levels(args, url, requests, server)
        rounds = _measure_rounds(args, url, requests, server, onnx_path, spins)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return levels, rounds, spins


def main() -> None:
    args = _parse_args()
    from export.onnx import export_from_name

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.onnx
        if onnx_path is None:
            onnx_path = Path(tmp) / f"{args.arch}.onnx"
            print(f"exporting {args.arch} -> {onnx_path}", flush=True)
            export_from_name(args.arch, onnx_path, random_init=True)
        levels, rounds, spins = _measure(args, onnx_path)

    summary = {fmt: {"ratio_median": round(float(np.median([r["ratio"] for r in rounds if r["format"] == fmt])), 3),
                     "service_over_model_median": round(float(np.median(
                         [r["service_over_model"] for r in rounds if r["format"] == fmt])), 3),
                     "service_threads_over_model_median": _median_ratio(rounds, fmt)}
               for fmt in args.formats}
    report = {"arch": args.arch if args.onnx is None else str(args.onnx), "label": args.label,
              "machine": cpu_model(), "cpus": os.cpu_count(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "max_batch": args.max_batch,
              "max_wait_ms": args.max_wait_ms, "clips_per_request": args.clips_per_request, "ort_spinning": spins,
              "levels": levels, "rounds": rounds, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render(report, args.requests, max(args.concurrency))
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)


def _median_ratio(rounds: list[dict], fmt: str) -> float | None:
    """Median of service threads CPU / model CPU over the rounds of ``fmt`` (``None`` without stage metrics)."""
    ratios = [r["service_threads_cpu_ms_per_clip"] / r["model_cpu_ms_per_clip"] for r in rounds
              if r["format"] == fmt and r["service_threads_cpu_ms_per_clip"] is not None]
    return round(float(np.median(ratios)), 3) if ratios else None


def render(report: dict, requests: int, top: int) -> str:
    """The report as Markdown tables."""
    levels, rounds, per_request = report["levels"], report["rounds"], report["clips_per_request"]
    stage_keys = [k for k in ("read_ms", "validate_cpu_ms", "decode_ms", "queue_ms", "ort_ms", "encode_cpu_ms",
                              "event_loop_thread_cpu_ms", "model_thread_cpu_ms") if any(k in r for r in levels)]
    lines = [f"Served vs raw ONNX Runtime, `{report['arch']}`, {per_request} clip(s) per request, max batch "
             f"{report['max_batch']}, "
             f"max wait {report['max_wait_ms']:g} ms, {report['cpus']} CPUs of {report['machine']} (load generator, "
             f"server and ORT share "
             f"them; the machine is shared with other jobs: load average {report['load_average_before']} before, "
             f"{report['load_average_after']} after). {report['label']}".rstrip(), "",
             "CPU columns are ms per request: the server process (all threads), the load generator, then the "
             "server's stages (wall ms unless `cpu`; `ort` is per request, its batch shared by its clips); `others` is "
             "the share of the machine's CPUs that other processes used meanwhile.", "",
             "| format | clients | clips/s | p50 ms | p99 ms | fail | server CPU | client CPU | others |"
             + "".join(f" {k.removesuffix('_ms').replace('_', ' ')} |" for k in stage_keys),
             "|---" * (9 + len(stage_keys)) + "|"]
    lines += [f"| {r['format']} | {r['clients']} | {r['clips_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['failures']} | {r['server_cpu_ms_per_request']} | {r['client_cpu_ms_per_request']} | "
              f"{r.get('others_cpu_share', 0):.0%} |"
              + "".join(f" {r.get(k, '')} |" for k in stage_keys) for r in levels]
    keys = [k for k in rounds[0] if k.startswith("raw_batch") and k.endswith("clips_per_s")]
    names = {k: k.replace("raw_batch", "raw b").replace("_nospin", " no-spin").replace("_clips_per_s", " clips/s")
             for k in keys}
    lines += ["", f"Interleaved rounds at {top} clients ({requests} requests) vs raw ONNX Runtime on the same file "
                  f"({requests * per_request} clips per batch size, with ORT's spinning threads and without) measured "
                  f"just before each; model CPU = raw ORT's process CPU per clip at the batch size nearest the served "
                  f"mean, spinning as the server (ORT {'spins' if report['ort_spinning'] else 'does not spin'}); "
                  f"service CPU per clip = server CPU per clip - model CPU per clip; service threads CPU = the "
                  f"server's event-loop thread + its model thread outside ORT (its own clocks, from /metrics); "
                  f"others = the share of the machine's CPUs used by other processes while the service ran / while "
                  f"raw ORT ran (the most of its four runs):", "",
              "| round | format | " + " | ".join(names[k] for k in keys)
              + " | served clips/s | served / best raw | mean batch | server CPU ms/clip | model CPU ms/clip | "
                "service CPU ms/clip | service / model | service threads CPU ms/clip | client CPU ms/clip | "
                "others served / raw |",
              "|---" * (len(keys) + 12) + "|"]
    lines += [f"| {r['round']} | {r['format']} | " + " | ".join(str(r[k]) for k in keys)
              + f" | {r['served_clips_per_s']} | {r['ratio']:.1%} | {r['mean_batch']} | "
                f"{r['server_cpu_ms_per_clip']} | {r['model_cpu_ms_per_clip']} | {r['service_cpu_ms_per_clip']}"
                f" | {r['service_over_model']:.1%} | {r['service_threads_cpu_ms_per_clip'] or 'n/a'} | "
                f"{r['client_cpu_ms_per_clip']} | {r.get('others_cpu_share', 0):.0%} / "
                f"{r.get('raw_others_cpu_share', 0):.0%} |" for r in rounds]
    lines += [""] + [f"`{fmt}`: median served / raw at saturation **{v['ratio_median']:.1%}** (goal >= 90%); median "
                     f"service CPU / model CPU **{v['service_over_model_median']:.1%}** (goal <= 10%)"
                     + ("" if v["service_threads_over_model_median"] is None else
                        f", service threads CPU / model CPU **{v['service_threads_over_model_median']:.1%}**") + "."
                     for fmt, v in report["summary"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
