"""One HTTP/2 connection to an upstream and the streams it carries: an ``asyncio.Protocol`` over
h2's sans-IO state machine (h2 parses and writes the frames; this module moves the bytes, keeps
each stream's answer, and tells the pool when a stream slot comes free), and the answer a
client reads from one stream (:class:`Http2Response`).

- Flow control: each stream may have ``_STREAM_WINDOW`` bytes unread (as the HTTP/1.1 client's
  ``_HIGH_WATER``), so a slow consumer bounds its own buffer; the connection's window is opened
  to the largest there is, so such a stream never stalls the others. Received data is
  acknowledged as the consumer reads it (a quarter window at a time: an SSE stream's few
  kilobytes, when it is released).
- A request body is sent as the peer's windows allow.
- GOAWAY: the connection takes no new stream; streams the peer says it never processed (above
  its ``last_stream_id``) fail with :class:`StreamRefusedError`, which the client retries once on
  another connection, as it does a stream reset with ``REFUSED_STREAM``. Streams below it go on
  to their end (h2 itself would close the connection at once: see ``_GoawayKeepsStreams``).
- A stream reset by the peer fails that stream only; one given up by us is reset with CANCEL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from interference.upstream.client import ProtocolError, ReadAnswer

# Streams on one connection at most, whatever the peer allows (some allow 2**31): h2 counts the
# open streams by walking them all at each new one, and a lost connection loses all of its own.
_MOST_STREAMS = 256
_STREAM_WINDOW = 1 << 20  # bytes one stream may have received and not yet read
_ACK_AT = _STREAM_WINDOW // 4  # bytes read before they are handed back to the peer's window
_LARGEST_WINDOW = 2**31 - 1  # the connection's window: never the bound, the streams' are
_DEFAULT_WINDOW = 65_535  # every window's size until SETTINGS or WINDOW_UPDATE say otherwise

_State = h2.connection.ConnectionState
_Input = h2.connection.ConnectionInputs


class _GoawayKeepsStreams(h2.connection.H2ConnectionStateMachine):
    """h2 closes a connection as soon as GOAWAY arrives and refuses every later frame, whereas
    RFC 9113 §6.8 lets the streams the peer did process run to their end (h2 issue 1181). Here
    GOAWAY leaves the state as it is; the pool opens no new stream on such a connection."""

    _transitions = {  # noqa: RUF012 (h2 declares it so, and reads it per instance)
        **h2.connection.H2ConnectionStateMachine._transitions,
        (_State.IDLE, _Input.RECV_GOAWAY): (None, _State.IDLE),
        (_State.CLIENT_OPEN, _Input.RECV_GOAWAY): (None, _State.CLIENT_OPEN),
    }


class _H2State(h2.connection.H2Connection):
    # h2 remembers how each closed stream closed, to answer its late frames rightly: 65,536 of
    # them by default, megabytes per long-lived connection; a few thousand cover the frames
    # still in flight when a stream closes
    MAX_CLOSED_STREAMS = 4096


class Http1ChosenError(ConnectionError):
    """The upstream's TLS handshake chose HTTP/1.1 (or nothing) over the ``h2`` offered."""


class StreamRefusedError(ConnectionError):
    """The upstream did not process this stream (GOAWAY below it, or REFUSED_STREAM): it is
    safe to send the request again on another connection."""


class StreamResetError(ConnectionResetError):
    """The upstream reset this stream (RST_STREAM): the stream fails, its connection goes on."""


