"""``interference serve --workers N``: several gateway processes on one port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.openai_fake import openai_upstream
from tests.support.server import ServerProcess, start_server
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

CONFIG = """
providers:
  oai: {{kind: openai, base_url: "{url}/v1"}}
models:
  m:
    deployments: [{{provider: oai, model: upstream-model}}]
openai_aliases: false
"""


def workers_of(pid: int) -> list[int]:
    """The worker processes of a supervisor (its children but multiprocessing's tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"resource_tracker" not in cmdline:
            found.append(int(stat.parent.name))
    return sorted(found)


def wait_for(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = openai_upstream("oai").start()
    yield fake
    fake.stop()


@pytest.fixture
def gateway(tmp_path: Path, upstream: FakeUpstream) -> Iterator[ServerProcess]:
    running = start_server(tmp_path, CONFIG.format(url=upstream.url), "--workers", "2")
    yield running
    if running.process.poll() is None:
        running.stop()


def chat(url: str, stream: bool = False) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    # a new connection per request, so that the kernel may hand it to either worker
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)


def test_workers_answer_survive_a_crash_and_stop_cleanly(gateway: ServerProcess) -> None:
    supervisor = gateway.process.pid
    assert wait_for(lambda: len(workers_of(supervisor)) == 2, 10)
    first = workers_of(supervisor)

    answers = [chat(gateway.url) for _ in range(20)]
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["choices"][0]["message"]["content"] for a in answers} == {
        "Hello from oai w0 w1 w2 w3"
    }
    streamed = chat(gateway.url, stream=True)
    assert streamed.status_code == 200
    assert streamed.text.endswith("data: [DONE]\n\n")
    assert "Hello from oai" in streamed.text

    # a worker that dies is replaced, and the port keeps answering meanwhile
    os.kill(first[0], signal.SIGKILL)
    assert wait_for(lambda: len(set(workers_of(supervisor)) - set(first)) == 1, 15)
    assert len(workers_of(supervisor)) == 2
    assert all(chat(gateway.url).status_code == 200 for _ in range(10))
    assert "starting another" in gateway.log.read_text()

    current = workers_of(supervisor)
    assert gateway.stop() == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in current)


def serve_at_once(config: Path, workers: int) -> subprocess.CompletedProcess[str]:
    """``interference serve`` for a start that is refused (it returns instead of serving)."""
    argv = ["serve", "--workers", str(workers), "--config", str(config)]
    return subprocess.run(
        [sys.executable, "-m", "interference", *argv], capture_output=True, text=True, timeout=60
    )


def test_workers_refuse_a_local_model(tmp_path: Path) -> None:
    config = tmp_path / "local.yaml"
    config.write_text("providers:\n  local: {kind: local}\n")
    done = serve_at_once(config, workers=2)
    assert done.returncode == 2
    assert "--workers needs a configuration without a local model" in done.stderr
    assert "Multi-core" in done.stderr


def test_workers_must_be_positive(tmp_path: Path, upstream: FakeUpstream) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(url=upstream.url))
    done = serve_at_once(config, workers=0)
    assert done.returncode == 2
    assert "--workers must be 1 or more" in done.stderr
