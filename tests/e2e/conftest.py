"""The real server in a subprocess, with the real embedded model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess, start_server

# seed/ holds the seed script, run as a program by test_legacy_client.py, not a test module.
collect_ignore = ["seed"]


@pytest.fixture(scope="session", autouse=True)
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Servers keep converted weights in one folder of this test session, not the user's cache
    (the first server converts the default model to Q8_0, the others reuse it)."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


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
