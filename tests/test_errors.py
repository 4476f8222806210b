"""The errors a user sees: one line and exit status 2 from every command, ``--debug`` for the traceback, fixes
spelled for the place they are read (a CLI flag or a Python keyword), and files written with the umask's
permissions."""

from __future__ import annotations

import errno
import importlib
import importlib.metadata
import inspect
import json
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RevisionNotFoundError

import constcl_zoo
import export
from constcl_zoo import ConstclZooError, WeightsNotAvailableError, load
from constcl_zoo.cli import main
from constcl_zoo.errors import EXTRAS, run_command
from constcl_zoo.fileio import atomic_write
from constcl_zoo.formats import embeddings as embed_cli
from constcl_zoo.hub import HubError, download_checkpoint
from constcl_zoo.inference.video import ManifestError, read_manifest
from export.__main__ import main as export_main

from .conftest import TINY
from .test_embed import random_frames, write_video

ARGS = ["--model", TINY, "--random-init", "--seed", "1", "--precision", "fp32", "--no-progress", "--batch-size", "4"]


@pytest.fixture()
def videos(tmp_path):
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    write_video(folder / "a.avi", random_frames(16, seed=1))
    write_video(folder / "sub" / "b.avi", random_frames(16, seed=2))
    write_video(folder / "sub" / "c.avi", random_frames(16, seed=3))
    return folder


