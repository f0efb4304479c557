"""Ollama's model routes, for front ends that manage models through them (Open WebUI and
others): ``POST /api/pull`` pulls a hub model into the cache, ``GET /api/tags`` lists the cache.

``/api/pull`` takes ``{"model": "hf:USER/REPO[:QUANT]"}`` (or ``hf.co/USER/REPO:QUANT``, the
spelling Ollama users know; ``name`` as older clients send it) and streams Ollama's NDJSON
progress: ``pulling manifest``, then per file ``{status: "pulling <digest[:12]>", digest, total,
completed}`` about every 0.1 s, ``verifying sha256 digest``, ``writing manifest``, ``success``.
With ``"stream": false`` one object is answered at the end. What the hub is asked before the
first line (the repository, its files, the choice of file) fails with a real status; a failure
once the stream has begun is an ``{"error": ...}`` line, as Ollama sends it. A client that goes
away stops the download; its bytes stay, and the next pull resumes them.

When the server has keys, both routes need the master key: a pull writes gigabytes to the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from interference.api.record import record_of
from interference.api.state import json_response, read_model, state_of
from interference.errors import InterferenceError, InvalidRequestError, PermissionDeniedError
from interference.hub import HubCache, Puller, PullPlan, PullProgress, RemoteFile, parse_hub_name

logger = logging.getLogger(__name__)

_EVERY_S = 0.1  # a file's progress line at most this often (Ollama: 60 ms)
_END = object()


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    name: str | None = None  # the field's name in Ollama's older clients
    stream: bool = True
    insecure: bool = False  # Ollama's, for plain-http registries: the hub's settings decide


def _administrator_only(request: Request) -> None:
    guard = state_of(request).guard
    if (guard.keys or guard.master) and not record_of(request.scope).admin:
        raise PermissionDeniedError(
            "Only the master key may pull and list models on this server.", code="admin_only"
        )


def _line(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data) + b"\n"


class _Lines(PullProgress):
    """A pull's progress as Ollama's lines, handed from the download thread to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
        self._loop, self._queue = loop, queue
        self._said = 0.0

    def put(self, item: object) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop (the server stopped): nobody
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)  # listens any more

    def _progress(self, file: RemoteFile, completed: int) -> None:
        self._said = time.monotonic()
        status = f"pulling {file.oid[:12]}"
        self.put({"status": status, "digest": file.digest, "total": file.size,
                  "completed": completed})  # fmt: skip

    def note(self, text: str) -> None:
        self.put({"status": text})

    def start(self, file: RemoteFile, completed: int) -> None:
        self._progress(file, completed)

    def advance(self, file: RemoteFile, completed: int) -> None:
        if time.monotonic() - self._said >= _EVERY_S:
            self._progress(file, completed)

    def verifying(self, file: RemoteFile) -> None:
        self._progress(file, file.size)
        self.put({"status": "verifying sha256 digest"})

    def finish(self, file: RemoteFile) -> None:
        self._progress(file, file.size)


def _fetch_in_thread(
    puller: Puller, plan: PullPlan, lines: _Lines, cancel: threading.Event
) -> threading.Thread:
    """Run the download in a thread of its own (it may last hours: not the loop's executor);
    its end is ``_END`` or the exception, on the queue."""

    def run() -> None:
        try:
            puller.fetch(plan, lines, cancel)
        except BaseException as exc:  # handed to the loop, which answers it
            lines.put(exc)
        else:
            lines.put(_END)

    thread = threading.Thread(target=run, name=f"pull {plan.ref.name}", daemon=True)
    thread.start()
    return thread


def _failure(exc: BaseException, name: str) -> InterferenceError:
    if isinstance(exc, InterferenceError):
        return exc
    logger.error("pull of %s failed", name, exc_info=exc)
    return InterferenceError(f"the pull of {name} failed: {type(exc).__name__}")


async def pull(request: Request) -> Response:
    _administrator_only(request)
    body, _ = await read_model(request, PullRequest)
    name = body.model or body.name
    if not name:
        raise InvalidRequestError("`model` is required: hf:USER/REPO[:QUANT]", param="model")
    ref = parse_hub_name(name)  # (not the record's model: a pull is no usage to account)
    puller = Puller()
    plan = await asyncio.to_thread(puller.plan, ref)  # a wrong name or repo: its own status
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    lines = _Lines(loop, queue)
    cancel = threading.Event()

    async def outcomes() -> AsyncGenerator[object, None]:
        """The progress items, until the download thread's end (cancelled if we leave)."""
        _fetch_in_thread(puller, plan, lines, cancel)
        try:
            while (item := await queue.get()) is not _END:
                yield item
                if isinstance(item, BaseException):
                    return
        finally:
            cancel.set()

    if not body.stream:
        async with contextlib.aclosing(outcomes()) as items:
            async for item in items:
                if isinstance(item, BaseException):
                    raise _failure(item, ref.name)
        return json_response(b'{"status":"success"}')

    async def stream() -> AsyncGenerator[bytes, None]:
        yield _line({"status": "pulling manifest"})
        async with contextlib.aclosing(outcomes()) as items:
            async for item in items:
                if isinstance(item, BaseException):
                    yield _line({"error": _failure(item, ref.name).message})
                    return
                assert isinstance(item, dict)
                yield _line(item)
        yield _line({"status": "writing manifest"})
        yield _line({"status": "success"})

    return StreamingResponse(stream(), media_type="application/x-ndjson")


async def tags(request: Request) -> Response:
    """The cached hub models, as Ollama lists its local models."""
    _administrator_only(request)
    models = await asyncio.to_thread(HubCache().models)
    listed = [
        {
            "name": model.ref.name,
            "model": model.ref.name,
            "modified_at": model.modified.isoformat(),
            "size": model.size,
            "digest": model.digest,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "",
                "families": None,
                "parameter_size": "",
                "quantization_level": model.ref.quant or "",
            },
        }
        for model in models
    ]
    return json_response(orjson.dumps({"models": listed}))


def ollama_routes() -> list[BaseRoute]:
    return [
        Route("/api/pull", pull, methods=["POST"]),
        Route("/api/tags", tags, methods=["GET"]),
    ]
