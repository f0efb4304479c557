"""``interference pull`` from the fake hub, the hub stopped, then ``interference serve --model
hf:...`` answering a chat from the pulled file: nothing of the network is needed any more."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.fake_hub import FakeHub, smollm2_gguf
from tests.support.server import start_server

pytestmark = pytest.mark.e2e

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
NAME = f"hf:{REPO}:Q4_1"


def test_serve_a_pulled_model_with_the_hub_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("HF_TOKEN", "HF_HUB_OFFLINE", "INTERFERENCE_MODELS", "INTERFERENCE_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with FakeHub() as hub:
        repo = hub.add_repo(REPO, {"SmolLM2-135M-Instruct.Q4_1.gguf": smollm2_gguf()})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        pulled = subprocess.run(
            [sys.executable, "-m", "interference", "pull", NAME],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert pulled.returncode == 0, pulled.stderr
        assert "verifying the sha256 digest of SmolLM2-135M-Instruct.Q4_1.gguf" in pulled.stderr
    # the hub is stopped: its port refuses connections from here on

    server = start_server(tmp_path, "", "--model", NAME, "--parallel", "1", "--context", "2048")
    try:
        listed = httpx.get(f"{server.url}/v1/models", timeout=10).json()
        assert listed["data"][0]["id"] == f"{REPO}:Q4_1"  # then the OpenAI aliases
        (local,) = httpx.get(f"{server.url}/v1/providers", timeout=10).json()["providers"]
        snapshot = tmp_path / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots"
        assert local["path"] == str(snapshot / repo.commit / "SmolLM2-135M-Instruct.Q4_1.gguf")
        reply = server.client().chat.completions.create(
            model=f"{REPO}:Q4_1",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
        )
        assert reply.model == f"{REPO}:Q4_1"
        assert reply.choices[0].message.content
        assert reply.usage is not None
        assert reply.usage.completion_tokens > 0
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
    assert "pulling" not in server.log.read_text()  # served from the cache, no download
