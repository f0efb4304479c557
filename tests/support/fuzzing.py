"""Property-based fuzzing of the request routes, shared by the in-process tests over a fake
provider (``tests/unit/test_fuzz_requests.py``) and the runs against the real server and engine
(``tests/e2e/test_fuzz_engine.py``): whatever arrives, the answer is well formed.

Requests are valid ones with any subset of their fields (top-level, in messages, in content
parts) replaced by arbitrary JSON, added or removed, plus raw and corrupted bytes. For each:

- the status is never 5xx;
- a 200 is a valid ``CreateChatCompletionResponse`` (``CreateCompletionResponse``,
  ``CreateEmbeddingResponse``), or for a stream a sequence of ``data:`` events, each a valid
  chunk or ``ErrorResponse``, ending with ``data: [DONE]``;
- a 4xx body is a valid ``ErrorResponse``.

The runs are derandomized (reproducible in CI). Each run counts its statuses, so that a test
can check that a fair share of its requests were valid: the 200 paths are fuzzed as well as
the refusals.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Protocol

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.spec import float_embeddings, validate

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
#: what the apps under test serve (the fake provider's names; the e2e server uses them too)
MODEL = "fake-model"
PROVIDER = "fake"


class Client(Protocol):
    """Starlette's TestClient or an ``httpx.Client`` on a real server."""

    def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> Any: ...


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


# --- arbitrary JSON ----------------------------------------------------------------------------

HUGE_INTS = st.sampled_from(
    [2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**40), 10**400]
)
INTS = st.integers() | st.integers(-(2**80), 2**80) | HUGE_INTS
FLOATS = st.floats() | st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 1e-300])
#: any text: unicode, control characters, and the words the request models look for
TEXT = (
    st.text(max_size=12)
    | st.text(st.characters(max_codepoint=0x1F), max_size=4)
    | st.sampled_from(
        ["", "user", "text", "image_url", "fake-model", "fake", "auto", "function", "\x00"]
    )
)
#: lone surrogates: no valid JSON text carries one (rare, or they would spoil most bodies)
SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT, TEXT, st.none() | SURROGATES)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=10,
)


@st.composite
def encoded(draw: st.DrawFn, value: Any) -> bytes:
    """``value`` as a body: NaN and infinities as the ``NaN``/``Infinity`` literals, text as
    escapes or as raw UTF-8 (a lone surrogate then makes the bytes invalid UTF-8)."""
    ascii_only = draw(st.booleans())
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


# --- valid requests --------------------------------------------------------------------------

SHORT = st.text(max_size=16)
TEXT_PART = st.fixed_dictionaries({"type": st.just("text"), "text": SHORT})
IMAGE_PART = st.fixed_dictionaries(
    {
        "type": st.just("image_url"),
        "image_url": st.fixed_dictionaries(
            {"url": st.sampled_from(["https://example.com/a.png", "data:image/png;base64,AA=="])},
            optional={"detail": st.sampled_from(["auto", "low", "high"])},
        ),
    }
)
AUDIO_PART = st.fixed_dictionaries(
    {
        "type": st.just("input_audio"),
        "input_audio": st.fixed_dictionaries(
            {"data": st.just("UklGRg=="), "format": st.sampled_from(["wav", "mp3"])}
        ),
    }
)
FILE_PART = st.fixed_dictionaries(
    {
        "type": st.just("file"),
        "file": st.fixed_dictionaries(
            {}, optional={"file_id": SHORT, "filename": SHORT, "file_data": SHORT}
        ),
    }
)
TOOL_CALL = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["call_1", "call_2"]),
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["f", "get_weather"]), "arguments": st.just('{"a": 1}')}
        ),
    },
    optional={"type": st.just("function")},
)
MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.just("user"),
            "content": SHORT
            | st.lists(TEXT_PART | IMAGE_PART | AUDIO_PART | FILE_PART, max_size=3),
        },
        optional={"name": SHORT},
    ),
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "developer"]),
            "content": SHORT | st.lists(TEXT_PART, min_size=1, max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": SHORT},
        optional={"tool_calls": st.lists(TOOL_CALL, min_size=1, max_size=2)},
    ),
    st.fixed_dictionaries(
        {
            "role": st.just("assistant"),
            "content": st.lists(
                TEXT_PART | st.fixed_dictionaries({"type": st.just("refusal"), "refusal": SHORT}),
                max_size=2,
            ),
        }
    ),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "content": SHORT, "tool_call_id": st.just("call_1")}
    ),
    st.fixed_dictionaries(
        {"role": st.just("function"), "content": SHORT | st.none(), "name": st.just("f")}
    ),
)
TOOL = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.just("get_weather")},
            optional={"parameters": st.just({"type": "object", "properties": {}})},
        ),
    }
)
MODELS = st.sampled_from([MODEL, "gpt-4o", "GPT-4", "gpt-3.5-turbo"])

