"""Bad input and error mapping: every failure is OpenAI's error shape with the right status."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.api.errors import error_response, from_validation_error
from interference.config import Config, ServerConfig
from interference.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    InterferenceError,
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitError,
    ServerError,
    UpstreamTimeoutError,
)
from interference.wire.chat import ChatCompletionRequest
from tests.support.fakes import FakeProvider
from tests.support.spec import validate

MESSAGE = {"role": "user", "content": "a"}

OK = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def with_(**fields: Any) -> dict[str, Any]:
    return {**OK, **fields}


def user(content: Any) -> dict[str, Any]:
    return with_(messages=[{"role": "user", "content": content}])


BAD_BODIES: list[tuple[str, Any, str | None]] = [
    ("missing model", {"messages": OK["messages"]}, "model"),
    ("empty model", with_(model=""), "model"),
    ("model not a string", with_(model=3), "model"),
    ("missing messages", {"model": "fake-model"}, "messages"),
    ("empty messages", with_(messages=[]), "messages"),
    ("messages not a list", with_(messages="hi"), "messages"),
    ("message not an object", with_(messages=["hi"]), "messages[0]"),
    ("unknown role", with_(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    ("missing role", with_(messages=[{"content": "x"}]), "messages[0].role"),
    ("content a number", user(5), "messages[0].content"),
    ("unknown part type", user([{"type": "video", "video": "x"}]), "messages[0].content[0].type"),
    ("text part without text", user([{"type": "text"}]), "messages[0].content[0].text"),
    (
        "assistant without content",
        with_(messages=[{"role": "assistant"}]),
        "messages[0]",
    ),
    (
        "tool without tool_call_id",
        with_(messages=[{"role": "tool", "content": "x"}]),
        "messages[0].tool_call_id",
    ),
    ("temperature a string", with_(temperature="0.5"), "temperature"),
    ("temperature too high", with_(temperature=2.5), "temperature"),
    ("temperature negative", with_(temperature=-1), "temperature"),
    ("top_p above 1", with_(top_p=1.5), "top_p"),
    ("n zero", with_(n=0), "n"),
    ("n too big", with_(n=129), "n"),
    ("n a float", with_(n=1.5), "n"),
    ("n a boolean", with_(n=True), "n"),
    ("max_tokens zero", with_(max_tokens=0), "max_tokens"),
    ("max_tokens negative", with_(max_tokens=-5), "max_tokens"),
    ("max_tokens a string", with_(max_tokens="10"), "max_tokens"),
    ("max_completion_tokens negative", with_(max_completion_tokens=-1), "max_completion_tokens"),
    ("stream a string", with_(stream="yes"), "stream"),
    ("stream_options not an object", with_(stream_options=True), "stream_options"),
    ("stop a number", with_(stop=3), "stop"),
    ("stop with five entries", with_(stop=["a", "b", "c", "d", "e"]), "stop"),
    ("presence_penalty too low", with_(presence_penalty=-3), "presence_penalty"),
    ("frequency_penalty too high", with_(frequency_penalty=2.1), "frequency_penalty"),
    ("logit_bias not a map", with_(logit_bias=[1, 2]), "logit_bias"),
    ("logit_bias value too large", with_(logit_bias={"42": 200}), "logit_bias.42"),
    ("logit_bias key not a token id", with_(logit_bias={"hello": 1}), "logit_bias"),
    ("seed a string", with_(seed="1"), "seed"),
    ("seed beyond int64", with_(seed=2**64), "seed"),
    ("top_logprobs too many", with_(top_logprobs=21), "top_logprobs"),
    ("logprobs a string", with_(logprobs="true"), "logprobs"),
    ("user not a string", with_(user=12), "user"),
    ("body a list", [OK], None),
    ("body a string", "hello", None),
]


@pytest.mark.parametrize(("case", "body", "param"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_request_bodies_are_400_naming_the_param(
    client: TestClient, case: str, body: Any, param: str | None
) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    validate(error, "ErrorResponse")
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["param"] == param
    assert error["error"]["message"]


RAW_BODIES: list[tuple[str, bytes, str]] = [
    ("invalid JSON", b'{"model": ', "could not parse the JSON"),
    ("empty body", b"", "empty"),
    ("not UTF-8", b"\xff\xfe\x00garbage", "could not parse the JSON"),
    ("trailing garbage", b'{"model": "x", "messages": []} extra', "could not parse the JSON"),
]


@pytest.mark.parametrize(("case", "raw", "needle"), RAW_BODIES, ids=[c[0] for c in RAW_BODIES])
def test_unparseable_bodies_are_400(client: TestClient, case: str, raw: bytes, needle: str) -> None:
    response = client.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()
    validate(error, "ErrorResponse")
    assert needle in error["error"]["message"]


def test_curl_default_form_content_type_is_accepted(client: TestClient) -> None:
    import json

    response = client.post(
        "/v1/chat/completions",
        content=json.dumps(OK),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200


def test_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", content=b"<xml/>", headers={"content-type": "application/xml"}
    )
    assert response.status_code == 415
    validate(response.json(), "ErrorResponse")


def test_body_over_the_limit_is_413() -> None:
    config = Config(server=ServerConfig(max_body_bytes=2048))
    with TestClient(create_app(config, providers=[FakeProvider()])) as client:
        response = client.post("/v1/chat/completions", json=user("x" * 4096))
        assert response.status_code == 413
        body = response.json()
        validate(body, "ErrorResponse")
        assert "2048" in body["error"]["message"]
        assert client.post("/v1/chat/completions", json=OK).status_code == 200


def test_unknown_route_is_404_json(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    body = response.json()
    validate(body, "ErrorResponse")
    assert "/v1/nothing-here" in body["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/chat/completions"),
        ("PUT", "/chat/completions"),
        ("POST", "/v1/models"),
        ("DELETE", "/health"),
    ],
)
def test_wrong_method_is_405_json(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    body = response.json()
    validate(body, "ErrorResponse")
    assert body["error"]["code"] == "method_not_allowed"
    assert "detail" not in body


@pytest.mark.parametrize(
    ("exc", "status", "kind", "code"),
    [
        (InvalidRequestError("x", param="p"), 400, "invalid_request_error", None),
        (ContextLengthExceededError("x"), 400, "invalid_request_error", "context_length_exceeded"),
        (AuthenticationError("x"), 401, "authentication_error", "invalid_api_key"),
        (ModelNotFoundError("m"), 404, "invalid_request_error", "model_not_found"),
        (
            RateLimitError("x", headers={"retry-after": "2"}),
            429,
            "rate_limit_exceeded",
            "rate_limit_exceeded",
        ),
        (ServerError("x"), 500, "server_error", "internal_error"),
        (UpstreamTimeoutError("x"), 504, "server_error", "upstream_timeout"),
    ],
)
def test_error_mapping(exc: InterferenceError, status: int, kind: str, code: str | None) -> None:
    response = error_response(exc)
    assert response.status_code == status
    import json

    body = json.loads(bytes(response.body))
    validate(body, "ErrorResponse")
    assert body["error"]["type"] == kind
    assert body["error"]["code"] == code
    if isinstance(exc, RateLimitError):
        assert response.headers["retry-after"] == "2"


def test_unexpected_exception_is_a_500_without_traceback() -> None:
    class Broken(FakeProvider):
        def stream_chat(self, request, model):  # type: ignore[no-untyped-def]
            raise ZeroDivisionError("secret internals")

    with TestClient(
        create_app(Config(), providers=[Broken()]), raise_server_exceptions=False
    ) as client:
        response = client.post("/v1/chat/completions", json=OK)
    assert response.status_code == 500
    body = response.json()
    validate(body, "ErrorResponse")
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"messages": [MESSAGE, {"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "messages[1].content[0].text",
        ),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"tools": [{"type": "custom", "custom": {"name": "c", "format": {"type": "bnf"}}}]},
            "tools[0].custom.format.type",
        ),
        ({"tool_choice": {"type": "function"}}, "tool_choice.function"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "x", "tools": []}}},
            "tool_choice.allowed_tools.mode",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": 1}}},
            "response_format.json_schema.schema",
        ),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"stop": [1]}, "stop[0]"),
    ],
)
def test_validation_error_param_paths(fields: dict[str, Any], param: str) -> None:
    """Tagged unions put their tag in pydantic's location; the param names fields only."""
    data = {"model": "m", "messages": [MESSAGE], **fields}
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate_json(json.dumps(data))
    assert from_validation_error(info.value, data).param == param
