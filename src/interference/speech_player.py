"""Answers read aloud in ``interference chat --speak``.

The answer's text is cut into sentences as it streams; a thread sends them, a few at a time, to
the server's ``POST /v1/audio/speech`` and pipes the audio into a player found on this machine,
so the first sentence plays while the model is still writing the next. Ctrl-C (in the chat's
main thread) calls :meth:`Speaker.stop`, which kills the one player process this started, by its
PID. Nothing spoken is logged, and a failure is one line, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import tempfile
import textwrap
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO

import httpx

PLAYER_VARIABLE = "INTERFERENCE_PLAYER"
DEFAULT_VOICE = "coral"
#: OpenAI's bound on ``input``; a longer text is sent in parts
MAX_INPUT = 4096


class NoSpeechError(Exception):
    """Why answers cannot be read aloud here (no player, or a server without a speech model)."""


class SpeechError(Exception):
    """One answer's speech failed: the server refused it, or the player did."""


@dataclass(frozen=True)
class Player:
    """An audio player's command line and the ``response_format`` it is sent; one that cannot
    read its standard input gets the path of a temporary file appended instead."""

    argv: tuple[str, ...]
    response_format: str
    reads_stdin: bool = True

    @property
    def name(self) -> str:
        return os.path.basename(self.argv[0])


#: looked for on PATH, in this order
PLAYERS = (
    Player(("ffplay", "-autoexit", "-nodisp", "-loglevel", "error", "-"), "mp3"),
    Player(("mpv", "--no-terminal", "--no-video", "-"), "mp3"),
    Player(("paplay",), "wav"),
    Player(("aplay", "-q"), "wav"),
    Player(("afplay",), "mp3", reads_stdin=False),  # macOS
)


def find_player(environ: Mapping[str, str] = os.environ) -> Player:
    """``$INTERFERENCE_PLAYER`` (a command that plays WAV read from its standard input), else
    the first of :data:`PLAYERS` on PATH; :class:`NoSpeechError` when there is none."""
    override = shlex.split(environ.get(PLAYER_VARIABLE, ""))
    if override:
        if shutil.which(override[0], path=environ.get("PATH")) is None:
            raise NoSpeechError(f"${PLAYER_VARIABLE} names {override[0]}, which is not found")
        return Player(tuple(override), "wav")
    for player in PLAYERS:
        if shutil.which(player.argv[0], path=environ.get("PATH")):
            return player
    names = ", ".join(p.name for p in PLAYERS)
    raise NoSpeechError(f"no audio player found (looked for {names}; or set ${PLAYER_VARIABLE})")


def default_speech_model(client: httpx.Client, api_url: str) -> str:
    """The server's first speech model, from the ``speech_models`` of its ``GET /`` JSON;
    ``tts-1`` for a server that does not say (another gateway, OpenAI itself)."""
    root = api_url.removesuffix("/v1")
    try:
        body = client.get(f"{root}/", headers={"accept": "application/json"}).json()
    except (httpx.HTTPError, ValueError):
        return "tts-1"
    models = body.get("speech_models") if isinstance(body, dict) else None
    if models is None:
        return "tts-1"
    if not models:
        raise NoSpeechError(f"{root} has no speech model (a provider of kind espeak adds one)")
    return str(models[0])


_SENTENCE_END = re.compile(r"[.!?;:](?=\s)|\n")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"[*`~]+")
_MARKUP = re.compile(r"[_#>|]+")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+(?=[.,!?;:])")


def speakable(text: str) -> str:
    """``text`` without the Markdown signs a speech engine would read out; "" if nothing is
    left to say."""
    text = _MARKUP.sub(" ", _EMPHASIS.sub("", _LINK.sub(r"\1", text)))
    text = _SPACE_BEFORE_PUNCTUATION.sub("", " ".join(text.split()))
    return text if any(c.isalnum() for c in text) else ""


def _error_line(response: httpx.Response) -> str:
    try:
        error = json.loads(response.read()).get("error", {})
        return f"{error.get('message')} ({error.get('code') or error.get('type')})"
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}"


