"""A fake Hugging Face hub on 127.0.0.1: the API a pull reads, ``resolve`` and a CDN.

- ``GET /api/models/{user}/{repo}/refs`` and ``.../tree/{revision}`` from the repositories
  a test adds (``add_repo``), ``main`` pointing to a generated commit;
- ``GET|HEAD /{user}/{repo}/resolve/{revision}/{path}``: a 302 to ``/cdn/{sha256}`` on another
  host name (``localhost`` for ``127.0.0.1`` and the other way round), with the
  headers the hub sends (``X-Repo-Commit``, ``X-Linked-Etag``, ``X-Linked-Size``, ``ETag``); a
  file kept in git (``lfs=False``) is answered there, with its git SHA-1 as ETag;
- ``GET|HEAD /cdn/{sha256}``, which honours ``Range`` (206) and misbehaves on demand
  (:class:`HubFaults`): cut the connection after N bytes, stall, ignore ``Range``, alter a byte,
  answer 503, send slowly;
- a private repository answers 401 to a request without ``Authorization: Bearer <token>``.

Served by uvicorn in a thread (:class:`tests.support.upstream.FakeUpstream`), over https too.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.support.upstream import FakeUpstream

_BLOCK = 64 * 1024


@functools.cache
def smollm2_gguf() -> bytes:
    """The real GGUF the tests already have (98 MB, SmolLM2-135M-Instruct Q4_1), read once."""
    from interference.engine.catalog import resolve_model

    return resolve_model("smollm2-135m-instruct").path.read_bytes()


@dataclass
class HubFile:
    path: str
    content: bytes
    lfs: bool = True

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @functools.cached_property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "oid": self.git_oid if not self.lfs else hashlib.sha1(self.path.encode()).hexdigest(),
            "size": len(self.content),
            "path": self.path,
        }
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.content), "pointerSize": 134}
        return entry


@dataclass
class HubRepo:
    name: str
    files: dict[str, HubFile]
    commit: str
    private: bool = False


@dataclass
class HubFaults:
    """How the CDN (and the API) misbehave; a test sets them, ``reset()`` clears them."""

    cut_after: int | None = None  # close the connection after this many body bytes ...
    cuts: int = 1  # ... on this many answers
    stall_after: int | None = None  # stop sending after this many bytes ...
    stall_s: float = 0.0  # ... for this long (once)
    ignore_range: bool = False  # answer 200 and the whole file to a Range request
    corrupt: bool = False  # one byte of every answer altered: the digest cannot match
    server_errors: int = 0  # the next N CDN answers are 503
    bytes_per_s: int | None = None  # send this slowly
    no_api: bool = False  # a mirror that serves resolve but not /api/models/... (404)
    api_errors: int = 0  # the next N API answers are 503


@dataclass
class HubObserved:
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    cdn_bytes: int = 0  # body bytes the CDN sent
    cdn_answers: list[tuple[int, str]] = field(default_factory=list)  # (status, range asked)

    def paths(self, prefix: str = "") -> list[str]:
        return [path for _, path, _ in self.requests if path.startswith(prefix)]


class FakeHub:
    def __init__(self, token: str | None = None, tls: tuple[str, str] | None = None) -> None:
        self.token = token
        self.repos: dict[str, HubRepo] = {}
        self.faults = HubFaults()
        self.observed = HubObserved()
        self._blobs: dict[str, HubFile] = {}
        app = Starlette(
            routes=[
                Route("/api/models/{user}/{name}/refs", self._refs),
                Route("/api/models/{user}/{name}/tree/{revision}", self._tree),
                Route(
                    "/{user}/{name}/resolve/{revision}/{path:path}",
                    self._resolve,
                    methods=["GET", "HEAD"],
                ),
                Route("/cdn/{oid}", self._cdn, methods=["GET", "HEAD"]),
            ]
        )
        self.server = FakeUpstream(self._observe(app), tls=tls)
        self.url = self.server.url

    def add_repo(
        self, name: str, files: dict[str, bytes] | list[HubFile], private: bool = False
    ) -> HubRepo:
        """A repository with these files (path: content); again: a new commit."""
        items = files if isinstance(files, list) else [HubFile(p, c) for p, c in files.items()]
        repo = HubRepo(name, {f.path: f for f in items}, os.urandom(20).hex(), private)
        self.repos[name] = repo
        for item in items:
            self._blobs[item.sha256] = item
        return repo

    def reset(self) -> None:
        self.faults = HubFaults()
        self.observed = HubObserved()

    def start(self) -> FakeHub:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the routes

    def _observe(self, app: Any) -> Any:
        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
                self.observed.requests.append((scope["method"], scope["path"], headers))
            await app(scope, receive, send)

        return observed

    def _repo(self, request: Request) -> HubRepo | Response:
        name = f"{request.path_params['user']}/{request.path_params['name']}"
        repo = self.repos.get(name)
        if repo is None:
            return JSONResponse({"error": "Repository not found"}, 404)
        if repo.private and request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"error": "Invalid username or password."}, 401)
        return repo

    async def _refs(self, request: Request) -> Response:
        if self.faults.api_errors:
            self.faults.api_errors -= 1
            return JSONResponse({"error": "Service Unavailable"}, 503)
        repo = self._repo(request)
        if self.faults.no_api:
            return JSONResponse({"error": "Not Found"}, 404)
        if isinstance(repo, Response):
            return repo
        branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.commit}
        return JSONResponse({"branches": [branch], "tags": [], "converts": []})

    async def _tree(self, request: Request) -> Response:
        repo = self._repo(request)
        if self.faults.no_api:
            return JSONResponse({"error": "Not Found"}, 404)
        if isinstance(repo, Response):
            return repo
        if request.path_params["revision"] not in (repo.commit, "main"):
            return JSONResponse({"error": "Revision not found"}, 404)
        folders = {f.path.rsplit("/", 1)[0] for f in repo.files.values() if "/" in f.path}
        entries = [{"type": "directory", "oid": "0" * 40, "size": 0, "path": p} for p in folders]
        return JSONResponse(entries + [f.entry() for f in repo.files.values()])

    async def _resolve(self, request: Request) -> Response:
        repo = self._repo(request)
        if isinstance(repo, Response):
            return repo
        file = repo.files.get(request.path_params["path"])
        if request.path_params["revision"] not in (repo.commit, "main") or file is None:
            return JSONResponse({"error": "Entry not found"}, 404)
        headers = {"x-repo-commit": repo.commit}
        if not file.lfs:
            headers["etag"] = f'"{file.git_oid}"'
            return Response(file.content, headers=headers, media_type="application/octet-stream")
        # the CDN is another host, as on the hub (this server under its other loopback name)
        cdn = "localhost" if request.url.hostname == "127.0.0.1" else "127.0.0.1"
        headers |= {
            "location": f"{request.url.scheme}://{cdn}:{request.url.port}/cdn/{file.sha256}",
            "x-linked-etag": f'"{file.sha256}"',
            "x-linked-size": str(len(file.content)),
            "etag": f'"{file.sha256}"',
        }
        return Response(status_code=302, headers=headers)

    async def _cdn(self, request: Request) -> Response:
        file = self._blobs.get(request.path_params["oid"])
        if file is None:
            return Response("no such blob", 404)
        asked = request.headers.get("range", "")
        faults = self.faults
        if faults.server_errors:
            faults.server_errors -= 1
            self.observed.cdn_answers.append((503, asked))
            return Response("busy", 503)
        content = file.content
        if faults.corrupt:
            middle = len(content) // 2
            content = content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1 :]
        start = 0
        if asked.startswith("bytes=") and not faults.ignore_range:
            start = int(asked.removeprefix("bytes=").split("-", 1)[0])
            if start >= len(content):
                self.observed.cdn_answers.append((416, asked))
                return Response(
                    status_code=416, headers={"content-range": f"bytes */{len(content)}"}
                )
        status = 206 if start else 200
        self.observed.cdn_answers.append((status, asked))
        headers = {"content-length": str(len(content) - start), "accept-ranges": "bytes"}
        headers["etag"] = f'"{file.sha256}"'
        if status == 206:
            headers["content-range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        body = memoryview(content)[start:] if request.method == "GET" else memoryview(b"")
        return _CdnBody(self, body, status, headers)


class _CutError(Exception):
    """Raised inside the CDN's answer: uvicorn then closes the connection mid-body."""