#: every optional chat field with a strategy of valid values
CHAT_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "n": st.integers(1, 3),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "stop": SHORT | st.lists(SHORT, max_size=4),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "logit_bias": st.dictionaries(
        st.integers(0, 200_000).map(str), st.integers(-100, 100), max_size=3
    ),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "user": SHORT,
    "response_format": st.sampled_from(
        [
            {"type": "text"},
            {"type": "json_object"},
            {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": {"type": "object"}},
            },
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
                        "required": ["city", "n"],
                        "additionalProperties": False,
                    },
                },
            },
        ]
    ),
    "tools": st.lists(TOOL, max_size=2),
    "tool_choice": st.sampled_from(
        ["auto", "none", "required", {"type": "function", "function": {"name": "get_weather"}}]
    ),
    "parallel_tool_calls": st.booleans(),
    "top_k": st.integers(0, 100),
    "min_p": st.floats(0, 1),
    "repeat_penalty": st.floats(0.5, 2),
    "provider": st.just(PROVIDER),
}
CHAT_FIELDS = ["model", "messages", "max_tokens", "max_completion_tokens", *CHAT_OPTIONAL]
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "refusal"]
PART_FIELDS = ["type", "text", "image_url", "input_audio", "file", "refusal"]


@st.composite
def valid_chat(draw: st.DrawFn, max_tokens: int, bounded: bool = False) -> dict[str, Any]:
    """A valid chat request asking for at most ``max_tokens`` (always asking, if ``bounded``),
    its rules across fields kept (``top_logprobs`` needs ``logprobs``; a required or named
    ``tool_choice`` needs the tool declared)."""
    body: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {"model": MODELS, "messages": st.lists(MESSAGE, min_size=1, max_size=4)},
            optional=CHAT_OPTIONAL,
        )
    )
    limit = draw(st.sampled_from(["max_tokens", "max_completion_tokens", None]))
    if limit is None and bounded:
        limit = "max_tokens"
    if limit is not None:
        body[limit] = draw(st.integers(1, max_tokens))
    if "top_logprobs" in body:
        body["logprobs"] = True
    if body.get("tool_choice") not in (None, "none", "auto") and not body.get("tools"):
        body["tools"] = [draw(TOOL)]
    return body


def _pick_message(draw: st.DrawFn, body: dict[str, Any]) -> dict[str, Any] | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    message = messages[draw(st.integers(0, len(messages) - 1))]
    return message if isinstance(message, dict) else None


def _mutate_object(draw: st.DrawFn, target: dict[str, Any], fields: list[str]) -> None:
    """Replace, add or remove one field of ``target`` (known names and arbitrary ones)."""
    action = draw(st.sampled_from(["replace", "replace", "add", "remove"]))
    if action == "remove":
        if target:
            del target[draw(st.sampled_from(sorted(target)))]
        return
    key = draw(st.sampled_from(fields)) if action == "replace" else draw(TEXT)
    target[key] = draw(JSON_VALUES)


