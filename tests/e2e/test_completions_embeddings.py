"""Legacy text completions and embeddings on the embedded model, validated against the spec."""

from __future__ import annotations

import base64
import json
import math
import struct

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.spec import validate

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("path", ["/v1/completions", "/completions"])
def test_text_completion(http: httpx.Client, path: str) -> None:
    response = http.post(
        path,
        json={"model": "gpt-3.5-turbo", "prompt": "Once upon a time", "max_tokens": 8, "seed": 1},
    )
    assert response.status_code == 200
    body = response.json()
    validate(body, "CreateCompletionResponse")
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == "gpt-3.5-turbo"
    assert body["choices"][0]["text"]
    assert body["usage"]["completion_tokens"] <= 8
    assert response.headers["x-interference-deployment"] == "local/smollm2-135m-instruct"


def test_text_completion_stream_and_client(server: ServerProcess, http: httpx.Client) -> None:
    request = {
        "model": "gpt-3.5-turbo",
        "prompt": "The sea is",
        "max_tokens": 6,
        "logit_bias": {"2": -100},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with http.stream("POST", "/v1/completions", json=request) as response:
        events = [e.removeprefix("data: ") for e in response.read().decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        # the spec models no legacy stream chunk: the ones in flight carry finish_reason null
        if all(c["finish_reason"] is not None for c in chunk["choices"]):
            validate(chunk, "CreateCompletionResponse")
        else:
            assert chunk["object"] == "text_completion"
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    client = server.client()
    again = client.completions.create(
        model="gpt-3.5-turbo", prompt="The sea is", max_tokens=6, logit_bias={"2": -100}
    )
    assert again.choices[0].finish_reason == "length"
    assert text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="gpt-3.5-turbo", prompt="The sea is", max_tokens=6, stream=True
        )
        if c.choices
    )
    assert streamed


@pytest.mark.parametrize("field", [{"echo": True}, {"suffix": "end"}, {"best_of": 3}])
def test_unsupported_completion_options_are_400(
    http: httpx.Client, field: dict[str, object]
) -> None:
    response = http.post(
        "/v1/completions", json={"model": "gpt-4", "prompt": "x", "max_tokens": 2, **field}
    )
    assert response.status_code == 400
    body = response.json()
    validate(body, "ErrorResponse")
    assert body["error"]["param"] == next(iter(field))
    assert body["error"]["code"] == "unsupported"


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embeddings"])
def test_embeddings_float_for_a_list(http: httpx.Client, path: str) -> None:
    response = http.post(
        path, json={"model": "smollm2-135m-instruct", "input": ["hello world", "goodbye"]}
    )
    assert response.status_code == 200
    body = response.json()
    validate(body, "CreateEmbeddingResponse")
    assert body["model"] == "smollm2-135m-instruct"
    assert [d["index"] for d in body["data"]] == [0, 1]
    first, second = (d["embedding"] for d in body["data"])
    assert len(first) == len(second) == 576  # SmolLM2-135M's hidden size
    assert first != second
    assert math.isclose(math.sqrt(sum(x * x for x in first)), 1.0, rel_tol=1e-3)  # normalised
    assert body["usage"]["prompt_tokens"] > 0


def test_embeddings_base64_with_the_client(server: ServerProcess) -> None:
    client = server.client()
    as_floats = client.embeddings.create(model="gpt-4", input="hello world")
    raw = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": "gpt-4", "input": "hello world", "encoding_format": "base64"},
        timeout=30,
    ).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(packed) // 4}f", packed)
    # the spec models only float lists; OpenAI answers base64 with a string in their place
    validate(
        {**raw, "data": [{**raw["data"][0], "embedding": list(decoded)}]}, "CreateEmbeddingResponse"
    )
    assert len(decoded) == len(as_floats.data[0].embedding) == 576
    assert all(
        math.isclose(a, b, abs_tol=1e-5)
        for a, b in zip(decoded, as_floats.data[0].embedding, strict=True)
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": 3}, "input"),
        ({"input": "x", "dimensions": 8}, "dimensions"),
    ],
)
def test_bad_embedding_requests(http: httpx.Client, body: dict[str, object], param: str) -> None:
    response = http.post("/v1/embeddings", json={"model": "gpt-4", **body})
    assert response.status_code == 400
    validate(response.json(), "ErrorResponse")
    assert response.json()["error"]["param"] == param