class Stream:
    """One request's answer as it arrives: its head, then its body in pieces."""

    __slots__ = ("_waiter", "ended", "error", "headers", "id", "pieces", "status", "unacked")

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.status = 0  # set when the head has come
        self.headers: dict[str, str] = {}  # names in lower case, as HTTP/2 sends them
        self.pieces: list[bytes] = []  # body received and not yet read
        self.unacked = 0  # flow-controlled bytes received (padding included), not handed back
        self.ended = False  # the peer ended the body
        self.error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class Http2Connection(asyncio.Protocol):
    """One TCP (or TLS) connection carrying up to the peer's ``MAX_CONCURRENT_STREAMS``.

    ``on_change`` is called (with the connection) whenever it can take a stream it could not
    before, or can take no more: a stream released, the peer's settings changed, GOAWAY, the
    connection lost. The pool's bookkeeping (``reserved``, ``idle_since``) lives here too."""

    def __init__(self, on_change: Callable[[Http2Connection], None]) -> None:
        self._on_change = on_change
        self.h2 = _H2State(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.state_machine = _GoawayKeepsStreams()
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.h2.DEFAULT_MAX_HEADER_LIST_SIZE,
            },
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.going_away = False  # GOAWAY received (or sent): no new stream
        self.lost = False  # the connection is closed
        self.reserved = 0  # stream slots the pool has handed out
        self.idle_since = 0.0
        self.received = 0  # reads from the socket, to tell whether a stream saw anything
        self.served = 0  # streams opened on it
        self._senders: list[asyncio.Future[None]] = []  # bodies waiting for a window

    @property
    def capacity(self) -> int:
        """Streams it may carry at once: the peer's limit, at most ``_MOST_STREAMS`` (0 once it
        can take no new one)."""
        if self.going_away or self.lost:
            return 0
        return min(self.h2.remote_settings.max_concurrent_streams, _MOST_STREAMS)

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() != "h2":
            chosen = tls.selected_alpn_protocol() or "no protocol"
            self.fail(Http1ChosenError(f"the upstream's TLS handshake chose {chosen}, not h2"))
            return
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_LARGEST_WINDOW - _DEFAULT_WINDOW)
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.received += 1
        changed = False
        try:
            for event in self.h2.receive_data(data):
                changed |= self._handle(event)
        except (h2.exceptions.ProtocolError, ValueError) as exc:  # ValueError: a bad :status
            self.flush()  # h2's GOAWAY telling the peer why
            self.fail(ProtocolError(f"invalid HTTP/2 from the upstream: {exc!r}"))
            return
        self.flush()
        if changed:
            self._on_change(self)

    def _handle(self, event: h2.events.Event) -> bool:
        """Apply one event; True when the connection's capacity may have changed."""
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:  # given up already: hand the window back
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                stream.pieces.append(event.data)
                stream.unacked += event.flow_controlled_length
                stream.wake()
        elif isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                for name, value in event.headers:
                    key = name.decode("latin-1")
                    if key == ":status":
                        stream.status = int(value)
                    else:
                        stream.headers[key] = value.decode("latin-1")
                stream.wake()
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.ended = True
                stream.wake()
        elif isinstance(event, h2.events.StreamReset):
            self._reset_by_peer(event)
        elif isinstance(event, h2.events.WindowUpdated):
            self._wake_senders()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self.settled.done():
                self.settled.set_result(None)
            self._wake_senders()
            return True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._going_away(event.last_stream_id or 0)
            return True
        return False

    def _reset_by_peer(self, event: h2.events.StreamReset) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        code = event.error_code
        if code == ErrorCodes.REFUSED_STREAM and not stream.status:
            stream.error = StreamRefusedError(f"the upstream refused stream {stream.id}")
        else:
            name = code.name if isinstance(code, ErrorCodes) else str(code)
            stream.error = StreamResetError(f"the upstream reset the stream ({name})")
        stream.wake()
        self._wake_senders()

    def _going_away(self, last_stream_id: int) -> None:
        """No new stream; those the peer never processed fail, to be sent again elsewhere. The
        rest go on until they end or the peer closes the connection."""
        self.going_away = True
        for stream in self.streams.values():
            if stream.id > last_stream_id and stream.error is None:
                stream.error = StreamRefusedError(f"the upstream went away before {stream.id}")
                stream.wake()
        self._wake_senders()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(exc or ConnectionResetError("the upstream closed the connection"))

    # --- what the client does with it

    def fail(self, error: Exception) -> None:
        """Every unfinished stream fails with ``error``; the connection is closed."""
        if self.lost:
            return
        self.lost = True
        if not self.settled.done():
            self.settled.set_exception(error)
            self.settled.exception()  # retrieved: a connect that was given up never reads it
        for stream in self.streams.values():
            if stream.error is None and not stream.ended:
                stream.error = error
            stream.wake()
        self._wake_senders()
        if self.transport is not None:
            self.transport.abort()
        self._on_change(self)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.lost:
            self.transport.write(data)

    def open_stream(self, headers: list[tuple[bytes, bytes]], body: bool) -> Stream:
        """Send a request's head (``body``: a body follows, sent by :meth:`send_body`)."""
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, headers, end_stream=not body)
        self.flush()
        stream = self.streams[stream_id] = Stream(stream_id)
        return stream

    async def send_body(self, stream: Stream, body: bytes, end: bool = True) -> None:
        """Send ``body`` and, with ``end``, end the request, as fast as the peer's windows let
        it (a body sent in pieces ends with an empty one)."""
        if not body and end and not stream.ended and stream.error is None:
            self.h2.end_stream(stream.id)
            self.flush()
            return
        view = memoryview(body)
        while view:
            if stream.error is not None:
                raise stream.error
            if stream.ended:
                return  # answered without reading it all (a refusal): the rest is moot
            size = min(
                len(view),
                self.h2.local_flow_control_window(stream.id),
                self.h2.max_outbound_frame_size,
            )
            if size <= 0:
                waiter = asyncio.get_running_loop().create_future()
                self._senders.append(waiter)
                await waiter
                continue
            piece, view = view[:size], view[size:]
            self.h2.send_data(stream.id, piece, end_stream=end and not view)
            self.flush()

    def _wake_senders(self) -> None:
        senders, self._senders = self._senders, []
        for waiter in senders:
            if not waiter.done():
                waiter.set_result(None)

    def read(self, stream: Stream) -> bytes:
        """What ``stream`` has received and not yet read. What was read is handed back to the
        peer's window a quarter window at a time (h2 would send no WINDOW_UPDATE for less),
        and the rest when the stream is released."""
        pieces, stream.pieces = stream.pieces, []
        if stream.unacked >= _ACK_AT and not self.lost:
            self.h2.acknowledge_received_data(stream.unacked, stream.id)
            self.flush()
            stream.unacked = 0
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def release(self, stream: Stream) -> None:
        """The client is done with ``stream``: reset it unless it ended (CANCEL: the upstream
        sees the client went away), hand back the window of what was left unread, free its
        slot."""
        if self.streams.pop(stream.id, None) is None:
            return
        if not self.lost:
            state = self.h2.streams.get(stream.id)
            refused = isinstance(stream.error, StreamRefusedError)
            if state is not None and not state.closed and not refused:
                self.h2.reset_stream(stream.id, ErrorCodes.CANCEL)
            if stream.unacked:
                self.h2.acknowledge_received_data(stream.unacked, stream.id)
            self.flush()
        stream.unacked = 0
        stream.pieces = []
        self._on_change(self)

    def close(self, *, at_once: bool = False) -> None:
        """Say GOAWAY and close (the pool's idle connections, and its end). ``at_once``: do not
        wait for TLS's closing exchange either (the client's end, after which its event loop
        may stop at once and would leave the socket open)."""
        if self.lost:
            return
        self.going_away = True
        try:
            self.h2.close_connection()
            self.flush()
        except h2.exceptions.ProtocolError:
            pass
        if self.transport is not None:
            if at_once:
                self.transport.abort()
            else:
                self.transport.close()


