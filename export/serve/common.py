"""What the service's layers share: a deadline on an ``await``, a request's whole body, the JSON error each
protocol answers with, and which paths are embedding requests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """``await awaitable`` within ``seconds`` (``TimeoutError`` after), without a task per call where
    ``asyncio.timeout`` exists (Python >= 3.11; ``asyncio.wait_for`` creates one)."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


async def whole_body(request: Request) -> bytes | memoryview:
    """A request's whole body: the one message's body as it is when the body came in one (a ``memoryview`` of the
    protocol's buffer, :class:`~export.serve.protocol.WholeBody`; or ``bytes``), else the chunks joined once
    (Starlette's ``body()`` copies every chunk and then the whole). Read from ``receive`` as Starlette's ``stream()``
    does, without its generator."""
    chunks = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        if body := message.get("body"):
            chunks.append(body)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def error_response(path: str, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error in the body each protocol uses: ``{"error": ...}`` under ``/v2`` (KServe v2), FastAPI's
    ``{"detail": ...}`` elsewhere."""
    return JSONResponse({"error" if path.startswith("/v2") else "detail": message}, status_code=status,
                        headers=headers)


def counted_path(path: str) -> bool:
    """Whether requests to ``path`` are embedding requests (counted and timed in the request metrics)."""
    return path == "/v1/embeddings" or (path.startswith("/v2/models/") and path.endswith("/infer"))
