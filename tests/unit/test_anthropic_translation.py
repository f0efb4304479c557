"""Anthropic Messages <-> OpenAI chat: the request's translation, the answer's, and the stream's
event order (checked by the strict reader, itself tested on broken streams)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from interference.api.anthropic_translation import (
    StreamTranslator,
    chat_request,
    message_of,
)
from interference.errors import InvalidRequestError
from interference.wire.anthropic_messages import MessagesRequest
from tests.support.anthropic_stream import read_stream


def translate(body: dict[str, Any], max_tokens: int = 100_000) -> dict[str, Any]:
    base = {"model": "m", "max_tokens": 64}
    request = MessagesRequest.model_validate_json(json.dumps(base | body))
    dumped = chat_request(request, max_tokens).model_dump(exclude_none=True, mode="json")
    return dumped


def test_system_blocks_and_a_mid_conversation_system_message() -> None:
    chat = translate(
        {
            "system": [
                {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Answer in French."},
            ],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "salut"},
                {"role": "system", "content": "Reminder: be brief."},
                {"role": "user", "content": [{"type": "text", "text": "again"}]},
            ],
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "You are terse.\nAnswer in French."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "salut"},
        {"role": "user", "content": "Reminder: be brief.\n\nagain"},
    ]


def test_a_leading_system_message_joins_the_system_prompt() -> None:
    chat = translate(
        {
            "system": "one",
            "messages": [
                {"role": "system", "content": "two"},
                {"role": "user", "content": "hi"},
            ],
        }
    )
    assert chat["messages"][0] == {"role": "system", "content": "one\n\ntwo"}
    assert chat["messages"][1] == {"role": "user", "content": "hi"}


def test_tool_use_and_tool_result_round_trip() -> None:
    chat = translate(
        {
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Weather of a city",
                    "input_schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                    "cache_control": {"type": "ephemeral"},
                    "input_examples": [{"city": "Paris"}],
                },
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            ],
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "I should call it", "signature": "x"},
                        {"type": "text", "text": "Let me check."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "18 C"}],
                        },
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
            ],
        }
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"},
        {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
    ]


def test_a_failed_tool_result_says_so_and_a_tool_only_turn_has_no_user_message() -> None:
    chat = translate(
        {
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "run", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": "no such file",
                            "is_error": True,
                        }
                    ],
                },
            ],
        }
    )
    assert chat["messages"][1] == {  # no text: content null (left out here), not ""
        "role": "assistant",
        "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "run", "arguments": "{}"}}
        ],
    }
    assert chat["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "Error: no such file",
    }


def test_images_become_image_url_parts() -> None:
    chat = translate(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                        {"type": "document", "source": {"type": "text", "data": "ignored"}},
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ]
        }
    )
    assert chat["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
        {"type": "text", "text": "What is this?"},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, None),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
        ({"type": "tool", "name": "web_search"}, None),  # a server tool, left out
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    tool = {"name": "f", "input_schema": {"type": "object", "properties": {}}}
    chat = translate(
        {
            "tools": [tool],
            "tool_choice": choice | {"disable_parallel_tool_use": True},
            "messages": [{"role": "user", "content": "x"}],
        }
    )
    assert chat.get("tool_choice") == expected
    assert chat["parallel_tool_calls"] is False


def test_sampling_stops_metadata_stream_and_the_max_tokens_clamp() -> None:
    chat = translate(
        {
            "max_tokens": 32000,
            "temperature": 1,
            "top_p": 0.9,
            "top_k": 40,
            "stop_sequences": ["a", "b", "c", "d", "e"],
            "metadata": {"user_id": "user_abc"},
            "stream": True,
            "thinking": {"type": "adaptive"},
            "context_management": {"edits": []},
            "output_config": {"effort": "high"},
            "messages": [{"role": "user", "content": "x"}],
        },
        max_tokens=4096,
    )
    assert chat["max_tokens"] == 4096
    assert (chat["temperature"], chat["top_p"], chat["top_k"]) == (1.0, 0.9, 40)
    assert chat["stop"] == ["a", "b", "c", "d"]
    assert chat["user"] == "user_abc"
    assert chat["stream"] is True
    assert chat["stream_options"] == {"include_usage": True}


def test_a_request_the_chat_side_cannot_take_is_a_400_naming_the_field() -> None:
    with pytest.raises(InvalidRequestError, match=r"^tools\.1\.name: String should match") as e:
        translate(
            {
                "tools": [
                    {"name": "good", "input_schema": {"type": "object"}},
                    {"name": "bad name!", "input_schema": {"type": "object"}},
                ],
                "messages": [{"role": "user", "content": "x"}],
            }
        )
    assert e.value.param == "tools.1.name"
    with pytest.raises(InvalidRequestError, match=r"^tools\.0\.input_schema") as e:
        translate(
            {
                "tools": [{"name": "f", "input_schema": {"type": "object", "required": "x"}}],
                "messages": [{"role": "user", "content": "x"}],
            }
        )


def test_message_of_a_completion() -> None:
    completion = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "reasoning_content": "The user wants weather.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{not json"},
                        },
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 9,
            "total_tokens": 109,
            "prompt_tokens_details": {"cached_tokens": 60},
        },
    }
    message = message_of(completion, "claude-sonnet-4-5")
    assert message["id"].startswith("msg_")
    assert message["model"] == "claude-sonnet-4-5"
    assert message["content"] == [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": ""},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"_raw": "{not json"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 40,
        "output_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")],
)
def test_finish_reasons(finish: str, reason: str) -> None:
    completion = {"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}
    assert message_of(completion, "m")["stop_reason"] == reason


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def translate_stream(chunks: list[dict[str, Any]]) -> bytes:
    translator = StreamTranslator("m")
    out = translator.start()
    for c in chunks:
        out += translator.feed(c)
    return out + translator.end()


def test_stream_of_thinking_text_and_two_tool_calls() -> None:
    raw = translate_stream(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "Let me "}),
            chunk({"reasoning_content": "think."}),
            chunk({"content": "Sure"}),
            chunk({"content": ", calling."}),
            chunk({"content": "ignored: another choice"}, index=1),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c1", "function": {"name": "a", "arguments": ""}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x"'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "c2", "function": {"name": "b", "arguments": "{}"}}
                    ]
                }
            ),
            chunk({}, "tool_calls"),
            {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 12}},
        ]
    )
    result = read_stream(raw)
    assert result.message["content"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": ""},
        {"type": "text", "text": "Sure, calling."},
        {"type": "tool_use", "id": "c1", "name": "a", "input": {"x": 1}},
        {"type": "tool_use", "id": "c2", "name": "b", "input": {}},
    ]
    assert result.message["stop_reason"] == "tool_use"
    assert result.message["usage"]["input_tokens"] == 5
    assert result.message["usage"]["output_tokens"] == 12


def test_an_empty_answer_is_still_a_whole_stream() -> None:
    result = read_stream(translate_stream([chunk({}, "length")]))
    assert result.message["content"] == []
    assert result.message["stop_reason"] == "max_tokens"


START = (
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":'
    '"message","role":"assistant","model":"m","content":[],"stop_reason":null,'
    '"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}\n\n'
)
BLOCK = (
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    '"content_block":{"type":"text","text":""}}\n\n'
)
DELTA = (
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    '"delta":{"type":"text_delta","text":"hi"}}\n\n'
)
STOP = 'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
END = (
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    '"stop_sequence":null},"usage":{"output_tokens":1}}\n\n'
    'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def test_the_strict_reader_takes_a_good_stream() -> None:
    assert read_stream(START + BLOCK + DELTA + STOP + END).message["content"] == [
        {"type": "text", "text": "hi"}
    ]


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (BLOCK + DELTA + STOP + END, "before message_start"),
        (START + START + BLOCK + DELTA + STOP + END, "a second message_start"),
        (START + DELTA + STOP + END, "none is open"),
        (START + BLOCK + DELTA + END, "while block 0 is open"),
        (START + BLOCK + DELTA + STOP, "without message_stop"),
        (START + BLOCK + DELTA + STOP + END + DELTA, "after message_stop"),
        (START + BLOCK + DELTA.replace("text_delta", "input_json_delta") + STOP + END, "in a"),
        (START + BLOCK.replace('"index":0', '"index":1') + END, "block index 1"),
        (START + "data: {}\n\n", "a frame is not"),
        (START + 'event: ping\ndata: {"type":"pong"}\n\n' + END, "carries type"),
        (START + 'event: done\ndata: {"type":"done"}\n\n', "does not send"),
        (
            START
            + BLOCK.replace('"type":"text","text":""', '"type":"thinking","thinking":""')
            + STOP
            + END,
            "without its signature_delta",
        ),
    ],
)
def test_the_strict_reader_refuses_a_broken_stream(raw: str, complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        read_stream(raw)
