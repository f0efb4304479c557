"""``interference chat``: a terminal chat with any OpenAI-compatible server.

Two modes. With a terminal on stdin and no ``-p``, a REPL that streams each answer as it comes
and keeps the conversation for the session. With ``-p PROMPT`` or text piped on stdin, one
answer on stdout (nothing else) and exit; errors go to stderr with status 1. If both are given,
the prompt comes first, then a blank line, then the stdin text. With ``--speak`` (or ``/speak``)
each answer is also read aloud (:mod:`interference.speech_player`).

A turn that fails (an API error, a dropped connection) is forgotten, so the next one is sent
as if it had never been asked; an answer stopped with Ctrl-C is kept as far as it was shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Generator, Iterator
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

from interference.speech_player import (
    DEFAULT_VOICE,
    NoSpeechError,
    Speaker,
    SpeechError,
    default_speech_model,
    find_player,
)

HELP = """commands:
  /reset        forget the conversation (the system prompt stays)
  /model NAME   switch to another model (/model alone shows the current one)
  /speak        read the answers aloud, or stop reading them (a toggle)
  /help         this list
  /exit         leave (Ctrl-D too); Ctrl-C stops an answer, or its reading"""


class ChatError(Exception):
    """A failure shown to the user as one line: ``error: <message> (<code>)``."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"error: {self.message}" + (f" ({self.code})" if self.code else "")


def api_base(url: str) -> str:
    """``http://host:port`` or ``http://host:port/v1`` → ``http://host:port/v1``."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def api_key(explicit: str | None) -> str | None:
    """``--api-key``, else ``$INTERFERENCE_API_KEY``, else ``$OPENAI_API_KEY``."""
    return explicit or os.environ.get("INTERFERENCE_API_KEY") or os.environ.get("OPENAI_API_KEY")


def error_from(body: Any, status: int | None = None) -> ChatError:
    """The :class:`ChatError` for an OpenAI error body (or whatever else a server sent)."""
    error = body.get("error", body) if isinstance(body, dict) else body
    fallback = f"HTTP {status}" if status else None
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or json.dumps(error)
        code = error.get("code") or error.get("type")
        return ChatError(str(message), str(code) if code else fallback)
    return ChatError(str(error).strip()[:300] or "empty response", fallback)


def _connection_error(exc: httpx.HTTPError, url: str) -> ChatError:
    if isinstance(exc, httpx.TimeoutException):
        return ChatError(f"no answer from {url} in time", "timeout")
    if isinstance(exc, httpx.ConnectError):
        return ChatError(f"cannot connect to {url}: {exc}", "connection_error")
    return ChatError(f"{type(exc).__name__}: {exc}", "connection_error")


class Session:
    """One conversation with one server: the history, the model, and the HTTP client."""

    def __init__(
        self, url: str, model: str | None, system: str | None, key: str | None = None
    ) -> None:
        self.url = api_base(url)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        host = urlsplit(self.url).hostname or ""
        self.client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(300.0, connect=10.0),
            # proxies from the environment are for remote servers, never for this machine
            trust_env=host not in ("127.0.0.1", "localhost", "::1"),
        )
        self.system = system
        self.messages: list[dict[str, str]] = []
        self.model = model or ""
        self.speech_model: str | None = None  # None: the server's first one
        self.voice = DEFAULT_VOICE
        self.speaker: Speaker | None = None  # set while answers are read aloud
        self.reset()

    def close(self) -> None:
        self.stop_speaking()
        self.client.close()

    def start_speaking(self) -> Speaker:
        """Read the answers aloud from now on; a :class:`ChatError` saying why when this
        machine has no player or the server no speech model."""
        if self.speaker is None:
            try:
                player = find_player()
                model = self.speech_model or default_speech_model(self.client, self.url)
            except NoSpeechError as exc:
                raise ChatError(f"cannot speak: {exc}", "no_speech") from None
            self.speaker = Speaker(self.client, player, model, self.voice)
        return self.speaker

    def stop_speaking(self) -> None:
        if self.speaker is not None:
            self.speaker.close()
            self.speaker = None

    def speak_answer(self) -> None:
        """Return once the answer just shown has been read aloud (no-op when not speaking).
        Ctrl-C stops the player; a failure is a :class:`ChatError` and turns speaking off."""
        if self.speaker is None:
            return
        try:
            self.speaker.finish()
            self.speaker.wait()
        except KeyboardInterrupt:
            self.speaker.stop()
            raise
        except SpeechError as exc:
            self.stop_speaking()
            raise ChatError(f"{exc}; speaking is off (/speak turns it back on)", "speech") from None

    def reset(self) -> None:
        """Forget the conversation; keep the system prompt."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def first_model(self) -> str:
        """The first model of ``GET /v1/models``."""
        try:
            response = self.client.get("/models")
            body = response.json()
        except httpx.HTTPError as exc:
            raise _connection_error(exc, self.url) from None
        except ValueError:
            raise ChatError(f"{self.url}/models did not answer JSON", "bad_response") from None
        if response.status_code >= 400:
            raise error_from(body, response.status_code)
        models = body.get("data") if isinstance(body, dict) else None
        if not models:
            raise ChatError(f"{self.url} lists no models; choose one with --model", "no_model")
        return str(models[0]["id"])

    def ask(self, text: str, out: TextIO) -> str:
        """Send ``text`` with the conversation so far, write the answer to ``out`` as it comes
        and return it. On :class:`ChatError` the turn is forgotten; on KeyboardInterrupt the
        stream is closed and the part already shown stays in the history."""
        self.messages.append({"role": "user", "content": text})
        parts: list[str] = []
        stream = self._stream()
        try:
            for piece in stream:
                parts.append(piece)
                out.write(piece)
                out.flush()
                if self.speaker is not None:
                    self.speaker.feed(piece)
        except KeyboardInterrupt:
            self._finish(parts)
            if self.speaker is not None:
                self.speaker.stop()
            raise
        except ChatError:
            if self.speaker is not None:
                self.speaker.stop()
            self.messages.pop()
            if parts:  # end the line of the part shown before the error
                out.write("\n")
            raise
        finally:
            stream.close()  # closes the HTTP response, and so the connection, if still open
        self._finish(parts)
        return "".join(parts)

    def _finish(self, parts: list[str]) -> None:
        if parts:
            self.messages.append({"role": "assistant", "content": "".join(parts)})
        else:
            self.messages.pop()

    def _stream(self) -> Generator[str, None, None]:
        body = {"model": self.model, "messages": self.messages, "stream": True}
        try:
            with self.client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    raw = response.read()
                    try:
                        parsed: Any = json.loads(raw)
                    except ValueError:
                        parsed = raw.decode(errors="replace")
                    raise error_from(parsed, response.status_code)
                if "json" in response.headers.get("content-type", ""):
                    # a server that ignores "stream": the whole answer in one JSON body
                    yield from _contents(json.loads(response.read()))
                    return
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        event = json.loads(data)
                    except ValueError:
                        raise ChatError(f"malformed event: {data[:80]}", "bad_response") from None
                    yield from _contents(event)
        except httpx.HTTPError as exc:
            raise _connection_error(exc, self.url) from None
        except ValueError:
            raise ChatError("the server answered invalid JSON", "bad_response") from None


