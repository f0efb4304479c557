"""``interference chat -p`` against the real server with the embedded model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e


def test_chat_prompt_answers_from_the_real_server(server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "interference", "chat", "--url", server.url, "-p", "Say hello."],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.endswith("\n")
    assert done.stdout.strip()
