"""``interference serve`` in a subprocess, started and stopped by tests: its URL once its banner
says it is ready, its log, and a raw-socket client that goes away in the middle of a stream."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from openai import OpenAI

READY = re.compile(r"ready in [0-9.]+ s at (http://\S+)")


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
