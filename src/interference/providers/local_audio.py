"""The offline audio engines as providers (docs/audio-images.md):

- ``espeak``: ``/v1/audio/speech`` by eSpeak NG, streamed while it speaks, in any of OpenAI's
  formats (WAV as eSpeak writes it; the others encoded by PyAV as the samples come);
- ``whisper``: ``/v1/audio/transcriptions`` by a Whisper model (faster-whisper), one upload at
  a time, the others waiting in a bounded queue.

What a client gets wrong (an unknown voice, a format the engine cannot write, a file that is not
audio, audio too long, a language the model does not know) is a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any, ClassVar

import orjson

from interference.config import SpeechEngineConfig, TranscriptionEngineConfig
from interference.engine import audio_codec, espeak
from interference.engine.audio_codec import BadAudioError
from interference.engine.whisper import WhisperEngine
from interference.errors import InvalidRequestError, UpstreamError
from interference.providers.base import Endpoint, Provider, ServedModel
from interference.wire.audio import (
    SPEECH_MEDIA_TYPES,
    Segment,
    SpeechRequest,
    TranscriptionForm,
    render_transcript,
)
from interference.wire.chat import ChatCompletionChunk, ChatCompletionRequest
from interference.wire.media import BinaryBlock, MediaCall


def _wav_data(head: bytes) -> int | None:
    """Where the samples begin in a WAV stream's first bytes (None: not yet known)."""
    at = head.find(b"data", 12)
    return None if at < 0 or len(head) < at + 8 else at + 8


class AudioEngineProvider(Provider):
    """What both engines share: they answer no chat."""

    def stream_chat(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        raise self._unsupported("chat completions")


class SpeechEngineProvider(AudioEngineProvider):
    kind: ClassVar[str] = "espeak"
    endpoints: frozenset[Endpoint] = frozenset({"speech"})

    def __init__(self, name: str, config: SpeechEngineConfig) -> None:
        super().__init__(name)
        self.config = config
        self.capacity = config.max_concurrent
        self.program: str | None = None
        self.voices: frozenset[str] = frozenset()
        self._created = int(time.time())

    @property
    def ready(self) -> bool:
        return self.program is not None

    def models(self) -> list[ServedModel]:
        return [ServedModel(self.config.id, "espeak-ng", self._created)]

    async def start(self) -> None:
        program = espeak.find_espeak(self.config.program)
        if program is None:
            raise RuntimeError(
                f"provider {self.name}: espeak-ng is not installed "
                "(Debian: apt-get install espeak-ng; or set `program`)"
            )
        self.voices = await espeak.list_voices(program)
        self.program = program

    def voice_of(self, request: SpeechRequest) -> str:
        """The eSpeak voice for the request's: an OpenAI name, or one of eSpeak's own."""
        name = request.voice_name
        voice = espeak.OPENAI_VOICES.get(name.lower())
        if voice is not None:
            return voice
        if name.partition("+")[0] in self.voices:  # a voice, perhaps with a variant (en-us+f2)
            return name
        raise InvalidRequestError(
            f"Unknown voice `{name}`. Voices: {', '.join(espeak.OPENAI_VOICES)}, or an eSpeak NG "
            "voice (en-us, en-gb, fr, de, ...).",
            param="voice",
            code="unsupported_voice",
        )

    def media_blocks(self, call: MediaCall, model: str) -> AsyncGenerator[list[BinaryBlock], None]:
        request = call.request
        if call.endpoint != "speech" or not isinstance(request, SpeechRequest):
            raise self._unsupported(call.endpoint)
        voice = self.voice_of(request)
        fmt = request.response_format
        if fmt != "wav" and not audio_codec.has_codecs():
            raise InvalidRequestError(
                f"This server's speech engine writes `wav` only, not `{fmt}` "
                "(the `speech` extra adds the others).",
                param="response_format",
                code="unsupported_format",
            )
        if request.stream_format == "sse":
            raise InvalidRequestError(
                "This speech engine streams audio, not events: leave `stream_format` out.",
                param="stream_format",
            )
        return self._spoken(request.input, voice, request.speed, fmt)

    async def _spoken(
        self, text: str, voice: str, speed: float, fmt: str
    ) -> AsyncGenerator[list[BinaryBlock], None]:
        assert self.program is not None, "start() first"
        media_type = SPEECH_MEDIA_TYPES[fmt]
        wav = espeak.speak(self.program, text, voice, speed)
        encoder = None if fmt == "wav" else audio_codec.Encoder(fmt, espeak.SAMPLE_RATE)
        head = b""  # the WAV header, until the samples begin
        in_samples = False
        odd = b""  # half a sample, kept for the next piece
        try:
            async for block in wav:
                if encoder is None:
                    yield [BinaryBlock(block, media_type)]
                    media_type = ""
                    continue
                if not in_samples:
                    head += block
                    start = _wav_data(head)
                    if start is None:
                        continue
                    block, in_samples = head[start:], True
                pcm = odd + block
                cut = len(pcm) - len(pcm) % 2
                odd = pcm[cut:]
                out = encoder.feed(pcm[:cut])
                if out:
                    yield [BinaryBlock(out, media_type)]
                    media_type = ""
            if encoder is not None:
                yield [BinaryBlock(encoder.finish(), media_type)]
        except RuntimeError as exc:
            raise UpstreamError(f"{self.name}: {exc}") from None
        finally:
            await wav.aclose()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "program": self.program, "voices": len(self.voices)}


