"""The service's KServe v2 routes driven by the real ``tritonclient.http``, its raw tensor bodies and its stage
metrics."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from export.serve import MicroBatcher, ServeConfig, create_app, keep_freed_memory

from .test_serve import LIVE, client, embedder, live, npy_bytes, post  # noqa: F401  (fixtures)

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "model"  # the stem of the exported file (tests/test_export.exported)


@pytest.fixture(scope="module")
def triton(live):  # noqa: F811
    triton_client = tritonclient_http.InferenceServerClient(f"127.0.0.1:{live}", network_timeout=60)
    yield triton_client
    triton_client.close()


def clips_of(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 112, 112)).astype(np.float32)


def test_metadata_and_readiness(triton, embedder):  # noqa: F811
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready(MODEL)
    assert not triton.is_model_ready("no-such-model")
    assert triton.get_server_metadata()["name"] == "constcl-zoo"
    output = embedder.session.get_outputs()[0].name
    meta = triton.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "clip", "datatype": "FP32", "shape": [-1, 3, 8, 112, 112]}]
    assert meta["outputs"] == [{"name": output, "datatype": "FP32", "shape": [-1, 512]}]
    config = triton.get_model_config(MODEL)
    assert config["max_batch_size"] == LIVE.max_clips and config["input"][0]["dims"] == [3, 8, 112, 112]
    assert triton.get_model_metadata(MODEL, model_version="1")["name"] == MODEL


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_equals_ort(triton, embedder, binary):  # noqa: F811
    clips = clips_of(2 if binary else 1, seed=4)  # JSON: ~6 MB of text per clip (the live limit is 8 MB)
    tensor = tritonclient_http.InferInput("clip", list(clips.shape), "FP32")
    tensor.set_data_from_numpy(clips, binary_data=binary)
    output = embedder.session.get_outputs()[0].name
    requested = [tritonclient_http.InferRequestedOutput(output, binary_data=binary)]
    result = triton.infer(MODEL, [tensor], outputs=requested, request_id="r-7")
    got = result.as_numpy(output)
    assert got.shape == (len(clips), 512) and got.dtype == np.float32
    np.testing.assert_allclose(got, embedder.run(clips), rtol=1e-5, atol=1e-6)
    assert result.get_response()["id"] == "r-7" and result.get_response()["model_name"] == MODEL
    if binary:  # no outputs named: all of them, in binary
        default = triton.infer(MODEL, [tensor]).as_numpy(output)
        np.testing.assert_array_equal(default, got)


@pytest.mark.parametrize(("model", "shape", "datatype", "status", "words"), [
    ("no-such-model", (1, 3, 8, 112, 112), "FP32", "404", "unknown model 'no-such-model'"),
    (MODEL, (1, 3, 8, 64, 64), "FP32", "400", "clips must have shape [B, 3, 8, 112, 112]"),
    (MODEL, (1, 3, 8, 112, 112), "FP64", "400", "datatype must be FP32, got 'FP64'"),
    (MODEL, (1, 3, 8, 112, 112), "INT32", "400", "datatype must be FP32, got 'INT32'"),
    (MODEL, (6, 3, 8, 112, 112), "FP32", "413", "6 clips; the limit is 5"),
])
def test_infer_errors_as_the_protocol_says(triton, model, shape, datatype, status, words):
    dtype = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32}[datatype]
    tensor = tritonclient_http.InferInput("clip", list(shape), datatype)
    tensor.set_data_from_numpy(np.zeros(shape, dtype))
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(model, [tensor])
    assert caught.value.status() == status and words in caught.value.message()
    assert triton.is_server_ready()


def _v2(live: int, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:  # noqa: F811
    return httpx.post(f"http://127.0.0.1:{live}/v2/models/{MODEL}/infer", content=body, headers=headers or {},
                      timeout=30)


def _binary_request(clips: np.ndarray, size: int | None = None, **extra) -> tuple[bytes, dict[str, str]]:
    head = json.dumps({"inputs": [{"name": "clip", "shape": list(clips.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": clips.nbytes if size is None else size}}],
                       **extra})
    return head.encode() + clips.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


@pytest.mark.parametrize(("make", "words"), [
    (lambda: (b"{not json", {}), "the request's JSON is not readable"),
    (lambda: (b'{"inputs": []}', {}), "one tensor named 'clip'; got []"),
    (lambda: (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}', {}),
     "one tensor named 'clip'; got ['x']"),
    (lambda: (b'{"inputs": [{"name": "clip", "shape": [1, -3], "datatype": "FP32", "data": []}]}', {}),
     "'shape' must be a list of sizes"),
    (lambda: (json.dumps({"inputs": [{"name": "clip", "shape": [1, 3, 8, 112, 112], "datatype": "FP32",
                                      "data": [1.0, 2.0]}]}).encode(), {}), "'data' holds 2 values"),
    (lambda: _binary_request(clips_of(1), size=100), "binary_data_size 100 does not match"),
    (lambda: (_binary_request(clips_of(1))[0], {"Inference-Header-Content-Length": "99999999"}),
     "Inference-Header-Content-Length '99999999' is not a byte count"),
    (lambda: (_binary_request(clips_of(1))[0], {**_binary_request(clips_of(1))[1], "Content-Encoding": "gzip"}),
     "Content-Encoding 'gzip' is not supported"),
    (lambda: _binary_request(np.full((1, 3, 8, 112, 112), np.nan, np.float32)), "NaN"),
    (lambda: _binary_request(np.zeros((0, 3, 8, 112, 112), np.float32)), "no clips (the shape (0, 3, 8, 112, 112)"),
    (lambda: (json.dumps({"inputs": [{"name": "clip", "shape": [1, 3, 8, 112, 112], "datatype": "FP32",
                                      "parameters": [1]}]}).encode(), {}), "'parameters' must be an object"),
    (lambda: _binary_request(clips_of(1), outputs=3), "'outputs' must be a list"),
    (lambda: _binary_request(clips_of(1), outputs=[{"name": "logits"}]), "unknown output {'name': 'logits'}"),
])
def test_malformed_infer_requests_get_400_error_json(live, make, words):  # noqa: F811
    body, headers = make()
    response = _v2(live, body, headers)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"] and "detail" not in response.json()


def test_v2_limits_and_metrics(live):  # noqa: F811
    over = _v2(live, b"\0" * 8_100_000)
    assert over.status_code == 413 and "over the limit of 8000000 bytes" in over.json()["error"]
    missing = httpx.get(f"http://127.0.0.1:{live}/v2/models/{MODEL}/versions/2", timeout=10)
    assert missing.status_code == 404 and "has no version '2'" in missing.json()["error"]
    assert _v2(live, *_binary_request(clips_of(1))).status_code == 200
    text = httpx.get(f"http://127.0.0.1:{live}/metrics", timeout=10).text
    assert re.search(r'^constcl_requests_total\{status="413"\} [1-9]', text, re.M)  # v2 infer counted too


# --- /v1/embeddings without multipart: a .npy body, raw bytes with the shape and dtype in headers -----------

def test_npy_and_raw_bodies_equal_multipart(client, embedder):  # noqa: F811
    clips = clips_of(3, seed=2)
    want = np.array(post(client, "c.npy", npy_bytes(clips)).json()["embeddings"])
    npy = client.post("/v1/embeddings", content=npy_bytes(clips), headers={"content-type": "application/x-npy"})
    raw = client.post("/v1/embeddings", content=clips.tobytes(),
                      headers={"content-type": "application/octet-stream", "x-clips-shape": "3,3,8,112,112"})
    half = client.post("/v1/embeddings", content=clips.astype(np.float16).tobytes(),
                       headers={"x-clips-shape": "3, 3, 8, 112, 112", "x-clips-dtype": "float16"})
    for response in (npy, raw, half):
        assert response.status_code == 200, response.text
        assert response.json()["shape"] == [3, 512] and response.json()["windows"] is None
    np.testing.assert_array_equal(np.array(npy.json()["embeddings"]), want)
    np.testing.assert_array_equal(np.array(raw.json()["embeddings"]), want)
    np.testing.assert_allclose(np.array(half.json()["embeddings"]), want, rtol=0.05, atol=0.02)
    np.testing.assert_allclose(want, embedder.run(clips), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("headers", "body", "status", "words"), [
    ({"x-clips-shape": "1x3x8"}, b"\0" * 16, 400, "X-Clips-Shape must be comma-separated sizes"),
    ({"x-clips-shape": "1,3,8,112,112", "x-clips-dtype": "float99"}, b"\0" * 16, 400, "'float99' is not a dtype"),
    ({"x-clips-shape": "1,3,8,112,112", "x-clips-dtype": "uint8"}, b"\0" * 301056, 422, "clips must be float"),
    ({"x-clips-shape": "1,3,8,112,112"}, b"\0" * 64, 400, "needs 1204224 bytes of data, the body holds 64"),
    ({"x-clips-shape": "9,3,8,112,112"}, b"\0" * 64, 413, "9 clips; the limit is 5"),
    ({"x-clips-shape": "1,3,8,64,64"}, b"\0" * 64, 422, "clips must have shape [B, 3, 8, 112, 112]"),
])
def test_bad_raw_bodies_get_4xx_json(client, headers, body, status, words):  # noqa: F811
    response = client.post("/v1/embeddings", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_stage_metrics_split_a_request(client):  # noqa: F811
    clips = clips_of(1, seed=9)
    assert client.post("/v1/embeddings", content=npy_bytes(clips)).status_code == 200
    text = client.get("/metrics").text
    for stage in ("read", "validate", "queue", "ort", "encode"):
        count = re.search(rf'^constcl_stage_seconds_count\{{stage="{stage}"\}} (\S+)$', text, re.M)
        assert count and float(count.group(1)) >= 1, stage
    for stage in ("validate", "ort", "encode"):
        assert re.search(rf'^constcl_stage_cpu_seconds_sum\{{stage="{stage}"\}} ', text, re.M), stage
    for thread in ("event_loop", "model"):
        cpu = re.search(rf'^constcl_thread_cpu_seconds\{{thread="{thread}"\}} (\S+)$', text, re.M)
        assert cpu and float(cpu.group(1)) > 0, thread


def test_a_request_filling_a_batch_reaches_the_model_without_a_copy():
    import asyncio

    from export.serve import Metrics

    seen = []

    def run(batch: np.ndarray) -> np.ndarray:
        seen.append(batch)
        return batch.reshape(len(batch), -1)[:, :2].copy()  # new outputs, as ORT's (the input may be reused)

    async def scenario(*requests: np.ndarray) -> list[np.ndarray]:
        batcher = MicroBatcher(run, max_batch=4, max_wait_ms=1, metrics=Metrics())
        batcher.start()
        try:
            return [await batcher.submit(clips) for clips in requests]  # one after the other: one batch each
        finally:
            await batcher.stop()

    clips = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
    (out,) = asyncio.run(scenario(clips))
    assert len(seen) == 1 and np.shares_memory(seen[0], clips)  # one request's consecutive clips: a view
    np.testing.assert_array_equal(out, clips[:, :2])

    seen.clear()  # several requests' clips in a batch: copied into the batcher's one buffer, batch after batch
    single = [np.full((1, 6), float(i), np.float32) for i in range(3)]

    async def concurrent() -> list[np.ndarray]:
        batcher = MicroBatcher(run, max_batch=4, max_wait_ms=20, metrics=Metrics())
        batcher.start()
        try:
            first = await asyncio.gather(*(batcher.submit(c) for c in single))
            second = await asyncio.gather(*(batcher.submit(c + 10) for c in single))
            return [*first, *second]
        finally:
            await batcher.stop()

    outs = asyncio.run(concurrent())
    assert [len(batch) for batch in seen] == [3, 3] and np.shares_memory(seen[0], seen[1])
    assert [float(o[0, 0]) for o in outs] == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]


def test_keep_freed_memory_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() is True


def test_readyz_says_whether_ort_spins(embedder):  # noqa: F811
    with TestClient(create_app(embedder, ServeConfig())) as test_client:
        assert test_client.get("/readyz").json()["ort_spinning"] == embedder.spinning


def test_video_as_the_whole_body(client, embedder, tmp_path):  # noqa: F811
    from .test_embed import random_frames, write_video

    path = write_video(tmp_path / "v.avi", random_frames(40, seed=3))
    body = client.post("/v1/embeddings", content=path.read_bytes(), headers={"content-type": "video/x-msvideo"})
    assert body.status_code == 200, body.text
    want = embedder.embed(path)
    assert [w["start_frame"] for w in body.json()["windows"]] == want.start_frame.tolist()
    np.testing.assert_allclose(np.array(body.json()["embeddings"]), want.embeddings.numpy(), rtol=1e-5, atol=1e-6)
