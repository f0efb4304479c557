"""The real server and model, driven by the current ``openai`` package and by raw HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.support.server import ServerProcess
from tests.support.spec import validate

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Say hello."}]
NO_EOS = {"2": -100}  # SmolLM2's <|im_end|>: generation can only end by a limit


def raw_stream(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST a streamed request and return its parsed events, checking the SSE framing."""
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events[:-1])
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    return chunks


def test_non_stream(server: ServerProcess, http: httpx.Client) -> None:
    client = server.client()
    completion = client.chat.completions.create(
        model="gpt-3.5-turbo", messages=HELLO, max_tokens=20
    )
    assert completion.model == "gpt-3.5-turbo"
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens <= 20
    body = http.post(
        "/v1/chat/completions",
        json={"model": "smollm2-135m-instruct", "messages": HELLO, "max_tokens": 10},
    ).json()
    validate(body, "CreateChatCompletionResponse")
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["refusal"] is None
    assert body["choices"][0]["logprobs"] is None


def test_stream(server: ServerProcess, http: httpx.Client) -> None:
    client = server.client()
    deltas = []
    for chunk in client.chat.completions.create(
        model="gpt-4o", messages=HELLO, max_tokens=30, stream=True
    ):
        assert chunk.model == "gpt-4o"
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
    assert len(deltas) > 1
    chunks = raw_stream(http, {"model": "gpt-4o", "messages": HELLO, "max_tokens": 30})
    assert len({c["id"] for c in chunks}) == 1
    assert len({c["created"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all("usage" not in c for c in chunks)


def test_tokens_arrive_as_they_are_generated(http: httpx.Client) -> None:
    body = {
        "model": "gpt-4",
        "messages": HELLO,
        "max_tokens": 40,
        "logit_bias": NO_EOS,
        "stream": True,
    }
    arrivals: list[float] = []
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                arrivals.append(time.perf_counter())
    # the engine holds back text that may begin a stop string or a UTF-8 sequence and then
    # sends it with the next token: 27 to 40 deltas were seen, depending on the sampled text
    assert len(arrivals) >= 20
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # 40 tokens take tens of milliseconds to generate: a buffered stream arrives at once
    assert sum(1 for gap in gaps if gap > 0.001) >= len(gaps) // 2


def test_stream_include_usage(server: ServerProcess, http: httpx.Client) -> None:
    chunks = raw_stream(
        http,
        {
            "model": "gpt-4o-mini",
            "messages": HELLO,
            "max_tokens": 8,
            "logit_bias": NO_EOS,
            "stream_options": {"include_usage": True},
        },
    )
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 8
    assert usage_chunk["usage"]["total_tokens"] == (
        usage_chunk["usage"]["prompt_tokens"] + usage_chunk["usage"]["completion_tokens"]
    )
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_n_two(server: ServerProcess, http: httpx.Client) -> None:
    completion = server.client().chat.completions.create(
        model="gpt-4", messages=HELLO, max_tokens=10, n=2, temperature=1.0
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content for c in completion.choices)
    chunks = raw_stream(http, {"model": "gpt-4", "messages": HELLO, "max_tokens": 10, "n": 2})
    finished = {
        choice["index"]: choice["finish_reason"]
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["finish_reason"]
    }
    assert set(finished) == {0, 1}
    firsts = [choice for c in chunks for choice in c["choices"] if "role" in choice["delta"]]
    assert sorted(f["index"] for f in firsts) == [0, 1]


@pytest.mark.parametrize("stop", [[" "], " "])
def test_stop_sequence(server: ServerProcess, stop: str | list[str]) -> None:
    completion = server.client().chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": "Write two sentences about the sea."}],
        stop=stop,
        max_tokens=50,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content
    assert " " not in choice.message.content


def test_seed_gives_the_same_text(small_server: ServerProcess) -> None:
    # one slot: the context holds only this request, as on an otherwise idle server (with
    # other requests' cells in the shared context llama.cpp's arithmetic differs slightly)
    client = small_server.client()

    def sample(seed: int) -> str:
        completion = client.chat.completions.create(
            model="gpt-4",
            messages=[{"role": "user", "content": "Tell me a story."}],
            temperature=1.2,
            seed=seed,
            max_tokens=24,
        )
        return completion.choices[0].message.content or ""

    first = sample(1234)
    assert first == sample(1234)
    others = {sample(s) for s in (1, 2, 3)}
    assert len(others | {first}) >= 2


def test_max_tokens_and_max_completion_tokens(server: ServerProcess) -> None:
    client = server.client()
    for limits in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        completion = client.chat.completions.create(
            model="gpt-4",
            messages=HELLO,
            logit_bias=NO_EOS,
            **limits,  # type: ignore[arg-type]
        )
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None
        assert completion.usage.completion_tokens == 5


def test_chat_template_and_multi_turn_history(server: ServerProcess) -> None:
    client = server.client()

    def prompt_tokens(messages: list[Any]) -> int:
        completion = client.chat.completions.create(model="gpt-4", messages=messages, max_tokens=1)
        assert completion.usage is not None
        return completion.usage.prompt_tokens

    question = {"role": "user", "content": "What is my name?"}
    alone = prompt_tokens([question])
    # SmolLM2's own template adds its long default system prompt only when there is none.
    with_short_system = prompt_tokens([{"role": "system", "content": "Be brief."}, question])
    assert with_short_system < alone
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada!"},
        question,
    ]
    assert prompt_tokens(history) > with_short_system + 10
    answer = client.chat.completions.create(model="gpt-4", messages=history, max_tokens=20)
    assert answer.choices[0].message.content


def test_unknown_model(server: ServerProcess, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        server.client().chat.completions.create(model="no-such-model", messages=HELLO)
    assert info.value.code == "model_not_found"
    response = http.post("/v1/chat/completions", json={"model": "no-such-model", "messages": HELLO})
    assert response.status_code == 404
    validate(response.json(), "ErrorResponse")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"n": "2"}, "n"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"stop": 7}, "stop"),
    ],
)
def test_bad_input(http: httpx.Client, fields: dict[str, Any], param: str) -> None:
    response = http.post(
        "/v1/chat/completions", json={"model": "gpt-4", "messages": HELLO, **fields}
    )
    assert response.status_code == 400
    body = response.json()
    validate(body, "ErrorResponse")
    assert body["error"]["param"] == param
    assert body["error"]["type"] == "invalid_request_error"