class TranscriptionEngineProvider(AudioEngineProvider):
    kind: ClassVar[str] = "whisper"

    def __init__(self, name: str, config: TranscriptionEngineConfig) -> None:
        super().__init__(name)
        self.config = config
        self.engine = WhisperEngine(config.model, config.threads)
        self.endpoints = frozenset(
            {"transcriptions", "translations"} if self.engine.multilingual else {"transcriptions"}
        )
        self.capacity = 1 + config.max_queue
        self._turn = asyncio.Semaphore(1)  # one transcription at a time: it takes every core
        self._loaded = False
        self._created = int(time.time())

    @property
    def ready(self) -> bool:
        return self._loaded

    def models(self) -> list[ServedModel]:
        return [ServedModel(self.config.id, "openai-whisper", self._created)]

    async def start(self) -> None:
        if self.config.load == "start":
            await self._load()

    async def _load(self) -> None:
        if not self._loaded:
            await asyncio.to_thread(self.engine.load)
            self._loaded = True

    def media_blocks(self, call: MediaCall, model: str) -> AsyncGenerator[list[BinaryBlock], None]:
        form = call.request
        if call.endpoint not in self.endpoints or not isinstance(form, TranscriptionForm):
            raise self._unsupported(call.endpoint)
        if form.response_format == "diarized_json":
            raise InvalidRequestError(
                "This model does not tell speakers apart: use json, text, srt, vtt or "
                "verbose_json.",
                param="response_format",
                code="unsupported_format",
            )
        language = (form.language or "").lower() or None
        if language not in (None, "en", "english") and not self.engine.multilingual:
            raise InvalidRequestError(
                f"The model `{self.config.id}` transcribes English only, not `{form.language}`.",
                param="language",
                code="unsupported_language",
            )
        return self._transcribed(call, form, call.endpoint == "translations")

    async def _transcribed(
        self, call: MediaCall, form: TranscriptionForm, translate: bool
    ) -> AsyncGenerator[list[BinaryBlock], None]:
        (upload,) = call.files
        await upload.file.seek(0)
        data = await upload.file.read()
        async with self._turn:
            await self._load()
            try:
                samples, duration = await asyncio.to_thread(self.engine.decode, data)
            except BadAudioError as exc:
                raise InvalidRequestError(
                    f"The `file` is not audio this server can read: {exc}.",
                    param="file",
                    code="invalid_audio",
                ) from None
            if duration > self.config.max_audio_s:
                raise InvalidRequestError(
                    f"The audio lasts {duration:.0f} s; this server transcribes at most "
                    f"{self.config.max_audio_s:g} s.",
                    param="file",
                    code="audio_too_long",
                )
            segments, found = await asyncio.to_thread(
                self.engine.transcribe,
                samples,
                language=form.language,
                prompt=form.prompt,
                temperature=form.temperature,
                translate=translate,
            )
            if form.stream:
                async for events in _events(segments):
                    yield events
                return
            done = await asyncio.to_thread(list, segments)
        body, media_type = render_transcript(done, form.response_format, found, duration)
        yield [BinaryBlock(body, media_type)]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": str(self.engine.folder), "loaded": self._loaded}


async def _events(segments: Iterator[Segment]) -> AsyncGenerator[list[BinaryBlock], None]:
    """A streamed transcript as OpenAI writes one: a ``transcript.text.delta`` event per
    segment as it is recognised, then ``transcript.text.done``."""
    media_type = "text/event-stream"
    said: list[str] = []
    while (segment := await asyncio.to_thread(next, segments, None)) is not None:
        said.append(segment.text.strip())
        delta = {"type": "transcript.text.delta", "delta": segment.text}
        yield [BinaryBlock(b"data: " + orjson.dumps(delta) + b"\n\n", media_type)]
        media_type = ""
    done = {"type": "transcript.text.done", "text": " ".join(t for t in said if t)}
    yield [BinaryBlock(b"data: " + orjson.dumps(done) + b"\n\n", media_type)]