def one_line_error(capsys, *needles: str) -> str:
    """The stderr of a command that failed with a user error: one line, no traceback, naming ``needles``."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and ": error: " in lines[0], err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


def no_model_load(monkeypatch):
    """Fail the test if the command gets as far as loading a model (checks must come before any work)."""
    def refuse(*args, **kwargs):
        raise AssertionError("load() was called: the error should have been raised before any work")
    monkeypatch.setattr("constcl_zoo._factory.load", refuse)


# -- the error classes -------------------------------------------------------------------------------------------
def _package_modules():
    for package in (constcl_zoo, export):
        yield package
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name not in ("constcl_zoo.__main__", "export.__main__"):
                yield importlib.import_module(info.name)


def test_every_error_class_of_the_packages_derives_from_the_base():
    errors = [cls for module in _package_modules() for _, cls in inspect.getmembers(module, inspect.isclass)
              if issubclass(cls, BaseException) and cls.__module__ == module.__name__]
    assert len(errors) >= 10
    assert [c.__name__ for c in errors if not issubclass(c, ConstclZooError)] == []


def test_a_fix_is_spelled_for_python_or_for_the_command_line():
    with pytest.raises(WeightsNotAvailableError) as err:
        load("constcl_r3d50")
    assert "Use pretrained=False for a random init" in str(err.value) and "--random-init" not in str(err.value)
    assert "Use --random-init for a random init" in err.value.describe({"random_init": "--random-init"})
    # a message that names no fix is untouched; KeyError-based errors print without quotes
    with pytest.raises(KeyError) as unknown:
        load("constcl_r3d5")
    assert str(unknown.value).startswith("unknown model 'constcl_r3d5'") and "Did you mean 'constcl_r3d50'" in str(
        unknown.value)


def test_extras_named_by_missing_dependencies_exist_in_the_package_metadata():
    requires = importlib.metadata.requires("constcl-zoo") or []
    for module, extra in EXTRAS.items():  # the extra exists and lists a distribution for the module
        names = " ".join(r for r in requires if f'extra == "{extra}"' in r).lower().replace("-", "_")
        assert {"cv2": "opencv", "skimage": "scikit_image", "multipart": "python_multipart"}.get(
            module, module) in names, (module, extra)


# -- constcl-zoo embed: one line, exit 2 -------------------------------------------------------------------------
def test_embed_model_without_weights_names_the_flag(videos, tmp_path, capsys):
    assert main(["embed", str(videos), "--out", str(tmp_path / "o"), "--model", "constcl_r3d50"]) == 2
    line = one_line_error(capsys, "'constcl_r3d50' has no published weights", "Use --random-init")
    assert "pretrained=False" not in line


def test_embed_unknown_model_and_bad_flags(videos, tmp_path, capsys):
    assert main(["embed", str(videos), "--out", str(tmp_path / "o"), "--model", "constcl_r3d5"]) == 2
    one_line_error(capsys, "unknown model 'constcl_r3d5'", "Did you mean")
    with pytest.raises(SystemExit) as exit_:
        main(["embed", str(videos), "--out", str(tmp_path / "o"), *ARGS, "--batch-size", "0"])
    assert exit_.value.code == 2 and "expected a positive integer, got '0'" in capsys.readouterr().err
    assert main(["embed", str(videos), "--out", str(tmp_path / "o"), *ARGS, "--device", "cuda:0"]) == (
        0 if torch.cuda.is_available() else 2)
    if not torch.cuda.is_available():
        one_line_error(capsys, "--device cuda:0: CUDA is not available here; use --device cpu")


def test_embed_checksum_and_key_mismatches(videos, tmp_path, capsys, tiny_checkpoint):
    tampered = Path(shutil.copytree(tiny_checkpoint, tmp_path / "tampered"))
    data = bytearray((tampered / "model.safetensors").read_bytes())
    data[-5] ^= 0x01
    (tampered / "model.safetensors").write_bytes(bytes(data))
    assert main(["embed", str(videos), "--out", str(tmp_path / "o"), "--model", str(tampered)]) == 2
    one_line_error(capsys, "sha256", "does not match", "download or save it again")

    other = load("cvrl_r3d14_w16", branch="full", pretrained=False).save_pretrained(tmp_path / "cvrl")
    mixed = Path(shutil.copytree(tiny_checkpoint, tmp_path / "mixed"))
    shutil.copy(other / "model.safetensors", mixed / "model.safetensors")
    cfg = json.loads((mixed / "config.json").read_text())
    cfg.pop("weights")  # no digest: the key check is what refuses it
    (mixed / "config.json").write_text(json.dumps(cfg))
    assert main(["embed", str(videos), "--out", str(tmp_path / "o"), "--model", str(mixed)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith("constcl-zoo embed: error: ") and "does not match architecture" in first
    assert "load it with the config.json it was saved with" in first and "unexpected keys (3)" in err


def test_embed_unusable_output_folder_is_refused_before_any_work(videos, tmp_path, capsys, monkeypatch):
    no_model_load(monkeypatch)
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert main(["embed", str(videos), "--out", str(a_file), *ARGS]) == 2
    one_line_error(capsys, f"--out {a_file}: {a_file} is a file, not a folder")
    assert main(["embed", str(videos), "--out", str(a_file / "deeper"), *ARGS]) == 2
    one_line_error(capsys, f"{a_file} is a file, not a folder")

    def no_permission(*args, **kwargs):  # the tests run as root, which chmod cannot stop
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("constcl_zoo.fileio.tempfile.mkstemp", no_permission)
    assert main(["embed", str(videos), "--out", str(tmp_path / "ro"), *ARGS]) == 2
    one_line_error(capsys, "cannot write in this folder (Permission denied)", "fix its permissions")


def test_embed_missing_optional_dependency_names_the_extra(videos, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    assert main(["embed", str(videos), "--out", str(tmp_path / "o"), *ARGS]) == 2
    one_line_error(capsys, "'av'", "pip install 'constcl-zoo[video]'")


def test_debug_flag_and_environment_show_the_traceback(videos, tmp_path, monkeypatch):
    args = ["embed", str(videos), "--out", str(tmp_path / "o"), "--model", "constcl_r3d50"]
    with pytest.raises(WeightsNotAvailableError):
        main([*args, "--debug"])
    monkeypatch.setenv("CONSTCL_ZOO_DEBUG", "1")
    with pytest.raises(WeightsNotAvailableError):
        main(args)


def test_console_command_end_to_end_hub_error_and_debug(tmp_path):
    """A real process: the Hub offline with nothing cached -> one line naming repo and fix, exit 2; --debug: a
    traceback."""
    video = tmp_path / "v.avi"
    write_video(video, random_frames(16))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "cache"), HF_ENDPOINT="http://127.0.0.1:9")
    cmd = [sys.executable, "-m", "constcl_zoo", "embed", str(video), "--out", str(tmp_path / "o"),
           "--model", "hf-hub:org/never-cached@v1", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "hf-hub:org/never-cached@v1" in proc.stderr and "HF_HUB_OFFLINE=0" in proc.stderr
    proc = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "HubError" in proc.stderr


# -- python -m export ----------------------------------------------------------------------------------------------
def test_export_commands_answer_in_one_line(tmp_path, capsys, monkeypatch):
    for command in (["onnx", "constcl_r3d50", "--out", str(tmp_path / "m.onnx")],
                    ["triton", "constcl_r3d50", "--out", str(tmp_path / "repo")],
                    ["serve", "constcl_r3d50"]):
        assert export_main(command) == 2, command
        line = one_line_error(capsys, "has no published weights", "Use --random-init")
        assert "pretrained=False" not in line
    assert export_main(["onnx", TINY, "--random-init", "--with-rois", "--out", str(tmp_path / "m.onnx")]) == 2
    one_line_error(capsys, "--with-rois needs --branch region")
    assert export_main(["serve", str(tmp_path / "missing.onnx")]) == 2
    one_line_error(capsys, "no ONNX file at", "python -m export onnx")

    no_model_load(monkeypatch)
    monkeypatch.setattr("export.onnx.load", constcl_zoo._factory.load)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert export_main(["onnx", TINY, "--random-init", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, f"--out {tmp_path}: is a folder; give a file name")
    assert export_main(["onnx", TINY, "--random-init", "--out", str(a_file / "m.onnx")]) == 2
    one_line_error(capsys, "is a file, not a folder")
    assert export_main(["triton", TINY, "--random-init", "--out", str(a_file)]) == 2
    one_line_error(capsys, "is a file, not a folder")


def test_export_missing_onnx_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert export_main(["onnx", TINY, "--random-init", "--out", str(tmp_path / "m.onnx")]) == 2
    one_line_error(capsys, "'onnx'", "pip install 'constcl-zoo[export]'")
    with pytest.raises(ImportError):
        export_main(["onnx", TINY, "--random-init", "--out", str(tmp_path / "m.onnx"), "--debug"])


# -- Hub errors that a loopback server cannot produce -------------------------------------------------------------
def _http_error(cls, status: int):
    return cls(f"HTTP {status}", response=httpx2.Response(status, request=httpx2.Request("GET", "http://hub/x")))


@pytest.mark.parametrize(("raised", "expected"), [
    (_http_error(GatedRepoError, 403), "the repository is gated: accept its conditions"),
    (_http_error(RevisionNotFoundError, 404), "revision 'v2' not found: check the branch, tag or commit sha"),
    (_http_error(HfHubHTTPError, 401), "access refused (HTTP 401): log in with `hf login`"),
    (_http_error(HfHubHTTPError, 503), "answered HTTP 503"),
    (httpx2.ProxyError("proxy refused"), "check the network connection, proxy and HF_ENDPOINT"),
])
def test_hub_errors_are_wrapped_with_repo_revision_and_fix(monkeypatch, raised, expected):
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fail)
    with pytest.raises(HubError) as err:
        download_checkpoint("org/repo", "v2")
    assert str(err.value).startswith("hf-hub:org/repo@v2: ") and expected in str(err.value)
    assert err.value.__cause__ is raised
    assert run_command("prog", lambda: download_checkpoint("org/repo", "v2")) == 2


# -- manifests ---------------------------------------------------------------------------------------------------
def test_manifest_with_bom_or_not_utf8(videos, tmp_path, capsys):
    (videos / "list.csv").write_bytes("\ufeffpath,label\na.avi,1\nsub/b.avi,2\n".encode())  # Excel's "CSV UTF-8"
    assert [(e.written.as_posix(), e.line) for e in read_manifest(videos / "list.csv")] == [("a.avi", 2),
                                                                                          ("sub/b.avi", 3)]
    (videos / "list.txt").write_bytes("\ufeffa.avi\n".encode())
    assert [e.path for e in read_manifest(videos / "list.txt")] == [videos / "a.avi"]
    (videos / "latin1.txt").write_bytes("a.avi\nsub/caf\u00e9.avi\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin1.txt, line 2: not UTF-8 \(byte 0xe9\)"):
        read_manifest(videos / "latin1.txt")
    out = tmp_path / "out"
    assert main(["embed", str(videos / "latin1.txt"), "--out", str(out), *ARGS]) == 2
    one_line_error(capsys, "latin1.txt, line 2: not UTF-8", "save the manifest as UTF-8")
    assert not out.exists()
    assert main(["embed", str(videos / "list.csv"), "--out", str(out), *ARGS]) == 0
    index = json.loads((out / "index.json").read_text())
    assert [v["file"] for v in index["videos"]] == ["a.avi.safetensors", "sub/b.avi.safetensors"]


# -- the embed index stays true ----------------------------------------------------------------------------------
def _index(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


def _outputs(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "index.json")


def test_corrupted_outputs_are_recomputed_not_trusted(videos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 0
    good = (out / "a.avi.safetensors").read_bytes()
    tensors = {k: v.clone() for k, v in embed_cli.load_embeddings(out / "a.avi.safetensors").items()}  # not mmap
    meta = embed_cli.read_metadata(out / "a.avi.safetensors")
    (out / "a.avi.safetensors").write_bytes(good[: len(good) // 2])  # truncated by a crash of another tool
    (out / "sub" / "b.avi.safetensors").write_bytes(b"garbage" * 10)
    capsys.readouterr()
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 0
    err = capsys.readouterr().err
    assert err.count("; recomputing it") == 2 and "a.avi.safetensors: unreadable" in err
    assert "3 video(s) done (1 skipped as already done, 2 embedded)" in err
    assert embed_cli.read_metadata(out / "a.avi.safetensors") == meta
    for key, value in embed_cli.load_embeddings(out / "a.avi.safetensors").items():
        assert torch.equal(value, tensors[key]), key
    assert [v["file"] for v in _index(out)["videos"]] == _outputs(out)


def test_full_disk_stops_the_run_and_leaves_a_true_index(videos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["embed", str(videos / "a.avi"), "--out", str(out), *ARGS]) == 0
    real = embed_cli.atomic_write
    calls = []

    def full_disk(path, data, **kwargs):  # the disk fills up half-way through the next output file
        if str(path).endswith(".safetensors"):
            calls.append(path)

            def partial(tmp):
                tmp.write_bytes(data[:100])
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
            return real(path, partial, **kwargs)
        return real(path, data, **kwargs)

    monkeypatch.setattr(embed_cli, "atomic_write", full_disk)
    capsys.readouterr()
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(calls) == 1  # stopped at the first failed write, not per video
    assert "error: cannot write" in err and "No space left on device. Free space" in err
    assert _outputs(out) == ["a.avi.safetensors"]  # no partial or temporary file
    index = _index(out)
    assert [v["file"] for v in index["videos"]] == ["a.avi.safetensors"] and index["failed"] == []


def test_full_disk_for_the_index_too_removes_the_stale_index(videos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["embed", str(videos / "a.avi"), "--out", str(out), *ARGS, "--stride", "8"]) == 0
    real = embed_cli.atomic_write

    def full_disk(path, data, **kwargs):
        def fail(tmp):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
        return real(path, fail, **kwargs)

    monkeypatch.setattr(embed_cli, "atomic_write", full_disk)
    capsys.readouterr()
    # the index cannot be brought up to date: rather than leave one that may no longer match, it is removed
    assert main(["embed", str(videos / "a.avi"), "--out", str(out), *ARGS, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "the old index was removed" in err and "Traceback" not in err
    assert not (out / "index.json").exists() and _outputs(out) == ["a.avi.safetensors"]


def test_unwritable_output_subfolder_fails_per_file(videos, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the outputs of sub/ should go")
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 1
    index = _index(out)
    assert [v["file"] for v in index["videos"]] == ["a.avi.safetensors"]
    assert sorted(f["file"] for f in index["failed"]) == ["sub/b.avi.safetensors", "sub/c.avi.safetensors"]
    assert capsys.readouterr().err.count("FAILED") == 2


def test_index_lists_every_output_in_the_folder(videos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["embed", str(videos / "a.avi"), "--out", str(out), *ARGS]) == 0
    assert main(["embed", str(videos / "sub"), "--out", str(out), *ARGS]) == 0
    assert [v["file"] for v in _index(out)["videos"]] == ["a.avi.safetensors", "b.avi.safetensors",
                                                          "c.avi.safetensors"] == _outputs(out)
    assert "1 finished by earlier runs kept in the index" in capsys.readouterr().err
    # other settings are refused, for this run's outputs and the others: one index cannot describe both
    before = (out / "index.json").read_bytes()
    assert main(["embed", str(videos / "sub" / "c.avi"), "--out", str(out), *ARGS, "--stride", "8"]) == 2
    one_line_error(capsys, "c.avi.safetensors was made with stride='16' (this run: '8'); and 2 more")
    assert (out / "index.json").read_bytes() == before
    assert main(["embed", str(videos / "sub" / "b.avi"), "--out", str(tmp_path / "x"), *ARGS]) == 0
    capsys.readouterr()
    assert main(["embed", str(videos / "a.avi"), "--out", str(tmp_path / "x"), *ARGS, "--stride", "8"]) == 2
    one_line_error(capsys, "b.avi.safetensors was made with stride='16' (this run: '8')):")
    # a torn index is no source of truth: the folder is
    (out / "index.json").write_text('{"format": "constcl-zoo-embeddings/1", "vid')
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 0
    assert [v["file"] for v in _index(out)["videos"]] == _outputs(out) == [
        "a.avi.safetensors", "b.avi.safetensors", "c.avi.safetensors", "sub/b.avi.safetensors",
        "sub/c.avi.safetensors"]
    # sharded, each rank's index lists its share; a torn one is reported and rewritten
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    shard_index = out / "index-rank00000-of-00002.json"
    shard_index.write_text("{")
    capsys.readouterr()
    assert main(["embed", str(videos), "--out", str(out), *ARGS]) == 0
    assert f"{shard_index} is unreadable; it is rewritten" in capsys.readouterr().err
    assert [v["file"] for v in json.loads(shard_index.read_text())["videos"]] == [
        "a.avi.safetensors", "sub/c.avi.safetensors"]


# -- permissions -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_honour_the_umask(videos, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        ckpt = load(TINY, pretrained=False).save_pretrained(tmp_path / "ckpt")
        out = tmp_path / "out"
        assert main(["embed", str(videos / "a.avi"), "--out", str(out), *ARGS]) == 0
        atomic_write(tmp_path / "plain.txt", "x")
    finally:
        os.umask(old)
    files = [ckpt / "model.safetensors", ckpt / "config.json", out / "a.avi.safetensors", out / "index.json",
             tmp_path / "plain.txt"]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: oct(mode) for f in files}



_REPO = Path(__file__).resolve().parents[1]


def _package_sources() -> list[Path]:
    return sorted(p for d in ("constcl_zoo", "export", "training") for p in (_REPO / d).rglob("*.py"))


def test_the_packages_raise_no_builtin_exceptions() -> None:
    """No builtin exception is raised on purpose: each raise names a ConstclZooError subclass (with the fitting
    builtin base), so `except constcl_zoo.ConstclZooError` catches it and the commands answer it in one line."""
    import ast

    builtin = {"ValueError", "TypeError", "KeyError", "RuntimeError", "LookupError", "IndexError", "Exception"}
    bare = []
    for path in _package_sources():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and \
                    isinstance(node.exc.func, ast.Name) and node.exc.func.id in builtin:
                bare.append(f"{path.relative_to(_REPO)}:{node.lineno} raise {node.exc.func.id}")
    assert not bare, "raise a ConstclZooError subclass instead:\n" + "\n".join(bare)
