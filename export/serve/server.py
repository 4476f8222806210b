"""Running the service: :func:`serve` loads an exported model and runs the app under uvicorn with the guarded
protocol (:func:`uvicorn_options`), freed memory kept in the process (:func:`keep_freed_memory`) and the startup
objects frozen out of the garbage collector."""

from __future__ import annotations

import gc
import logging

from starlette.formparsers import MultiPartParser

from ..runtime import OnnxEmbedder
from .app import create_app
from .config import ServeConfig
from .protocol import guarded_protocol

log = logging.getLogger(__name__)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def keep_freed_memory(trim_bytes: int = 256 * 2**20, mmap_bytes: int = 32 * 2**20) -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of returning it to the kernel (``mallopt``): blocks
    under ``mmap_bytes`` come from the heap, and the heap is trimmed only above ``trim_bytes`` free. Each request
    body (1.2 MB for a small-model clip) gets a buffer of its own (:class:`~export.serve.protocol.WholeBody`; copied
    a few times more on uvicorn's and Starlette's multipart path); with glibc's defaults every such block maps fresh
    pages and faults them in, which measured 1.1 ms of CPU per request against 0.27 ms with this
    (benchmarks/serve_load.py, the h11 service). Returns False where it does not apply (not glibc)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: no mallopt
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, trim_bytes))


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None,
          threads: int | None = None, providers: list[str] | None = None, model_name: str | None = None,
          spinning: bool = False) -> None:
    """Load ``model`` (an exported ONNX file) and serve it with uvicorn until interrupted.

    ``spinning``: ORT's idle intra-op threads spin between runs (its default). Off by default here: the event loop
    shares the cores with ORT, and spinning threads take its CPU while the next batch is parsed (measured:
    ``benchmarks/serve_load.py``)."""
    import uvicorn

    if not keep_freed_memory():
        log.info("mallopt is not available: freed request buffers go back to the kernel (slower large bodies)")
    embedder = OnnxEmbedder(model, providers=providers, threads=threads, spinning=spinning)
    config = config or ServeConfig()
    app = create_app(embedder, config, model_name=model_name)
    gc.collect()
    gc.freeze()  # the ~200k objects of torch, ONNX and ORT are never traversed again by the cyclic collector
    # Starlette spools multipart files over 1 MB to disk, each chunk written and read back on a worker thread; the
    # upload is read into memory whole anyway (bounded by max_upload_bytes), so keep it there from the start.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, config.max_upload_bytes)
    uvicorn.run(app, host=host, port=port, log_level="info", **uvicorn_options(config))


def uvicorn_options(config: ServeConfig) -> dict:
    """The uvicorn settings that carry :class:`ServeConfig`'s connection limits (:func:`guarded_protocol`: httptools
    with a head deadline, 431 and whole bodies). The event loop is asyncio's, whatever is installed: uvloop (uvicorn's
    choice when present; the protocol works on it too) measured no less CPU per request here (0.94-1.02 ms against
    0.95-1.03 ms with the model stubbed out), and one loop is the one tested. No WebSocket routes: no upgrades."""
    return {"http": guarded_protocol(config), "loop": "asyncio", "ws": "none",
            "limit_concurrency": config.max_connections, "timeout_keep_alive": config.keep_alive_s,
            "timeout_graceful_shutdown": config.graceful_shutdown_s}
