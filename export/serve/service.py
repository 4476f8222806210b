"""The model behind the routes: one :class:`EmbeddingService` per app holds the embedder, the micro-batcher, the
readers of clips and videos, the metrics and the readiness; both protocols' routes call it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

from ..runtime import OnnxEmbedder
from .batcher import MicroBatcher
from .common import bounded
from .config import ServeConfig
from .inputs import ClipReader, VideoDecoder
from .metrics import Metrics


class EmbeddingService:
    """``embedder`` (an :class:`~export.runtime.OnnxEmbedder` without ROI input) served under ``config``: clips go
    through the :class:`~export.serve.batcher.MicroBatcher` (the model's own thread), videos through the
    :class:`~export.serve.inputs.VideoDecoder`'s pool; :meth:`lifespan` starts and stops both."""

    def __init__(self, embedder: OnnxEmbedder, config: ServeConfig) -> None:
        self.embedder, self.config = embedder, config
        self.metrics = Metrics()
        self.batcher = MicroBatcher(embedder.run, config.max_batch, config.max_wait_ms, self.metrics)
        self.reader = ClipReader(embedder, config.max_clips)
        self.decoder = VideoDecoder(embedder, config.max_clips, config.decode_workers, self.metrics)
        self.warmed_up = False

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """The app's lifespan: the batcher runs, the threads' CPU clocks are exported, one warm-up run of the model
        (its first run allocates; ``/readyz`` waits for it); at shutdown the batcher and the decoding pool stop."""
        self.batcher.start()
        self.metrics.watch_thread("event_loop", threading.get_ident())
        self.metrics.watch_thread("model", await self.batcher.call(threading.get_ident))
        warm = np.zeros((1, *self.embedder.clip_shape), np.float32)
        await self.batcher.call(self.embedder.run, warm)
        self.warmed_up = True
        yield
        await self.batcher.stop()
        self.decoder.shutdown()

    def ready(self) -> bool:
        """The model has run once and the batcher is alive."""
        return self.warmed_up and self.batcher.alive

    async def within_limit(self, work: Awaitable[Response]) -> Response:
        """``await work`` within the request time limit (408 after it)."""
        try:
            return await bounded(work, self.config.request_timeout_s)
        except TimeoutError:
            raise HTTPException(408, f"request took longer than the limit of {self.config.request_timeout_s:g} s") \
                from None

    async def embed(self, clips: np.ndarray, name: str) -> np.ndarray:
        """The model's outputs for checked clips, through the micro-batcher; 422 for non-finite outputs."""
        try:
            out = await self.batcher.submit(clips)
        except ValueError as exc:  # shape/dtype problems found by the embedder
            raise HTTPException(422, f"{name}: {exc}") from None
        if not np.isfinite(out).all():  # JSON has no inf/nan; such output means inputs far outside the range
            raise HTTPException(422, f"{name}: the model's output is not finite for these clips; clips must be "
                                     f"preprocessed to {self.reader.value_range}")
        self.metrics.clips.inc(len(clips))
        return out
