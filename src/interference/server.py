"""Running the app in one process: uvicorn (httptools, uvloop) serving
:func:`~interference.api.app.create_app`, with a bound on the time to receive a request's head,
a graceful shutdown (draining, then cutting what still runs after the grace period) and the
start-up banner. ``--workers N`` runs several of these under :mod:`interference.supervisor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from interference import __version__, logs
from interference.config import Config

logger = logging.getLogger("interference")

CUT_MARGIN_S = 3  # after the grace period: for the error answers of cut requests


def banner(url: str, model_ids: list[str], aliases: dict[str, str], seconds: float) -> str:
    example = model_ids[0]
    lines = [
        f"interference {__version__} ready in {seconds:.1f} s at {url}",
        f"  OpenAI base URL: {url}/v1   (legacy openai 0.x: api_base = {url!r})",
        f"  models: {', '.join(model_ids)}",
    ]
    if aliases:
        lines.append(f"  aliases: {', '.join(aliases)}")
    lines.append(
        f"  try: curl {url}/v1/chat/completions -H 'Content-Type: application/json' "
        f'-d \'{{"model": "{example}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\''
    )
    return "\n".join(lines)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def warn_if_exposed(config: Config) -> None:
    host = config.server.host
    if not is_loopback(host) and not config.server.keys():
        logger.warning(
            "listening on %s, which is not a loopback address, without API keys: anyone who "
            "can reach it can use the models. Set INTERFERENCE_API_KEYS or server.api_keys "
            '(docs/operations.md, "Security").',
            host,
        )


def configure_logging(config: Config, worker: bool = False) -> None:
    """Log lines to stderr at the configured level and format."""
    logs.configure_logging(config.server.log_level, config.server.log_format, worker)


def raise_open_files_limit() -> None:
    """Let the process hold as many connections as the system allows it (the soft limit of
    open files is often 1024, which thousands of clients would exhaust)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


#: connections the kernel holds for us until they are accepted (it caps the figure at
#: net.core.somaxconn): a burst of thousands of clients connecting at once waits there instead
#: of having SYNs dropped and retried a second or more later
LISTEN_BACKLOG = 65535

#: generation-0 threshold of the cyclic garbage collector while serving (CPython's is 700)
GC_THRESHOLD = (50_000, 20, 10)


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap while serving: what start-up created (modules,
    models, the configuration) is moved out of its sight (``gc.freeze``), and it runs after
    50,000 net allocations instead of 700. With thousands of streams open, each owning a few
    dozen objects, CPython's defaults traversed them all again and again: collections took 32 %
    of the gateway's CPU with 3,000 streams open, 5 % once tuned (bench/README.md, "Streams").
    This holds because a request leaves no cyclic garbage behind: everything it allocates is
    freed by reference counting when it ends (the guard unhooks its record from the request's
    task). Cycles that remain wait longer for the collector than with CPython's defaults; a
    soak with 300 long-lived streams open shows the memory this costs, bounded
    (bench/README.md, "Soak")."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (uvicorn[standard] brings it on Linux and
    macOS): socket writes, timers and callbacks cost a fraction of asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def http_protocol(head_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, plus a bound on the time to receive a request's head, and
    the guard's ``x-ratelimit-*`` lines added to a response's head unchecked.

    uvicorn times out idle keep-alive connections only after a response; a client that connects
    and sends nothing, or half a request line, would hold its connection (and a file
    descriptor) for ever. Here the head (request line and headers) must be complete within
    ``head_timeout_s`` of the connection or of the request's first byte, or the connection is
    closed. One sweep a second checks every connection (a timer per request would cost more).

    Each scope gets the connection's :class:`_HeadLines` (``api.guard.HEAD_LINES``).
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from interference.api.guard import HEAD_LINES

    sweeper: asyncio.Task[None] | None = None

    async def sweep(connections: set[Any]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, head_timeout_s / 2))
            now = loop.time()
            for connection in list(connections):
                since = getattr(connection, "head_since", 0.0)
                if since and now - since > head_timeout_s and not connection.transport.is_closing():
                    connection.transport.close()

    class Protocol(HttpToolsProtocol):
        head_since = 0.0  # loop time a request's head began to arrive; 0 once it is complete

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            nonlocal sweeper
            super().connection_made(transport)
            self.head_since = self.loop.time()
            self.head_lines = _HeadLines(weakref.ref(self))
            if sweeper is None or sweeper.done():
                sweeper = self.loop.create_task(sweep(self.connections))

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.head_since = self.loop.time()
            self.scope[HEAD_LINES] = self.head_lines  # type: ignore[literal-required]

        def on_headers_complete(self) -> None:
            self.head_since = 0.0
            super().on_headers_complete()

    return Protocol


