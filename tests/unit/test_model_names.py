"""The model names clients send: exact aliases, then patterns (the configured ones before the
defaults), matched regardless of case; the answer names the model the client asked for."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import Config, ConfigError
from tests.support.fakes import FakeProvider

HI = [{"role": "user", "content": "hi"}]


def served_by(config: dict[str, Any], name: str, path: str = "/v1/chat/completions") -> Any:
    small, big = FakeProvider("small", "small-model"), FakeProvider("big", "big-model")
    providers = {"small": {"kind": "local"}, "big": {"kind": "local"}}
    app = create_app(Config.model_validate({"providers": providers, **config}), [small, big])
    with TestClient(app, raise_server_exceptions=False) as client:
        if path == "/v1/messages":
            body: dict[str, Any] = {"model": name, "max_tokens": 5, "messages": HI}
        else:
            body = {"model": name, "messages": HI}
        response = client.post(path, json=body)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    assert response.json()["model"] == name  # the name the client used, not the model's
    return "small" if small.requests else "big"


@pytest.mark.parametrize(
    "name",
    [
        "gpt-5-codex",
        "GPT-5.1",
        "chatgpt-4o-latest",
        "o3-pro",
        "o4-mini-high",
        "codex-mini-latest",
        "claude-sonnet-4-5-20250929",
        "claude-3-5-haiku-latest",
        "text-embedding-3-small",
    ],
)
def test_client_model_names_reach_the_first_model_by_default(name: str) -> None:
    assert served_by({}, name) == "small"


def test_unknown_names_and_names_without_the_defaults_are_404() -> None:
    assert served_by({}, "llama-3-70b") is None
    assert served_by({"openai_aliases": False}, "claude-sonnet-4-5") is None
    assert served_by({"openai_aliases": False}, "gpt-4o") is None


def test_configured_patterns_come_before_the_defaults() -> None:
    config = {"aliases": {"claude-*haiku*": "big-model", "my-?": "big-model"}}
    assert served_by(config, "claude-haiku-4-5", "/v1/messages") == "big"
    assert served_by(config, "CLAUDE-3-5-HAIKU-LATEST") == "big"
    assert served_by(config, "claude-sonnet-4-5", "/v1/messages") == "small"
    assert served_by(config, "my-x") == "big"
    assert served_by(config, "my-xy") is None


def test_an_exact_alias_wins_over_a_pattern() -> None:
    config = {"aliases": {"gpt-*": "big-model", "gpt-4o": "small-model"}}
    assert served_by(config, "gpt-4o") == "small"
    assert served_by(config, "gpt-4o-mini") == "big"


def test_a_pattern_naming_no_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"aliases\.claude-\*: `nothing`"):
        create_app(Config.model_validate({"aliases": {"claude-*": "nothing"}}), [FakeProvider()])
