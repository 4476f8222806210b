"""``constcl-zoo embed``: files, folders, manifests; output format; resume; sharding; failures."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch

from constcl_zoo import GlobalEncoder, load
from constcl_zoo.cli import main
from constcl_zoo.formats.embeddings import load_embeddings, read_metadata
from constcl_zoo.workflows.embed_run import collect_jobs

from .conftest import TINY
from .test_embed import random_frames, write_video

ARGS = ["--model", TINY, "--random-init", "--seed", "1", "--precision", "fp32", "--no-progress", "--batch-size", "4"]


@pytest.fixture()
def videos(tmp_path):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    write_video(folder / "a.avi", random_frames(33, seed=1))
    write_video(folder / "sub" / "b.avi", random_frames(20, seed=2))
    write_video(folder / "sub" / "c.avi", random_frames(16, seed=3))
    (folder / "notes.txt").write_text("not a video\n")  # ignored inside a folder: only video extensions
    return folder


def test_console_script_is_declared():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "constcl-zoo"]
    assert script.value == "constcl_zoo.cli:main"


def test_embed_folder_writes_documented_format_and_index(videos, tmp_path):
    out = tmp_path / "out"
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.safetensors"))
    assert files == ["a.avi.safetensors", "sub/b.avi.safetensors", "sub/c.avi.safetensors"]
    data = load_embeddings(out / "a.avi.safetensors")
    assert set(data) == {"embeddings", "start_s", "end_s", "start_frame", "end_frame"}
    model = load(TINY, pretrained=False, seed=1)
    ref = model.embed(videos / "a.avi", precision="fp32")
    torch.testing.assert_close(data["embeddings"], ref.embeddings)
    assert data["start_frame"].tolist() == [0, 16] and data["end_s"].dtype == torch.float64
    np.testing.assert_allclose(data["end_s"].numpy(), ref.end_s)
    meta = read_metadata(out / "a.avi.safetensors")
    assert meta["num_frames"] == "33" and meta["branch"] == "global" and meta["source"] == str(videos / "a.avi")
    index = json.loads((out / "index.json").read_text())
    assert [v["file"] for v in index["videos"]] == files and index["failed"] == []
    assert not list(out.rglob(".*tmp*"))  # no temporary files left behind


def test_rerun_skips_finished_files(videos, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 0
    (out / "sub" / "b.avi.safetensors").unlink()  # as if the first run died before this one
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    calls = []
    original = GlobalEncoder.embed
    monkeypatch.setattr(GlobalEncoder, "embed", lambda self, video, **kw: calls.append(video) or
                        original(self, video, **kw))
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 0
    assert calls == [videos / "sub" / "b.avi"]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert len(json.loads((out / "index.json").read_text())["videos"]) == 3
    assert "3 video(s) done (2 skipped as already done, 1 embedded)" in capsys.readouterr().err
    # different window settings on the same folder: refused before any work; files and index untouched
    index_before = (out / "index.json").read_bytes()
    assert main(["embed", str(videos), "--out", str(out), *ARGS, "--stride", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "other settings" in err and "stride='16' (this run: '8')" in err and "--overwrite" in err
    assert (out / "index.json").read_bytes() == index_before
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_sharding_by_torchrun_env(videos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shares = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 0
        index = json.loads((out / f"index-rank{rank:05d}-of-00002.json").read_text())
        shares.append({v["file"] for v in index["videos"]})
    assert shares[0].isdisjoint(shares[1])
    assert shares[0] | shares[1] == {"a.avi.safetensors", "sub/b.avi.safetensors", "sub/c.avi.safetensors"}
    monkeypatch.setenv("RANK", "2")
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 2  # RANK >= WORLD_SIZE


def test_bad_videos_are_reported_and_the_rest_finish(videos, tmp_path, capsys):
    (videos / "broken.mp4").write_bytes(b"\x00" * 3000)
    write_video(videos / "short.avi", random_frames(5))
    out = tmp_path / "out"
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 1
    index = json.loads((out / "index.json").read_text())
    assert len(index["videos"]) == 3
    errors = {f["source"].rsplit("/", 1)[1]: f["error"] for f in index["failed"]}
    assert errors.keys() == {"broken.mp4", "short.avi"}
    assert "VideoDecodeError" in errors["broken.mp4"] and "5 decoded frame(s)" in errors["short.avi"]
    assert "FAILED" in capsys.readouterr().err


def test_manifest_inputs_and_name_clashes(videos, tmp_path, capsys):
    manifest = videos / "list.txt"
    manifest.write_text("# clips\na.avi\n\nsub/b.avi\n")
    jobs = collect_jobs([manifest])
    assert [(j.name, j.source) for j in jobs] == [("a.avi", videos / "a.avi"), ("sub/b.avi", videos / "sub" / "b.avi")]
    other = tmp_path / "other"
    other.mkdir()
    write_video(other / "a.avi", random_frames(16))
    with pytest.raises(ValueError, match="several inputs map to the same output name: a.avi"):
        collect_jobs([videos / "a.avi", other / "a.avi"])
    (videos / "bad.txt").write_text("missing.avi\n")
    assert main(["embed", str(videos / "bad.txt"), "--out", str(tmp_path / "o"), *ARGS]) == 2
    assert "bad.txt, line 1: no video file at" in capsys.readouterr().err


def test_version_flag(capsys) -> None:
    import constcl_zoo

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"constcl-zoo {constcl_zoo.__version__}"


def test_decoder_errors_say_what_without_the_errno(tmp_path, capsys) -> None:
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"garbage data, not a video")
    assert main(["embed", str(bad), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "not_a_video.mp4: cannot open the container (Invalid data found when processing input)" in err
    assert "Errno" not in err


def test_no_half_drawn_progress_bar_in_front_of_a_failure(tmp_path, capsys) -> None:
    """What a terminal shows of each stderr line (the text after its last carriage return): the failure line
    starts with the command's name, the progress bar was cleared before it."""
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"garbage data, not a video")
    main(["embed", str(bad), "--out", str(tmp_path / "out")])
    shown = [line.split("\r")[-1] for line in capsys.readouterr().err.split("\n")]
    failed = [line for line in shown if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith("constcl-zoo embed: FAILED"), shown


def test_runner_flag_and_its_deprecated_spelling(videos, tmp_path, capsys) -> None:
    """``--runner local|ray`` says what embeds the videos (``index.json`` records it); ``--engine`` still works,
    hidden from ``--help``, with one line on stderr naming its replacement; spellings that disagree are refused."""
    out = tmp_path / "out"
    assert main(["embed", str(videos), "--out", str(out), *ARGS, "--runner", "local"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert json.loads((out / "index.json").read_text())["runner"] == "local"
    assert main(["embed", str(videos), "--out", str(out), *ARGS, "--engine", "local"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "constcl-zoo embed: warning: --engine is deprecated; use --runner local"
    assert "3 video(s) done (3 skipped as already done" in err  # the same run as --runner local
    assert main(["embed", str(videos), "--out", str(out), *ARGS, "--engine", "ray", "--runner", "local"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("constcl-zoo embed: error: --engine and --runner local "
                                                        "disagree: give one --runner")
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    help_text = capsys.readouterr().out
    assert "--runner {local,ray}" in help_text and "--engine" not in help_text


def test_embed_run_engine_keyword_and_old_indexes_still_read(tmp_path) -> None:
    """The Python names renamed with the flag keep working, with a DeprecationWarning: ``EmbedRun(engine=)`` and
    ``.engine``, ``embed_ray.EngineError``; an index written with the old key ``engine`` reads with ``runner``."""
    from constcl_zoo.formats.embeddings import FORMAT, read_index
    from constcl_zoo.workflows import embed_ray
    from constcl_zoo.workflows.embed_run import EmbedRun, Setup

    setup = Setup(jobs=[], out_dir=tmp_path, rank=0, world_size=1, model=None, spec=None, spec_meta={}, device="cpu")
    assert EmbedRun(setup, overwrite=False, runner="ray").runner == "ray"
    with pytest.warns(DeprecationWarning, match=r"EmbedRun\(engine=\.\.\.\) is deprecated"):
        run = EmbedRun(setup, overwrite=False, engine="ray")
    assert run.runner == "ray"
    with pytest.warns(DeprecationWarning, match="EmbedRun.engine is deprecated"):
        assert run.engine == "ray"
    with pytest.warns(DeprecationWarning, match="EngineError is deprecated: use RunnerError"):
        assert embed_ray.EngineError is embed_ray.RunnerError
    old = tmp_path / "index.json"
    old.write_text(json.dumps({"format": FORMAT, "engine": "ray", "videos": [], "failed": []}))
    assert read_index(old)["runner"] == "ray"
