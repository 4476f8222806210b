"""The embedding service: results, micro-batching, metrics, limits, and 4xx JSON for every bad request."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import pickle
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from constcl_zoo.config import ConfigError
from export.runtime import OnnxEmbedder
from export.serve import Metrics, MicroBatcher, ServeConfig, create_app

from .test_embed import random_frames, write_video
from .test_export import exported

ROOT = Path(__file__).resolve().parents[1]


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder(exported())


@pytest.fixture(scope="module")
def client(embedder):
    app = create_app(embedder, ServeConfig(max_batch=4, max_wait_ms=2, max_clips=5, max_upload_bytes=8_000_000))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def post(client: TestClient, name: str, data: bytes) -> httpx.Response:
    return client.post("/v1/embeddings", files={"file": (name, data)})


def test_health_ready_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["provider"] == "CPUExecutionProvider"
    schema = client.get("/openapi.json").json()
    assert "/v1/embeddings" in schema["paths"] and "post" in schema["paths"]["/v1/embeddings"]


def test_npy_clips_are_embedded(client, embedder):
    clips = np.random.default_rng(0).standard_normal((3, 3, 8, 112, 112)).astype(np.float32)
    response = post(client, "clips.npy", npy_bytes(clips))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["shape"] == [3, 512] and body["windows"] is None and body["branch"] == "global"
    np.testing.assert_allclose(np.array(body["embeddings"]), embedder.run(clips), rtol=1e-5, atol=1e-6)
    single = post(client, "one.npy", npy_bytes(clips[0]))  # [3, T, H, W] is one clip
    assert single.json()["shape"] == [1, 512]


def test_video_upload_gives_windows(client, embedder, tmp_path):
    path = write_video(tmp_path / "v.avi", random_frames(40, seed=3))
    body = post(client, "v.avi", path.read_bytes()).json()
    want = embedder.embed(path)
    assert body["shape"] == [len(want), 512]
    assert [w["start_frame"] for w in body["windows"]] == want.start_frame.tolist()
    np.testing.assert_allclose([w["end_s"] for w in body["windows"]], want.end_s)
    np.testing.assert_allclose(np.array(body["embeddings"]), want.embeddings.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "make", "status", "words"), [
    ("x.npy", lambda: b"\x93NUMPY garbage", 400, "not a readable .npy"),
    ("x.npy", lambda: npy_bytes(np.zeros((1, 3, 8, 64, 64), np.float32)), 422, "clips must have shape"),
    ("x.npy", lambda: npy_bytes(np.zeros((1, 3, 8, 112, 112), np.uint8)), 422, "clips must be float"),
    ("x.npy", lambda: npy_bytes(np.full((1, 3, 8, 112, 112), np.nan, np.float32)), 422, "NaN"),
    ("x.npy", lambda: npy_bytes(np.zeros((6, 3, 8, 112, 112), np.float32)), 413, "the limit is 5"),
    ("x.npy", lambda: npy_bytes(np.array([{"a": 1}], dtype=object)), 400, "not a readable .npy"),
    ("x.npy", lambda: pickle.dumps([1, 2]), 400, "not a readable .npy"),
    ("empty.mp4", lambda: b"", 400, "empty"),
    ("junk.mp4", lambda: np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes(), 422, "junk.mp4"),
    ("big.npy", lambda: b"\x00" * 8_100_000, 413, "over the limit of 8000000 bytes"),
])
def test_bad_requests_get_4xx_json(client, name, make, status, words):
    response = post(client, name, make())
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_bad_videos_and_forms(client, tmp_path):
    short = write_video(tmp_path / "short.avi", random_frames(6))
    response = post(client, "short.avi", short.read_bytes())
    assert response.status_code == 422 and "short.avi: 6 decoded frame(s)" in response.json()["detail"]
    long = write_video(tmp_path / "long.avi", random_frames(16 * 6, h=40, w=40))  # 6 windows > 5
    response = post(client, "long.avi", long.read_bytes())
    assert response.status_code == 413 and "more than 5 windows" in response.json()["detail"]
    assert client.post("/v1/embeddings", data={"other": "x"}).status_code == 422  # no file field
    assert client.get("/v1/embeddings").status_code == 405
    assert client.get("/healthz").status_code == 200  # the worker survived all of it


def test_metrics_count_requests_and_batches(client):
    text = client.get("/metrics").text
    assert 'constcl_requests_total{status="200"}' in text
    assert 'constcl_requests_total{status="422"}' in text
    assert "constcl_request_latency_seconds_bucket" in text and "constcl_batch_size_count" in text


def test_micro_batcher_groups_concurrent_clips():
    sizes = []

    def run(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        time.sleep(0.05)
        return batch.sum(axis=1, keepdims=True)

    async def scenario():
        batcher = MicroBatcher(run, max_batch=4, max_wait_ms=20, metrics=Metrics())
        batcher.start()
        clips = [np.full((1, 2), float(i), np.float32) for i in range(6)]
        results = await asyncio.gather(*(batcher.submit(c) for c in clips))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert sizes == [4, 2]  # six concurrent one-clip requests -> two model runs
    assert [float(r[0, 0]) for r in results] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]  # each got its own row


def test_request_time_limit_gives_408(embedder):
    class Slow:
        def __getattr__(self, name):
            return getattr(embedder, name)

        def run(self, clips, boxes=None):
            time.sleep(0.4)
            return embedder.run(clips)

    app = create_app(Slow(), ServeConfig(request_timeout_s=0.1))
    with TestClient(app) as client:
        response = post(client, "c.npy", npy_bytes(np.zeros((1, 3, 8, 112, 112), np.float32)))
        assert response.status_code == 408 and "limit of 0.1 s" in response.json()["detail"]
        assert client.get("/healthz").status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_command_on_loopback():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "export", "serve", str(exported()), "--host", "127.0.0.1",
                             "--port", str(port), "--max-batch", "2"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "server not ready within 60 s"
            time.sleep(0.2)
        clip = npy_bytes(np.zeros((2, 3, 8, 112, 112), np.float32))
        response = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", files={"file": ("c.npy", clip)}, timeout=30)
        assert response.status_code == 200 and response.json()["shape"] == [2, 512]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_chunked_upload_over_the_limit_is_cut_off(client):
    """No Content-Length: the body is counted as it streams in."""

    def body():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.npy\"\r\n\r\n"
        for _ in range(10):
            yield b"\x00" * 1_000_000
        yield b"\r\n--b--\r\n"

    response = client.post("/v1/embeddings", content=body(),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and "over the limit of 8000000 bytes" in response.json()["detail"]


# --- hostile clients against a real server on 127.0.0.1 -------------------------------------------------------

LIVE = ServeConfig(max_batch=2, max_wait_ms=2, max_clips=5, max_upload_bytes=8_000_000, header_timeout_s=0.5,
                   body_timeout_s=1.0, keep_alive_s=1.0, max_connections=4)


@contextlib.contextmanager
def live_server(embedder, config: ServeConfig = LIVE):
    """The app under uvicorn with serve()'s options, in a thread; yields its port."""
    import uvicorn

    from export.serve import uvicorn_options

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(embedder, config), host="127.0.0.1", port=port,
                                           log_level="warning", **uvicorn_options(config)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def live(embedder):
    with live_server(embedder) as port:
        yield port


