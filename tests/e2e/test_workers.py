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


def listening_inode(port: int) -> str:
    """The socket inode listening on 127.0.0.1:``port`` (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
            return fields[9]
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def holders(pids: list[int], inode: str) -> list[int]:
    """Those of ``pids`` that hold the socket ``inode`` open."""
    found = []
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        if f"socket:[{inode}]" in links:
            found.append(pid)
    return found


LOCAL = "providers:\n  local: {kind: local, parallel: 2, context: 4096}\n"


def test_workers_with_a_local_model_run_it_once_in_an_engine_process(tmp_path: Path) -> None:
    """The model is loaded once, in a process of its own that the workers reach with a key of
    their own; the public names are those of one process; a dead engine is restarted."""
    gateway = start_server(tmp_path, LOCAL, "--workers", "2")
    try:
        supervisor = gateway.process.pid
        assert wait_for(lambda: len(workers_of(supervisor)) == 3, 10)  # 2 workers + the engine
        models = httpx.get(f"{gateway.url}/v1/models", timeout=10).json()["data"]
        assert models[0]["id"] == "smollm2-135m-instruct"
        body = {"model": "gpt-3.5-turbo", "max_tokens": 8, "temperature": 0}
        body["messages"] = [{"role": "user", "content": "Say hi."}]
        answers = [
            httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=60)
            for _ in range(4)
        ]
        assert {a.status_code for a in answers} == {200}, answers[0].text
        assert all(a.json()["choices"][0]["message"]["content"] for a in answers)
        assert {a.headers["x-interference-deployment"] for a in answers} == {
            "local/smollm2-135m-instruct"
        }

        providers = httpx.get(f"{gateway.url}/v1/providers", timeout=10).json()["providers"]
        engine_url = next(p["base_url"] for p in providers if p["name"] == "local")
        assert engine_url.startswith("http://127.0.0.1:")
        refused = httpx.post(f"{engine_url}/chat/completions", json=body, timeout=10)
        assert refused.status_code == 401  # only the workers' key opens it

        port = int(engine_url.removesuffix("/v1").rsplit(":", 1)[1])
        children = workers_of(supervisor)
        engine = holders(children, listening_inode(port))
        assert len(engine) == 1
        os.kill(engine[0], signal.SIGKILL)
        assert wait_for(lambda: len(set(workers_of(supervisor)) - set(children)) == 1, 15)
        assert "the engine process exited" in gateway.log.read_text()
        assert wait_for(
            lambda: (
                httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=60).status_code
                == 200
            ),
            60,
        )
        current = workers_of(supervisor)
    finally:
        code = gateway.stop()
    assert code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in current)


def test_workers_must_be_positive(tmp_path: Path, upstream: FakeUpstream) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(url=upstream.url))
    done = serve_at_once(config, workers=0)
    assert done.returncode == 2
    assert "--workers must be 1 or more" in done.stderr
