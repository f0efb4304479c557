"""``--workers N``: a supervisor and N gateway processes on one listening socket.

The supervisor binds the listening socket once and starts N worker processes (``spawn``), each
a whole gateway (its own router, upstream connection pools, health and cooldown state; see
:mod:`interference.server`) accepting from the shared socket, the kernel spreading connections
among them. It prints the banner when every worker is up, restarts a worker that dies (at most
``_RESTARTS`` times in ``_RESTART_WINDOW_S``), and on SIGINT/SIGTERM asks each to stop (uvicorn's
graceful shutdown), killing those still running after the grace period.

Workers never load a local model: N copies would cost N times the memory and split the CPU
between N engines. A configuration with in-process engines (a local model, offline speech or
transcription) gets one more process, started first and stopped last, that runs them all; the
workers reach it as an ``openai`` provider (:mod:`interference.engine_process`). It is restarted
like a worker when it dies.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.process import BaseProcess
from typing import Any

from interference.api.telemetry import DIRECTORY_ENV
from interference.config import Config, ConfigError
from interference.engine_process import EngineSplit, in_process, split
from interference.server import (
    CUT_MARGIN_S,
    LISTEN_BACKLOG,
    banner,
    configure_logging,
    run_app,
    url_of,
    warn_if_exposed,
)

logger = logging.getLogger("interference")

_RESTARTS, _RESTART_WINDOW_S = 5, 60.0
_START_TIMEOUT_S = 60.0
_ENGINE_START_TIMEOUT_S = 900.0  # it loads the models first (a large GGUF from a slow disk)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _worker(config: Config, sock: socket.socket, ready: Any, engine: bool = False) -> None:
    """A worker process: the app on the shared socket; tells the supervisor when it is up.
    ``engine``: the engines' process, which takes only the workers' key and keeps no usage."""
    if engine:
        for name in ("INTERFERENCE_MASTER_KEY", "INTERFERENCE_API_KEYS"):
            os.environ.pop(name, None)
    configure_logging(config, worker=True)

    def on_ready(port: int, model_ids: list[str], aliases: dict[str, str]) -> None:
        with contextlib.suppress(OSError):  # a restarted worker's supervisor is not listening
            ready.send((model_ids, aliases))
        ready.close()

    run_app(config, sock, on_ready)


class _Supervisor:
    def __init__(self, config: Config, workers: int, engines: EngineSplit | None = None) -> None:
        self.config = config
        self.count = workers
        self.context = multiprocessing.get_context("spawn")
        self.sock = _bind(config.server.host, config.server.port)
        self.engines = engines
        self.engine_sock = _bind("127.0.0.1", 0) if engines is not None else None
        self.engine: BaseProcess | None = None
        self.processes: list[BaseProcess] = []
        self.stopping = False
        self.restarts: list[float] = []

    def start_worker(self) -> tuple[BaseProcess, multiprocessing.connection.Connection]:
        return self._start(self.config, self.sock, "interference-worker")

    def start_engine(self) -> tuple[BaseProcess, multiprocessing.connection.Connection]:
        assert self.engines is not None
        assert self.engine_sock is not None
        return self._start(self.engines.engine, self.engine_sock, "interference-engine", True)

    def _start(
        self, config: Config, sock: socket.socket, name: str, engine: bool = False
    ) -> tuple[BaseProcess, multiprocessing.connection.Connection]:
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker, args=(config, sock, sender, engine), name=name
        )
        process.start()
        sender.close()
        return process, receiver

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def run(self) -> int:
        started = time.perf_counter()
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        figures = ""
        try:
            if self.engines is not None and self.engine_sock is not None:
                self.engine, pipe = self.start_engine()  # first: it loads what the workers use
                if self._await_ready(self.engine, pipe, _ENGINE_START_TIMEOUT_S) is None:
                    return 0 if self.stopping else 1
                engine_port = self.engine_sock.getsockname()[1]
                self.config = self.engines.for_workers(self.config, engine_port)
            # each worker leaves its figures here, so that a scrape of any shows the whole
            # server (not the engine's process: its requests are the workers' own, counted)
            figures = tempfile.mkdtemp(prefix="interference-metrics-")
            os.environ[DIRECTORY_ENV] = figures
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
            text = banner(url_of(self.config.server.host, port), model_ids, aliases, seconds)
            print(f"{text}\n  workers: {self.count}", flush=True)
            return self._supervise()
        finally:
            self._stop_all()
            self.sock.close()
            if self.engine_sock is not None:
                self.engine_sock.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.environ.pop(DIRECTORY_ENV, None)
            if figures:
                shutil.rmtree(figures, ignore_errors=True)

    def _await_ready(
        self,
        process: BaseProcess,
        pipe: multiprocessing.connection.Connection,
        timeout_s: float = _START_TIMEOUT_S,
    ) -> tuple[list[str], dict[str, str]] | None:
        deadline = time.monotonic() + timeout_s
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
            watched = [*self.processes, *([self.engine] if self.engine is not None else [])]
            multiprocessing.connection.wait([p.sentinel for p in watched], timeout=0.2)
            dead = [i for i, p in enumerate(self.processes) if not p.is_alive()]
            engine_dead = self.engine is not None and not self.engine.is_alive()
            if self.stopping or not (dead or engine_dead):
                continue
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < _RESTART_WINDOW_S]
            if len(self.restarts) >= _RESTARTS:
                logger.error("workers keep dying; giving up")
                return 1
            self.restarts.append(now)
            if engine_dead and self.engine is not None:
                logger.warning(
                    "the engine process exited (code %s); starting another", self.engine.exitcode
                )
                self.engine, pipe = self.start_engine()  # on the same socket: the same port
                pipe.close()
            for i in dead:
                exitcode = self.processes[i].exitcode
                logger.warning("worker %d exited (code %s); starting another", i, exitcode)
                self.processes[i], pipe = self.start_worker()
                pipe.close()
        return 0

    def _stop_all(self) -> None:
        self._stop(self.processes)
        if self.engine is not None:  # last: the workers' requests in their grace period use it
            self._stop([self.engine])

    def _stop(self, processes: list[BaseProcess]) -> None:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()  # SIGTERM: uvicorn's graceful shutdown
        deadline = time.monotonic() + self.config.server.shutdown_grace_s + CUT_MARGIN_S + 2
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1)


def serve_workers(config: Config, workers: int) -> int:
    """``workers`` gateway processes on one socket, and one process for the in-process
    engines (a local model, offline speech and transcription) when the configuration has any."""
    warn_if_exposed(config)
    if config.server.master() and not config.storage.redis():
        logger.warning(
            "--workers %d without storage.redis_url: each worker counts virtual keys' rpm, tpm, "
            "max_parallel and budget reservations on its own (a key may get up to %d times its "
            "limits); set storage.redis_url to share them",
            workers,
            workers,
        )
    engines = split(config) if in_process(config) else None
    return _Supervisor(config, workers, engines).run()