def test_bad_input_through_the_client(server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        server.client().chat.completions.create(model="gpt-4", messages=HELLO, temperature=5)
    assert info.value.param == "temperature"


def test_models(server: ServerProcess, http: httpx.Client) -> None:
    ids = [m.id for m in server.client().models.list()]
    assert ids[0] == "smollm2-135m-instruct"
    assert {"gpt-3.5-turbo", "gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-4.1"} <= set(ids)
    for path in ("/v1/models", "/models"):
        validate(http.get(path).json(), "ListModelsResponse")
    model = server.client().models.retrieve("gpt-4o")
    assert model.id == "gpt-4o"
    validate(http.get("/v1/models/smollm2-135m-instruct").json(), "Model")


def test_health_and_landing(http: httpx.Client) -> None:
    health = http.get("/health")
    assert health.status_code == 200
    assert health.json()["ready"] is True
    page = http.get("/", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "/ui/app.js" in page.text  # the web chat, which asks /v1/models for the models
    assert "smollm2-135m-instruct" in http.get("/").json()["models"]


def test_async_client_concurrent_streams(server: ServerProcess) -> None:
    async def one(client: AsyncOpenAI, i: int) -> str:
        text = ""
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": f"Count to {i + 3}."}],
            max_tokens=16,
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        return text

    async def main() -> list[str]:
        async with AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key="none", max_retries=0
        ) as client:
            return await asyncio.gather(*(one(client, i) for i in range(4)))

    texts = asyncio.run(main())
    assert len(texts) == 4
    assert all(texts)
