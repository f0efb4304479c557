"""The local provider's translation of a chat request into an engine request (no model loaded)."""

from __future__ import annotations

from typing import Any

import pytest

from interference.config import LocalModelConfig
from interference.engine import resolve_model
from interference.engine.sampling import SMOLLM2_135M, SamplingDefaults
from interference.errors import InvalidRequestError
from interference.providers.local import LocalProvider
from interference.wire.chat import ChatCompletionRequest


def provider(**config: Any) -> LocalProvider:
    return LocalProvider(
        "local:test", resolve_model("smollm2-135m-instruct"), LocalModelConfig(**config)
    )


def request(**fields: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


def test_model_defaults_fill_what_the_request_omits() -> None:
    payload = provider().engine_payload(request(temperature=0.9))
    assert payload["temperature"] == 0.9
    assert payload["top_p"] == SMOLLM2_135M.top_p
    assert payload["repeat_penalty"] == SMOLLM2_135M.repeat_penalty
    assert payload["dry_multiplier"] == SMOLLM2_135M.dry_multiplier
    assert payload["stream_options"] == {"include_usage": True}
    assert "model" not in payload


def test_config_overrides_model_defaults_and_request_overrides_both() -> None:
    local = provider(sampling=SamplingDefaults(temperature=0.6, top_k=10))
    payload = local.engine_payload(request(top_k=5))
    assert payload["temperature"] == 0.6
    assert payload["top_k"] == 5


def test_a_single_stop_string_becomes_a_list() -> None:
    assert provider().engine_payload(request(stop="END"))["stop"] == ["END"]
    assert provider().engine_payload(request(stop=["a", "b"]))["stop"] == ["a", "b"]


def test_token_limits_and_seed() -> None:
    local = provider()
    assert local.engine_payload(request(max_completion_tokens=7, max_tokens=9))["max_tokens"] == 7
    assert local.engine_payload(request(max_tokens=9))["max_tokens"] == 9
    assert local.engine_payload(request())["max_tokens"] == 2048  # default_max_tokens
    assert "max_tokens" not in provider(default_max_tokens=None).engine_payload(request())
    assert provider(default_max_tokens=100).engine_payload(request(max_tokens=5))["max_tokens"] == 5
    # at most the slots' share of the context they share
    small = provider(context=1024, parallel=2)
    assert small.engine_payload(request())["max_tokens"] == 512
    assert local.engine_payload(request(seed=-1))["seed"] == 2**32 - 2
    assert local.engine_payload(request(seed=42))["seed"] == 42


def test_messages_are_forwarded_with_developer_as_system() -> None:
    payload = provider().engine_payload(
        request(
            messages=[
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ]
        )
    )
    assert payload["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ]


def test_image_parts_are_refused_for_a_text_model() -> None:
    bad = request(
        messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}
        ]
    )
    with pytest.raises(InvalidRequestError) as info:
        provider().engine_payload(bad)
    assert info.value.param == "messages[0].content[0].type"


def test_served_model_id_and_config_id() -> None:
    assert provider().models()[0].id == "smollm2-135m-instruct"
    assert provider(id="tiny").models()[0].id == "tiny"
    assert provider().ready is False
