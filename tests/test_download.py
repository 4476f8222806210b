"""``load("cvrl_r3d50.k600_800ep")`` downloads the official tarball itself, against a local HTTP server.

The server (``http.server`` on 127.0.0.1, in a thread) serves a fixture tarball in the published layout
(``r3d_1x_k600_800ep/r3d_1x_k600_800ep_backbone-1.*``, a TF2 checkpoint written by ``tests/tf_bundle.py``, small
``r3d14_w16`` shapes), answers ``Range`` requests with 206 and can cut its first response short. The registry entry
is pointed at it with ``register_weights(..., overwrite=True)`` and restored afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from constcl_zoo import ChecksumError, ConstclZooError, WeightsNotAvailableError, load, register_weights
from constcl_zoo.checkpoint import sha256_of
from constcl_zoo.download import DownloadError
from constcl_zoo.registry import weights_entry
from constcl_zoo.tf_checkpoint import TFCheckpoint

from .conftest import tiny_clip
from .tf_bundle import write_cvrl_tarball, write_tf_checkpoint

NAME = "cvrl_r3d50.k600_800ep"
FILE = "r3d_1x_k600_800ep.tar.gz"


class _Server:
    """Serves ``files`` (URL path -> bytes); records (path, Range header) of every GET; ``cut_next`` makes the next
    response announce the full length but send only that many bytes and close."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requests, self.cut_next = files, [], None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut_next is not None:
                    body, server.cut_next = body[:server.cut_next], None
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def fixture_tarball(tmp_path_factory) -> Path:
    return write_cvrl_tarball(tmp_path_factory.mktemp("tarball") / FILE)


@pytest.fixture()
def server(fixture_tarball):
    s = _Server({f"/cvrl/{FILE}": fixture_tarball.read_bytes()})
    yield s
    s.stop()


@pytest.fixture()
def point_entry_at():
    """``point_entry_at(url, sha)``: the real registry entry with another URL (and known tarball digest)."""
    original = weights_entry(NAME)

    def point(url: str, sha256: str | None = None) -> None:
        register_weights(dataclasses.replace(original, source_url=url, source_sha256=sha256), overwrite=True)

    yield point
    register_weights(original, overwrite=True)


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "CONSTCL_ZOO_OFFLINE", "CONSTCL_ZOO_CACHE"):
        monkeypatch.delenv(var, raising=False)


def _out(model) -> torch.Tensor:
    with torch.no_grad():
        return model(tiny_clip(1, size=64))