class _HeadLines:
    """``scope[HEAD_LINES]`` (:data:`interference.api.guard.HEAD_LINES`) for the requests of
    one connection: lines for the head of a response that has not begun. The response's
    ``RequestResponseCycle`` writes its head with one ``transport.write``; until then its
    transport is a :class:`_HeadWriter` that puts the lines before the head's empty line. (A
    pipelined request, whose cycle is not the connection's current one, is answered False.)
    It holds the connection weakly: a scope that held it would make a reference cycle of every
    request, left for the garbage collector."""

    __slots__ = ("connection",)

    def __init__(self, connection: weakref.ref[Any]) -> None:
        self.connection = connection

    def __call__(self, scope: object, lines: bytes) -> bool:
        connection = self.connection()
        cycle = None if connection is None else connection.cycle
        if cycle is None or cycle.scope is not scope or cycle.response_started:
            return False
        cycle.transport = _HeadWriter(cycle, lines)
        return True


class _HeadWriter:
    """A response cycle's transport until its head is written (:class:`_HeadLines`)."""

    __slots__ = ("cycle", "lines", "transport")

    def __init__(self, cycle: Any, lines: bytes) -> None:
        self.cycle, self.transport, self.lines = cycle, cycle.transport, lines

    def write(self, data: bytes) -> None:
        # a head ends with an empty line; "100 Continue" is not the response's head
        if data.endswith(b"\r\n\r\n") and not data.startswith(b"HTTP/1.1 100 "):
            self.cycle.transport = self.transport
            data = b"%s%s\r\n" % (data[:-2], self.lines)
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def run_app(
    config: Config,
    sock: socket.socket | None = None,
    on_ready: Callable[[int, list[str], dict[str, str]], None] | None = None,
) -> bool:
    """Serve until stopped (SIGINT/SIGTERM: graceful); False when it could not start.

    ``on_ready(port, model_ids, aliases)`` is called once it accepts connections.
    """
    import uvicorn

    from interference.api.app import create_app

    raise_open_files_limit()

    app = create_app(config)
    state = app.state.interference
    ready = asyncio.Event()
    grace = config.server.shutdown_grace_s

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                tune_gc()
                ready.set()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Stop accepting (uvicorn), refuse new requests on open connections and say
            # "draining" (the guard); when the grace period is over, end what still runs with
            # an error (a stream: an error event, then [DONE]).
            state.guard.begin_drain()
            logger.info("draining: %d request(s) in flight", len(state.guard.active))
            loop = asyncio.get_running_loop()
            deadline = loop.call_later(grace, state.guard.cut_all, "shutdown")
            try:
                await super().shutdown(sockets)
            finally:
                deadline.cancel()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown, which makes the
            # process die by the signal; a stop that went well should exit 0 instead.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            stops = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    server = Server(
        uvicorn.Config(
            app,
            host=config.server.host,
            port=config.server.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            # past the grace period the guard ends requests itself; uvicorn's own bound
            # (cancelling tasks, closing sockets) only catches a client that reads nothing
            timeout_graceful_shutdown=math.ceil(grace) + CUT_MARGIN_S,
            timeout_keep_alive=5,
            http=http_protocol(config.server.limits.head_timeout_s),
            backlog=LISTEN_BACKLOG,
        )
    )

    async def announce() -> None:
        await ready.wait()
        port = server.servers[0].sockets[0].getsockname()[1]
        if on_ready is not None:
            on_ready(port, state.router.model_ids, state.router.aliases)

    async def run() -> None:
        announcer = asyncio.create_task(announce())
        try:
            await server.serve(sockets=None if sock is None else [sock])
        finally:
            announcer.cancel()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(run())
    return server.started


def serve(config: Config) -> int:
    """One process: the app, its banner once it is up."""
    started = time.perf_counter()
    host = config.server.host
    warn_if_exposed(config)

    def on_ready(port: int, model_ids: list[str], aliases: dict[str, str]) -> None:
        seconds = time.perf_counter() - started
        print(banner(url_of(host, port), model_ids, aliases, seconds), flush=True)

    return 0 if run_app(config, on_ready=on_ready) else 1