def _read_until_closed(sock: socket.socket, limit_s: float = 20.0) -> bytes:
    """Everything the server sends until it closes the connection (the socket timeout is only a guard)."""
    sock.settimeout(limit_s)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _one_response(sock: socket.socket) -> bytes:
    """One HTTP response (head and a Content-Length body) from a keep-alive connection."""
    sock.settimeout(20)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_client_stalling_mid_body_is_dropped(live):
    with socket.create_connection(("127.0.0.1", live)) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000\r\n\r\n--b\r\n")  # then nothing more
        reply = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 408") and b"application/json" in reply
    assert b"the request body was not received within 1 s" in reply


def test_slowloris_head_and_silent_connections_are_dropped(live):
    closed = False
    with socket.create_connection(("127.0.0.1", live)) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\n")
        for _ in range(200):  # one header byte every 50 ms: forever, unless the server hangs up
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)
        else:
            sock.settimeout(0.5)
            closed = _read_until_closed(sock, 0.5) == b""
    assert closed, "a request head trickled for 10 s was still being accepted"
    with socket.create_connection(("127.0.0.1", live)) as silent:
        assert _read_until_closed(silent) == b""  # connected, sent nothing: closed by the head deadline


def test_connection_cap_and_recovery(embedder):
    def healthz(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return _read_until_closed(sock)

    with live_server(embedder, dataclasses.replace(LIVE, header_timeout_s=5.0)) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(LIVE.max_connections)]
        try:
            assert healthz(port).startswith(b"HTTP/1.1 503")  # uvicorn's limit_concurrency
        finally:
            for sock in idle:
                sock.close()
        assert healthz(port).startswith(b"HTTP/1.1 200")  # once they are gone the service answers again


def test_open_connections_beyond_the_cap_are_closed_at_accept(embedder, capfd):
    """max_open_connections=6: 30 idle sockets, 6 held (and counted by limit_concurrency), 24 closed at once with
    one log line; the service answers again once they go."""
    config = dataclasses.replace(LIVE, header_timeout_s=5.0, max_open_connections=6)
    with live_server(embedder, config) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(30)]
        try:
            closed = 0
            for sock in idle:
                sock.settimeout(0.5)
                with contextlib.suppress(TimeoutError, socket.timeout):
                    closed += _read_until_closed(sock, 0.5) == b""
            assert closed == 24  # the first 6 are held until their head deadline (5 s)
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_until_closed(sock).startswith(b"HTTP/1.1 200")
    log = capfd.readouterr().err
    assert log.count("open-connection cap 6 reached") == 1  # rate-limited: not one line per refused connection
    assert "Traceback" not in log and "EMFILE" not in log


