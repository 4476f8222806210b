"""The Gradio demo (``python -m demos``): every tab's API through ``gradio_client`` on real video, readable errors
that leave the app serving, the upload limit, the command line, and an end-to-end run in headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
cv2 = pytest.importorskip("cv2")
av = pytest.importorskip("av")

from gradio_client import Client, handle_file  # noqa: E402

from constcl_zoo import load  # noqa: E402

VTEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "vtest.avi"
BOX = "300,150,60,120"  # x,y,w,h px on vtest's first frame (768x576)
PERSON = (267, 184, 70, 140)  # the pedestrian on the left of vtest's first frame (HOG's box), x,y,w,h px
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MAX_UPLOAD_MB = 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Small random-init checkpoints of the three kinds, and the first 24 / 48 frames of vtest.avi as MP4."""
    if not VTEST.is_file():
        pytest.skip(f"the real test video is missing: {VTEST}")
    from constcl_zoo.inference.video import iter_video_file
    from constcl_zoo.inference.visualize import Mp4Writer

    root = tmp_path_factory.mktemp("demo_assets")
    load("constcl_r3d14_w16", task="tracking", pretrained=False,
         head={"exemplar_size": 63, "search_size": 127}).save_pretrained(root / "tracker")
    load("constcl_r3d14_w16", task="localization", labels=["walk", "stand", "talk"], pretrained=False,
         head={"num_frames": 4, "frame_stride": 2, "short_side": 48}).save_pretrained(root / "localizer")
    load("constcl_r3d14_w16", branch="global", pretrained=False).save_pretrained(root / "encoder")
    for frames, name in ((24, "short.mp4"), (48, "long.mp4")):  # vtest is 10 fps: 2.4 s and 4.8 s
        with Mp4Writer(root / name, fps=10) as writer:
            for i, frame in enumerate(iter_video_file(VTEST)):
                if i == frames:
                    break
                writer.write(frame.rgb)
    return root


@pytest.fixture(scope="module")
def served(assets, tmp_path_factory):
    """The app, in this process, on a free loopback port (GRADIO_TEMP_DIR in the test's folder)."""
    from demos.app import build_app, launch
    from demos.models import Models

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio_tmp")))
        models = Models(tracker=str(assets / "tracker"), localizer=str(assets / "localizer"),
                        encoder=str(assets / "encoder"))
        port = _free_port()
        app = launch(build_app(models), port=port, max_upload_mb=MAX_UPLOAD_MB, block=False)
        try:
            yield Client(f"http://127.0.0.1:{port}/", verbose=False), models
        finally:
            app.close()