class Http2Response(ReadAnswer):
    """An answer on one stream (:class:`~interference.upstream.client.UpstreamResponse`)."""

    def __init__(
        self,
        connection: Http2Connection,
        stream: Stream,
        finish: Callable[[Http2Connection, Stream], None],
    ) -> None:
        """``finish`` releases the stream (the client's bookkeeping of its slot)."""
        self._finish = finish
        self._connection = connection
        self._stream = stream
        self.status_code = stream.status
        self.headers: Mapping[str, str] = stream.headers  # names in lower case
        self._content: bytes | None = None

    async def _next_block(self) -> bytes | None:
        """What arrived of the body since the last call (waiting for something), or None at
        its end."""
        stream = self._stream
        while True:
            if stream.pieces:
                return self._connection.read(stream)
            if stream.ended:
                return None
            if stream.error is not None:
                raise stream.error
            await stream.wait()

    async def iter_blocks(self) -> AsyncGenerator[bytes, None]:
        """The body in the pieces it arrives in."""
        while (block := await self._next_block()) is not None:
            yield block

    def close(self) -> None:
        """Give the answer up: its stream is reset (its connection goes on with the others)."""
        self._finish(self._connection, self._stream)

    async def drain(self, seconds: float = 1.0) -> None:
        """Read what is left of the body, bounded in time, so the stream ends without a
        reset."""
        try:
            async with asyncio.timeout(seconds):
                while await self._next_block() is not None:
                    pass
        except (TimeoutError, OSError, ValueError):
            pass