def test_writer_makes_checkpoints_tensorflow_reads(tmp_path):
    """The fixture writer is checked against TensorFlow itself (the parity venv)."""
    from .test_parity_cvrl import TF_PYTHON, _require_tf

    values = {"a/.ATTRIBUTES/VARIABLE_VALUE": np.arange(6, dtype=np.float32).reshape(2, 3),
              "b/kernel/.ATTRIBUTES/VARIABLE_VALUE": np.linspace(-1, 1, 24, dtype=np.float32).reshape(1, 2, 3, 4)}
    prefix = write_tf_checkpoint(tmp_path / "ckpt", values)
    ours = TFCheckpoint(prefix)
    for key, value in values.items():
        np.testing.assert_array_equal(ours.read(key), value)
    _require_tf()
    script = ("import sys, json, tensorflow as tf; r = tf.train.load_checkpoint(sys.argv[1]); "
              "print(json.dumps({k: r.get_tensor(k).tolist() for k in r.get_variable_to_shape_map()}))")
    proc = subprocess.run([str(TF_PYTHON), "-c", script, str(prefix)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    read = json.loads(proc.stdout.strip().splitlines()[-1])
    assert read.keys() == values.keys()
    for key, value in values.items():
        np.testing.assert_array_equal(np.array(read[key], np.float32), value)


def test_first_load_downloads_and_converts_then_loads_offline(server, point_entry_at, fixture_tarball, tmp_path,
                                                              monkeypatch, capfd):
    url = f"{server.url}/cvrl/{FILE}"
    sha = sha256_of(fixture_tarball)
    point_entry_at(url, sha)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CONSTCL_ZOO_CACHE", str(cache))  # the env var is honoured like cache_dir=
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub's bars show on a terminal; this forces them here
    first = load(NAME)
    assert server.requests == [(f"/cvrl/{FILE}", None)]
    assert re.search(rf"{re.escape(FILE)}: 100%.*2\.\d+M/2\.\d+M", capfd.readouterr().err)  # the progress bar
    folder = cache / "converted" / NAME
    provenance = json.loads((folder / "config.json").read_text())["provenance"]
    assert provenance["converted_from"] == url and provenance["name"] == NAME
    assert provenance["source_sha256"] == sha and provenance["source_size"] == fixture_tarball.stat().st_size
    card = (folder / "README.md").read_text()
    assert f"sha256 {sha}" in card and f"Size: {fixture_tarball.stat().st_size} bytes" in card and url in card
    # the tarball is not kept once converted
    assert not (cache / "downloads" / FILE).exists() and not (cache / "downloads" / f"{FILE}.part").exists()
    # the same numbers as converting the fixture by hand
    by_hand = load(fixture_tarball, cache_dir=tmp_path / "other")
    assert torch.equal(_out(first), _out(by_hand))

    monkeypatch.setenv("CONSTCL_ZOO_OFFLINE", "1")
    again = load("cvrl_r3d50")  # the architecture's explicit default, from the converted cache, no request
    assert len(server.requests) == 1
    assert torch.equal(_out(again), _out(first))


def test_restarted_download_resumes_with_range(server, point_entry_at, fixture_tarball, tmp_path):
    url = f"{server.url}/cvrl/{FILE}"
    point_entry_at(url, sha256_of(fixture_tarball))
    data = fixture_tarball.read_bytes()
    part = tmp_path / "downloads" / f"{FILE}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])  # what an earlier, killed process left
    load(NAME, cache_dir=tmp_path)
    assert server.requests == [(f"/cvrl/{FILE}", "bytes=1000-")]
    provenance = json.loads((tmp_path / "converted" / NAME / "config.json").read_text())["provenance"]
    assert provenance["source_sha256"] == sha256_of(fixture_tarball)


def test_connection_cut_mid_download_resumes_from_the_received_bytes(point_entry_at, tmp_path_factory, tmp_path):
    """huggingface_hub's ``http_get`` retries a dropped connection with ``Range`` after the bytes it has written;
    it writes in 10 MiB chunks, so this fixture is larger (width 40, ~14 MB) and the cut comes after 11 MiB."""
    big = write_cvrl_tarball(tmp_path_factory.mktemp("big") / FILE, seed=1, width=40)
    assert big.stat().st_size > 12 << 20
    server = _Server({f"/cvrl/{FILE}": big.read_bytes()})
    try:
        point_entry_at(f"{server.url}/cvrl/{FILE}")  # no known digest: the recorded one must still be the file's
        server.cut_next = 11 << 20
        load(NAME, cache_dir=tmp_path)
    finally:
        server.stop()
    assert server.requests == [(f"/cvrl/{FILE}", None), (f"/cvrl/{FILE}", f"bytes={10 << 20}-")]
    provenance = json.loads((tmp_path / "converted" / NAME / "config.json").read_text())["provenance"]
    assert provenance["source_sha256"] == sha256_of(big)


def test_wrong_registered_sha256_deletes_the_download(server, point_entry_at, tmp_path):
    point_entry_at(f"{server.url}/cvrl/{FILE}", "0" * 64)
    with pytest.raises(ChecksumError, match="but the registry expects 0000"):
        load(NAME, cache_dir=tmp_path)
    assert list((tmp_path / "downloads").iterdir()) in ([], [tmp_path / "downloads" / f"{FILE}.lock"])
    assert not (tmp_path / "converted" / NAME).exists()


def test_known_sha256_is_checked_for_a_tarball_loaded_by_path(point_entry_at, fixture_tarball, tmp_path):
    point_entry_at(f"http://127.0.0.1:9/cvrl/{FILE}", "0" * 64)  # the entry published as this file name
    with pytest.raises(ChecksumError, match=f"recorded by the registry entry '{NAME}'"):
        load(fixture_tarball, cache_dir=tmp_path)
    assert not (tmp_path / "converted" / NAME).exists()


def test_offline_or_unreachable_says_what_to_download(server, point_entry_at, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="revision= applies to Hub checkpoints"):
        load(NAME, cache_dir=tmp_path, revision="v1")
    with pytest.raises(DownloadError) as err:
        load(NAME, cache_dir=tmp_path)
    assert isinstance(err.value, WeightsNotAvailableError | ConstclZooError)
    msg = str(err.value)
    assert "downloads are off" in msg and f"https://storage.googleapis.com/tf_model_garden/vision/cvrl/{FILE}" in msg
    assert str(tmp_path / "downloads" / FILE) in msg  # where to put it
    assert f"python -m training convert-tf /path/to/{FILE} --out DIR" in msg
    monkeypatch.delenv("HF_HUB_OFFLINE")

    point_entry_at("http://127.0.0.1:9/cvrl/" + FILE)  # nothing listens there
    with pytest.raises(DownloadError, match=f"could not download http://127.0.0.1:9/cvrl/{FILE}"):
        load(NAME, cache_dir=tmp_path)
    point_entry_at(f"{server.url}/missing/{FILE}")
    with pytest.raises(DownloadError, match="404"):
        load(NAME, cache_dir=tmp_path)
    assert server.requests == [(f"/missing/{FILE}", None)]
