"""Bad and unusual requests against the real server and the real embedded engine: no 5xx.

The fake providers of the unit tests accept anything a route lets through; llama.cpp does not.
Here the whole bad-request corpus (``tests/support/bad_input.py``) goes to ``interference
serve`` with the default model, each case exactly its expected refusal; then requests that pass
the gateway's validation but probe what the engine itself checks (JSON-schema grammars, tool
emulation, token ids, sampling ranges at their edges, odd message sequences). Each of those is a
200 valid against the spec or a 4xx valid against ``ErrorResponse``, as the case says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.bad_input import (
    CASES,
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    LIMITS,
    MAX_BODY,
    MODEL,
    SLOTS,
    UNSET,
    WEATHER_TOOL,
    Case,
    assert_error_response,
    check_refusal,
    json_schema_format,
    serving_config,
)
from tests.support.fuzzing import check_events
from tests.support.server import ServerProcess, start_server
from tests.support.spec import float_embeddings, validate

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def engine_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = serving_config(
        MAX_BODY, LIMITS.max_messages, LIMITS.max_input_chars, LIMITS.max_tokens
    )
    running = start_server(tmp_path_factory.mktemp("bad-input"), config)
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def http(engine_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=engine_server.url, timeout=120) as client:
        yield client


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in CASES])
def test_the_corpus_is_refused_by_the_real_server(http: httpx.Client, case: Case) -> None:
    body = case.body() if callable(case.body) else case.body
    response = http.request(case.method, case.path, headers=case.headers, content=body)
    check_refusal(response, case)


# --- valid at the gateway, and then up to the engine ------------------------------------------

HI = [{"role": "user", "content": "Say hi."}]


@dataclass(frozen=True)
class EngineCase:
    name: str
    path: str
    body: dict[str, Any]
    status: int = 200
    param: Any = UNSET


def chat(name: str, status: int = 200, param: Any = UNSET, **fields: Any) -> EngineCase:
    body = {"model": MODEL, "messages": HI, "max_tokens": 8, **fields}
    return EngineCase(name, CHAT, body, status, param)


def schema_chat(name: str, schema: Any, status: int = 200, **fields: Any) -> EngineCase:
    fmt = json_schema_format(schema=schema)
    return chat(name, status, response_format=fmt, max_tokens=24, **fields)


def tools_chat(name: str, parameters: dict[str, Any], **fields: Any) -> EngineCase:
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    return chat(name, tools=[tool], tool_choice="required", max_tokens=48, **fields)


CALLED = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "oops"}}
    ],
}

ENGINE_CASES = [
    # JSON schemas the engine turns into grammars
    schema_chat("schema/pattern-not-anchored", {"type": "string", "pattern": "ab+c"}),
    schema_chat("schema/min-length-huge", {"type": "string", "minLength": 100_000}, 400),
    schema_chat(
        "schema/min-items-huge",
        {"type": "array", "items": {"type": "string"}, "minItems": 99_999},
        400,
    ),
    # valid JSON Schema the engine's converter does not take: its refusal, as a 400
    schema_chat("schema/boolean-subschema", {"type": "object", "properties": {"a": True}}, 400),
    schema_chat("schema/boolean-root", True, 400),
    schema_chat("schema/ref-to-nothing", {"$ref": "#/$defs/nope"}, 400),
    schema_chat(
        "schema/recursive-ref",  # the engine resolves `#/...` only
        {"type": "object", "properties": {"child": {"$ref": "#"}}, "additionalProperties": False},
        400,
    ),
    schema_chat(
        "schema/defs-ref",
        {
            "$defs": {"city": {"type": "string", "maxLength": 20}},
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/city"}},
        },
    ),
    schema_chat("schema/integer-minimum-1e300", {"type": "integer", "minimum": 1e300}),
    schema_chat(
        "schema/draft-4-exclusive-minimum",
        {"type": "integer", "minimum": 3, "exclusiveMinimum": True},
    ),
    schema_chat("schema/enum-of-mixed-values", {"enum": ["a", 1, None, True, {"k": [1]}]}),
    schema_chat("schema/const-null", {"const": None}),
    schema_chat("schema/type-list", {"type": ["string", "null"]}),
    schema_chat("schema/format-date-time", {"type": "string", "format": "date-time"}),
    schema_chat("schema/unknown-format", {"type": "string", "format": "chemical-formula"}),
    schema_chat("schema/streamed", {"type": "object"}, stream=True),
    schema_chat("schema/empty", {}),
    chat(
        "format/json-object-with-schema",
        response_format={"type": "json_object", "schema": {"type": "object"}},
    ),
    chat("format/json-object", response_format={"type": "json_object"}, max_tokens=16),
    chat("format/text", response_format={"type": "text"}),
    # tools, answered by the model's grammar emulation (its template has no tool format)
    tools_chat("tools/empty-parameters", {}),
    tools_chat(
        "tools/odd-property-schemas",
        {
            "type": "object",
            "properties": {"a": {"enum": [1, "x", None]}, "b": {"anyOf": [{"type": "null"}, {}]}},
        },
    ),
    tools_chat("tools/streamed", {"type": "object"}, stream=True),
    chat("tools/auto", tools=[WEATHER_TOOL], tool_choice="auto", max_tokens=32),
    chat("tools/none", tools=[WEATHER_TOOL], tool_choice="none"),
    chat(
        "tools/named",
        tools=[WEATHER_TOOL, {"type": "function", "function": {"name": "other"}}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=32,
    ),
    chat(
        "tools/allowed-tools",
        tools=[WEATHER_TOOL],
        tool_choice={
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [{"type": "function", "function": {"name": "get_weather"}}],
            },
        },
        max_tokens=32,
    ),
    chat("tools/one-call-only", tools=[WEATHER_TOOL], parallel_tool_calls=False, max_tokens=32),
    chat(
        "tools/custom-is-unsupported",
        400,
        "tools[0].type",
        tools=[{"type": "custom", "custom": {"name": "shell"}}],
    ),
    chat(
        "tools/result-of-arguments-that-are-not-json",
        messages=[*HI, CALLED, {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
        tools=[WEATHER_TOOL],
    ),
    # messages the chat template sees
    chat(
        "messages/assistant-refusal-part",
        messages=[*HI, {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}],
    ),
    chat(
        "messages/assistant-text-parts",
        messages=[*HI, {"role": "assistant", "content": [{"type": "text", "text": "Hi"}] * 2}],
    ),
    chat("messages/only-system", messages=[{"role": "system", "content": "Be brief."}]),
    chat("messages/only-assistant", messages=[{"role": "assistant", "content": "Hello."}]),
    chat("messages/tool-first", messages=[{"role": "tool", "tool_call_id": "x", "content": "1"}]),
    chat("messages/developer", messages=[{"role": "developer", "content": "Hi"}, *HI]),
    chat(
        "messages/function-with-null-content",
        messages=[*HI, {"role": "function", "name": "f", "content": None}],
    ),
    chat("messages/empty-content", messages=[{"role": "user", "content": ""}]),
    chat(
        "messages/control-characters", messages=[{"role": "user", "content": "\x00\x1b[2J\u202e"}]
    ),
    chat("messages/user-name", messages=[{"role": "user", "content": "hi", "name": "ann"}]),
    chat(
        "messages/image-part",
        400,
        "messages[0].content[0].type",
        messages=[
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x/y"}}],
            }
        ],
    ),
    # sampling at the edges of its ranges
    chat("sampling/n-2-streamed", n=2, stream=True),
    chat("sampling/n-above-the-slots", 400, "n", n=SLOTS + 1),
    chat("sampling/logprobs-top-20", logprobs=True, top_logprobs=20),
    chat("sampling/logprobs-streamed", logprobs=True, top_logprobs=2, stream=True),
    chat("sampling/logit-bias-beyond-the-vocabulary", logit_bias={str(2**31 - 1): 100}),
    chat("sampling/logit-bias-ban-everything-common", logit_bias={str(i): -100 for i in range(64)}),
    chat("sampling/stop-empty-string", stop=[""]),
    chat("sampling/stop-four-unicode", stop=["é", "☃", "\n\n", "🙂"]),
    chat("sampling/seed-min", seed=-(2**63)),
    chat("sampling/seed-max", seed=2**63 - 1),
    chat("sampling/extremes", temperature=2, top_p=0, presence_penalty=-2, frequency_penalty=2),
    chat(
        "sampling/extensions-at-their-edges",
        top_k=0,
        min_p=1,
        typical_p=0,
        repeat_penalty=10,
        repeat_last_n=-1,
        dry_multiplier=10,
        dry_base=1,
        dry_allowed_length=0,
    ),
    chat("sampling/max-completion-tokens-1", max_completion_tokens=1),
    # legacy completions and embeddings: token ids go to the engine as they are
    EngineCase(
        "completions/token-ids", COMPLETIONS, {"model": MODEL, "prompt": [1, 2], "max_tokens": 4}
    ),
    EngineCase(
        "completions/token-id-beyond-the-vocabulary",
        COMPLETIONS,
        {"model": MODEL, "prompt": [999_999], "max_tokens": 4},
        400,
    ),
    EngineCase(
        "completions/negative-token-id",
        COMPLETIONS,
        {"model": MODEL, "prompt": [[5], [-1]], "max_tokens": 4},
        400,
    ),
    EngineCase(
        "completions/logprobs-5-n-2",
        COMPLETIONS,
        {"model": MODEL, "prompt": "Once", "max_tokens": 4, "logprobs": 5, "n": 2},
    ),
    EngineCase(
        "completions/echo",
        COMPLETIONS,
        {"model": MODEL, "prompt": "Once", "max_tokens": 4, "echo": True},
        400,
        "echo",
    ),
    EngineCase("embeddings/token-ids", EMBEDDINGS, {"model": MODEL, "input": [[1, 2], [3]]}),
    EngineCase(
        "embeddings/token-id-beyond-the-vocabulary",
        EMBEDDINGS,
        {"model": MODEL, "input": [999_999]},
        400,
    ),
    EngineCase(
        "embeddings/base64",
        EMBEDDINGS,
        {"model": MODEL, "input": "hi", "encoding_format": "base64"},
    ),
]

SCHEMAS = {
    CHAT: ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse"),
    COMPLETIONS: ("CreateCompletionResponse", "CreateCompletionResponse"),
    EMBEDDINGS: ("CreateEmbeddingResponse", None),
}


def test_the_engine_cases_are_many_and_distinct() -> None:
    assert len(ENGINE_CASES) >= 50
    assert len({case.name for case in ENGINE_CASES}) == len(ENGINE_CASES)


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in ENGINE_CASES])
def test_what_the_engine_checks_is_never_a_5xx(http: httpx.Client, case: EngineCase) -> None:
    response = http.post(case.path, content=json.dumps(case.body))
    assert response.status_code < 500, response.text
    assert response.status_code == case.status, response.text
    if case.status != 200:
        error = assert_error_response(response, case.status)
        if case.param is not UNSET:
            assert error["param"] == case.param
        return
    schema, stream_schema = SCHEMAS[case.path]
    if case.body.get("stream"):
        assert stream_schema is not None
        check_events(response.text, stream_schema)
        assert '"error"' not in response.text
    else:
        validate(float_embeddings(response.json()), schema)


def test_the_engine_refusals_carry_the_engines_reason(http: httpx.Client) -> None:
    """A refusal the gateway cannot foresee (a grammar too large for the engine) is a 400
    that says what the engine found, and the server goes on answering."""
    case = next(c for c in ENGINE_CASES if c.name == "schema/ref-to-nothing")
    error = http.post(CHAT, content=json.dumps(case.body)).json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("The model cannot take this request: ")
    assert "nope" in error["message"]
    after = http.post(CHAT, content=json.dumps(chat("after").body))
    assert after.status_code == 200, after.text


def test_the_log_has_no_engine_tracebacks(engine_server: ServerProcess) -> None:
    log = Path(engine_server.log).read_text()
    assert "Traceback" not in log, log[-3000:]
    assert " 500 " not in log, log[-3000:]