async def _disconnect(receive: Receive) -> None:
    """Returns when the client has gone away (the request's own empty body comes first)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _CdnBody(Response):
    """A body sent in blocks, applying the hub's faults as it goes."""

    def __init__(self, hub: FakeHub, body: memoryview, status: int, headers: dict[str, str]):
        super().__init__(status_code=status, headers=headers)
        self.hub, self.data = hub, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        faults, observed = self.hub.faults, self.hub.observed
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})  # fmt: skip
        gone = asyncio.ensure_future(_disconnect(receive))
        try:
            sent = 0
            while sent < len(self.data) and not gone.done():
                end = min(sent + _BLOCK, len(self.data))
                cut = faults.cut_after if faults.cuts > 0 else None
                if cut is not None and sent <= cut < end:
                    end = cut
                stall = faults.stall_after
                if stall is not None and sent <= stall < end:
                    end = stall
                if end > sent:
                    block = bytes(self.data[sent:end])
                    await send({"type": "http.response.body", "body": block, "more_body": True})
                    observed.cdn_bytes += len(block)
                    sent = end
                    if faults.bytes_per_s:
                        await asyncio.wait([gone], timeout=len(block) / faults.bytes_per_s)
                if cut is not None and sent == cut:
                    faults.cuts -= 1
                    raise _CutError()
                if stall is not None and sent == stall:
                    faults.stall_after = None  # once
                    await asyncio.wait([gone], timeout=faults.stall_s)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()
