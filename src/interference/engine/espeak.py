"""Speech from text, offline: eSpeak NG (Debian's ``espeak-ng``), one process per request.

eSpeak NG is a formant synthesizer: no weights, a few MB installed, and it speaks far faster
than real time on one core (docs/audio-images.md has the figures measured on this machine). It
writes a WAV stream (16-bit mono, 22,050 Hz) to its standard output as it speaks; that stream is
read as it comes, so the first audio leaves before the sentence is finished. The text goes in
on standard input, never on the command line (where other users' ``ps`` would show it).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncGenerator

#: the rate at speed 1.0, in words per minute: conversational speech, as OpenAI's voices speak.
#: eSpeak's own default (175) is brisker, and Whisper tiny.en missed twice as many of its words
#: (bench/audio_roundtrip.py: 15-21 % word error rate at 175, 7-11 % at 150)
BASE_RATE = 150
#: the sample rate eSpeak NG writes
SAMPLE_RATE = 22050
#: OpenAI's voice names, each as an eSpeak NG voice with a variant, so that each sounds apart
OPENAI_VOICES: dict[str, str] = {
    "alloy": "en-us+f3",
    "ash": "en-us+m3",
    "ballad": "en-gb+m4",
    "coral": "en-us+f2",
    "echo": "en-us+m1",
    "fable": "en-gb+f4",
    "onyx": "en-us+m7",
    "nova": "en-us+f4",
    "sage": "en-gb+f2",
    "shimmer": "en-us+f1",
    "verse": "en-us+m2",
    "marin": "en-us+f5",
    "cedar": "en-us+m6",
}
_READ = 16 * 1024


def find_espeak(binary: str | None = None) -> str | None:
    """The eSpeak NG program: ``binary`` when given (a path or a name on PATH), else
    ``espeak-ng`` on PATH; None when there is none."""
    return shutil.which(binary or "espeak-ng")


async def list_voices(program: str) -> frozenset[str]:
    """The voice names eSpeak NG knows (``en-us``, ``fr``...), read once at start."""
    process = await asyncio.create_subprocess_exec(
        program,
        "--voices",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=10)
    names = set()
    for line in out.decode("utf-8", "replace").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            names.add(parts[1])  # the language column: the name -v takes
    return frozenset(names)


async def speak(program: str, text: str, voice: str, speed: float) -> AsyncGenerator[bytes, None]:
    """The WAV stream of ``text`` spoken by ``voice`` at ``speed`` (1.0: eSpeak's normal
    rate), as eSpeak NG writes it; closing the generator ends the process."""
    rate = max(80, min(450, round(BASE_RATE * speed)))
    process = await asyncio.create_subprocess_exec(
        program,
        "--stdout",
        "--stdin",
        "-b",
        "1",  # the input is UTF-8
        "-v",
        voice,
        "-s",
        str(rate),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        process.stdin.write(text.encode())
        await process.stdin.drain()
        process.stdin.close()
        while block := await process.stdout.read(_READ):
            yield block
        if await process.wait() != 0:
            raise RuntimeError(f"espeak-ng exited with status {process.returncode}")
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
