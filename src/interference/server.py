"""Running the app: one process, or a supervisor with ``--workers N`` processes.

One process is uvicorn (httptools, uvloop) serving :func:`~interference.api.app.create_app`.

With workers, the supervisor binds the listening socket once and starts N worker processes
(``spawn``), each a whole gateway (its own router, upstream connection pools, health and
cooldown state) accepting from the shared socket, the kernel spreading connections among them.
It prints the banner when every worker is up, restarts a worker that dies (at most
``_RESTARTS`` times in ``_RESTART_WINDOW_S``), and on SIGINT/SIGTERM asks each to stop (uvicorn's
graceful shutdown), killing those still running after the grace period.

Workers never load a local model: N copies would cost N times the memory and split the CPU
between N engines. A local model runs in one ``interference serve`` of its own, which the
workers reach as an ``openai`` provider (README, "Multi-core").
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import multiprocessing
import multiprocessing.connection
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from typing import Any

from interference import __version__, logs
from interference.config import Config, ConfigError

logger = logging.getLogger("interference")

_CUT_MARGIN_S = 3  # after the grace period: for the error answers of cut requests
_RESTARTS, _RESTART_WINDOW_S = 5, 60.0
_START_TIMEOUT_S = 60.0


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


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def warn_if_exposed(config: Config) -> None:
    host = config.server.host
    if not is_loopback(host) and not config.server.keys():
        logger.warning(
            "listening on %s, which is not a loopback address, without API keys: anyone who "
            "can reach it can use the models. Set INTERFERENCE_API_KEYS or server.api_keys "
            '(README, "Security").',
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


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (uvicorn[standard] brings it on Linux and
    macOS): socket writes, timers and callbacks cost a fraction of asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def http_protocol(head_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, plus a bound on the time to receive a request's head.

    uvicorn times out idle keep-alive connections only after a response; a client that connects
    and sends nothing, or half a request line, would hold its connection (and a file
    descriptor) for ever. Here the head (request line and headers) must be complete within
    ``head_timeout_s`` of the connection or of the request's first byte, or the connection is
    closed. One sweep a second checks every connection (a timer per request would cost more).
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
            if sweeper is None or sweeper.done():
                sweeper = self.loop.create_task(sweep(self.connections))

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.head_since = self.loop.time()

        def on_headers_complete(self) -> None:
            self.head_since = 0.0
            super().on_headers_complete()

    return Protocol


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
            timeout_graceful_shutdown=math.ceil(grace) + _CUT_MARGIN_S,
            timeout_keep_alive=5,
            http=http_protocol(config.server.limits.head_timeout_s),
            backlog=2048,
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
        print(banner(_url(host, port), model_ids, aliases, seconds), flush=True)

    return 0 if run_app(config, on_ready=on_ready) else 1


# --- workers ---------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(config: Config, sock: socket.socket, ready: Any) -> None:
    """A worker process: the app on the shared socket; tells the supervisor when it is up."""
    configure_logging(config, worker=True)

    def on_ready(port: int, model_ids: list[str], aliases: dict[str, str]) -> None:
        with contextlib.suppress(OSError):  # a restarted worker's supervisor is not listening
            ready.send((model_ids, aliases))
        ready.close()

    run_app(config, sock, on_ready)


class _Supervisor:
    def __init__(self, config: Config, workers: int) -> None:
        self.config = config
        self.count = workers
        self.context = multiprocessing.get_context("spawn")
        self.sock = _bind(config.server.host, config.server.port)
        self.processes: list[BaseProcess] = []
        self.stopping = False
        self.restarts: list[float] = []

    def start_worker(self) -> tuple[BaseProcess, multiprocessing.connection.Connection]:
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker, args=(self.config, self.sock, sender), name="interference-worker"
        )
        process.start()
        sender.close()
        return process, receiver

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self) -> int:
        started = time.perf_counter()
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            booted = [self.start_worker() for _ in range(self.count)]
            self.processes = [process for process, _ in booted]
            answers = [self._await_ready(process, pipe) for process, pipe in booted]
            if self.stopping:
                return 0
            first = answers[0]
            if first is None or None in answers:
                return 1
            model_ids, aliases = first
            port = self.sock.getsockname()[1]
            seconds = time.perf_counter() - started
            text = banner(_url(self.config.server.host, port), model_ids, aliases, seconds)
            print(f"{text}\n  workers: {self.count}", flush=True)
            return self._supervise()
        finally:
            self._stop_all()
            self.sock.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _await_ready(
        self, process: BaseProcess, pipe: multiprocessing.connection.Connection
    ) -> tuple[list[str], dict[str, str]] | None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self.stopping and time.monotonic() < deadline:
            if pipe.poll(0.05):
                try:
                    answer: tuple[list[str], dict[str, str]] = pipe.recv()
                except EOFError:
                    break  # it died before it was up
                return answer
            if not process.is_alive():
                break
        if not self.stopping:
            logger.error("a worker did not start (exit code %s)", process.exitcode)
        return None

    def _supervise(self) -> int:
        while not self.stopping:
            sentinels = [p.sentinel for p in self.processes]
            multiprocessing.connection.wait(sentinels, timeout=0.2)
            for i, process in enumerate(self.processes):
                if process.is_alive() or self.stopping:
                    continue
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < _RESTART_WINDOW_S]
                if len(self.restarts) >= _RESTARTS:
                    logger.error("workers keep dying; giving up")
                    return 1
                self.restarts.append(now)
                logger.warning("worker %d exited (code %s); starting another", i, process.exitcode)
                self.processes[i], pipe = self.start_worker()
                pipe.close()
        return 0

    def _stop_all(self) -> None:
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()  # SIGTERM: uvicorn's graceful shutdown
        deadline = time.monotonic() + self.config.server.shutdown_grace_s + _CUT_MARGIN_S + 2
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1)


def serve_workers(config: Config, workers: int) -> int:
    """``workers`` gateway processes on one socket (configurations without a local model)."""
    if config.local_providers:
        names = ", ".join(config.local_providers)
        raise ConfigError(
            f"--workers needs a configuration without a local model (found: {names}): "
            "each worker would load its own copy. Run the local model in one "
            "`interference serve --port 8081` and add it to the workers' configuration as "
            '`{kind: openai, base_url: "http://127.0.0.1:8081/v1"}` (README, "Multi-core").'
        )
    warn_if_exposed(config)
    return _Supervisor(config, workers).run()
