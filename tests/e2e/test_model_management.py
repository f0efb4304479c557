"""Loading a local model on first use, unloading it when idle, and `interference models`."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.e2e

CONFIG = "providers:\n  lazy: {kind: local, parallel: 1, load: first-use, idle_unload_s: 1}\n"


@pytest.fixture(scope="module")
def lazy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start_server(tmp_path_factory.mktemp("lazy"), CONFIG)
    yield running
    assert running.stop() == 0


def local_state(server: ServerProcess) -> dict[str, object]:
    providers = httpx.get(f"{server.url}/v1/providers", timeout=10).json()["providers"]
    state: dict[str, object] = providers[0]
    return state


def wait_for(server: ServerProcess, loaded: bool, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while local_state(server)["loaded"] is not loaded:
        assert time.monotonic() < deadline, f"loaded is not {loaded} after {seconds} s"
        time.sleep(0.1)


def models_command(server: ServerProcess, config: Path) -> str:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "interference",
            "models",
            "--config",
            str(config),
            "--url",
            server.url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def test_first_use_load_and_idle_unload(
    lazy: ServerProcess, tmp_path: Path, weights_cache: Path
) -> None:
    config = tmp_path / "lazy.yaml"
    config.write_text(CONFIG)
    health = httpx.get(f"{lazy.url}/health", timeout=10).json()
    assert health["ready"] is True  # it can answer: the first request loads the model
    assert local_state(lazy)["loaded"] is False
    assert "not loaded" in models_command(lazy, config)

    reply = lazy.client().chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content
    assert local_state(lazy)["loaded"] is True
    output = models_command(lazy, config)
    assert "smollm2-135m-instruct" in output
    assert "load: first-use, unloaded after 1 s idle; weights: q8_0; loaded" in output
    state = local_state(lazy)
    assert state["weights"] == "q8_0"
    loaded_file = Path(state["loaded_file"])  # the Q8_0 copy, converted once into the cache
    assert loaded_file.parent == weights_cache / "interference" / "models"
    assert loaded_file.name.startswith("SmolLM2-135M-Instruct.Q4_1.q8_0-")

    wait_for(lazy, loaded=False, seconds=6)  # freed after 1 s without requests
    again = lazy.client().chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": "Hi again"}], max_tokens=4
    )
    assert again.choices[0].message.content  # and loaded again on demand
    log = lazy.log.read_text()
    assert log.count("loaded smollm2-135m-instruct in") >= 2
    assert "unloaded smollm2-135m-instruct after 1 s without requests" in log