@st.composite
def fuzzed_chat(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid chat request, then up to three mutations anywhere in it."""
    body: dict[str, Any] = draw(valid)
    if draw(st.sampled_from([False, False, False, True])):  # streams, more of them
        body["stream"] = True
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["top", "top", "message", "message", "part"]))
        if where == "top":
            _mutate_object(draw, body, CHAT_FIELDS)
            continue
        message = _pick_message(draw, body)
        if message is None:
            continue
        if where == "message":
            if draw(st.integers(0, 3)) == 0:  # the whole message
                body["messages"][body["messages"].index(message)] = draw(JSON_VALUES)
            else:
                _mutate_object(draw, message, MESSAGE_FIELDS)
            continue
        parts = message.get("content")
        if not isinstance(parts, list) or not parts:
            message["content"] = draw(st.lists(JSON_VALUES, max_size=2))
            continue
        i = draw(st.integers(0, len(parts) - 1))
        if isinstance(parts[i], dict) and draw(st.booleans()):
            _mutate_object(draw, parts[i], PART_FIELDS)
            inner = parts[i].get("image_url")
            if isinstance(inner, dict) and draw(st.booleans()):
                _mutate_object(draw, inner, ["url", "detail"])
        else:
            parts[i] = draw(JSON_VALUES)
    return body


@st.composite
def corrupted(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """The bytes of a valid request, cut short, with bytes flipped, inserted or removed."""
    data = bytearray(json.dumps(draw(valid)).encode())
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["cut", "flip", "insert", "delete"]))
        if action == "cut":
            del data[at:]
        elif action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[at]
    return bytes(data)


CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        None,
        "text/plain",
        "application/vnd.api+json",
        "text/xml",
        "multipart/form-data; boundary=x",
    ]
)


# --- checking an answer ------------------------------------------------------------------------


def check_answer(
    response: Any, schema: str, stream_schema: str | None, expect_stream: bool | None
) -> str:
    """Assert the properties of one answer; returns its status (``200-stream`` for a stream)."""
    status: int = response.status_code
    assert status < 500, response.text
    assert response.headers.get("x-request-id")
    content_type = response.headers.get("content-type", "")
    if status == 200:
        if content_type.startswith("text/event-stream"):
            assert stream_schema is not None, content_type
            assert expect_stream is not False
            check_events(response.text, stream_schema)
            return "200-stream"
        assert content_type.startswith("application/json"), content_type
        assert not expect_stream
        validate(float_embeddings(response.json()), schema)
        return "200"
    assert 400 <= status < 500, response.text
    assert content_type.startswith("application/json"), content_type
    body = response.json()
    validate(body, "ErrorResponse")
    assert body["error"]["message"]
    return str(status)


def check_events(raw: str, schema: str) -> None:
    assert raw.endswith("\n\n"), raw[-200:]
    events = raw.split("\n\n")[:-1]
    assert events
    assert events[-1] == "data: [DONE]", events[-3:]
    assert all(e.startswith("data: ") for e in events), events
    for e in events[:-1]:
        payload = json.loads(e.removeprefix("data: "))
        if "error" in payload:
            validate(payload, "ErrorResponse")
            continue
        if schema == "CreateCompletionResponse":
            # the spec models no legacy stream chunk: the ones in flight carry finish_reason
            # null, which its CreateCompletionResponse does not allow; the rest must conform
            assert payload["object"] == "text_completion"
            for choice in payload.get("choices", []):
                if isinstance(choice, dict) and choice.get("finish_reason", "") is None:
                    choice["finish_reason"] = "stop"
        validate(payload, schema)


def stream_asked(body: Any) -> bool | None:
    """Whether ``body`` asks for a stream (None: not a JSON object, cannot tell)."""
    return body.get("stream") is True if isinstance(body, dict) else None


def post(
    client: Client, path: str, content: bytes, content_type: str | None = "application/json"
) -> Any:
    headers = {} if content_type is None else {"content-type": content_type}
    return client.post(path, content=content, headers=headers)


def check_chat(
    client: Client,
    raw: bytes,
    expect_stream: bool | None,
    content_type: str | None = "application/json",
) -> str:
    """Post ``raw`` to the chat route and check its answer (:func:`check_answer`)."""
    return check_answer(
        post(client, CHAT, raw, content_type),
        "CreateChatCompletionResponse",
        "CreateChatCompletionStreamResponse",
        expect_stream,
    )


def report(name: str, statuses: Counter[str]) -> float:
    total = sum(statuses.values())
    share = (statuses["200"] + statuses["200-stream"]) / total if total else 0.0
    print(f"\n{name}: {total} requests, {share:.0%} 200, statuses {dict(sorted(statuses.items()))}")
    return share


PROMPTS = (
    SHORT
    | st.lists(SHORT, min_size=1, max_size=3)
    | st.lists(st.integers(0, 50_000), min_size=1, max_size=5)
    | st.lists(st.lists(st.integers(0, 50_000), min_size=1, max_size=3), min_size=1, max_size=3)
)


@st.composite
def valid_completion(draw: st.DrawFn, max_tokens: int, bounded: bool = False) -> dict[str, Any]:
    """A valid legacy completion request asking for at most ``max_tokens``."""
    body: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {"model": MODELS, "prompt": PROMPTS},
            optional={
                "n": st.integers(1, 3),
                "stream": st.booleans(),
                "stream_options": st.fixed_dictionaries(
                    {}, optional={"include_usage": st.booleans()}
                ),
                "temperature": st.floats(0, 2),
                "echo": st.booleans(),
                "suffix": SHORT,
                "logprobs": st.integers(0, 5),
                "stop": SHORT | st.lists(SHORT, max_size=4),
                "seed": st.integers(-(2**63), 2**63 - 1),
                "user": SHORT,
            },
        )
    )
    if bounded or draw(st.booleans()):
        body["max_tokens"] = draw(st.integers(0 if not bounded else 1, max_tokens))
    return body


COMPLETION_FIELDS = ["model", "prompt", "max_tokens", "n", "stream", "best_of", "logprobs",
                     "suffix", "echo", "stop", "temperature", "provider"]  # fmt: skip
VALID_EMBEDDING = st.fixed_dictionaries(
    {"model": MODELS, "input": PROMPTS.filter(lambda p: p != "")},
    optional={
        "encoding_format": st.sampled_from(["float", "base64"]),
        "dimensions": st.integers(1, 4096),
        "user": SHORT,
    },
)
EMBEDDING_FIELDS = ["model", "input", "encoding_format", "dimensions", "user", "provider"]


@st.composite
def fuzzed(
    draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]], fields: list[str]
) -> dict[str, Any]:
    body: dict[str, Any] = draw(valid)
    if "stream" in fields and draw(st.sampled_from([False, False, False, True])):
        body["stream"] = True
    for _ in range(draw(st.integers(0, 2))):
        _mutate_object(draw, body, fields)
    return body


# --- the runs -----------------------------------------------------------------------------------


def fuzz_chat(
    client: Client, valid: st.SearchStrategy[dict[str, Any]], examples: int
) -> Counter[str]:
    """Valid chat requests with fields fuzzed, each answer checked; the statuses seen."""
    statuses: Counter[str] = Counter()

    @fuzz_settings(examples)
    @given(body=fuzzed_chat(valid), data=st.data())
    def check(body: dict[str, Any], data: st.DataObject) -> None:
        raw = data.draw(encoded(body), label="raw")
        statuses[check_chat(client, raw, stream_asked(body))] += 1

    check()
    return statuses


def fuzz_arbitrary_json(client: Client, examples: int) -> Counter[str]:
    """Any JSON at all, and objects of the chat fields with any values, to the chat route."""
    statuses: Counter[str] = Counter()

    @fuzz_settings(examples)
    @given(body=JSON_VALUES | st.dictionaries(st.sampled_from(CHAT_FIELDS), JSON_VALUES))
    def check(body: Any) -> None:
        raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
        statuses[check_chat(client, raw, stream_asked(body))] += 1

    check()
    return statuses


def fuzz_raw_bytes(
    client: Client, valid: st.SearchStrategy[dict[str, Any]], examples: int
) -> Counter[str]:
    """Random bytes and corrupted valid bodies, under assorted content types."""
    statuses: Counter[str] = Counter()

    @fuzz_settings(examples)
    @given(raw=st.binary(max_size=256) | corrupted(valid), content_type=CONTENT_TYPES)
    def check(raw: bytes, content_type: str | None) -> None:
        statuses[check_chat(client, raw, None, content_type)] += 1

    check()
    return statuses


def fuzz_route(
    client: Client,
    path: str,
    strategy: st.SearchStrategy[Any],
    schema: str,
    stream_schema: str | None,
    examples: int,
) -> Counter[str]:
    """Requests (objects, or raw bytes) from ``strategy`` to ``path``, each answer checked."""
    statuses: Counter[str] = Counter()

    @fuzz_settings(examples)
    @given(body=strategy, data=st.data())
    def check(body: Any, data: st.DataObject) -> None:
        raw = body if isinstance(body, bytes) else data.draw(encoded(body), label="raw")
        expect_stream = stream_asked(body) if stream_schema else None
        status = check_answer(post(client, path, raw), schema, stream_schema, expect_stream)
        statuses[status] += 1

    check()
    return statuses


def completion_requests(max_tokens: int, bounded: bool = False) -> st.SearchStrategy[Any]:
    """Fuzzed and corrupted legacy completion requests."""
    valid = valid_completion(max_tokens, bounded)
    return st.one_of(
        fuzzed(valid, COMPLETION_FIELDS), fuzzed(valid, COMPLETION_FIELDS), corrupted(valid)
    )


def embedding_requests() -> st.SearchStrategy[Any]:
    """Fuzzed and corrupted embedding requests."""
    return st.one_of(
        fuzzed(VALID_EMBEDDING, EMBEDDING_FIELDS),
        fuzzed(VALID_EMBEDDING, EMBEDDING_FIELDS),
        corrupted(VALID_EMBEDDING),
    )
