"""A small in-memory Hugging Face Hub for tests: the endpoints huggingface_hub calls to publish.

Implements exactly what ``HfApi.create_repo`` + ``HfApi.upload_folder`` (plain LFS path, i.e.
``HF_HUB_DISABLE_XET=1``) + ``repo_info`` / ``list_repo_tree`` send:

- ``POST /api/repos/create``                               create (409 when it exists)
- ``POST /api/validate-yaml``                              model card metadata check
- ``POST /api/models/{repo}/preupload/{rev}``              upload mode + remote oid per file
- ``POST /{repo}.git/info/lfs/objects/batch``              LFS batch: upload actions or "have it"
- ``PUT  /lfs-upload/{oid}``                               the storage URL handed out by the batch
- ``POST /{repo}.git/info/lfs/objects/verify``             LFS verify action
- ``POST /api/models/{repo}/commit/{rev}``                 NDJSON commit (header/file/lfsFile/deleted*)
- ``GET  /api/models/{repo}[/revision/{rev}]``             repo info (sha, private, siblings)
- ``GET  /api/models/{repo}/tree/{rev}[/{path}]``          file listing with sizes, oids and LFS sha256

and, for dataset repositories (what ``snapshot_download(repo_type="dataset")`` reads; public,
no token needed; add them with :meth:`FakeHub.add_dataset`):

- ``GET  /api/datasets/{repo}[/revision/{rev}]``           dataset info (sha, siblings)
- ``GET  /api/datasets/{repo}/tree/{rev}[/{path}]``        file listing
- ``HEAD|GET /datasets/{repo}/resolve/{rev}/{path}``       file metadata (commit, etag, size) / content

``tampered`` paths are listed with a wrong hash, to test verification. API calls must carry
``Authorization: Bearer <token>``; the storage URL must not (as with S3).
Bound to 127.0.0.1 on an ephemeral port; answers 503 after ``max_requests``. Use as a context
manager: it stops itself on exit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
LFS_MIN_SIZE = 10 * 2**20  # like the Hub: big files go to LFS whatever their name
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
REPO = rf"(?P<repo>{NAME}/{NAME})"
HUB_ID = re.compile(rf"^{NAME}/{NAME}$")


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Commit:
    oid: str
    summary: str
    files: dict[str, tuple[str, str]]  # path -> ("regular", git oid) | ("lfs", sha256)


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)  # git oid -> content (regular files)

    @property
    def head(self) -> Commit:
        return self.commits[-1]


class FakeHub:
    """The server's state; also what tests inspect afterwards."""

    def __init__(self, token: str, max_requests: int = 400) -> None:
        self.token = token
        self.max_requests = max_requests
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.errors: list[str] = []
        self.tampered: set[str] = set()  # paths whose listed hash is wrong (a corrupted upload)
        self.datasets: dict[str, tuple[str, dict[str, bytes]]] = {}  # repo -> (commit sha, files)
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def add_dataset(self, repo_id: str, folder: Path) -> str:
        """Serve the files under ``folder`` as dataset repository ``repo_id``; returns its commit sha."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        sha = hashlib.sha1(json.dumps(sorted((k, git_oid(v)) for k, v in files.items())).encode()).hexdigest()
        self.datasets[repo_id] = (sha, files)
        return sha

    # -- inspection --------------------------------------------------------------------------
    def file_bytes(self, repo_id: str, path: str, commit: str | None = None) -> bytes:
        repo = self.repos[repo_id]
        files = (self._commit(repo, commit) or repo.head).files
        kind, oid = files[path]
        return self.lfs[oid] if kind == "lfs" else repo.blobs[oid]

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    @staticmethod
    def _commit(repo: Repo, rev: str | None) -> Commit | None:
        if rev in (None, "main"):
            return repo.head
        return next((c for c in repo.commits if c.oid == rev), None)

    # -- commits -----------------------------------------------------------------------------
    def new_commit(self, repo: Repo, summary: str, files: dict[str, tuple[str, str]]) -> Commit:
        parent = repo.commits[-1].oid if repo.commits else ""
        blob = json.dumps([parent, summary, sorted(files.items()), len(repo.commits)]).encode()
        commit = Commit(hashlib.sha1(blob).hexdigest(), summary, dict(files))
        repo.commits.append(commit)
        return commit


class _Handler(BaseHTTPRequestHandler):
    state: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing ----------------------------------------------------------------------------
    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has headers only
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        self._send(status, {"error": message}, {"X-Error-Message": message, **({"X-Error-Code": code} if code else {})})

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.state.token}":
            return True
        self._error(401, "Invalid credentials in Authorization header")
        return False

    def _handle(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        body = self._body()
        state = self.state
        with state.lock:
            state.requests.append((method, path))
            over = len(state.requests) > state.max_requests
        if over:
            self._error(503, "request budget of the test server exhausted")
            return
        for route_method, pattern, func in ROUTES:
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                try:
                    with state.lock:
                        func(self, body, **match.groupdict())
                except Exception as exc:  # a server bug must show up in the test, not hang it
                    state.errors.append(f"{method} {path}: {exc!r}")
                    self._error(500, "test server error")
                return
        state.errors.append(f"unhandled {method} {path}")
        self._error(404, f"no route for {method} {path}")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def _repo(self, repo: str) -> Repo | None:
        found = self.state.repos.get(repo)
        if found is None:
            self._error(404, "Repository not found", "RepoNotFound")
        return found

    # -- endpoints ---------------------------------------------------------------------------
    def create_repo(self, body: bytes) -> None:
        if not self._authorized():
            return
        data = json.loads(body)
        repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
        if data.get("type", "model") != "model" or not HUB_ID.match(repo_id):
            self._error(400, f"invalid repository {repo_id!r}")
            return
        url = f"{self.state.url}/{repo_id}"
        if repo_id in self.state.repos:  # the Hub answers with the url here too
            message = "You already created this model repo"
            self._send(409, {"error": message, "url": url}, {"X-Error-Message": message})
            return
        repo = Repo(repo_id, private=data.get("visibility") == "private")
        repo.blobs[git_oid(GITATTRIBUTES)] = GITATTRIBUTES
        self.state.new_commit(repo, "initial commit", {".gitattributes": ("regular", git_oid(GITATTRIBUTES))})
        self.state.repos[repo_id] = repo
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def validate_yaml(self, body: bytes) -> None:
        if not self._authorized():
            return
        content = json.loads(body)["content"]
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.DOTALL)
        if not match:
            self._send(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
            return
        errors = []
        try:
            meta = yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            meta, errors = None, [f"invalid YAML: {exc}"]
        if not errors and not isinstance(meta, dict):
            errors.append("metadata must be a mapping")
        if isinstance(meta, dict):
            base = meta.get("base_model", [])
            base = [base] if isinstance(base, str) else base
            if not isinstance(base, list) or not all(isinstance(b, str) and HUB_ID.match(b) for b in base):
                errors.append('"base_model" must be a Hub model id or a list of them')
            if not isinstance(meta.get("tags", []), list):
                errors.append('"tags" must be a list')
            for key in ("license", "library_name", "base_model_relation"):
                if key in meta and not isinstance(meta[key], str):
                    errors.append(f'"{key}" must be a string')
        if errors:
            self._send(400, {"errors": [{"message": e} for e in errors]})
        else:
            self._send(200, {"errors": [], "warnings": []})

    def preupload(self, body: bytes, repo: str, rev: str) -> None:
        if not self._authorized() or not (found := self._repo(repo)):
            return
        head = self.state._commit(found, rev)
        files = []
        for item in json.loads(body)["files"]:
            lfs = item["path"].endswith(LFS_SUFFIXES) or item["size"] >= LFS_MIN_SIZE
            remote = head.files.get(item["path"]) if head else None
            files.append({
                "path": item["path"],
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": False,
                "oid": remote[1] if remote else None,
            })
        self._send(200, {"files": files, "commitOid": head.oid if head else None})

    def lfs_batch(self, body: bytes, repo: str) -> None:
        if not self._authorized() or not self._repo(repo):
            return
        data = json.loads(body)
        objects = []
        for obj in data["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.lfs:
                entry["authenticated"] = True
                entry["actions"] = {
                    "upload": {"href": f"{self.state.url}/lfs-upload/{obj['oid']}", "header": {}},
                    "verify": {"href": f"{self.state.url}/{repo}.git/info/lfs/objects/verify", "header": {}},
                }
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_put(self, body: bytes, oid: str) -> None:
        if "Authorization" in self.headers:
            self.state.errors.append("the storage URL received an Authorization header")
        if hashlib.sha256(body).hexdigest() != oid:
            self._error(400, "content does not match its sha256")
            return
        self.state.lfs[oid] = body
        self._send(200, None, {"ETag": oid})

    def lfs_verify(self, body: bytes, repo: str) -> None:
        if not self._authorized():
            return
        data = json.loads(body)
        stored = self.state.lfs.get(data["oid"])
        if stored is None or len(stored) != data["size"]:
            self._error(404, "object not found")
        else:
            self._send(200, {"message": "ok"})

    def commit(self, body: bytes, repo: str, rev: str) -> None:
        if not self._authorized() or not (found := self._repo(repo)):
            return
        if rev != "main":
            self._error(404, "Revision not found", "RevisionNotFound")
            return
        files = dict(found.head.files)
        header: dict[str, Any] = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                content = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else (
                    value["content"].encode())
                found.blobs[git_oid(content)] = content
                files[value["path"]] = ("regular", git_oid(content))
            elif key == "lfsFile":
                stored = self.state.lfs.get(value["oid"])
                if stored is None or ("size" in value and len(stored) != value["size"]):
                    self._error(422, f"LFS object of {value['path']} was never uploaded")
                    return
                files[value["path"]] = ("lfs", value["oid"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: f for p, f in files.items() if not p.startswith(prefix)}
            else:
                self._error(400, f"unknown commit operation {key!r}")
                return
        if not header.get("summary"):
            self._error(400, "commit summary is required")
            return
        if header.get("parentCommit") and header["parentCommit"] != found.head.oid:
            self._error(412, "parent commit is not the head")
            return
        commit = self.state.new_commit(found, header["summary"], files)
        self._send(200, {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self.state.url}/{repo}/commit/{commit.oid}",
        })

    def repo_info(self, body: bytes, repo: str, rev: str | None = None) -> None:
        if not self._authorized() or not (found := self._repo(repo)):
            return
        commit = self.state._commit(found, rev)
        if commit is None:
            self._error(404, "Revision not found", "RevisionNotFound")
            return
        self._send(200, {
            "id": repo,
            "private": found.private,
            "sha": commit.oid,
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        })

    def tree(self, body: bytes, repo: str, rev: str, sub: str | None = None) -> None:
        if not self._authorized() or not (found := self._repo(repo)):
            return
        commit = self.state._commit(found, rev)
        if commit is None:
            self._error(404, "Revision not found", "RevisionNotFound")
            return
        prefix = (sub.strip("/") + "/") if sub else ""
        entries = []
        for path, (kind, oid) in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            if path in self.state.tampered:
                oid_shown = hashlib.sha256(oid.encode()).hexdigest()
                oid_shown = oid_shown if kind == "lfs" else oid_shown[:40]
            else:
                oid_shown = oid
            if kind == "lfs":
                size = len(self.state.lfs[oid])
                pointer = lfs_pointer(oid, size)
                entries.append({"type": "file", "path": path, "size": size, "oid": git_oid(pointer),
                                "lfs": {"oid": oid_shown, "size": size, "pointerSize": len(pointer)}})
            else:
                entries.append({"type": "file", "path": path, "size": len(found.blobs[oid]), "oid": oid_shown})
        self._send(200, entries)

    # -- dataset repositories ----------------------------------------------------------------
    def _dataset(self, repo: str, rev: str | None) -> tuple[str, dict[str, bytes]] | None:
        found = self.state.datasets.get(repo)
        if found is None:
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        if rev not in (None, "main", found[0]):
            self._error(404, "Revision not found", "RevisionNotFound")
            return None
        return found

    def dataset_info(self, body: bytes, repo: str, rev: str | None = None) -> None:
        if not (found := self._dataset(repo, rev)):
            return
        sha, files = found
        self._send(200, {"id": repo, "private": False, "gated": False, "sha": sha,
                         "siblings": [{"rfilename": p} for p in sorted(files)]})

    def dataset_tree(self, body: bytes, repo: str, rev: str, sub: str | None = None) -> None:
        if not (found := self._dataset(repo, rev)):
            return
        prefix = (sub.strip("/") + "/") if sub else ""
        self._send(200, [{"type": "file", "path": p, "size": len(data), "oid": git_oid(data)}
                         for p, data in sorted(found[1].items()) if p.startswith(prefix)])

    def dataset_file(self, body: bytes, repo: str, rev: str, path: str) -> None:
        if not (found := self._dataset(repo, rev)):
            return
        sha, files = found
        if path not in files:
            self._error(404, "Entry not found", "EntryNotFound")
            return
        data = files[path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{git_oid(data)}"')
        self.send_header("X-Repo-Commit", sha)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


ROUTES = [
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", _Handler.preupload),
    ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    ("POST", rf"/{REPO}\.git/info/lfs/objects/verify", _Handler.lfs_verify),
    ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", _Handler.lfs_put),
    ("POST", rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", _Handler.commit),
    ("GET", rf"/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?", _Handler.repo_info),
    ("GET", rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.+))?", _Handler.tree),
    # huggingface_hub asks for this registry once a day; the test server has none.
    ("GET", r"/api/agent-harnesses", lambda handler, body: handler._error(404, "not served here")),
    ("GET", rf"/api/datasets/{REPO}(?:/revision/(?P<rev>[^/]+))?", _Handler.dataset_info),
    ("GET", rf"/api/datasets/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.+))?", _Handler.dataset_tree),
    ("HEAD", rf"/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.dataset_file),
    ("GET", rf"/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.dataset_file),
]
