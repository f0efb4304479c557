"""Upstream JSON passed on as written: the hand-made shape checks, stamping, and what it reports."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from interference.wire.chunks import RawChunk, RawReply
from tests.support.spec import validate

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def envelope(obj: str, choice: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"id": "up-1", "object": obj, "created": 5, "model": "up", "choices": [choice], **top}


def chat_chunk(*, delta: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": "hi"} if delta is None else delta}
    return envelope("chat.completion.chunk", choice, **top)


def text_chunk(text: str = "hi", **top: Any) -> dict[str, Any]:
    return envelope("text_completion", {"index": 0, "text": text}, **top)


def chat_reply(**message: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": "hello", **message}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return envelope("chat.completion", choice, usage=dict(USAGE))


def text_reply() -> dict[str, Any]:
    choice = {"index": 0, "text": "hello", "finish_reason": "stop"}
    return envelope("text_completion", choice, usage=dict(USAGE))


def test_stamp_makes_a_chat_chunk_ours_and_keeps_unknown_fields() -> None:
    data = chat_chunk(system_fingerprint="fp_up", service_tier="default")
    data["choices"][0]["extra"] = {"k": 1}
    chunk = RawChunk.chat(data)
    chunk.stamp("chatcmpl-ours", 1700000000, "public")
    wire = orjson.loads(chunk.to_json())
    assert wire == {
        "id": "chatcmpl-ours",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "public",
        "service_tier": "default",
        "choices": [
            {"index": 0, "delta": {"content": "hi"}, "finish_reason": None, "extra": {"k": 1}}
        ],
    }
    validate(wire, "CreateChatCompletionStreamResponse")


def test_stamp_makes_a_text_chunk_ours() -> None:
    data = text_chunk(system_fingerprint="fp_up", service_tier="default")
    chunk = RawChunk.text(data)
    chunk.stamp("cmpl-ours", 42, "public")
    wire = orjson.loads(chunk.to_json())
    assert wire == {
        "id": "cmpl-ours",
        "object": "text_completion",
        "created": 42,
        "model": "public",
        "service_tier": "default",
        "choices": [{"index": 0, "text": "hi", "finish_reason": None, "logprobs": None}],
    }


@pytest.mark.parametrize(
    ("make", "build", "expected"),
    [
        (RawChunk.chat, chat_chunk, "chat.completion.chunk"),
        (RawChunk.text, text_chunk, "text_completion"),
        (RawReply.chat, chat_reply, "chat.completion"),
        (RawReply.text, text_reply, "text_completion"),
    ],
)
@pytest.mark.parametrize("upstream_object", [None, "chat.completion", "bogus"])
def test_object_is_set_whatever_the_upstream_wrote(
    make: Any, build: Any, expected: str, upstream_object: str | None
) -> None:
    data = build()
    if upstream_object is None:
        del data["object"]
    else:
        data["object"] = upstream_object
    assert orjson.loads(make(data).to_json())["object"] == expected


def test_stamped_chat_reply_fills_the_spec_fields_and_validates() -> None:
    data = chat_reply()
    data["system_fingerprint"] = "fp_up"
    data["choices"][0]["message"].pop("role")
    data["choices"][0]["message"]["tool_calls"] = [
        {"id": "call_1", "function": {"name": "f", "arguments": "{}"}}
    ]
    reply = RawReply.chat(data)
    reply.stamp("chatcmpl-ours", 9, "public")
    wire = orjson.loads(reply.to_json())
    assert "system_fingerprint" not in wire
    assert (wire["id"], wire["created"], wire["model"]) == ("chatcmpl-ours", 9, "public")
    assert wire["choices"] == [
        {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {
                "role": "assistant",
                "content": "hello",
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
        }
    ]
    assert reply.token_counts() == (7, 3)
    validate(wire, "CreateChatCompletionResponse")


def test_stamped_text_reply_validates() -> None:
    reply = RawReply.text(text_reply())
    reply.stamp("cmpl-ours", 9, "public")
    wire = orjson.loads(reply.to_json())
    assert wire["choices"] == [
        {"index": 0, "text": "hello", "finish_reason": "stop", "logprobs": None}
    ]
    assert reply.token_counts() == (7, 3)
    validate(wire, "CreateCompletionResponse")


def test_token_counts() -> None:
    data = chat_reply()
    del data["usage"]
    assert RawReply.chat(data).token_counts() is None
    data = text_reply()
    data["usage"] = {"total_tokens": 4}
    assert RawReply.text(data).token_counts() == (0, 0)


@pytest.mark.parametrize(
    ("delta", "finish", "usage", "expected"),
    [
        ({"content": "x"}, None, None, True),
        ({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}, None, None, True),
        ({"refusal": "no"}, None, None, True),
        ({}, "stop", None, True),
        ({}, None, USAGE, True),
        ({"role": "assistant", "content": ""}, None, None, False),
        ({"content": None, "tool_calls": [], "refusal": ""}, None, None, False),
    ],
)
def test_chat_chunk_has_output(
    delta: dict[str, Any], finish: str | None, usage: dict[str, int] | None, expected: bool
) -> None:
    data = chat_chunk(delta=delta)
    data["choices"][0]["finish_reason"] = finish
    if usage is not None:
        data["usage"] = dict(usage)
    assert RawChunk.chat(data).has_output() is expected


def test_text_chunk_has_output() -> None:
    assert RawChunk.text(text_chunk("x")).has_output() is True
    assert RawChunk.text(text_chunk("")).has_output() is False
    finished = text_chunk("")
    finished["choices"][0]["finish_reason"] = "length"
    assert RawChunk.text(finished).has_output() is True


def test_usage_chunk_tokens_and_drop_usage() -> None:
    chunk = RawChunk.chat(chat_chunk(usage=dict(USAGE)) | {"choices": []})
    assert chunk.has_choices() is False
    assert chunk.completion_tokens() == 3
    assert chunk.has_output() is True
    chunk.drop_usage()
    assert chunk.completion_tokens() is None
    assert chunk.has_output() is False
    assert "usage" not in orjson.loads(chunk.to_json())
    plain = RawChunk.text(text_chunk(usage={"prompt_tokens": 1}))
    assert plain.has_choices() is True
    assert plain.completion_tokens() == 0
    assert RawChunk.chat(chat_chunk(usage=None)).completion_tokens() is None


def _choice(**fields: Any) -> dict[str, Any]:
    return chat_chunk() | {"choices": [{"index": 0, "delta": {}, **fields}]}


def _delta(**fields: Any) -> dict[str, Any]:
    return chat_chunk(delta=fields)


MALFORMED: list[tuple[Any, dict[str, Any], str]] = [
    (RawChunk.chat, chat_chunk() | {"choices": {"0": {}}}, "choices"),
    (RawChunk.chat, {"id": "x", "object": "chat.completion.chunk"}, "choices"),
    (RawChunk.chat, chat_chunk() | {"choices": [{"delta": {}}]}, "choice"),
    (RawChunk.chat, chat_chunk() | {"choices": ["text"]}, "choice"),
    (RawChunk.chat, _choice(index=True), "choice"),
    (RawChunk.chat, _choice(index="0"), "choice"),
    (RawChunk.chat, _choice(delta="hi"), "delta"),
    (RawChunk.chat, _choice(delta=None), "delta"),
    (RawChunk.chat, _delta(role="user"), "delta role"),
    (RawChunk.chat, _delta(content=["a"]), "content"),
    (RawChunk.chat, _delta(refusal=1), "refusal"),
    (RawChunk.chat, _delta(tool_calls={"index": 0}), "tool_calls"),
    (RawChunk.chat, _delta(tool_calls=[{"id": "c", "function": {}}]), "tool call"),
    (RawChunk.chat, _delta(tool_calls=[{"index": 0, "type": "code"}]), "tool call type"),
    (RawChunk.chat, _delta(tool_calls=[{"index": 0, "function": {"arguments": {}}}]), "arguments"),
    (RawChunk.chat, _choice(finish_reason="done"), "finish_reason"),
    (RawChunk.chat, _choice(logprobs=[]), "logprobs"),
    (RawChunk.chat, chat_chunk(usage=[1, 2]), "usage"),
    (RawChunk.chat, chat_chunk(usage={"completion_tokens": "3"}), "usage.completion_tokens"),
    (RawChunk.chat, chat_chunk(usage={"prompt_tokens": 1.0}), "usage.prompt_tokens"),
    (RawChunk.text, chat_chunk(), "choice text"),
    (RawChunk.text, text_chunk() | {"choices": [{"index": 0, "text": None}]}, "choice text"),
    (
        RawChunk.text,
        text_chunk() | {"choices": [{"index": 0, "text": "", "finish_reason": "tool_calls"}]},
        "finish_reason",
    ),
    (RawReply.chat, chat_reply() | {"choices": [{"index": 0, "finish_reason": "stop"}]}, "message"),
    (RawReply.chat, chat_reply(role="user"), "message"),
    (RawReply.chat, chat_reply(content=5), "content"),
    (
        RawReply.chat,
        chat_reply(tool_calls=[{"function": {"name": "f", "arguments": "{}"}}]),
        "tool call",
    ),
    (RawReply.chat, chat_reply(tool_calls=[{"id": "c", "function": {"name": "f"}}]), "tool call"),
    (RawReply.chat, chat_reply(tool_calls=["call"]), "tool call"),
    (RawReply.chat, chat_reply(tool_calls={}), "tool_calls"),
    (
        RawReply.text,
        text_reply() | {"choices": [{"index": 0, "finish_reason": "stop"}]},
        "choice text",
    ),
    (RawReply.text, text_reply() | {"usage": "7"}, "usage"),
]


@pytest.mark.parametrize(("make", "data", "what"), MALFORMED)
def test_malformed_objects_raise_value_error(make: Any, data: dict[str, Any], what: str) -> None:
    with pytest.raises(ValueError, match=f"^malformed upstream {re.escape(what)}$"):
        make(data)


def test_a_whole_answer_without_finish_reason_says_stop() -> None:
    chat = chat_reply(content="hi")
    del chat["choices"][0]["finish_reason"]
    text = text_reply()
    text["choices"][0]["finish_reason"] = None
    for reply in (RawReply.chat(chat), RawReply.text(text)):
        reply.stamp("id-1", 1, "m")
        assert orjson.loads(reply.to_json())["choices"][0]["finish_reason"] == "stop"
    validate(orjson.loads(RawReply.chat(chat).to_json()), "CreateChatCompletionResponse")
