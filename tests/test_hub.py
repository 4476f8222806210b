"""``load("hf-hub:...")`` against a real Hub-compatible server (olah) on 127.0.0.1, then offline from the cache.

``huggingface_hub`` reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` when it is imported, so every load runs in a
fresh interpreter with the environment a user would set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from constcl_zoo import load
from constcl_zoo.checkpoint import sha256_of

from .conftest import TINY, tiny_clip
from .hub_server import OlahServer, commit_folder

pytestmark = pytest.mark.slow  # a real Hub-compatible server (olah) and subprocess loads

_RUNNER = textwrap.dedent("""
    import json, sys, torch
    from constcl_zoo import PretrainedWeights, load, register_weights
    spec = json.loads(sys.argv[1])
    for entry in spec.get("register", []):
        register_weights(PretrainedWeights(**entry))
    clip = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    results = []
    for name, kwargs in spec["loads"]:
        try:
            with torch.no_grad():
                results.append({"out": load(name, **kwargs)(clip)[0, :8].tolist()})
        except Exception as exc:
            results.append({"error": type(exc).__name__, "message": str(exc)})
    print("RESULT " + json.dumps(results))
""")


def _fingerprint(folder: Path) -> list[float]:
    with torch.no_grad():
        return load(folder)(tiny_clip(1, seed=0))[0, :8].tolist()


def _run(loads: list, env: dict[str, str], register: list | None = None) -> list[dict]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps({"loads": loads, "register": register or []})],
                          capture_output=True, text=True, env=full_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    server = OlahServer(root / "olah")
    a = load(TINY, branch="full", pretrained=False, seed=1).save_pretrained(root / "ckpt_a")
    b = load(TINY, branch="full", pretrained=False, seed=2).save_pretrained(root / "ckpt_b")
    sha_v1 = commit_folder(server.repo("org/tiny"), a, "v1", tag="v1")
    commit_folder(server.repo("org/tiny"), b, "v2")
    # a third-party style repo: config.json without the weights digest
    bare = root / "bare"
    bare.mkdir()
    (bare / "model.safetensors").write_bytes((a / "model.safetensors").read_bytes())
    cfg = json.loads((a / "config.json").read_text())
    del cfg["weights"]
    (bare / "config.json").write_text(json.dumps(cfg))
    commit_folder(server.repo("org/nodigest"), bare, "v1", tag="v1")
    server.start(probe_repo="org/tiny")
    yield {"server": server, "a": _fingerprint(a), "b": _fingerprint(b), "sha_v1": sha_v1,
           "weights_sha": sha256_of(a / "model.safetensors"), "cache": str(root / "cache")}
    server.stop()


def _close(x: dict, ref: list[float]) -> bool:
    return "out" in x and torch.allclose(torch.tensor(x["out"]), torch.tensor(ref), rtol=0, atol=1e-6)


def test_hub_download_revisions_then_offline_cache(hub):
    online = {"HF_ENDPOINT": hub["server"].url, "HF_HUB_CACHE": hub["cache"]}
    r = _run([["hf-hub:org/tiny@v1", {}],
              ["hf-hub:org/tiny", {}],
              ["hf-hub:org/tiny", {"revision": hub["sha_v1"]}],
              ["hf-hub:org/tiny", {"revision": "v1", "branch": "region"}],
              ["hf-hub:org/tiny@nope", {}],
              ["hf-hub:org/tiny@v1", {"revision": "main"}],
              ["hf-hub:org/missing", {}]], online)
    assert _close(r[0], hub["a"]) and _close(r[2], hub["a"]), r[:3]
    assert _close(r[1], hub["b"]) and not _close(r[1], hub["a"])
    assert "out" in r[3]
    assert r[4]["error"] == "HubError", r[4]
    # olah answers "repository not found" for an unknown revision (the Hub says "revision not found")
    assert r[4]["message"].startswith("hf-hub:org/tiny@nope: repository not found at ")
    assert "(or it has no revision 'nope'): check the name and revision" in r[4]["message"], r[4]
    assert r[5]["error"] == "HubNameError" and "pins revision 'v1'" in r[5]["message"]  # a HubError and ValueError
    assert r[6]["error"] == "HubError", r[6]
    assert r[6]["message"].startswith("hf-hub:org/missing: repository not found at ") and "hf login" in r[6]["message"]

    # Pre-filled cache, offline, and the endpoint dead: branch, tag and sha still resolve.
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": hub["cache"]}
    r = _run([["hf-hub:org/tiny@v1", {}], ["hf-hub:org/tiny", {}],
              [f"hf-hub:org/tiny@{hub['sha_v1']}", {}], ["hf-hub:org/never-downloaded", {}]], offline)
    assert _close(r[0], hub["a"]) and _close(r[2], hub["a"]) and _close(r[1], hub["b"]), r
    assert r[3]["error"] == "HubError" and "not in the local Hub cache" in r[3]["message"]
    assert "set HF_HUB_OFFLINE=0 with network access" in r[3]["message"]

    # Online, but the Hub cannot be reached and nothing is cached: the message says so, not "offline mode".
    dead = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(Path(hub["cache"]).parent / "empty-cache")}
    (r,) = _run([["hf-hub:org/tiny@v1", {}]], dead)
    assert r["error"] == "HubError" and "the Hub at http://127.0.0.1:9 cannot be reached" in r["message"], r
    assert "check the network connection" in r["message"]


def test_registry_sha256_is_verified_after_download(hub, tmp_path):
    cache = str(tmp_path / "cache")
    online = {"HF_ENDPOINT": hub["server"].url, "HF_HUB_CACHE": cache}
    good = {"name": f"{TINY}.hubtest", "hf_hub_id": "org/nodigest", "revision": "v1", "sha256": hub["weights_sha"]}
    bad = {**good, "name": f"{TINY}.wrongsha", "sha256": "0" * 64}
    r = _run([[f"{TINY}.hubtest", {}], [f"{TINY}.wrongsha", {}]], online, register=[good, bad])
    assert _close(r[0], hub["a"]), r[0]
    assert r[1]["error"] == "ChecksumError" and "registry entry" in r[1]["message"]

    # Corrupt the cached blob (same size, one bit flipped): huggingface_hub returns it silently, we refuse it.
    blobs = list(Path(cache).glob("models--org--nodigest/snapshots/*/model.safetensors"))
    assert len(blobs) == 1
    blob = blobs[0].resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 0x10
    blob.write_bytes(bytes(data))
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": cache}
    r = _run([[f"{TINY}.hubtest", {}], ["hf-hub:org/nodigest@v1", {}]], offline, register=[good])
    assert r[0]["error"] == "ChecksumError" and "does not match" in r[0]["message"], r[0]
    # without a known digest the corruption cannot be detected: the registry's digest is what protects users
    assert "out" in r[1]
