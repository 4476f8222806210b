"""The service's Prometheus metrics (its own registry): requests, latency, batches, and where a request's time
goes (wall and CPU time by stage, CPU time of the event-loop and model threads)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

STAGES = ("read", "validate", "decode", "queue", "ort", "encode")


class Timed:
    """The context manager of :meth:`Metrics.timed` (a small class: a generator-based one cost ~3 us a block)."""

    __slots__ = ("clock", "cpu", "start", "wall")

    def __init__(self, wall, cpu) -> None:
        self.wall, self.cpu = wall, cpu

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        if self.cpu is not None:
            self.clock = time.thread_time()

    def __exit__(self, *exc_info) -> None:
        self.wall.observe(time.perf_counter() - self.start)
        if self.cpu is not None:
            self.cpu.observe(time.thread_time() - self.clock)


class Metrics:
    """Prometheus metrics in the app's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("constcl_requests", "Embedding requests (/v1/embeddings, /v2/models/*/infer) by "
                                "status code", ["status"], registry=self.registry)
        self.latency = Histogram("constcl_request_latency_seconds", "Latency of embedding requests",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                 registry=self.registry)
        self.batch_size = Histogram("constcl_batch_size", "Clips per model run (micro-batch size)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.clips = Counter("constcl_clips", "Clips embedded", registry=self.registry)
        self.queue = Gauge("constcl_queue_clips", "Clips waiting for the model", registry=self.registry)
        self.internal_errors = Counter("constcl_internal_errors", "Requests answered 500 (any path)", ["path"],
                                       registry=self.registry)
        self.decode_jobs = Gauge("constcl_decode_jobs", "Video decoding jobs running or queued",
                                 registry=self.registry)
        self.frames_decoded = Counter("constcl_frames_decoded", "Video frames decoded for requests",
                                      registry=self.registry)
        self.stage = Summary("constcl_stage_seconds", "Wall time of request stages: read (body received and parsed), "
                             "validate (array checks), decode (video), queue (batching wait, per clip), ort (per "
                             "model run), encode (the reply)", ["stage"], registry=self.registry)
        self.stage_cpu = Summary("constcl_stage_cpu_seconds", "CPU time of the thread running a synchronous stage "
                                 "(validate, encode: the event loop; ort: the model thread's share of the run)",
                                 ["stage"], registry=self.registry)
        self.thread_cpu = Gauge("constcl_thread_cpu_seconds", "CPU time of the service's threads (event_loop: HTTP, "
                                "parsing, checks, replies; model: batching and the ORT calls)", ["thread"],
                                registry=self.registry)
        # the stages' children, bound once (``labels()`` costs a lookup under a lock per observation)
        self.stages = {stage: self.stage.labels(stage) for stage in STAGES}
        self.stages_cpu = {stage: self.stage_cpu.labels(stage) for stage in STAGES}

    def timed(self, stage: str, cpu: bool = False) -> Timed:
        """Observe the block's wall time in ``constcl_stage_seconds`` (and with ``cpu``, the running thread's CPU
        time in ``constcl_stage_cpu_seconds``; only meaningful for a block without ``await``)."""
        return Timed(self.stages[stage], self.stages_cpu[stage] if cpu else None)

    def watch_thread(self, name: str, ident: int) -> None:
        """Export the CPU clock of thread ``ident`` as ``constcl_thread_cpu_seconds{thread=name}`` (read at each
        scrape; nothing where the platform has no per-thread clocks)."""
        if not hasattr(time, "pthread_getcpuclockid"):  # pragma: no cover - not on Linux/macOS
            return
        clock = time.pthread_getcpuclockid(ident)
        self.thread_cpu.labels(name).set_function(lambda: time.clock_gettime(clock))
