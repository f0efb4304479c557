"""The seed script's client, ``openai==0.28.1``, in its own virtualenv (``make test`` makes it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
SEED = HERE / "seed" / "test_interference.py"  # the seed script, byte for byte (seed/README.md)


def legacy_python() -> str:
    path = os.environ.get("INTERFERENCE_LEGACY_PYTHON")
    if not path:
        pytest.skip("INTERFERENCE_LEGACY_PYTHON is not set (make test sets it)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [legacy_python(), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("mode", ["stream", "nostream"])
def test_legacy_client_without_v1(server: ServerProcess, mode: str) -> None:
    result = run(str(HERE / "legacy_client.py"), server.url, mode)
    assert result.returncode == 0, result.stderr
    text = result.stdout.strip()
    assert len(text.split()) >= 8, text
    assert "error" not in text.lower()[:40]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_seed_script_verbatim_on_port_1337(tmp_path: Path) -> None:
    if not _port_free(1337):
        pytest.skip("port 1337 is taken (a server is already running there)")
    running = start_server(tmp_path, "{}\n", port=1337)
    try:
        result = run(str(SEED))
    finally:
        assert running.stop() == 0
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) >= 8, result.stdout
    print(result.stdout, file=sys.stderr)
