"""The engine's own HTTP listener (llama.cpp's server, opened inside the gateway's process) must
not be a way around the gateway: it listens on loopback only and wants its private key."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

ENGINE_ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/completion"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/tokenize"),
    ("POST", "/apply-template"),
    ("POST", "/infill"),
    ("GET", "/v1/models"),
    ("GET", "/props"),
    ("GET", "/slots"),
    ("GET", "/metrics"),
    ("GET", "/lora-adapters"),
]


def listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets process ``pid`` listens on (IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.append((address, int(port, 16)))
    return found


def test_the_engine_listens_on_loopback_only_and_refuses_requests_without_its_key(
    server: ServerProcess,
) -> None:
    gateway_port = int(server.url.rsplit(":", 1)[1])
    sockets = listening(server.process.pid)
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    assert all(address in loopback for address, _ in sockets), sockets
    engine_ports = [port for _, port in sockets if port != gateway_port]
    assert len(engine_ports) == 1, sockets
    engine = f"http://127.0.0.1:{engine_ports[0]}"
    for method, path in ENGINE_ROUTES:
        for headers in ({}, {"authorization": "Bearer none"}, {"authorization": "Bearer sk-x"}):
            response = httpx.request(method, engine + path, json={}, headers=headers, timeout=10)
            assert response.status_code == 401, (method, path, headers, response.text)
