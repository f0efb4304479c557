"""Server-sent events from an upstream's body: an incremental decoder and the readers built on it.

An SSE event is bounded: one whose bytes reach past ``MAX_EVENT`` (an upstream that never sends
the blank line ending an event, or one huge event) fails the stream with
:class:`~interference.upstream.client.ProtocolError`, a malformed upstream answer (502).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from interference.upstream.client import ProtocolError, UpstreamResponse

MAX_EVENT = 8 << 20  # bytes of one SSE event (what is pending of it included)


class SSEDecoder:
    """Incremental server-sent events parser: feed it the body as it arrives, get back the
    ``data`` payload of every event completed so far (multi-line data joined by ``\\n``).

    An event of more than ``MAX_EVENT`` bytes, complete or still pending, raises
    :class:`~interference.upstream.client.ProtocolError`."""

    def __init__(self) -> None:
        self._pending = b""
        self._started = False

    def feed(self, block: bytes) -> list[bytes]:
        buffer = self._pending + block if self._pending else block
        if not self._started and buffer:
            if len(buffer) < 3 and b"\xef\xbb\xbf".startswith(buffer):
                self._pending = buffer  # maybe the start of a byte order mark
                return []
            buffer = buffer.removeprefix(b"\xef\xbb\xbf")
            self._started = True
        if b"\r" in buffer:
            held = b""
            if buffer.endswith(b"\r"):  # its \n may be in the next block
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held
        *events, self._pending = buffer.split(b"\n\n")
        if len(buffer) > MAX_EVENT and max(map(len, [self._pending, *events])) > MAX_EVENT:
            self._pending = b""
            raise ProtocolError(f"an SSE event of the upstream exceeds {MAX_EVENT} bytes")
        out: list[bytes] = []
        for raw in events:
            if raw.startswith(b"data: ") and b"\n" not in raw and len(raw) > 6:
                out.append(raw[6:])  # the usual one-line event
            else:
                data = _event_data(raw)
                if data is not None:
                    out.append(data)
        return out

    def close(self) -> bytes | None:
        """The data of an event the stream ended in without its blank line, if any."""
        pending, self._pending = self._pending.replace(b"\r", b""), b""
        return _event_data(pending)


def _event_data(raw: bytes) -> bytes | None:
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if field == b"data":
            data.append(value.removeprefix(b" "))
    joined = b"\n".join(data)
    return joined or None  # an empty data buffer dispatches nothing


async def sse_batches(response: UpstreamResponse) -> AsyncGenerator[list[bytes], None]:
    """The ``data`` payloads of a server-sent event stream, grouped by the read that
    completed them (the events that arrived together)."""
    decoder = SSEDecoder()
    try:
        async for block in response.iter_blocks():
            events = decoder.feed(block)
            if events:
                yield events
    except ProtocolError:
        response.close()  # an event too large: the rest of the body is not read
        raise
    tail = decoder.close()
    if tail is not None:
        yield [tail]


async def sse_data(response: UpstreamResponse) -> AsyncGenerator[bytes, None]:
    """The ``data`` payloads of a server-sent event stream, one per event."""
    async with aclosing(sse_batches(response)) as batches:
        async for events in batches:
            for data in events:
                yield data