def _contents(event: Any) -> Iterator[str]:
    """The text of a stream event (``delta``) or a whole response (``message``)."""
    if not isinstance(event, dict):
        raise ChatError(f"unexpected event: {str(event)[:80]}", "bad_response")
    if event.get("error") is not None:
        raise error_from(event)
    for choice in event.get("choices") or []:
        content = (choice.get("delta") or choice.get("message") or {}).get("content")
        if content:
            yield str(content)


def one_shot(session: Session, text: str) -> int:
    """Answer once on stdout, followed by a newline (then read it aloud, when speaking)."""
    try:
        session.ask(text, sys.stdout)
        print(flush=True)
        session.speak_answer()
    except ChatError as exc:
        print(exc, file=sys.stderr)
        return 0 if exc.code == "speech" else 1  # the answer itself was given
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 0


def toggle_speaking(session: Session) -> None:
    if session.speaker is not None:
        session.stop_speaking()
        print("(not speaking)")
        return
    try:
        speaker = session.start_speaking()
    except ChatError as exc:
        print(exc, file=sys.stderr, flush=True)
        return
    print(f"(speaking: {speaker.model}, voice {speaker.voice}, through {speaker.player.name})")


def repl(session: Session) -> int:
    """Read, answer, repeat, until /exit, Ctrl-D, or Ctrl-C at the prompt."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (gives input() line editing and history)
    print(f"interference chat: {session.model} at {session.url}")
    if session.speaker is not None:
        print(f"reading answers aloud through {session.speaker.player.name}; /speak stops that.")
    print("/help lists the commands; /exit or Ctrl-D leaves.")
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line:
            continue
        if line.startswith("/"):
            command, _, argument = line.partition(" ")
            argument = argument.strip()
            if command in ("/exit", "/quit"):
                return 0
            if command == "/help":
                print(HELP)
            elif command == "/reset":
                session.reset()
                print("(conversation forgotten)")
            elif command == "/speak":
                toggle_speaking(session)
            elif command == "/model":
                if argument:
                    session.model = argument
                print(f"(model: {session.model})")
            else:
                print(f"unknown command {command}; /help lists the commands")
            continue
        try:
            answer = session.ask(line, sys.stdout)
            print("" if answer else "(empty answer)", flush=True)
        except ChatError as exc:
            print(exc, file=sys.stderr, flush=True)
            continue
        except KeyboardInterrupt:
            print("\n(stopped)")
            continue
        try:
            session.speak_answer()
        except ChatError as exc:
            print(exc, file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            print("(stopped)")


def main(
    url: str,
    model: str | None,
    system: str | None,
    key: str | None,
    prompt: str | None,
    speak: bool = False,
    voice: str | None = None,
    speech_model: str | None = None,
) -> int:
    """``interference chat``: the REPL on a terminal, else one answer."""
    piped = not sys.stdin.isatty()
    text = None
    if prompt is not None or piped:
        stdin_text = sys.stdin.read() if piped else ""
        # keep the first line's indentation (code, diffs); drop blank lines around the text
        text = "\n\n".join(t for t in (prompt, stdin_text.rstrip().lstrip("\n")) if t)
        if not text.strip():
            print("error: nothing to ask (an empty prompt)", file=sys.stderr)
            return 1
    session = Session(url, model, system, api_key(key))
    session.voice = voice or session.voice
    session.speech_model = speech_model
    try:
        if not session.model:
            session.model = session.first_model()
        if speak:
            try:
                session.start_speaking()
            except ChatError as exc:  # the chat goes on, silent
                print(exc, file=sys.stderr, flush=True)
        return one_shot(session, text) if text is not None else repl(session)
    except ChatError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        session.close()
