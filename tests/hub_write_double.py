"""A small in-test double of the Hugging Face Hub *write* API on 127.0.0.1, for the real ``huggingface_hub`` client.

No real Hub server can be installed here (see ../shared/reference/hub-testing.md), so the publish path is tested
against this: it answers ``create_repo``, ``upload_folder`` (``validate-yaml``, ``preupload`` -> every file
"regular", NDJSON ``commit`` with base64 contents) and ``create_tag``, and records what it received. Nothing is
mocked in the client. Read-back goes through a real Hub-compatible server (olah) fed from :attr:`repos`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def files(self) -> dict[str, bytes]:
        return dict(self.commits[-1].files) if self.commits else {}


class HubWriteDouble:
    """``with HubWriteDouble() as hub: HfApi(endpoint=hub.url).create_repo(...)``; inspect ``hub.repos``."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HubWriteDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _reply(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def do_GET(self) -> None:
                hub.requests.append(("GET", self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) >= 4 and parts[:2] == ["api", "models"]:
                    repo = hub.repos.get(f"{parts[2]}/{parts[3]}")
                    if repo is None:
                        return self._reply(404, {"error": "Repository not found"})
                    sha = repo.commits[-1].oid if repo.commits else "0" * 40
                    return self._reply(200, {"id": repo.repo_id, "sha": sha, "private": repo.private,
                                             "siblings": [{"rfilename": f} for f in sorted(repo.files())]})
                self._reply(404, {"error": f"not served by the double: GET {self.path}"})

            def do_POST(self) -> None:
                hub.requests.append(("POST", self.path))
                path = self.path.split("?")[0]
                body = self._body()
                parts = path.strip("/").split("/")
                with hub._lock:
                    if path == "/api/repos/create":
                        req = json.loads(body)
                        repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                        if req.get("type", "model") not in ("model", None):
                            return self._reply(400, {"error": "the double serves model repos only"})
                        if repo_id in hub.repos:
                            return self._reply(409, {"error": "You already created this model repo",
                                                     "url": f"{hub.url}/{repo_id}"})
                        hub.repos[repo_id] = Repo(repo_id, bool(req.get("private")))
                        return self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                    if path == "/api/validate-yaml":
                        return self._reply(200, {"errors": [], "warnings": []})
                    if len(parts) >= 6 and parts[:2] == ["api", "models"]:
                        repo = hub.repos.get(f"{parts[2]}/{parts[3]}")
                        if repo is None:
                            return self._reply(404, {"error": "Repository not found"})
                        action = parts[4]
                        if action == "preupload":
                            files = json.loads(body)["files"]
                            return self._reply(200, {"files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                for f in files]})
                        if action == "commit":
                            return self._commit(repo, body)
                        if action == "tag":
                            req = json.loads(body)
                            revision = "/".join(parts[5:])
                            oid = next((c.oid for c in repo.commits if c.oid == revision),
                                       repo.commits[-1].oid if revision == "main" and repo.commits else None)
                            if oid is None:
                                return self._reply(404, {"error": f"revision {revision} not found"})
                            if req["tag"] in repo.tags:
                                return self._reply(409, {"error": f"tag {req['tag']} exists"})
                            repo.tags[req["tag"]] = oid
                            return self._reply(200, {})
                self._reply(404, {"error": f"not served by the double: POST {self.path}"})

            def _commit(self, repo: Repo, body: bytes) -> None:
                files = repo.files()
                message = ""
                for line in body.decode().splitlines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    value = item["value"]
                    if item["key"] == "header":
                        message = value.get("summary", "")
                    elif item["key"] == "file":
                        if value.get("encoding") != "base64":
                            return self._reply(400, {"error": f"unsupported encoding {value.get('encoding')}"})
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] == "deletedFile":
                        files.pop(value["path"], None)
                    else:
                        return self._reply(400, {"error": f"the double does not support {item['key']!r} operations"})
                digest = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items()))
                                      .encode() + str(len(repo.commits)).encode()).hexdigest()
                repo.commits.append(Commit(digest, message, files))
                self._reply(200, {"commitUrl": f"{hub.url}/{repo.repo_id}/commit/{digest}", "commitOid": digest,
                                  "pullRequestUrl": None})

        return Handler
