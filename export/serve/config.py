"""The service's settings (:class:`ServeConfig`: batching and limits) and the open-socket cap they allow."""

from __future__ import annotations

from dataclasses import dataclass

from constcl_zoo.config import ConfigError


@dataclass(frozen=True)
class ServeConfig:
    """Batching and limits. Sizes in bytes, times in seconds unless named otherwise."""

    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_upload_bytes: int = 100 * 2**20
    max_clips: int = 64
    request_timeout_s: float = 60.0
    header_timeout_s: float = 10.0  # from a request's first byte (or the connection) to its complete head
    body_timeout_s: float = 30.0  # from the complete head to the end of the body
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this (uvicorn timeout_keep_alive)
    max_connections: int = 64  # open connections; requests beyond get 503 (uvicorn limit_concurrency)
    max_open_connections: int = 512  # sockets held open at all; beyond, closed at accept (see open_connection_cap)
    max_header_bytes: int = 16384  # request head size; larger heads get 431
    decode_workers: int = 2  # threads decoding uploaded videos (their own pool, not the default executor)
    graceful_shutdown_s: float = 10.0  # uvicorn timeout_graceful_shutdown

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_clips", "max_upload_bytes", "max_connections", "max_open_connections",
                     "max_header_bytes", "decode_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ServeConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout_s", "header_timeout_s", "body_timeout_s", "keep_alive_s",
                     "graceful_shutdown_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ServeConfig.{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"ServeConfig.max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_open_connections < self.max_connections:
            raise ConfigError(f"ServeConfig.max_open_connections ({self.max_open_connections}) must be >= "
                              f"max_connections ({self.max_connections})")


FD_RESERVE = 64  # file descriptors kept free of client sockets: the model, logs, uploads' temporary files


def open_connection_cap(config: ServeConfig) -> int:
    """Sockets the server holds open at once: ``config.max_open_connections``, but at most the process's soft
    file-descriptor limit less :data:`FD_RESERVE` (at least 1)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - no rlimits (Windows)
        soft = -1
    if soft < 0:  # unlimited (RLIM_INFINITY) or unknown
        return config.max_open_connections
    return max(1, min(config.max_open_connections, soft - FD_RESERVE))
