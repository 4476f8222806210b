"""A real Hub-compatible server on 127.0.0.1 for tests: ``olah`` in offline mode serving local git repos.

``olah`` answers ``huggingface_hub``'s read API (revision info, resolve, tags, commits) from
``<mirrors>/models/<org>/<repo>`` git repositories; its upstream points at a dead loopback port, so nothing leaves
the machine. See ../shared/reference/hub-testing.md.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@localhost",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@localhost"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def commit_folder(repo: Path, folder: Path, message: str, tag: str | None = None) -> str:
    """Replace the repo's files with ``folder``'s, commit, optionally tag; return the commit sha."""
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git(repo, "init", "-q", "-b", "main")
    for item in repo.iterdir():
        if item.name != ".git":
            item.unlink() if item.is_file() else shutil.rmtree(item)
    for item in folder.iterdir():
        shutil.copy2(item, repo / item.name)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    if tag:
        git(repo, "tag", tag)
    return git(repo, "rev-parse", "HEAD")


class OlahServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.mirrors = root / "mirrors"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def repo(self, repo_id: str) -> Path:
        return self.mirrors / "models" / repo_id

    def start(self, probe_repo: str, timeout: float = 60.0) -> None:
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        config = self.root / "olah.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\nrepos-path = "{self.root / "repos"}"\n'
            'hf-scheme = "http"\nhf-netloc = "127.0.0.1:9"\nhf-lfs-netloc = "127.0.0.1:9"\n'
            f'mirror-scheme = "http"\nmirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\nmirrors-path = ["{self.mirrors}"]\n'
            "[accessibility]\noffline = true\n")
        cli = Path(sys.executable).with_name("olah-cli")
        self.log = open(self.root / "olah.out", "wb")
        self.proc = subprocess.Popen([str(cli), "-c", str(config), "--log-path", str(self.root / "logs")],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root)
        probe = f"{self.url}/api/models/{probe_repo}/revision/main"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"olah exited: {(self.root / 'olah.out').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(probe, timeout=2) as r:
                    if r.status == 200 and json.loads(r.read())["id"] == probe_repo:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"olah did not become ready at {probe} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()