def _decode(path) -> tuple[str, int, tuple[int, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        return stream.codec_context.name, len(frames), (frames[0].height, frames[0].width)


def test_tracking_api_real_video(served, assets):
    from constcl_zoo.tasks.tracking import format_boxes, track_video

    client, models = served
    image, box = client.predict(handle_file(assets / "short.mp4"), api_name="/first_frame")
    assert cv2.imread(image).shape == (576, 768, 3) and box == ""

    job = client.submit(handle_file(assets / "short.mp4"), BOX, api_name="/track")
    progress = set()
    while not job.done():
        progress.update((u.desc, u.unit) for u in job.status().progress_data or [])
        time.sleep(0.05)
    video, scores, boxes_file = job.result()
    assert ("tracking", "frames") in progress  # gr.Progress counts the frames as they are tracked
    assert _decode(video) == ("h264", 24, (576, 768))
    frames = [row[0] for row in scores["data"]]
    assert frames == list(range(24)) and scores["data"][0][1] == 1.0
    assert all(0.0 <= row[1] <= 1.0 for row in scores["data"])
    text = Path(boxes_file).read_text()
    assert text.splitlines()[0] == "300.00,150.00,60.00,120.00,1.0000" and len(text.splitlines()) == 24
    # the page's boxes are the package's: the same tracker through the command's code path gives the same file
    with models.use("tracking") as tracker:
        direct = track_video(tracker, assets / "short.mp4", (300, 150, 60, 120))
    assert text == format_boxes(direct.boxes, direct.scores)
    assert [row[1] for row in scores["data"]] == pytest.approx(direct.scores.tolist())


@pytest.mark.parametrize("content, box, message", [
    ("video", "3000,150,60,120", "box (3000,150,60,120) lies outside the 768x576 frame"),
    ("video", "300,150,0,120", "is empty: width and height must be > 0"),
    ("video", "1,2,3", "box '1,2,3': expected x,y,w,h"),
    ("text", BOX, "not-a-video.mp4: cannot open the container"),  # no server folder in front of the name
    ("empty", BOX, "is empty: upload a video file"),
])
def test_bad_input_is_a_readable_error_and_the_app_keeps_serving(served, assets, tmp_path, content, box, message):
    client, _ = served
    video = assets / "short.mp4"
    if content == "text":
        video = tmp_path / "not-a-video.mp4"
        video.write_text("this is not a video\n" * 50)
    elif content == "empty":
        video = tmp_path / "empty.mp4"
        video.write_bytes(b"")
    with pytest.raises(gradio_client.exceptions.AppError) as info:
        client.predict(handle_file(video), box, api_name="/track")
    assert message in str(info.value) and "Traceback" not in str(info.value)
    assert client.predict(handle_file(assets / "short.mp4"), api_name="/first_frame")[1] == ""  # still serving


def test_a_bug_is_one_short_line_too():
    import gradio as gr

    from demos.app import readable_errors

    def broken():
        raise KeyError("boom")

    with pytest.raises(gr.Error, match=r"unexpected error \(KeyError: 'boom'\); the server log has the details"):
        readable_errors(broken)()


def test_oversized_upload_is_refused(served, assets, tmp_path):
    client, _ = served
    big = tmp_path / "big.mp4"
    data = (assets / "long.mp4").read_bytes()
    big.write_bytes(data * (MAX_UPLOAD_MB * 2 ** 20 // len(data) + 1))
    with pytest.raises(Exception, match=r"(?i)file size|too large|exceeds|413"):
        client.predict(handle_file(big), BOX, api_name="/track")
    assert client.predict(handle_file(assets / "short.mp4"), api_name="/first_frame")[1] == ""


def test_localization_api_detector_and_csv(served, assets, tmp_path):
    import json

    client, _ = served
    video, table, results = client.predict(handle_file(assets / "short.mp4"), "HOG detector", None, 1.0, 0.0, False,
                                           api_name="/localize")
    assert _decode(video) == ("h264", 24, (576, 768))
    saved = json.loads(Path(results).read_text())
    assert [k["time_s"] for k in saved["key_frames"]] == [0.5, 1.5] and saved["labels"] == ["walk", "stand", "talk"]
    persons = [(k["time_s"], p) for k in saved["key_frames"] for p in k["persons"]]
    assert persons, "HOG finds the pedestrians of vtest.avi"
    # threshold 0: every person gets its top-3 actions, one table row each, as in the JSON
    expected = [[t, p["track_id"], ", ".join(f"{v:.0f}" for v in p["box_px"]), a["label"], f"{a['score']:.3f}"]
                for t, p in persons for a in p["actions"]]
    assert table["data"] == expected and len(expected) == 3 * len(persons)

    csv = tmp_path / "people.csv"
    csv.write_text("short,1,0.25,0.25,0.5,0.75,,0.9\n")
    _, table, _ = client.predict(handle_file(assets / "short.mp4"), "CSV file", handle_file(csv), 1.0, 0.0, False,
                                 api_name="/localize")
    assert {tuple(row[:3]) for row in table["data"]} == {(1.0, 0, "192, 144, 384, 432")}
    with pytest.raises(gradio_client.exceptions.AppError, match="upload the CSV"):
        client.predict(handle_file(assets / "short.mp4"), "CSV file", None, 1.0, 0.0, False, api_name="/localize")


def test_embeddings_api_safetensors_and_npy(served, assets):
    import torch

    from constcl_zoo.formats.embeddings import check_output, load_embeddings

    client, models = served
    curve, path = client.predict(handle_file(assets / "long.mp4"), ".safetensors", api_name="/embed")
    assert check_output(Path(path))["num_windows"] == "3"  # the `constcl-zoo embed` file format
    tensors = load_embeddings(path)
    emb = tensors["embeddings"]
    assert emb.shape == (3, 512)
    cosine = torch.nn.functional.cosine_similarity(emb[:-1], emb[1:], dim=1)
    assert [row[0] for row in curve["data"]] == pytest.approx(tensors["start_s"][1:].tolist())
    assert [row[1] for row in curve["data"]] == pytest.approx(cosine.tolist(), abs=1e-6)

    _, npy = client.predict(handle_file(assets / "long.mp4"), ".npy", api_name="/embed")
    assert np.array_equal(np.load(npy, allow_pickle=False), emb.numpy())
    assert models.loaded("embedding") is not None  # loaded once, kept


def test_embeddings_of_a_one_window_video(served, assets):
    """24 frames make one window of the 8 x stride 2 encoder: no similarity to plot, the file still comes."""
    from constcl_zoo.formats.embeddings import load_embeddings

    client, _ = served
    curve, path = client.predict(handle_file(assets / "short.mp4"), ".safetensors", api_name="/embed")
    assert curve["data"] == [] and load_embeddings(path)["embeddings"].shape == (1, 512)


def test_uploads_and_results_are_deleted_after_the_cache_age(assets, tmp_path, monkeypatch):
    """launch(cache_max_age_s=2): Gradio's delete_cache removes the uploads, and each request's result folder
    older than the age is removed when the next request makes its own."""
    import demos.app
    from demos.app import build_app, launch
    from demos.models import Models

    monkeypatch.setattr(demos.app, "_cache_max_age_s", demos.app._cache_max_age_s)  # restored after the test
    temp = tmp_path / "gradio_tmp"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))
    port = _free_port()
    app = launch(build_app(Models(encoder=str(assets / "encoder"))), port=port, cache_max_age_s=2, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict(handle_file(assets / "short.mp4"), ".npy", api_name="/embed")
        first = {p for p in temp.rglob("*") if p.is_file()}
        results = [p for p in (temp / "constcl-demo").iterdir()]
        assert any(p.name == "short.mp4" for p in first) and len(results) == 1
        time.sleep(4.5)  # past the age, and past a 2 s delete_cache round
        client.predict(handle_file(assets / "long.mp4"), ".npy", api_name="/embed")  # another file: uploads are
        # stored by content hash, the same file would be stored again at the same path
        assert not results[0].exists()  # the first request's result folder
        assert not [p for p in first if p.exists() and "constcl-demo" not in p.parts]  # its upload and copies
    finally:
        app.close()


def test_prune_older_than_keeps_recent_folders(tmp_path):
    from demos.app import prune_older_than

    old, new, other = (tmp_path / f"{time.time() - 100:.0f}-abc", tmp_path / f"{time.time():.0f}-def",
                       tmp_path / "not-ours")
    for folder in (old, new, other):
        folder.mkdir()
        (folder / "result.npy").write_bytes(b"x")
        os.utime(folder, (time.time() - 1000, time.time() - 1000))  # the mtime does not count
    assert prune_older_than(tmp_path, 50) == 1
    assert not old.exists() and (new / "result.npy").is_file() and other.is_dir()


def test_sample_video_button(served, assets):
    import constcl_zoo

    client, _ = served
    video = client.predict(api_name="/sample")
    assert Path(video).read_bytes() == constcl_zoo.sample_video().read_bytes()


def test_default_models_serve_without_flags(assets, tmp_path):
    """`python -m demos` with no model flags: the package's shipped default tracker, offline."""
    from demos.app import build_app, launch
    from demos.models import Models

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_tmp"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        port = _free_port()
        app = launch(build_app(Models()), port=port, max_upload_mb=MAX_UPLOAD_MB, block=False)
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            result = client.predict(handle_file(assets / "short.mp4"), BOX, api_name="/track")
        finally:
            app.close()
    video, scores, boxes_file = result
    assert _decode(video) == ("h264", 24, (576, 768))
    assert len(scores["data"]) == 24 and len(Path(boxes_file).read_text().splitlines()) == 24


def test_models_resolve_defaults_without_a_name(monkeypatch):
    """An omitted --tracker / --localizer / --model asks the package for its default of that kind."""
    import constcl_zoo
    from demos.models import resolve

    calls = []
    monkeypatch.setattr(constcl_zoo, "load", lambda *args, **kwargs: calls.append((args, kwargs)) or "model")
    assert [resolve(kind, None) for kind in ("tracking", "localization", "embedding")] == ["model"] * 3
    assert calls == [((), {"task": "tracking"}), ((), {"task": "localization"}), ((), {"branch": "global"})]


# -- the command line and the browser ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_server(assets, tmp_path_factory):
    """``python -m demos`` in a subprocess on a free port, as a user starts it: no model flags (the package's
    shipped default models), no network."""
    folder = tmp_path_factory.mktemp("demo_cli")
    port = _free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(folder / "gradio"), "PYTHONPATH": str(Path(__file__).parents[1]),
           "HF_HUB_OFFLINE": "1"}
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "demos", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"python -m demos exited with {proc.returncode}:\n{(folder / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"python -m demos did not answer in 180 s:\n{(folder / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_python_m_demos_serves(cli_server, assets):
    client = Client(cli_server, verbose=False)
    image, _ = client.predict(handle_file(assets / "short.mp4"), api_name="/first_frame")
    assert cv2.imread(image).shape == (576, 768, 3)


def test_readme_and_ci_install_the_demo_extra():
    """The README's install line is .ci/run's (which also installs Chromium for the browser test)."""
    import re

    root = Path(__file__).resolve().parents[1]
    readme = re.search(r'pip install -e "\.\[([a-z,]+)\]"', (root / "README.md").read_text()).group(1)
    ci = (root / ".ci" / "run").read_text()
    assert f'pip install -e ".[{readme}]"' in ci and "demo" in readme.split(",")
    commands = [line for line in ci.splitlines() if not line.lstrip().startswith("#")]
    assert any("apt-get install -y chromium" in line for line in commands)
    assert not any("playwright install" in line for line in commands)  # it would download a browser


def test_cli_refuses_bad_flags():
    result = subprocess.run([sys.executable, "-m", "demos", "--port", "0"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}, timeout=120)
    assert result.returncode == 2 and "expected a positive integer, got '0'" in result.stderr


def test_browser_end_to_end(cli_server, assets, tmp_path):
    """Headless Chromium: upload a real video, mark the target with two clicks, track, and the output video plays."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(cli_server)
            page.locator("#track-video input[type=file]").set_input_files(str(assets / "short.mp4"))
            frame = page.locator("#track-frame img")
            frame.wait_for(timeout=60_000)
            page.wait_for_function("() => { const i = document.querySelector('#track-frame img');"
                                   " return i && i.complete && i.naturalWidth > 0 }", timeout=60_000)
            # two clicks on opposite corners of the target fill in the box (x,y,w,h in the frame's pixels)
            rect = frame.bounding_box()
            scale = rect["width"] / 768
            x0, y0, w0, h0 = PERSON
            frame.click(position={"x": x0 * scale, "y": y0 * scale})
            frame.click(position={"x": (x0 + w0) * scale, "y": (y0 + h0) * scale})
            box = page.locator("#track-box textarea, #track-box input").first
            page.wait_for_function("() => { const b = document.querySelector('#track-box textarea, #track-box input');"
                                   " return b && b.value.split(',').length === 4 }", timeout=30_000)
            x, y, w, h = (float(v) for v in box.input_value().split(","))
            assert np.allclose([x, y, w, h], PERSON, atol=3)  # the page's pixels -> the frame's pixels
            page.locator("#track-run").click()
            page.wait_for_function("() => { const v = document.querySelector('#track-out video');"
                                   " return v && v.readyState >= 1 && v.duration > 0 }", timeout=300_000)
            duration = page.evaluate("() => document.querySelector('#track-out video').duration")
            assert duration == pytest.approx(2.4, abs=0.15)
            played = page.evaluate("""async () => {
                const v = document.querySelector('#track-out video');
                v.muted = true; await v.play();
                await new Promise(r => setTimeout(r, 800));
                return v.currentTime; }""")
            assert played > 0
            page.evaluate("() => { const v = document.querySelector('#track-out video'); v.pause();"
                          " v.currentTime = 1.2 }")
            page.wait_for_timeout(500)
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("CONSTCL_ZOO_SCREENSHOT_DIR"):  # e.g. docs/images: the screenshot in docs/quickstart.md
        from PIL import Image

        target = Path(os.environ["CONSTCL_ZOO_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        Image.open(shot).convert("RGB").quantize(256).save(target / "demo.png", optimize=True)  # a third the size
