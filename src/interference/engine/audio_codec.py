"""Audio in and out of the local engines, through PyAV (FFmpeg's libraries, in its wheel):

- :class:`Encoder`: 16-bit mono PCM, as a synthesizer writes it, into the format a speech
  request asks for (mp3, opus in Ogg, aac in ADTS, flac, or raw 24 kHz PCM), piece by piece,
  so that encoded audio leaves while the rest is still being spoken;
- :func:`decode`: any audio file a client uploads (wav, mp3, ogg/opus, webm from a browser's
  recorder, m4a, flac...) into 16 kHz mono float samples for transcription. A file FFmpeg cannot
  read is a :class:`BadAudioError`, never a crash.

PyAV comes with the ``speech`` extra (``pip install 'interference[speech]'``); without it only
WAV comes out of the speech engine, and there is no transcription engine.
"""

from __future__ import annotations

import importlib.util
import io
from typing import Any

#: the rate OpenAI's speech formats use (and ``pcm`` is defined at)
OUTPUT_RATE = 24000
#: (container, codec) of each speech format PyAV writes
_FORMATS: dict[str, tuple[str, str]] = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
}


class BadAudioError(ValueError):
    """An upload that is not audio FFmpeg can read (corrupt, truncated, or another kind)."""


def has_codecs() -> bool:
    """Whether PyAV is installed (the ``speech`` extra)."""
    return importlib.util.find_spec("av") is not None


class _Sink(io.RawIOBase):
    """Where the muxer writes: bytes kept until :meth:`take`."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._pieces.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self._pieces = b"".join(self._pieces), []
        return out


class Encoder:
    """16-bit mono PCM at ``rate`` in, ``response_format`` out (see the module docstring)."""

    def __init__(self, response_format: str, rate: int) -> None:
        import av

        self._av = av
        self._rate = rate
        self._pts = 0
        self._sink = _Sink()
        self._container: Any = None
        self._stream: Any = None
        sample_format = "s16"
        if response_format != "pcm":
            container, codec = _FORMATS[response_format]
            self._container = av.open(self._sink, mode="w", format=container)
            self._stream = self._container.add_stream(codec, rate=OUTPUT_RATE, layout="mono")
            sample_format = self._stream.codec_context.format.name
        self._resampler = av.AudioResampler(format=sample_format, layout="mono", rate=OUTPUT_RATE)

    def _encode(self, frames: list[Any]) -> bytes:
        out: list[bytes] = []
        for frame in frames:
            if self._stream is None:  # pcm: the resampled samples themselves
                out.append(bytes(frame.planes[0])[: frame.samples * 2])
                continue
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return b"".join(out) + self._sink.take()

    def feed(self, pcm: bytes) -> bytes:
        """Encode ``pcm`` (whole 16-bit samples); what is ready of the output."""
        samples = len(pcm) // 2
        if not samples:
            return b""
        frame = self._av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm[: samples * 2])
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += samples
        return self._encode(self._resampler.resample(frame))

    def finish(self) -> bytes:
        """The rest of the output: the resampler and the encoder flushed, the container closed."""
        out = self._encode(self._resampler.resample(None))
        if self._stream is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return out + self._sink.take()


def decode(data: bytes, rate: int = 16000) -> tuple[Any, float]:
    """``data`` (an audio file) as mono float32 samples at ``rate``, and its duration in s."""
    import av
    import numpy as np

    pieces = []
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise BadAudioError("the file has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as exc:
        raise BadAudioError(
            f"the file could not be read as audio ({exc.__class__.__name__})"
        ) from None
    except (EOFError, UnicodeDecodeError, IndexError) as exc:  # odd containers' odd failures
        raise BadAudioError(
            f"the file could not be read as audio ({exc.__class__.__name__})"
        ) from None
    if not pieces:
        raise BadAudioError("the file holds no audio samples")
    samples = np.concatenate(pieces).astype(np.float32)
    return samples, len(samples) / rate