def test_open_connection_cap_stays_below_the_descriptor_limit(monkeypatch):
    import resource

    from export.serve import FD_RESERVE, open_connection_cap

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    assert open_connection_cap(ServeConfig(max_open_connections=5000)) == 1024 - FD_RESERVE
    assert open_connection_cap(ServeConfig(max_open_connections=100)) == 100
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert open_connection_cap(ServeConfig(max_open_connections=5000)) == 5000
    with pytest.raises(ConfigError, match="max_open_connections"):
        ServeConfig(max_connections=64, max_open_connections=10)


@pytest.mark.parametrize("chunks", [1, 8], ids=["whole", "trickled"])
def test_request_head_over_16_kb_gets_431(live, chunks):
    """A 100 KB head in one write (counted exactly by the parser's callbacks) or in 8 pieces (counted by the reads,
    before the parser has seen the whole header) gets 431 JSON and the connection is closed; a 15 KB head is
    served."""
    head = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", live)) as sock:
        step = -(-len(head) // chunks)
        for i in range(0, len(head), step):
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(head[i:i + step])
            time.sleep(0.02)
        reply = _read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large"), reply[:200]
    assert b"request head over the limit of 16384 bytes" in reply
    with socket.create_connection(("127.0.0.1", live)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 15_000
                     + b"\r\n\r\n")
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 200")


def _npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()  # magic, version, length and the header dict


@pytest.mark.parametrize(("data", "status", "words"), [
    (_npy_header((10**12, 3, 8, 112, 112)) + b"\0" * 64, 413, "1000000000000 clips; the limit is 5"),
    (_npy_header((2**40, 7)) + b"\0" * 64, 422, "clips must have shape [B, 3, 8, 112, 112]"),
    (_npy_header((2, 3, 8, 112, 112)) + b"\0" * 64, 400, "needs 2408448 bytes of data, the file holds 64"),
    (np.lib.format.magic(1, 0) + b"\x20\x00{'descr': '<f4', 'shape': (1, 2", 400, "not a readable .npy"),
    (npy_bytes(np.full((1, 3, 8, 112, 112), 1e300)), 422, "too large for float32"),
    (npy_bytes(np.full((1, 3, 8, 112, 112), 3e38, np.float32)), 422, "output is not finite"),
])
def test_hostile_npy_gets_4xx_json(live, data, status, words):
    with httpx.Client(timeout=30) as client:
        response = client.post(f"http://127.0.0.1:{live}/v1/embeddings", files={"file": ("x.npy", data)})
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]
        assert client.get(f"http://127.0.0.1:{live}/healthz").status_code == 200


def test_internal_errors_are_json_counted_and_keep_the_connection(embedder):
    class Broken:
        def __getattr__(self, name):
            return getattr(embedder, name)

        def run(self, clips, boxes=None):
            if clips.shape[0] == 1 and clips[0, 0, 0, 0, 0] == 0.5:
                raise RuntimeError("boom")
            return embedder.run(clips)

    with live_server(Broken()) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        body = npy_bytes(np.full((1, 3, 8, 112, 112), 0.5, np.float32))
        form = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.npy\"\r\n\r\n" + body +
                b"\r\n--b--\r\n")
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(form) + form)
        reply = _one_response(sock)
        assert reply.startswith(b"HTTP/1.1 500") and b"application/json" in reply and b"RuntimeError" in reply
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection still works
        metrics = _one_response(sock)
        assert metrics.startswith(b"HTTP/1.1 200")
        assert b'constcl_internal_errors_total{path="/v1/embeddings"} 1.0' in metrics


def test_timed_out_request_stops_decoding(embedder, tmp_path):
    """The decoder checks the request's cancel flag before each frame: a 408 stops it early."""

    class SlowPreprocess:
        cfg = embedder.preprocess.cfg

        def __call__(self, frames):
            time.sleep(0.02)
            return embedder.preprocess(frames)

    class Slow:
        preprocess = SlowPreprocess()

        def __getattr__(self, name):
            return getattr(embedder, name)

    video = write_video(tmp_path / "long.avi", random_frames(300, h=32, w=32))
    app = create_app(Slow(), ServeConfig(request_timeout_s=0.3, max_clips=1000))
    with TestClient(app) as client:
        response = post(client, "long.avi", video.read_bytes())
        assert response.status_code == 408
        for _ in range(300):  # until the worker has given up its job
            text = client.get("/metrics").text
            if "constcl_decode_jobs 0.0" in text:
                break
            time.sleep(0.05)
        assert "constcl_decode_jobs 0.0" in text
        decoded = float(re.search(r"^constcl_frames_decoded_total (\S+)$", text, re.M).group(1))
        assert 0 < decoded < 300
