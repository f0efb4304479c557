"""Driving an ASGI app directly, for what a test client cannot send or observe."""

from __future__ import annotations

import asyncio
from typing import Any


async def post_once(
    app: Any,
    path: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    sent: list[dict[str, Any]],
    *,
    disconnect_after: float,
) -> None:
    """POST ``body`` to ``path`` of ``app`` (one ``http.request`` message, then an
    ``http.disconnect`` ``disconnect_after`` seconds later), appending every message the app sends
    to ``sent``; the app has 5 seconds to return."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(disconnect_after)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {},
        "app": app,
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
