"""Dynamic micro-batching: clips of concurrent requests queued and run together on the model's own thread, at
most ``max_batch`` at a time, waiting at most ``max_wait_ms`` for a batch to fill."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .common import bounded
from .metrics import Metrics


class MicroBatcher:
    """Collects clips from concurrent requests into batches for one model runner thread. ``run`` returns new
    arrays (as ORT does), never views of its input: the batch buffer is reused for the next batch."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_ms: float,
                 metrics: Metrics) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000.0
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="constcl-model")  # the model's own thread
        self.queue: asyncio.Queue[tuple[np.ndarray, int, asyncio.Future, float]] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.buffer: np.ndarray | None = None  # batches of clips from several requests are stacked into it

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop(), name="constcl-batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def call(self, fn: Callable, *args):
        """Run ``fn(*args)`` on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def submit(self, clips: np.ndarray) -> np.ndarray:
        """Embed ``clips [n, ...]``; each clip joins whichever batch has room."""
        loop = asyncio.get_running_loop()
        futures, now = [], loop.time()
        for index in range(len(clips)):
            future = loop.create_future()
            self.queue.put_nowait((clips, index, future, now))
            futures.append(future)
        self.metrics.queue.set(self.queue.qsize())
        try:
            return np.stack(await asyncio.gather(*futures))
        finally:
            for future in futures:  # a timed-out request's clips are skipped, not run
                future.cancel()

    async def _next_batch(self) -> list[tuple[np.ndarray, int, asyncio.Future, float]]:
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await bounded(self.queue.get(), remaining))
            except TimeoutError:
                break
        return [item for item in batch if not item[2].done()]

    def _stack(self, batch: list[tuple[np.ndarray, int, asyncio.Future, float]]) -> np.ndarray:
        """The batch's clips as one array: a view when they are consecutive clips of one request, else a copy into
        the batcher's own buffer (one batch runs at a time, so it is free again when the next one is stacked)."""
        first, start = batch[0][0], batch[0][1]
        if all(clips is first and index == start + k for k, (clips, index, _, _) in enumerate(batch)):
            return first[start:start + len(batch)]
        clip = first[start]
        if self.buffer is None or self.buffer.shape[1:] != clip.shape or self.buffer.dtype != clip.dtype:
            self.buffer = np.empty((self.max_batch, *clip.shape), clip.dtype)
        return np.stack([clips[index] for clips, index, _, _ in batch], out=self.buffer[:len(batch)])

    def _run(self, clips: np.ndarray) -> np.ndarray:
        with self.metrics.timed("ort", cpu=True):
            return self.run(clips)

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            self.metrics.queue.set(self.queue.qsize())
            if not batch:
                continue
            self.metrics.batch_size.observe(len(batch))
            now = asyncio.get_running_loop().time()
            for _, _, _, queued in batch:
                self.metrics.stages["queue"].observe(now - queued)
            try:
                out = await self.call(self._run, self._stack(batch))
            except Exception as exc:  # handed to the requests; the loop lives on
                for _, _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, future, _), row in zip(batch, out, strict=True):
                if not future.done():
                    future.set_result(row)
