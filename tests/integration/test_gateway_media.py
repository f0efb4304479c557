"""Images, audio and moderations through the real ``interference serve`` to fake OpenAI
upstreams (real HTTP servers on 127.0.0.1), driven with the official ``openai`` client: uploads
relayed as multipart with their bytes intact, binary answers streamed back, the router's
fallback, and the spec's shapes."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.media_fake import SPEECH, TRANSCRIPT, media_upstream
from tests.support.server import ServerProcess, start_server
from tests.support.spec import validate
from tests.support.upstream import FakeUpstream

TIMEOUTS = {"connect": 2, "first_token": 5, "idle": 5, "total": 20}
UPLOAD_LIMIT = 2_000_000
MODELS = ("whisper-1", "tts-1", "dall-e-3", "omni-moderation-latest")


@pytest.fixture(scope="module")
def upstreams() -> Iterator[list[FakeUpstream]]:
    started = [media_upstream(f"media{i}").start() for i in range(2)]
    yield started
    for upstream in started:
        upstream.stop()


@pytest.fixture(scope="module")
def gateway(
    upstreams: list[FakeUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    config: dict[str, Any] = {
        "server": {"max_upload_bytes": UPLOAD_LIMIT},
        "providers": {
            f"up{i}": {
                "kind": "openai",
                "base_url": f"{u.url}/v1",
                "api_key": f"key-{i}",
                "timeouts": TIMEOUTS,
            }
            for i, u in enumerate(upstreams)
        },
        "models": {
            name: {
                "deployments": [
                    {"provider": "up0", "model": f"{name}-upstream"},
                    {"provider": "up1", "model": f"{name}-upstream"},
                ]
            }
            for name in MODELS
        },
        "routing": {"strategy": "ordered", "cooldown": {"failures": 100}},
    }
    server: ServerProcess = start_server(tmp_path_factory.mktemp("media"), json.dumps(config))
    yield server.url
    assert server.stop() == 0, server.log.read_text()[-3000:]


@pytest.fixture
def client(gateway: str, upstreams: list[FakeUpstream]) -> Iterator[openai.OpenAI]:
    for upstream in upstreams:
        upstream.reset()
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def audio(size: int) -> tuple[str, bytes, str]:
    data = (b"RIFF" + bytes(range(256)) * (size // 256 + 1))[:size]
    return ("speech.wav", data, "audio/wav")


def test_transcription_relays_the_upload_and_the_fields(
    client: openai.OpenAI, upstreams: list[FakeUpstream]
) -> None:
    name, data, kind = audio(1_500_000)  # past starlette's 1 MiB in memory: spooled to disk
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=(name, data, kind),
        language="en",
        prompt="Foxes.",
        temperature=0.2,
    )
    assert result.text == TRANSCRIPT
    validate(result.model_dump(exclude_unset=True), "CreateTranscriptionResponseJson")
    (seen,) = upstreams[0].observed.requests
    assert seen["path"] == "/v1/audio/transcriptions"
    assert seen["model"] == "whisper-1-upstream"
    assert (seen["language"], seen["prompt"], seen["temperature"]) == ("en", "Foxes.", "0.2")
    assert seen["files"]["file"] == {
        "filename": name,
        "content_type": kind,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert upstreams[0].observed.headers[0]["authorization"] == "Bearer key-0"


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt", "verbose_json"])
def test_transcript_formats(client: openai.OpenAI, response_format: Any) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1", file=audio(2000), response_format=response_format
    )
    text = result if isinstance(result, str) else result.text
    assert TRANSCRIPT in text


def test_streamed_transcription(client: openai.OpenAI) -> None:
    events = list(
        client.audio.transcriptions.create(model="whisper-1", file=audio(2000), stream=True)
    )
    assert [e.type for e in events][-1] == "transcript.text.done"
    assert "".join(e.delta for e in events if e.type == "transcript.text.delta").strip() == (
        TRANSCRIPT
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's, on translations
def test_translation(client: openai.OpenAI, upstreams: list[FakeUpstream]) -> None:
    result = client.audio.translations.create(model="whisper-1", file=audio(2000))
    assert result.text == TRANSCRIPT
    assert upstreams[0].observed.requests[0]["path"] == "/v1/audio/translations"


def test_speech_streams_the_upstreams_bytes(
    client: openai.OpenAI, upstreams: list[FakeUpstream]
) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Hello there.", response_format="mp3", speed=1.25
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        pieces = list(response.iter_bytes())
    assert b"".join(pieces) == SPEECH
    (seen,) = upstreams[0].observed.requests
    assert seen == {
        "path": "/v1/audio/speech",
        "model": "tts-1-upstream",
        "voice": "alloy",
        "input": "Hello there.",
        "response_format": "mp3",
        "speed": 1.25,
    }


def test_speech_falls_back_to_the_next_deployment(
    gateway: str, upstreams: list[FakeUpstream]
) -> None:
    upstreams[0].faults.status = 503
    body = {"model": "tts-1", "voice": "alloy", "input": "Hi."}
    response = httpx.post(f"{gateway}/v1/audio/speech", json=body, timeout=10)
    assert response.status_code == 200
    assert response.content == SPEECH
    assert response.headers["x-interference-deployment"] == "up1/tts-1-upstream"
    assert response.headers["x-interference-attempts"] == "2"


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_images_generate(
    client: openai.OpenAI, upstreams: list[FakeUpstream], response_format: Any
) -> None:
    result = client.images.generate(
        model="dall-e-3",
        prompt="A red fox.",
        n=2,
        size="1024x1024",
        response_format=response_format,
    )
    assert result.data is not None
    assert len(result.data) == 2
    validate(result.model_dump(exclude_unset=True), "ImagesResponse")
    seen = upstreams[0].observed.requests[0]
    assert (seen["model"], seen["n"], seen["size"]) == ("dall-e-3-upstream", 2, "1024x1024")


def test_image_edit_relays_image_and_mask(
    client: openai.OpenAI, upstreams: list[FakeUpstream]
) -> None:
    png = Path(__file__)  # any bytes do: the upstream only counts them
    image = ("fox.png", png.read_bytes(), "image/png")
    mask = ("mask.png", b"\x89PNG mask", "image/png")
    result = client.images.edit(model="dall-e-3", image=image, mask=mask, prompt="Add a hat.")
    assert result.data is not None
    assert len(result.data) == 1
    seen = upstreams[0].observed.requests[0]
    assert seen["path"] == "/v1/images/edits"
    assert seen["prompt"] == "Add a hat."
    assert seen["files"]["image"]["size"] == len(image[1])
    assert seen["files"]["mask"]["size"] == len(mask[1])


def test_moderations(client: openai.OpenAI) -> None:
    raw = client.moderations.with_raw_response.create(
        model="omni-moderation-latest", input=["one", "two"]
    )
    assert len(raw.parse().results) == 2
    validate(raw.http_response.json(), "CreateModerationResponse")


def test_an_upload_past_the_limit_is_a_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=audio(UPLOAD_LIMIT + 10_000))
    assert caught.value.status_code == 413
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "request_too_large"
    assert "max_upload_bytes" in error["message"]


def test_bad_uploads_are_4xx_in_openais_shape(gateway: str) -> None:
    url = f"{gateway}/v1/audio/transcriptions"
    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({"json": {"model": "whisper-1"}}, 415, None),
        ({"data": {"model": "whisper-1"}, "files": {"other": ("a.wav", b"x")}}, 400, "file"),
        ({"data": {"model": "whisper-1"}, "files": {"file": ("a.txt", b"hello")}}, 400, "file"),
        ({"data": {"model": "whisper-1"}, "files": {"file": ("a.wav", b"")}}, 400, "file"),
        ({"data": {}, "files": {"file": ("a.wav", b"RIFF")}}, 400, "model"),
        (
            {
                "data": {"model": "whisper-1", "temperature": "hot"},
                "files": {"file": ("a.wav", b"R")},
            },
            400,
            "temperature",
        ),
        ({"data": {"model": "nope"}, "files": {"file": ("a.wav", b"RIFF")}}, 404, "model"),
    ]
    for kwargs, status, param in cases:
        response = httpx.post(url, timeout=10, **kwargs)
        assert response.status_code == status, (kwargs, response.text)
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}
        assert error["param"] == param, (kwargs, error)
    speech = f"{gateway}/v1/audio/speech"
    for body in (
        {"model": "tts-1", "voice": "alloy", "input": ""},
        {"model": "tts-1", "input": "x"},
    ):
        response = httpx.post(speech, json=body, timeout=10)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_the_bare_host_routes(gateway: str) -> None:
    response = httpx.post(
        f"{gateway}/audio/speech",  # the bare-host route too
        json={"model": "tts-1", "voice": "alloy", "input": "Hi."},
        timeout=10,
    )
    assert response.status_code == 200
    assert io.BytesIO(response.content).read(4) == SPEECH[:4]
