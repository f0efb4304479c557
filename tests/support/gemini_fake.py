"""A fake Gemini API (``generateContent`` / ``streamGenerateContent``) on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.upstream import FakeUpstream

_STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
_STATUS_NAMES |= {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
USAGE = {
    "promptTokenCount": 11,
    "candidatesTokenCount": 5,
    "thoughtsTokenCount": 3,
    "totalTokenCount": 19,
    "cachedContentTokenCount": 4,
}


class FakeGemini:
    """A scripted Gemini API. ``candidates`` holds each candidate's parts; the first
    ``candidateCount`` of them answer. A stream sends one part per event, the finish reason with
    the last part of each candidate and the full usage with the last event."""

    def __init__(self) -> None:
        self.upstream: FakeUpstream | None = None
        self.reset()

    def reset(self) -> None:
        self.candidates: list[list[dict[str, Any]]] = [[{"text": "Hello"}, {"text": " world"}]]
        self.finish_reason = "STOP"
        self.omit_finish = False
        self.block_reason: str | None = None
        self.error_event: dict[str, Any] | None = None  # sent after the first streamed event

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1beta/models/{target}", self.endpoint, methods=["POST"])])

    def _head(self) -> dict[str, Any]:
        return {"modelVersion": "gemini-fake-001", "responseId": "resp-123"}

    def _candidate(self, i: int, parts: list[dict[str, Any]], last: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
        if i:  # proto3 JSON leaves a zero index out
            candidate["index"] = i
        if last and not self.omit_finish:
            candidate["finishReason"] = self.finish_reason
        return candidate

    def whole(self, count: int) -> dict[str, Any]:
        if self.block_reason:
            blocked = {"blockReason": self.block_reason}
            return {"promptFeedback": blocked, "usageMetadata": {"promptTokenCount": 11}}
        candidates = [self._candidate(i, p, True) for i, p in enumerate(self.candidates[:count])]
        return {"candidates": candidates, "usageMetadata": USAGE, **self._head()}

    def events(self, count: int) -> list[dict[str, Any]]:
        if self.block_reason:
            return [self.whole(count)]
        events = []
        for i, parts in enumerate(self.candidates[:count]):
            for k, part in enumerate(parts):
                candidate = self._candidate(i, [part], k == len(parts) - 1)
                usage = {"promptTokenCount": 11}
                events.append({"candidates": [candidate], "usageMetadata": usage, **self._head()})
        events[-1]["usageMetadata"] = USAGE
        if self.error_event is not None:
            events.insert(1, self.error_event)
        return events

    async def endpoint(self, request: Request) -> Response:
        assert self.upstream is not None
        faults, observed = self.upstream.faults, self.upstream.observed
        model, _, method = request.path_params["target"].partition(":")
        body = await request.json()
        observed.requests.append(
            {"path": request.url.path, "query": request.url.query, "model": model, "body": body}
        )
        observed.headers.append(dict(request.headers))
        if faults.hang_before_first_byte:
            await asyncio.sleep(faults.hang_before_first_byte)
        if faults.status is not None:
            error = {"code": faults.status, "message": f"fake failure {faults.status}"}
            error["status"] = _STATUS_NAMES.get(faults.status, "UNKNOWN")
            headers = {"retry-after": faults.retry_after} if faults.retry_after else None
            return JSONResponse({"error": error}, faults.status, headers=headers)
        count = body.get("generationConfig", {}).get("candidateCount", 1)
        if method == "generateContent":
            if faults.malformed:
                return Response(b'{"candidates": [', media_type="application/json")
            return JSONResponse(self.whole(count))
        assert method == "streamGenerateContent"
        assert request.query_params.get("alt") == "sse"
        return StreamingResponse(self.stream(self.events(count)), media_type="text/event-stream")

    async def stream(self, events: list[dict[str, Any]]) -> Any:
        assert self.upstream is not None
        faults, observed = self.upstream.faults, self.upstream.observed
        ended = False
        try:
            for n, event in enumerate(events):
                if faults.cut_after_chunks is not None and n >= faults.cut_after_chunks:
                    ended = True
                    raise ConnectionAbortedError("the fake cuts the connection")
                if n and faults.chunk_delay:
                    await asyncio.sleep(faults.chunk_delay)
                data = b"{not json" if faults.malformed else orjson.dumps(event)
                yield b"data: " + data + b"\r\n\r\n"
            ended = True
            observed.completed_streams += 1
        finally:
            if not ended:
                observed.disconnects += 1
