"""The real server in a subprocess, with the real embedded model."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

# seed/ holds the seed script, run as a program by test_legacy_client.py, not a test module.
collect_ignore = ["seed"]

READY = re.compile(r"ready in [0-9.]+ s at (http://\S+)")


@pytest.fixture(scope="session", autouse=True)
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Servers keep converted weights in one folder of this test session, not the user's cache
    (the first server converts the default model to Q8_0, the others reuse it)."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    url: str
    log: Path
    startup_s: float

    def client(self, **options: object) -> OpenAI:
        options = {"api_key": "none", "max_retries": 0, **options}
        return OpenAI(base_url=f"{self.url}/v1", **options)  # type: ignore[arg-type]

    def stop(self) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            raise


def start_server(tmp_path: Path, config_yaml: str, *extra: str, port: int = 0) -> ServerProcess:
    config = tmp_path / "interference.yaml"
    config.write_text(config_yaml)
    log = tmp_path / "server.log"
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "interference",
            "serve",
            "--port",
            str(port),
            "--config",
            str(config),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    url = None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = READY.search(line)
        if match:
            url = match.group(1)
            break
    if url is None:
        process.kill()
        raise RuntimeError(f"server did not start:\n{log.read_text()}")
    startup = time.perf_counter() - started
    # keep draining stdout so the server never blocks on a full pipe
    import threading

    threading.Thread(target=process.stdout.read, daemon=True).start()
    return ServerProcess(process, url, log, startup)


def stream_then_disconnect(
    url: str, body: dict[str, object], until: bytes, count: int = 1
) -> bytes:
    """POST a streamed request over a raw socket, read until ``until`` was seen ``count`` times,
    then close the connection the way a client that goes away does."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps({**body, "stream": True}).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        received = b""
        while received.count(until) < count:
            data = sock.recv(65536)
            if not data:
                raise AssertionError(f"the stream ended early: {received[-300:]!r}")
            received += data
    return received


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The default model, 4 slots, default settings otherwise."""
    running = start_server(
        tmp_path_factory.mktemp("server"), "providers:\n  local: {kind: local, parallel: 4}\n"
    )
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


@pytest.fixture(scope="session")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One slot with a 256-token context: for context bounds and slot reuse."""
    running = start_server(
        tmp_path_factory.mktemp("small"),
        "providers:\n  local: {kind: local, parallel: 1, context: 256}\n",
    )
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client
