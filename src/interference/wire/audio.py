"""``/v1/audio/speech``, ``/v1/audio/transcriptions`` and ``/v1/audio/translations``: the
requests, mirroring the spec, and the transcript formats a local engine writes.

The speech request is JSON, validated strictly like the other JSON requests. A transcription's
fields come from a ``multipart/form-data`` form, where every value is text: they are validated
in lax mode (``"0.2"`` is a temperature, ``"true"`` a boolean). Unknown fields are kept, and go
upstream as they came.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from interference.wire.common import WireModel

#: what ``response_format`` asks of ``/v1/audio/speech``, and the media type of each
SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
SPEECH_MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",  # Opus in an Ogg container, as OpenAI sends it
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/L16",  # raw 16-bit little-endian samples, 24 kHz, mono
}
#: what ``response_format`` asks of a transcription
TranscriptFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]
#: the longest speech input OpenAI takes, in characters
MAX_SPEECH_INPUT = 4096


class VoiceRef(BaseModel):
    """A custom voice, named by id (``{"id": "voice_1234"}``)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    id: Annotated[str, Field(min_length=1)]


class SpeechRequest(WireModel):
    """``CreateSpeechRequest`` (plus ``provider``)."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: Annotated[str, Field(min_length=1)]
    input: Annotated[str, Field(min_length=1, max_length=MAX_SPEECH_INPUT)]
    voice: Annotated[str, Field(min_length=1)] | VoiceRef
    instructions: Annotated[str, Field(max_length=4096)] | None = None
    response_format: SpeechFormat = "mp3"
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0
    stream_format: Literal["sse", "audio"] | None = None
    provider: Annotated[str, Field(min_length=1)] | None = None

    @property
    def voice_name(self) -> str:
        return self.voice if isinstance(self.voice, str) else self.voice.id

    def upstream_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"provider"})


class TranscriptionForm(BaseModel):
    """The text fields of ``CreateTranscriptionRequest`` and ``CreateTranslationRequest``
    (plus ``provider``); the file is apart (:class:`~interference.wire.media.Upload`)."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1)]
    language: Annotated[str, Field(min_length=2, max_length=16)] | None = None
    prompt: str | None = None
    response_format: TranscriptFormat = "json"
    temperature: Annotated[float, Field(ge=0, le=1)] = 0.0
    stream: bool = False
    provider: Annotated[str, Field(min_length=1)] | None = None


@dataclass(frozen=True)
class Segment:
    """A stretch of transcribed speech, in seconds from the start."""

    start: float
    end: float
    text: str


def _clock(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def render_transcript(
    segments: Sequence[Segment], response_format: str, language: str, duration: float
) -> tuple[bytes, str]:
    """A transcript in the format asked for, and its media type, as OpenAI writes them."""
    text = " ".join(s.text.strip() for s in segments if s.text.strip())
    if response_format == "text":
        return text.encode() + b"\n", "text/plain; charset=utf-8"
    if response_format == "srt":
        blocks = [
            f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
            for i, s in enumerate(segments, 1)
        ]
        return "\n".join(blocks).encode(), "text/plain; charset=utf-8"
    if response_format == "vtt":
        blocks = [
            f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in segments
        ]
        return ("WEBVTT\n\n" + "\n".join(blocks)).encode(), "text/vtt; charset=utf-8"
    if response_format == "verbose_json":
        body: dict[str, Any] = {
            "task": "transcribe",
            "language": language,
            "duration": round(duration, 3),
            "text": text,
            "segments": [
                {
                    "id": i,
                    "seek": 0,
                    "start": round(s.start, 3),
                    "end": round(s.end, 3),
                    "text": s.text,
                    "tokens": [],
                    "temperature": 0.0,
                    "avg_logprob": 0.0,
                    "compression_ratio": 0.0,
                    "no_speech_prob": 0.0,
                }
                for i, s in enumerate(segments)
            ],
        }
        return orjson.dumps(body), "application/json"
    return orjson.dumps({"text": text}), "application/json"
