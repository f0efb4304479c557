"""A fake audio player for ``interference chat --speak``: a shell script that records the
audio it reads on stdin (one file per run, named by its PID) and, while a ``hold`` file exists,
goes on "playing" (sleeps) until it is killed."""

from __future__ import annotations

import io
import math
import os
import struct
import time
import wave
from dataclasses import dataclass
from pathlib import Path


@dataclass
class FakePlayer:
    folder: Path

    @property
    def command(self) -> str:
        """What ``$INTERFERENCE_PLAYER`` is set to."""
        return str(self.folder / "player")

    @property
    def hold(self) -> Path:
        return self.folder / "hold"

    def recordings(self) -> list[bytes]:
        """What each run read, oldest first."""
        files = sorted(self.folder.glob("audio-*"), key=lambda p: p.stat().st_mtime_ns)
        return [p.read_bytes() for p in files]

    def pids(self) -> list[int]:
        path = self.folder / "pids"
        return [int(n) for n in path.read_text().split()] if path.exists() else []

    def wait_for_pids(self, count: int, timeout: float = 10) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(self.pids()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.pids()


def fake_player(folder: Path, exit_status: int = 0, stderr: str = "") -> FakePlayer:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "player"
    script.write_text(
        "#!/bin/sh\n"
        f'echo $$ >> "{folder}/pids"\n'
        f'cat > "{folder}/audio-$$"\n'
        + (f"echo '{stderr}' >&2\n" if stderr else "")
        + f'if [ -e "{folder}/hold" ]; then exec sleep 30; fi\n'
        f"exit {exit_status}\n"
    )
    script.chmod(0o755)
    return FakePlayer(folder)


def gone(pid: int, timeout: float = 5) -> bool:
    """Whether process ``pid`` has ended (and been reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def tone_wav(seconds: float = 0.2, rate: int = 24000) -> bytes:
    """A short 440 Hz WAV, as a speech route might answer."""
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        samples = (
            int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(rate * seconds))
        )
        file.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return out.getvalue()


def is_audio(data: bytes, minimum: int = 10_000) -> bool:
    """A WAV (RIFF/WAVE header) or an MP3 (ID3 tag or frame sync) of at least ``minimum``
    bytes."""
    wav = data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    mp3 = data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    return (wav or mp3) and len(data) >= minimum