class Speaker:
    """Speaks what :meth:`feed` is given, in order, on a thread of its own."""

    def __init__(self, client: httpx.Client, player: Player, model: str, voice: str) -> None:
        self.client = client
        self.player = player
        self.model = model
        self.voice = voice
        self._text = ""  # the part of the answer after its last whole sentence
        self._queue: queue.Queue[tuple[int, str] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._epoch = 0  # stop() moves it on: what was queued before is dropped
        self._process: subprocess.Popen[bytes] | None = None
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="speaker", daemon=True)
        self._thread.start()

    def feed(self, piece: str) -> None:
        """A piece of the answer; each whole sentence is queued to be spoken."""
        self._text += piece
        ends = [m.end() for m in _SENTENCE_END.finditer(self._text)]
        if ends:
            self._say(self._text[: ends[-1]])
            self._text = self._text[ends[-1] :]

    def finish(self) -> None:
        """The answer is complete: queue what is left of it."""
        self._say(self._text)
        self._text = ""

    def wait(self) -> None:
        """Return once everything queued has been spoken (Ctrl-C interrupts the wait);
        :class:`SpeechError` if some of it failed."""
        self._queue.join()
        with self._lock:
            error, self._error = self._error, None
        if error:
            raise SpeechError(error)

    def stop(self) -> None:
        """Drop what is still to be spoken and kill the player, if one is playing."""
        with self._lock:
            self._epoch += 1
            self._text = ""
            self._error = None
            process = self._process
        if process is not None and process.poll() is None:
            process.kill()  # our own child, by its PID

    def close(self) -> None:
        self.stop()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _say(self, text: str) -> None:
        text = speakable(text)
        for part in textwrap.wrap(text, MAX_INPUT, break_on_hyphens=False) if text else []:
            self._queue.put((self._epoch, part))

    def _run(self) -> None:
        held: list[tuple[int, str] | None] = []  # taken from the queue, not yet spoken
        while True:
            item = held.pop() if held else self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            epoch, batch = item[0], [item[1]]
            # what queued up while the last part played goes in one request: fewer pauses
            while not held and not self._queue.empty() and sum(map(len, batch)) < MAX_INPUT // 2:
                extra = self._queue.get()
                if extra is not None and extra[0] == epoch:
                    batch.append(extra[1])
                else:
                    held.append(extra)
            try:
                if epoch == self._epoch and self._error is None:
                    self._speak(epoch, " ".join(batch))
            except SpeechError as exc:
                with self._lock:
                    if epoch == self._epoch:
                        self._error = str(exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _speak(self, epoch: int, text: str) -> None:
        body = {
            "model": self.model,
            "input": text,
            "voice": self.voice,
            "response_format": self.player.response_format,
        }
        try:
            with self.client.stream("POST", "/audio/speech", json=body) as response:
                if response.status_code >= 400:
                    raise SpeechError(f"speech: {_error_line(response)}")
                if self.player.reads_stdin:
                    self._play(epoch, response.iter_bytes())
                    return
                suffix = f".{self.player.response_format}"
                with tempfile.NamedTemporaryFile(suffix=suffix) as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
                    file.flush()
                    self._play(epoch, (), file.name)
        except httpx.HTTPError as exc:
            raise SpeechError(f"speech: {type(exc).__name__}: {exc}") from None

    def _play(self, epoch: int, audio: Iterable[bytes], path: str | None = None) -> None:
        argv = [*self.player.argv, *([path] if path else [])]
        with tempfile.TemporaryFile() as errors:
            with self._lock:  # so that stop() sees the process as soon as it exists
                if epoch != self._epoch:
                    return
                try:
                    process = subprocess.Popen(
                        argv,
                        stdin=subprocess.PIPE if path is None else subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=errors,
                        # Ctrl-C on the terminal is the chat's to handle, not the player's
                        start_new_session=True,
                    )
                except OSError as exc:
                    raise SpeechError(f"{self.player.name}: {exc.strerror}") from None
                self._process = process
            try:
                self._pipe(epoch, audio, process.stdin)
            finally:
                code = process.wait()  # at the end of its input, or when stop() kills it
                with self._lock:
                    self._process = None
            if code != 0 and epoch == self._epoch:
                errors.seek(0)
                lines = errors.read().decode(errors="replace").strip().splitlines()
                why = f": {lines[-1][:200]}" if lines else ""
                raise SpeechError(f"{self.player.name} failed (exit status {code}){why}")

    def _pipe(self, epoch: int, audio: Iterable[bytes], stdin: IO[bytes] | None) -> None:
        if stdin is None:
            return
        try:
            for chunk in audio:
                if epoch != self._epoch:
                    break
                stdin.write(chunk)
        except BrokenPipeError:
            pass  # the player ended (or was stopped) first: its exit status says which
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()  # the end of the audio, for the player
