"""``POST /api/pull`` and ``GET /api/tags`` (Ollama's routes) of the app, pulling from the fake
hub over real sockets: the NDJSON progress lines, ``stream: false``, a cached file, errors as
``{"error": ...}`` with their status (or as the stream's last line), and the master key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import Config
from tests.support.fake_hub import FakeHub
from tests.support.fakes import FakeProvider
from tests.support.upstream import loopback_socket, start_serving

CONTENT = os.urandom(3 << 20)
DIGEST = hashlib.sha256(CONTENT).hexdigest()
MASTER = "sk-master-for-pulls"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        running.add_repo("u/model-GGUF", {"model-Q4_K_M.gguf": CONTENT, "model-Q8_0.gguf": b"8"})
        yield running


@pytest.fixture
def cache(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub.reset()
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "INTERFERENCE_MODELS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def app_client(config: Config | None = None) -> TestClient:
    app = create_app(config or Config(), providers=[FakeProvider()])
    return TestClient(app, raise_server_exceptions=False)


def lines_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_a_streamed_pull_then_the_tags(hub: FakeHub, cache: Path) -> None:
    hub.faults.bytes_per_s = 8 << 20  # about 0.4 s: several progress lines
    with app_client() as client:
        answer = client.post("/api/pull", json={"model": "hf.co/u/model-GGUF:Q4_K_M"})
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/x-ndjson"
        lines = lines_of(answer.text)
        assert lines[0] == {"status": "pulling manifest"}
        progress = [line for line in lines if "digest" in line]
        assert len(progress) >= 3
        assert {line["status"] for line in progress} == {f"pulling {DIGEST[:12]}"}
        assert {line["digest"] for line in progress} == {f"sha256:{DIGEST}"}
        assert {line["total"] for line in progress} == {len(CONTENT)}
        completed = [line["completed"] for line in progress]
        assert completed == sorted(completed)
        assert completed[0] < len(CONTENT) == completed[-1]
        assert {"status": "verifying sha256 digest"} in lines
        assert lines[-2:] == [{"status": "writing manifest"}, {"status": "success"}]

        tags = client.get("/api/tags")
        assert tags.status_code == 200
        (model,) = tags.json()["models"]
        assert model["name"] == model["model"] == "hf:u/model-GGUF:Q4_K_M"
        assert model["size"] == len(CONTENT)
        assert model["digest"] == DIGEST
        assert model["details"]["format"] == "gguf"
        assert model["details"]["quantization_level"] == "Q4_K_M"

        hub.reset()  # pulled again: from the cache, whole at once
        again = lines_of(client.post("/api/pull", json={"name": "hf:u/model-GGUF"}).text)
        assert next(line["completed"] for line in again if "digest" in line) == len(CONTENT)
        assert hub.observed.cdn_bytes == 0
        assert again[-1] == {"status": "success"}


def test_stream_false_answers_once(hub: FakeHub, cache: Path) -> None:
    with app_client() as client:
        answer = client.post("/api/pull", json={"model": "hf:u/model-GGUF:Q8_0", "stream": False})
    assert answer.status_code == 200
    assert answer.json() == {"status": "success"}
    assert len(list(cache.glob("models--u--model-GGUF/snapshots/*/model-Q8_0.gguf"))) == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "llama3.2"}, 400, "is not a hub model name: expected hf:USER/REPO[:QUANT]"),
        ({"stream": True}, 400, "`model` is required"),
        ({"model": "hf:u/../etc"}, 400, "the repository must be USER/REPO"),
        ({"model": 7}, 400, "Invalid value for 'model'"),
        ({"model": "hf:u/absent"}, 404, "u/absent is not at"),
        ({"model": "hf:u/model-GGUF:Q2_K"}, 404, "no GGUF file tagged `Q2_K`"),
    ],
)
def test_client_mistakes_are_4xx_in_ollamas_shape(
    hub: FakeHub, cache: Path, body: dict[str, Any], status: int, message: str
) -> None:
    with app_client() as client:
        answer = client.post("/api/pull", json=body)
    assert answer.status_code == status
    assert list(answer.json()) == ["error"]
    assert message in answer.json()["error"]
    assert hub.observed.cdn_bytes == 0


def test_not_json_and_unknown_ollama_routes(cache: Path) -> None:
    with app_client() as client:
        broken = client.post(
            "/api/pull", content=b"{", headers={"content-type": "application/json"}
        )
        unknown = client.post("/api/chat", json={})
    assert broken.status_code == 400
    assert "could not parse the JSON body" in broken.json()["error"]
    assert unknown.status_code == 404
    assert unknown.json()["error"].startswith("Unknown route: POST /api/chat")


def test_a_failure_mid_stream_is_the_last_line(hub: FakeHub, cache: Path) -> None:
    hub.faults.corrupt = True
    with app_client() as client:
        answer = client.post("/api/pull", json={"model": "hf:u/model-GGUF"})
    assert answer.status_code == 200  # the stream had begun
    lines = lines_of(answer.text)
    assert lines[0] == {"status": "pulling manifest"}
    assert list(lines[-1]) == ["error"]
    assert f"the hub's is {DIGEST}" in lines[-1]["error"]
    assert {"status": "success"} not in lines


def test_with_keys_only_the_master_key_pulls(hub: FakeHub, cache: Path, tmp_path: Path) -> None:
    config = Config.model_validate(
        {
            "server": {"master_key": MASTER, "api_keys": ["sk-user"]},
            "storage": {"path": str(tmp_path / "keys.db")},
        }
    )
    body = {"model": "hf:u/model-GGUF", "stream": False}
    with app_client(config) as client:
        nobody = client.post("/api/pull", json=body)
        user = client.post("/api/pull", json=body, headers={"authorization": "Bearer sk-user"})
        user_tags = client.get("/api/tags", headers={"authorization": "Bearer sk-user"})
        master = client.post("/api/pull", json=body, headers={"authorization": f"Bearer {MASTER}"})
    assert nobody.status_code == 401
    assert list(nobody.json()) == ["error"]
    assert user.status_code == user_tags.status_code == 403
    assert user.json() == {"error": "Only the master key may pull and list models on this server."}
    assert master.status_code == 200
    assert master.json() == {"status": "success"}


def test_a_client_that_goes_away_stops_the_download(hub: FakeHub, cache: Path) -> None:
    """Over a real socket: the client closes after three progress lines; the CDN stops sending
    soon after, the partial file stays, and the next pull resumes it with Range."""
    hub.faults.bytes_per_s = 2 << 20  # 1.5 s for the whole file
    sock = loopback_socket()
    app = create_app(Config(), providers=[FakeProvider()])
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    start_serving(server, thread, "the app")
    try:
        body = json.dumps({"model": "hf:u/model-GGUF"}).encode()
        with socket.create_connection(sock.getsockname(), timeout=10) as client:
            client.sendall(
                b"POST /api/pull HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                + b"content-length: %d\r\n\r\n" % len(body)
                + body
            )
            received = b""
            while received.count(b'"completed"') < 3:
                data = client.recv(65536)
                assert data, received
                received += data
        sent, deadline = -1, time.monotonic() + 5
        while sent != hub.observed.cdn_bytes:  # until the CDN has stopped sending
            assert time.monotonic() < deadline
            sent = hub.observed.cdn_bytes
            time.sleep(0.3)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
    assert 0 < sent < len(CONTENT)
    (partial,) = cache.glob("models--u--model-GGUF/blobs/*.incomplete")
    kept = partial.stat().st_size
    assert 0 < kept <= sent
    hub.reset()
    with app_client() as client:
        again = client.post("/api/pull", json={"model": "hf:u/model-GGUF", "stream": False})
    assert again.json() == {"status": "success"}
    assert hub.observed.cdn_answers == [(206, f"bytes={kept}-")]
