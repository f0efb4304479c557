"""The fake upstream's HTTP/2 side (``bench/fake_upstream.py --http2``): h2c with prior knowledge.

Built to cost the upstream process as little as HTTP/1.1 does, so that a benchmark measures the
gateway: frames are written by hand from bytes rendered once (the response heads are HPACK
literals "never indexed", which leave no state in either HPACK table; the SSE events are DATA
payloads), and only what a gateway sends is read: SETTINGS (acknowledged), PING (answered),
HEADERS and CONTINUATION (decoded, to keep the request's method and path), DATA, RST_STREAM
(the stream's writes stop), GOAWAY. Its answers are far below any flow-control window (a few
KB a stream), so it sends no more than the client's windows allow without tracking them; it
hands back the connection window it uses itself as it goes.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import cast

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# frame types, and flags
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_LARGEST_WINDOW = 2**31 - 1
_DEFAULT_WINDOW = 65_535
_MAX_FRAME = 16_384  # the largest frame payload a peer must accept


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream_id)
        + payload
    )


def response_head(status: int, content_type: bytes, length: int | None = None) -> bytes:
    """A response's HPACK block: literals never indexed, the same bytes on every stream."""
    fields = [(":status", str(status)), ("content-type", content_type.decode())]
    if length is not None:
        fields.append(("content-length", str(length)))
    encoder = hpack.Encoder()
    return encoder.encode([hpack.NeverIndexedHeaderTuple(n, v) for n, v in fields], huffman=False)


Answer = Callable[[str, str, bytes, int], None]


class Http2UpstreamProtocol(asyncio.Protocol):
    """One h2c connection: requests are handed to ``answer(method, path, body, stream_id)``,
    which writes the answer with :meth:`head`, :meth:`data` and, for slow streams, a task of its
    own registered in ``streaming``."""

    def __init__(self, answer: Answer, max_streams: int) -> None:
        self.answer = answer
        self.max_streams = max_streams
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.preface_seen = False
        self.decoder = hpack.Decoder()
        self.requests: dict[int, tuple[str, str, bytearray]] = {}
        self.block: bytearray | None = None  # a header block awaiting its CONTINUATION
        self.block_stream = 0
        self.block_ends = False
        self.streaming: dict[int, asyncio.Task[None]] = {}
        self.consumed = 0  # of the connection window we opened, since the last update

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        settings = struct.pack(">HI", 0x3, self.max_streams)  # MAX_CONCURRENT_STREAMS
        increment = struct.pack(">I", _LARGEST_WINDOW - _DEFAULT_WINDOW)
        window = frame(WINDOW_UPDATE, 0, 0, increment)
        self.transport.write(frame(SETTINGS, 0, 0, settings) + window)

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.streaming.values():
            task.cancel()
        self.streaming.clear()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.preface_seen:
            if len(self.buffer) < len(PREFACE):
                return
            if not self.buffer.startswith(PREFACE):
                self.close()
                return
            del self.buffer[: len(PREFACE)]
            self.preface_seen = True
        buffer = self.buffer
        while len(buffer) >= 9:
            size = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + size:
                return
            kind, flags = buffer[3], buffer[4]
            stream_id = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            payload = bytes(buffer[9 : 9 + size])
            del buffer[: 9 + size]
            self.frame_received(kind, flags, stream_id, payload)

    def frame_received(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        assert self.transport is not None
        if kind == DATA:
            self.data_frame(flags, stream_id, payload)
        elif kind in (HEADERS, CONTINUATION):
            self.header_frame(kind, flags, stream_id, payload)
        elif kind == SETTINGS and not flags & ACK:
            self.transport.write(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self.transport.write(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            self.requests.pop(stream_id, None)
            task = self.streaming.pop(stream_id, None)
            if task is not None:
                task.cancel()
        elif kind == GOAWAY:
            self.close()

    def header_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == HEADERS:
            start, end = 0, len(payload)
            if flags & PADDED:
                start, end = 1, end - payload[0]
            if flags & PRIORITY:
                start += 5
            self.block = bytearray(payload[start:end])
            self.block_stream, self.block_ends = stream_id, bool(flags & END_STREAM)
        elif self.block is not None:
            self.block += payload
        if not flags & END_HEADERS or self.block is None:
            return
        fields = dict(self.decoder.decode(bytes(self.block), raw=True))
        self.block = None
        method = fields.get(b":method", b"").decode("latin-1")
        path = fields.get(b":path", b"").decode("latin-1")
        self.requests[self.block_stream] = (method, path, bytearray())
        if self.block_ends:
            self.request_complete(self.block_stream)

    def data_frame(self, flags: int, stream_id: int, payload: bytes) -> None:
        assert self.transport is not None
        self.consumed += len(payload)
        if self.consumed > _LARGEST_WINDOW // 2:  # hand the connection window back
            self.transport.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.consumed)))
            self.consumed = 0
        if flags & PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        request = self.requests.get(stream_id)
        if request is not None:
            request[2].extend(payload)
            if flags & END_STREAM:
                self.request_complete(stream_id)

    def request_complete(self, stream_id: int) -> None:
        method, path, body = self.requests.pop(stream_id)
        self.answer(method, path, bytes(body), stream_id)

    # --- what the answer writes

    def head(self, stream_id: int, block: bytes, end: bool = False) -> None:
        assert self.transport is not None
        flags = END_HEADERS | (END_STREAM if end else 0)
        self.transport.write(frame(HEADERS, flags, stream_id, block))

    def data(self, stream_id: int, payload: bytes, end: bool = False) -> None:
        assert self.transport is not None
        while len(payload) > _MAX_FRAME:
            self.transport.write(frame(DATA, 0, stream_id, payload[:_MAX_FRAME]))
            payload = payload[_MAX_FRAME:]
        self.transport.write(frame(DATA, END_STREAM if end else 0, stream_id, payload))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
