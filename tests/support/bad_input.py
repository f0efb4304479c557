"""A corpus of bad requests: each one must be a 4xx in OpenAI's error shape, never a 5xx.

Each case is the raw bytes of a request and the exact refusal it must get: the status, and the
``param`` / ``code`` where the case names them. ``tests/unit/test_bad_input.py`` sends them
through the in-process app over a fake provider; ``tests/e2e/test_bad_input_engine.py`` sends
them to the real server with the real embedded engine. Both apps run with :data:`MAX_BODY` and
:data:`LIMITS`, so that the bodies that breach them stay small, and serve a model that answers
to :data:`MODEL` through a provider named :data:`PROVIDER`.

Every refusal must also be ``application/json``, valid against the spec's ``ErrorResponse``,
carry a non-empty message free of Python internals, and an ``x-request-id`` header.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from interference.config import LimitsConfig
from tests.support.spec import validate

MODEL = "fake-model"
PROVIDER = "fake"
MAX_BODY = 4096
SLOTS = 2  # of the real engine the corpus runs against (a request may ask for n = SLOTS + 1)
LIMITS = LimitsConfig(max_messages=4, max_input_chars=200, max_tokens=64)
JSON = {"content-type": "application/json"}

#: what an error message must never show: Python internals
LEAKS = (
    "Traceback",
    'File "',
    "pydantic",
    "ValidationError",
    "ValueError",
    "TypeError",
    "KeyError",
    "AttributeError",
    "input_value",
    "input_type",
    "errors.pydantic.dev",
)

UNSET: Any = object()


def chat(**fields: Any) -> bytes:
    """A valid chat request with ``fields`` replaced (``UNSET`` removes one)."""
    body: dict[str, Any] = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not UNSET}).encode()


def say(*messages: Any) -> bytes:
    return chat(messages=list(messages))


def user(content: Any) -> bytes:
    return say({"role": "user", "content": content})


def completion(**fields: Any) -> bytes:
    body: dict[str, Any] = {"model": "fake-model", "prompt": "hi"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not UNSET}).encode()


def embedding(**fields: Any) -> bytes:
    body: dict[str, Any] = {"model": "fake-model", "input": "hi"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not UNSET}).encode()


def chunked(body: bytes, size: int = 512) -> Callable[[], Iterator[bytes]]:
    """A body the TestClient sends with ``Transfer-Encoding: chunked`` (no Content-Length)."""

    def parts() -> Iterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start : start + size]

    return parts


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def function_tool(**fields: Any) -> dict[str, Any]:
    """A function tool with ``fields`` of its ``function`` replaced (``UNSET`` removes one)."""
    function = {**WEATHER_TOOL["function"], **fields}
    return {"type": "function", "function": {k: v for k, v in function.items() if v is not UNSET}}


def json_schema_format(**fields: Any) -> dict[str, Any]:
    """``response_format`` of type ``json_schema`` with ``fields`` of its ``json_schema`` set."""
    spec = {"name": "answer", "schema": {"type": "object"}, **fields}
    return {"type": "json_schema", "json_schema": {k: v for k, v in spec.items() if v is not UNSET}}


def nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def allowed_tools(mode: str, *names: str) -> dict[str, Any]:
    tools = [{"type": "function", "function": {"name": name}} for name in names]
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": tools}}


OK_CHAT = chat()
TOO_BIG = user("x" * (MAX_BODY + 100))

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | Callable[[], Iterator[bytes]] | None
    status: int
    param: Any = UNSET
    code: Any = UNSET


def post(
    name: str,
    body: bytes | Callable[[], Iterator[bytes]] | None,
    status: int = 400,
    param: Any = UNSET,
    code: Any = UNSET,
    *,
    path: str = CHAT,
    headers: dict[str, str] | None = None,
) -> Case:
    return Case(name, "POST", path, JSON if headers is None else headers, body, status, param, code)


def call(name: str, method: str, path: str, status: int, code: Any = UNSET) -> Case:
    return Case(name, method, path, {}, None, status, code=code)


CASES: list[Case] = [
    # --- bodies that are not JSON, or not a JSON object
    post("json/truncated", b'{"model": "fake-model", "messages": [', param=None),
    post("json/truncated-in-string", b'{"model": "fake-mo', param=None),
    post("json/trailing-brace", OK_CHAT + b"}", param=None),
    post("json/two-objects", OK_CHAT + b" " + OK_CHAT, param=None),
    post("json/single-quotes", b"{'model': 'fake-model'}", param=None),
    post("json/trailing-comma", b'{"model": "fake-model", "messages": [],}', param=None),
    post("json/comment", b"// hi\n" + OK_CHAT, param=None),
    post("json/nan-temperature", OK_CHAT[:-1] + b', "temperature": NaN}', param=None),
    post("json/infinity-top-p", OK_CHAT[:-1] + b', "top_p": Infinity}', param=None),
    post("json/neg-infinity-seed", OK_CHAT[:-1] + b', "seed": -Infinity}', param=None),
    post(
        "json/nan-in-unknown-field",
        OK_CHAT[:-1] + b', "extra": NaN}',
        param=None,
    ),
    post(
        "json/infinity-in-response-format",
        OK_CHAT[:-1] + b', "response_format": {"type": "json_object", "x": Infinity}}',
        param=None,
    ),
    post("json/bare-array", b"[1, 2]", param=None),
    post("json/bare-string", b'"{\\"model\\": \\"fake-model\\"}"', param=None),
    post("json/null", b"null", param=None),
    post("json/number", b"42", param=None),
    post("json/true", b"true", param=None),
    post("json/too-deep", b'{"model": ' + b"[" * 1500 + b"]" * 1500 + b"}", param=None),
    post("json/control-char-in-string", chat(user="a").replace(b'"a"', b'"a\x01"'), param=None),
    post("json/lone-surrogate", user("x").replace(b'"x"', b'"\\ud800"'), param=None),
    post("json/form-encoded-body", b"model=fake-model&messages=hi", param=None),
    post("empty/body", b"", param=None),
    post("empty/no-content-type", b"", headers={}, param=None),
    post("empty/content-length-0", b"", headers={**JSON, "content-length": "0"}, param=None),
    post("empty/no-body-at-all", None, param=None),
    post("empty/whitespace", b" \r\n\t ", param=None),
    # --- bytes that are not UTF-8
    post("bytes/not-utf8", b"\x80\x81\xfe\xff", param=None),
    post("bytes/not-utf8-in-string", user("hi").replace(b'"hi"', b'"h\xffi"'), param=None),
    post("bytes/latin-1-body", user("cafe").replace(b"cafe", b"caf\xe9"), param=None),
    post("bytes/utf-16", OK_CHAT.decode().encode("utf-16"), param=None),
    post("bytes/bom", b"\xef\xbb\xbf" + OK_CHAT, param=None),
    # --- content types
    post(
        "type/text-xml",
        b"<chat/>",
        415,
        None,
        "unsupported_media_type",
        headers={"content-type": "text/xml"},
    ),
    post(
        "type/multipart",
        b"--b\r\n\r\n--b--\r\n",
        415,
        None,
        "unsupported_media_type",
        headers={"content-type": "multipart/form-data; boundary=b"},
    ),
    post(
        "type/octet-stream",
        OK_CHAT,
        415,
        None,
        "unsupported_media_type",
        headers={"content-type": "application/octet-stream"},
    ),
    post(
        "type/text-html",
        OK_CHAT,
        415,
        None,
        "unsupported_media_type",
        headers={"content-type": "text/html"},
    ),
    # --- a wrong type in every top-level field
    post("field/model-missing", chat(model=UNSET), param="model"),
    post("field/model-null", chat(model=None), param="model"),
    post("field/model-list", chat(model=["fake-model"]), param="model"),
    post("field/messages-missing", chat(messages=UNSET), param="messages"),
    post(
        "field/messages-object", chat(messages={"role": "user", "content": "hi"}), param="messages"
    ),
    post("field/messages-null", chat(messages=None), param="messages"),
    post("field/temperature-list", chat(temperature=[1]), param="temperature"),
    post("field/temperature-bool", chat(temperature=True), param="temperature"),
    post("field/top-p-string", chat(top_p="1"), param="top_p"),
    post("field/n-string", chat(n="2"), param="n"),
    post("field/stream-number", chat(stream=1), param="stream"),
    post("field/stream-options-string", chat(stream_options="yes"), param="stream_options"),
    post(
        "field/stream-options-include-usage-string",
        chat(stream=True, stream_options={"include_usage": "yes"}),
        param="stream_options.include_usage",
    ),
    post("field/stop-object", chat(stop={"a": 1}), param="stop"),
    post("field/stop-list-of-numbers", chat(stop=[1]), param="stop[0]"),
    post("field/max-tokens-float", chat(max_tokens=1.5), param="max_tokens"),
    post(
        "field/max-completion-tokens-string",
        chat(max_completion_tokens="10"),
        param="max_completion_tokens",
    ),
    post("field/presence-penalty-string", chat(presence_penalty="0"), param="presence_penalty"),
    post("field/frequency-penalty-object", chat(frequency_penalty={}), param="frequency_penalty"),
    post("field/logit-bias-string", chat(logit_bias="50256:-100"), param="logit_bias"),
    post(
        "field/logit-bias-value-string",
        chat(logit_bias={"50256": "-100"}),
        param="logit_bias.50256",
    ),
    post(
        "field/logit-bias-key-superscript-digit",
        chat(logit_bias={"\u00b2": 1}),
        param="logit_bias",
    ),
    post("field/logprobs-number", chat(logprobs=1), param="logprobs"),
    post("field/top-logprobs-string", chat(top_logprobs="5"), param="top_logprobs"),
    post("field/top-logprobs-negative", chat(top_logprobs=-1), param="top_logprobs"),
    post("field/seed-float", chat(seed=1.5), param="seed"),
    post("field/user-list", chat(user=["u"]), param="user"),
    post(
        "field/response-format-string", chat(response_format="json_object"), param="response_format"
    ),
    post("field/tools-object", chat(tools={"type": "function"}), param="tools"),
    post("field/tools-list-of-strings", chat(tools=["get_weather"]), param="tools[0]"),
    post("field/tool-choice-number", chat(tool_choice=3), param="tool_choice"),
    post("field/tool-choice-list", chat(tool_choice=["auto"]), param="tool_choice"),
    post(
        "field/parallel-tool-calls-string",
        chat(parallel_tool_calls="no"),
        param="parallel_tool_calls",
    ),
    post("field/provider-empty", chat(provider=""), param="provider"),
    post("field/provider-unknown", chat(provider="nobody"), param="provider"),
    # --- out-of-range numbers
    post("range/n-zero", chat(n=0), param="n"),
    post("range/n-million", chat(n=10**6), param="n"),
    post("range/temperature-negative", chat(temperature=-1), param="temperature"),
    post("range/temperature-1e308", chat(temperature=1e308), param="temperature"),
    post("range/temperature-bigint", chat(temperature=10**400), param="temperature"),
    post("range/max-tokens-negative", chat(max_tokens=-5), param="max_tokens"),
    post("range/seed-2-to-the-70", chat(seed=2**70), param="seed"),
    post("range/logit-bias-below-minus-100", chat(logit_bias={"1": -101}), param="logit_bias.1"),
    post(
        "range/logit-bias-token-2-to-the-31", chat(logit_bias={str(2**31): 1}), param="logit_bias"
    ),
    post(
        "range/logit-bias-token-3000-digits", chat(logit_bias={"9" * 3000: 1}), param="logit_bias"
    ),
    # --- response_format, after the spec's ResponseFormat* shapes
    post("format/type-xml", chat(response_format={"type": "xml"}), param="response_format.type"),
    post("format/no-type", chat(response_format={}), param="response_format.type"),
    post("format/type-number", chat(response_format={"type": 1}), param="response_format.type"),
    post(
        "format/json-schema-missing",
        chat(response_format={"type": "json_schema"}),
        param="response_format.json_schema",
    ),
    post(
        "format/json-schema-a-string",
        chat(response_format={"type": "json_schema", "json_schema": "x"}),
        param="response_format.json_schema",
    ),
    post(
        "format/json-schema-no-name",
        chat(response_format=json_schema_format(name=UNSET)),
        param="response_format.json_schema.name",
    ),
    post(
        "format/json-schema-name-with-space",
        chat(response_format=json_schema_format(name="my schema")),
        param="response_format.json_schema.name",
    ),
    post(
        "format/json-schema-name-65-chars",
        chat(response_format=json_schema_format(name="n" * 65)),
        param="response_format.json_schema.name",
    ),
    post(
        "format/json-schema-strict-string",
        chat(response_format=json_schema_format(strict="yes")),
        param="response_format.json_schema.strict",
    ),
    post(
        "format/schema-a-string",
        chat(response_format=json_schema_format(schema="object")),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-type-nonsense",
        chat(response_format=json_schema_format(schema={"type": "nonsense"})),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-nested-type-list-of-numbers",
        chat(
            response_format=json_schema_format(
                schema={"type": "object", "properties": {"a": {"type": [1, 2]}}}
            )
        ),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-properties-a-list",
        chat(response_format=json_schema_format(schema={"properties": [{"type": "string"}]})),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-any-of-an-object",
        chat(response_format=json_schema_format(schema={"anyOf": {"type": "string"}})),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-required-a-string",
        chat(response_format=json_schema_format(schema={"type": "object", "required": "a"})),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-min-items-negative",
        chat(response_format=json_schema_format(schema={"type": "array", "minItems": -1})),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-max-length-float",
        chat(response_format=json_schema_format(schema={"type": "string", "maxLength": 1.5})),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-minimum-string",
        chat(response_format=json_schema_format(schema={"type": "integer", "minimum": "1"})),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-format-number",
        chat(response_format=json_schema_format(schema={"type": "string", "format": 5})),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-remote-ref",
        chat(response_format=json_schema_format(schema={"$ref": "https://example.com/s.json"})),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-ref-number",
        chat(response_format=json_schema_format(schema={"$ref": 5})),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-items-a-number",
        chat(response_format=json_schema_format(schema={"type": "array", "items": 3})),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/schema-nested-70-deep",
        chat(response_format=json_schema_format(schema=nested_schema(70))),
        param="response_format.json_schema.schema",
    ),
    post(
        "format/json-object-schema-a-number",
        chat(response_format={"type": "json_object", "schema": 5}),
        param="response_format.schema",
    ),
    # --- tools, after ChatCompletionTool / CustomToolChatCompletions
    post("tools/type-retrieval", chat(tools=[{"type": "retrieval"}]), param="tools[0].type"),
    post("tools/no-type", chat(tools=[{"function": {"name": "f"}}]), param="tools[0].type"),
    post("tools/no-function", chat(tools=[{"type": "function"}]), param="tools[0].function"),
    post(
        "tools/function-a-string",
        chat(tools=[{"type": "function", "function": "f"}]),
        param="tools[0].function",
    ),
    post("tools/no-name", chat(tools=[function_tool(name=UNSET)]), param="tools[0].function.name"),
    post(
        "tools/name-with-space",
        chat(tools=[function_tool(name="get weather")]),
        param="tools[0].function.name",
    ),
    post(
        "tools/name-with-dot",
        chat(tools=[WEATHER_TOOL, function_tool(name="a.b")]),
        param="tools[1].function.name",
    ),
    post("tools/name-empty", chat(tools=[function_tool(name="")]), param="tools[0].function.name"),
    post(
        "tools/description-number",
        chat(tools=[function_tool(description=5)]),
        param="tools[0].function.description",
    ),
    post(
        "tools/strict-string",
        chat(tools=[function_tool(strict="true")]),
        param="tools[0].function.strict",
    ),
    post(
        "tools/parameters-a-string",
        chat(tools=[function_tool(parameters="{}")]),
        param="tools[0].function.parameters",
    ),
    post(
        "tools/parameters-type-string",
        chat(tools=[function_tool(parameters={"type": "string"})]),
        param="tools[0].function.parameters",
    ),
    post(
        "tools/parameters-property-type-wat",
        chat(
            tools=[
                function_tool(parameters={"type": "object", "properties": {"a": {"type": "wat"}}})
            ]
        ),
        param="tools[0].function.parameters",
    ),
    post(
        "tools/parameters-property-a-string",
        chat(tools=[function_tool(parameters={"type": "object", "properties": {"a": "string"}})]),
        param="tools[0].function.parameters",
    ),
    post("tools/custom-without-custom", chat(tools=[{"type": "custom"}]), param="tools[0].custom"),
    post(
        "tools/custom-format-bnf",
        chat(tools=[{"type": "custom", "custom": {"name": "c", "format": {"type": "bnf"}}}]),
        param="tools[0].custom.format.type",
    ),
    post(
        "tools/custom-grammar-syntax-peg",
        chat(
            tools=[
                {
                    "type": "custom",
                    "custom": {
                        "name": "c",
                        "format": {
                            "type": "grammar",
                            "grammar": {"definition": "x", "syntax": "peg"},
                        },
                    },
                }
            ]
        ),
        param="tools[0].custom.format.grammar.syntax",
    ),
    # --- tool_choice, after ChatCompletionToolChoiceOption, and naming what is declared
    post(
        "choice/sometimes", chat(tools=[WEATHER_TOOL], tool_choice="sometimes"), param="tool_choice"
    ),
    post("choice/required-without-tools", chat(tool_choice="required"), param="tool_choice"),
    post(
        "choice/function-without-function",
        chat(tools=[WEATHER_TOOL], tool_choice={"type": "function"}),
        param="tool_choice.function",
    ),
    post(
        "choice/function-name-number",
        chat(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": 1}}),
        param="tool_choice.function.name",
    ),
    post(
        "choice/names-an-undeclared-function",
        chat(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}),
        param="tool_choice",
    ),
    post(
        "choice/named-without-tools",
        chat(tool_choice={"type": "function", "function": {"name": "get_weather"}}),
        param="tool_choice",
    ),
    post(
        "choice/type-tool",
        chat(tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"}),
        param="tool_choice",
    ),
    post(
        "choice/allowed-tools-mode-maybe",
        chat(tools=[WEATHER_TOOL], tool_choice=allowed_tools("maybe", "get_weather")),
        param="tool_choice.allowed_tools.mode",
    ),
    post(
        "choice/allowed-tools-empty",
        chat(tools=[WEATHER_TOOL], tool_choice=allowed_tools("auto")),
        param="tool_choice.allowed_tools.tools",
    ),
    post(
        "choice/allowed-tools-undeclared",
        chat(tools=[WEATHER_TOOL], tool_choice=allowed_tools("required", "nope")),
        param="tool_choice",
    ),
    # --- fields that only make sense together
    post("together/top-logprobs-without-logprobs", chat(top_logprobs=2), param="top_logprobs"),
    post(
        "together/top-logprobs-logprobs-false",
        chat(top_logprobs=0, logprobs=False),
        param="top_logprobs",
    ),
    # --- messages
    post("message/empty-list", chat(messages=[]), param="messages"),
    post("message/null", say(None), param="messages[0]"),
    post("message/a-list", say(["user", "hi"]), param="messages[0]"),
    post("message/no-role", say({"content": "hi"}), param="messages[0].role"),
    post("message/role-robot", say({"role": "robot", "content": "hi"}), param="messages[0].role"),
    post(
        "message/role-uppercase", say({"role": "USER", "content": "hi"}), param="messages[0].role"
    ),
    post("message/role-number", say({"role": 1, "content": "hi"}), param="messages[0].role"),
    post(
        "message/second-invalid",
        say({"role": "user", "content": "a"}, {"role": "x"}),
        param="messages[1].role",
    ),
    post("message/content-object", user({"text": "hi"}), param="messages[0].content"),
    post("message/content-bool", user(True), param="messages[0].content"),
    post("message/content-missing", say({"role": "user"}), param="messages[0].content"),
    post(
        "message/name-number",
        say({"role": "user", "content": "hi", "name": 5}),
        param="messages[0].name",
    ),
    post(
        "message/system-image-part",
        say({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}),
        param="messages[0].content[0].type",
    ),
    post(
        "message/system-text-part-number",
        say({"role": "system", "content": [{"type": "text", "text": 1}]}),
        param="messages[0].content[0].text",
    ),
    post(
        "message/tool-text-part-without-text",
        say({"role": "tool", "tool_call_id": "c", "content": [{"type": "text"}]}),
        param="messages[0].content[0].text",
    ),
    post(
        "message/tool-call-id-number",
        say({"role": "tool", "content": "x", "tool_call_id": 1}),
        param="messages[0].tool_call_id",
    ),
    post(
        "message/tool-call-without-arguments",
        say({"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}),
        param="messages[0].tool_calls[0].function.arguments",
    ),
    post("part/not-an-object", user(["hi"]), param="messages[0].content[0]"),
    post("part/no-type", user([{"text": "hi"}]), param="messages[0].content[0].type"),
    post(
        "part/type-input-image",
        user([{"type": "input_image", "image_url": "u"}]),
        param="messages[0].content[0].type",
    ),
    post(
        "part/text-number", user([{"type": "text", "text": 1}]), param="messages[0].content[0].text"
    ),
    post(
        "part/image-without-url",
        user([{"type": "image_url", "image_url": {}}]),
        param="messages[0].content[0].image_url.url",
    ),
    post(
        "part/image-without-image-url",
        user([{"type": "image_url"}]),
        param="messages[0].content[0].image_url",
    ),
    post(
        "part/image-url-a-string",
        user([{"type": "image_url", "image_url": "https://x/y.png"}]),
        param="messages[0].content[0].image_url",
    ),
    post(
        "part/image-detail-ultra",
        user([{"type": "image_url", "image_url": {"url": "u", "detail": "ultra"}}]),
        param="messages[0].content[0].image_url.detail",
    ),
    post(
        "part/audio-format-ogg",
        user([{"type": "input_audio", "input_audio": {"data": "", "format": "ogg"}}]),
        param="messages[0].content[0].input_audio.format",
    ),
    post(
        "part/assistant-image",
        say({"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}),
        param="messages[0].content[0].type",
    ),
    # --- server.limits
    post(
        "limit/too-many-messages",
        say(*[{"role": "user", "content": "hi"}] * 5),
        param="messages",
        code="too_many_messages",
    ),
    post("limit/input-too-long", user("x" * 201), param="messages", code="input_too_long"),
    post(
        "limit/input-too-long-in-parts",
        user([{"type": "text", "text": "x" * 101}] * 2),
        param="messages",
        code="input_too_long",
    ),
    post("limit/max-tokens", chat(max_tokens=65), param="max_tokens", code="max_tokens_too_large"),
    post(
        "limit/max-tokens-10-to-the-30",
        chat(max_tokens=10**30),
        param="max_tokens",
        code="max_tokens_too_large",
    ),
    post(
        "limit/max-completion-tokens",
        chat(max_completion_tokens=65),
        param="max_completion_tokens",
        code="max_tokens_too_large",
    ),
    post("limit/body-with-content-length", TOO_BIG, 413, None, "request_too_large"),
    post("limit/body-chunked", chunked(TOO_BIG), 413, None, "request_too_large"),
    post(
        "limit/body-chunked-one-part",
        chunked(TOO_BIG, size=len(TOO_BIG)),
        413,
        None,
        "request_too_large",
    ),
    post(
        "limit/body-legacy-route", TOO_BIG, 413, None, "request_too_large", path="/chat/completions"
    ),
    # --- routes and methods
    call("route/unknown", "GET", "/v1/nothing-here", 404, "not_found"),
    call("route/post-unknown", "POST", "/v1/chat", 404, "not_found"),
    call("route/v2", "POST", "/v2/chat/completions", 404, "not_found"),
    call("method/get-chat", "GET", CHAT, 405, "method_not_allowed"),
    call("method/get-chat-legacy", "GET", "/chat/completions", 405, "method_not_allowed"),
    call("method/delete-models", "DELETE", "/v1/models", 405, "method_not_allowed"),
    call("method/put-embeddings", "PUT", EMBEDDINGS, 405, "method_not_allowed"),
    call("method/get-completions-legacy", "GET", "/completions", 405, "method_not_allowed"),
    call("method/patch-model", "PATCH", "/v1/models/fake-model", 405, "method_not_allowed"),
    # --- unknown models
    post("model/unknown", chat(model="nope"), 404, "model", "model_not_found"),
    post(
        "model/unknown-legacy",
        chat(model="nope"),
        404,
        "model",
        "model_not_found",
        path="/chat/completions",
    ),
    post("model/leading-space", chat(model=" fake-model"), 404, "model", "model_not_found"),
    post("model/empty", chat(model=""), param="model"),
    post(
        "model/unknown-completions",
        completion(model="nope"),
        404,
        "model",
        "model_not_found",
        path=COMPLETIONS,
    ),
    post(
        "model/unknown-embeddings-legacy",
        embedding(model="nope"),
        404,
        "model",
        "model_not_found",
        path="/embeddings",
    ),
    post("legacy/invalid-json", b"{", param=None, path="/chat/completions"),
    # --- /v1/completions
    post("completions/invalid-json", b'{"prompt": ', param=None, path=COMPLETIONS),
    post("completions/bare-array", b"[]", param=None, path=COMPLETIONS),
    post(
        "completions/text-xml",
        b"<x/>",
        415,
        None,
        "unsupported_media_type",
        path=COMPLETIONS,
        headers={"content-type": "text/xml"},
    ),
    post("completions/prompt-missing", completion(prompt=UNSET), param="prompt", path=COMPLETIONS),
    post("completions/prompt-number", completion(prompt=42), param="prompt", path=COMPLETIONS),
    post(
        "completions/prompt-object",
        completion(prompt={"text": "hi"}),
        param="prompt",
        path=COMPLETIONS,
    ),
    post("completions/prompt-null", completion(prompt=None), param="prompt", path=COMPLETIONS),
    post("completions/prompt-empty-list", completion(prompt=[]), param="prompt", path=COMPLETIONS),
    post(
        "completions/prompt-mixed-list",
        completion(prompt=["a", 1]),
        param="prompt[1]",
        path=COMPLETIONS,
    ),
    post(
        "completions/prompt-bools", completion(prompt=[True]), param="prompt[0]", path=COMPLETIONS
    ),
    post(
        "completions/prompt-empty-token-array",
        completion(prompt=[[]]),
        param="prompt",
        path=COMPLETIONS,
    ),
    post(
        "completions/max-tokens-negative",
        completion(max_tokens=-1),
        param="max_tokens",
        path=COMPLETIONS,
    ),
    post(
        "completions/max-tokens-over-limit",
        completion(max_tokens=65),
        param="max_tokens",
        code="max_tokens_too_large",
        path=COMPLETIONS,
    ),
    post("completions/best-of-21", completion(best_of=21), param="best_of", path=COMPLETIONS),
    post("completions/logprobs-6", completion(logprobs=6), param="logprobs", path=COMPLETIONS),
    post("completions/echo-string", completion(echo="yes"), param="echo", path=COMPLETIONS),
    post(
        "completions/input-too-long",
        completion(prompt="x" * 201),
        param="prompt",
        code="input_too_long",
        path=COMPLETIONS,
    ),
    post(
        "completions/body-too-large",
        chunked(completion(prompt="x" * MAX_BODY)),
        413,
        None,
        "request_too_large",
        path=COMPLETIONS,
    ),
    post(
        "completions/legacy-prompt-number",
        completion(prompt=42),
        param="prompt",
        path="/completions",
    ),
    # --- /v1/embeddings
    post("embeddings/invalid-json", b'{"input": "a"', param=None, path=EMBEDDINGS),
    post("embeddings/null", b"null", param=None, path=EMBEDDINGS),
    post(
        "embeddings/multipart",
        b"--b--",
        415,
        None,
        "unsupported_media_type",
        path=EMBEDDINGS,
        headers={"content-type": "multipart/form-data; boundary=b"},
    ),
    post("embeddings/input-missing", embedding(input=UNSET), param="input", path=EMBEDDINGS),
    post("embeddings/input-empty-string", embedding(input=""), param="input", path=EMBEDDINGS),
    post("embeddings/input-empty-list", embedding(input=[]), param="input", path=EMBEDDINGS),
    post("embeddings/input-number", embedding(input=42), param="input", path=EMBEDDINGS),
    post(
        "embeddings/input-object", embedding(input={"text": "hi"}), param="input", path=EMBEDDINGS
    ),
    post("embeddings/input-floats", embedding(input=[1.5]), param="input[0]", path=EMBEDDINGS),
    post(
        "embeddings/input-empty-token-array",
        embedding(input=[[]]),
        param="input",
        path=EMBEDDINGS,
    ),
    post("embeddings/model-number", embedding(model=1), param="model", path=EMBEDDINGS),
    post(
        "embeddings/dimensions-zero", embedding(dimensions=0), param="dimensions", path=EMBEDDINGS
    ),
    post(
        "embeddings/encoding-int8",
        embedding(encoding_format="int8"),
        param="encoding_format",
        path=EMBEDDINGS,
    ),
    post(
        "embeddings/input-too-long",
        embedding(input=["x" * 150, "y" * 51]),
        param="input",
        code="input_too_long",
        path=EMBEDDINGS,
    ),
    post(
        "embeddings/body-too-large",
        embedding(input="x" * MAX_BODY),
        413,
        None,
        "request_too_large",
        path=EMBEDDINGS,
    ),
    post("embeddings/legacy-input-empty", embedding(input=""), param="input", path="/embeddings"),
]


def assert_error_response(response: Any, status: int) -> dict[str, Any]:
    """The checks every refusal passes; returns the ``error`` object."""
    assert response.status_code < 500, response.text
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == "application/json"
    assert response.headers.get("x-request-id")
    body = response.json()
    validate(body, "ErrorResponse")
    error: dict[str, Any] = body["error"]
    assert error["type"] == "invalid_request_error"
    message = error["message"]
    assert isinstance(message, str)
    assert message.strip()
    for leak in LEAKS:
        assert leak not in message, message
    return error


def check_refusal(response: Any, case: Case) -> None:
    """``response`` is exactly the refusal ``case`` expects."""
    error = assert_error_response(response, case.status)
    if case.param is not UNSET:
        assert error["param"] == case.param
    if case.code is not UNSET:
        assert error["code"] == case.code


def serving_config(
    max_body: int, max_messages: int, max_chars: int, max_tokens: int, slots: int = SLOTS
) -> str:
    """``interference serve``'s configuration for the runs against the real engine: the default
    model as :data:`MODEL` through provider :data:`PROVIDER`, with these limits."""
    return (
        f"server:\n  max_body_bytes: {max_body}\n"
        f"  limits: {{max_messages: {max_messages}, max_input_chars: {max_chars}, "
        f"max_tokens: {max_tokens}}}\n"
        f"providers:\n  {PROVIDER}: {{kind: local, parallel: {slots}, context: {512 * slots}, "
        f"aliases: [{MODEL}]}}\n"
    )
