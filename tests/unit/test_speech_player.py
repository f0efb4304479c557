"""Answers read aloud (``interference chat --speak``), in process: the player search, the
sentences sent to a mocked ``/v1/audio/speech`` and piped into a fake player (a script that
records its stdin), one-line failures, and a stop that kills the player by its PID."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from interference.speech_player import (
    NoSpeechError,
    Player,
    Speaker,
    SpeechError,
    default_speech_model,
    find_player,
    speakable,
)
from interference.terminal_chat import ChatError, Session
from tests.support.fake_player import FakePlayer, fake_player, gone, tone_wav

WAV = tone_wav()


class SpeechRoute:
    """A mocked server: ``/v1/audio/speech`` answers :data:`WAV` (or ``refusal``), ``GET /``
    answers ``landing``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.refusal: dict[str, object] | None = None
        self.landing: object = {"speech_models": ["espeak-ng", "tts-1"]}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/":
            return httpx.Response(200, json=self.landing)
        assert request.url.path == "/v1/audio/speech"
        self.bodies.append(json.loads(request.content))
        if self.refusal is not None:
            return httpx.Response(400, json={"error": self.refusal})
        return httpx.Response(200, content=WAV, headers={"content-type": "audio/wav"})

    def client(self) -> httpx.Client:
        return httpx.Client(base_url="http://server/v1", transport=httpx.MockTransport(self))


@pytest.fixture
def route() -> SpeechRoute:
    return SpeechRoute()


@pytest.fixture
def player(tmp_path: Path) -> FakePlayer:
    return fake_player(tmp_path / "player")


@pytest.fixture
def speaker(route: SpeechRoute, player: FakePlayer) -> Iterator[Speaker]:
    running = Speaker(route.client(), Player((player.command,), "wav"), "espeak-ng", "coral")
    yield running
    running.close()


def executables(folder: Path, *names: str) -> str:
    folder.mkdir()
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return str(folder)


def test_players_are_looked_for_in_order_and_the_variable_overrides(tmp_path: Path) -> None:
    path = executables(tmp_path / "bin", "aplay", "mpv", "recorder")
    found = find_player({"PATH": path})
    assert (found.name, found.response_format, found.reads_stdin) == ("mpv", "mp3", True)
    assert found.argv[-1] == "-"  # mpv reads the audio on stdin
    only_aplay = executables(tmp_path / "alsa", "aplay")
    assert find_player({"PATH": only_aplay}) == Player(("aplay", "-q"), "wav")
    override = find_player({"PATH": path, "INTERFERENCE_PLAYER": "recorder --quiet"})
    assert override == Player(("recorder", "--quiet"), "wav")
    with pytest.raises(NoSpeechError, match=r"looked for ffplay, mpv, paplay, aplay, afplay"):
        find_player({"PATH": str(tmp_path / "empty")})
    with pytest.raises(NoSpeechError, match="INTERFERENCE_PLAYER names nothere"):
        find_player({"PATH": path, "INTERFERENCE_PLAYER": "nothere"})


def test_the_speech_model_is_the_servers_first(route: SpeechRoute) -> None:
    client = route.client()
    assert default_speech_model(client, "http://server/v1") == "espeak-ng"
    route.landing = {"name": "another gateway"}  # says nothing of speech
    assert default_speech_model(client, "http://server/v1") == "tts-1"
    route.landing = ["not", "ours"]
    assert default_speech_model(client, "http://server/v1") == "tts-1"
    route.landing = {"speech_models": []}
    with pytest.raises(NoSpeechError, match="has no speech model"):
        default_speech_model(client, "http://server/v1")


def test_speaking_stays_off_on_a_server_without_a_speech_model(
    route: SpeechRoute, player: FakePlayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTERFERENCE_PLAYER", player.command)
    session = Session("http://server", "m", None)
    session.client.close()
    session.client = route.client()
    route.landing = {"speech_models": []}
    with pytest.raises(ChatError) as raised:
        session.start_speaking()
    assert str(raised.value) == (
        "error: cannot speak: http://server has no speech model "
        "(a provider of kind espeak adds one) (no_speech)"
    )
    assert session.speaker is None
    route.landing = {"speech_models": ["espeak-ng"]}
    assert session.start_speaking().model == "espeak-ng"
    session.close()
    assert session.speaker is None


def test_markdown_signs_are_not_read_out() -> None:
    assert speakable("## **Bold** and `code`, see [the docs](http://x/y).") == (
        "Bold and code, see the docs."
    )
    assert speakable("```\n---\n") == ""


def test_sentences_are_spoken_in_order_through_the_player(
    route: SpeechRoute, player: FakePlayer, speaker: Speaker
) -> None:
    for piece in ["Hello **there**. How", " are you? I am", " fine"]:
        speaker.feed(piece)
    speaker.finish()
    speaker.wait()
    assert " ".join(str(b["input"]) for b in route.bodies) == "Hello there. How are you? I am fine"
    assert {(b["model"], b["voice"], b["response_format"]) for b in route.bodies} == {
        ("espeak-ng", "coral", "wav")
    }
    assert player.recordings() == [WAV] * len(route.bodies)


def test_a_refusal_is_one_line_and_the_next_answer_is_spoken(
    route: SpeechRoute, player: FakePlayer, speaker: Speaker
) -> None:
    route.refusal = {"message": "Unknown voice.", "code": "unsupported_voice"}
    speaker.feed("One. Two. Three.")
    speaker.finish()
    with pytest.raises(SpeechError) as raised:
        speaker.wait()
    assert str(raised.value) == "speech: Unknown voice. (unsupported_voice)"
    assert player.recordings() == []
    route.refusal = None
    speaker.feed("Four.")
    speaker.finish()
    speaker.wait()
    assert player.recordings() == [WAV]


def test_a_failing_player_is_one_line(route: SpeechRoute, tmp_path: Path) -> None:
    broken = fake_player(tmp_path / "broken", exit_status=3, stderr="no sound card")
    speaker = Speaker(route.client(), Player((broken.command, "-x"), "wav"), "m", "coral")
    try:
        speaker.feed("Hello.")
        speaker.finish()
        with pytest.raises(SpeechError) as raised:
            speaker.wait()
        assert str(raised.value) == "player failed (exit status 3): no sound card"
    finally:
        speaker.close()


def test_stop_kills_the_playing_player_by_its_pid(
    route: SpeechRoute, player: FakePlayer, speaker: Speaker
) -> None:
    player.hold.touch()  # the player plays on until it is killed
    speaker.feed("A long answer. ")
    (pid,) = player.wait_for_pids(1)
    speaker.feed("It goes on. And on.")
    speaker.finish()
    speaker.stop()
    assert gone(pid)
    speaker.wait()  # what was still queued was dropped, without an error
    assert len(route.bodies) == 1
    player.hold.unlink()
    speaker.feed("After the stop.")
    speaker.finish()
    speaker.wait()
    assert route.bodies[-1]["input"] == "After the stop."
    assert len(player.pids()) == 2
