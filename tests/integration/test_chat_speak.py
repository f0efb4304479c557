"""``interference chat --speak`` and ``/speak`` against a real ``interference serve`` whose
speech model is eSpeak NG (the ``espeak`` provider) and whose chat model is the fake upstream of
``openai_fake.py``; the player is a fake (``$INTERFERENCE_PLAYER``) that records what it is sent.

Skipped, saying why, without Debian's espeak-ng (``make speech``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.support.fake_player import FakePlayer, fake_player, gone, is_audio
from tests.support.openai_fake import openai_upstream
from tests.support.server import ServerProcess, start_server
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (make speech)"
)

PIECES = ["Hello from the fake", " model. It speaks in", " two sentences."]
ANSWER = "".join(PIECES)
TIMEOUT = 15  # every wait; a passing run takes about a second per turn


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with openai_upstream("fake", pieces=PIECES) as running:
        yield running


@pytest.fixture(scope="module")
def server(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    config = (
        "providers:\n"
        f'  up: {{kind: openai, base_url: "{upstream.url}/v1"}}\n'
        "  speech: {kind: espeak}\n"
        "models:\n"
        "  m: {deployments: [{provider: up, model: upstream-model}]}\n"
    )
    running = start_server(tmp_path_factory.mktemp("speak"), config)
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


@pytest.fixture
def player(tmp_path: Path) -> FakePlayer:
    return fake_player(tmp_path / "player")


def environment(player: FakePlayer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return {**env, "TERM": "dumb", "PYTHONUNBUFFERED": "1", "INTERFERENCE_PLAYER": player.command}


def _interruptible() -> None:
    """Ctrl-C interrupts the child even when this test run ignores SIGINT (see test_chat_cli)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def children() -> Iterator[list[pexpect.spawn]]:
    started: list[pexpect.spawn] = []
    yield started
    for child in started:
        if child.isalive():
            child.terminate(force=True)


def test_speak_reads_the_answer_aloud(server: ServerProcess, player: FakePlayer) -> None:
    command = [sys.executable, "-m", "interference", "chat", "--url", server.url, "--model", "m"]
    done = subprocess.run(
        [*command, "--speak", "-p", "hi"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environment(player),
        stdin=subprocess.DEVNULL,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, ANSWER + "\n", "")
    recordings = player.recordings()
    assert recordings, "the player was never started"
    # WAV (the format $INTERFERENCE_PLAYER takes): about 2.5 s of speech at 16 bits
    assert all(is_audio(audio) and audio.startswith(b"RIFF") for audio in recordings)
    assert sum(map(len, recordings)) > 50_000
    assert "fake model" not in server.log.read_text()  # nothing spoken is logged


def test_slash_speak_toggles_and_ctrl_c_stops_the_player(
    server: ServerProcess, player: FakePlayer, children: list[pexpect.spawn]
) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "interference", "chat", "--url", server.url, "--model", "m"],
        env=environment(player),
        encoding="utf-8",
        timeout=TIMEOUT,
        preexec_fn=_interruptible,
    )
    children.append(child)
    child.expect_exact("/help lists the commands")

    def say(text: str) -> None:
        child.expect_exact("> ")
        child.sendline(text)
        child.expect_exact(ANSWER)

    say("hi")
    assert player.pids() == []  # not speaking yet
    child.expect_exact("> ")
    child.sendline("/speak")
    child.expect_exact("(speaking: espeak-ng, voice coral, through player)")
    say("hi again")
    child.expect_exact("\r\n> ")  # the prompt comes back once the answer has been spoken
    child.sendline("")  # a fresh prompt for say()
    recordings = player.recordings()
    assert recordings
    assert all(is_audio(audio) for audio in recordings)
    assert sum(map(len, recordings)) > 50_000

    player.hold.touch()  # the player now plays on until it is stopped
    spoken = len(player.pids())
    say("and once more")
    pid = player.wait_for_pids(spoken + 1)[-1]
    child.sendintr()
    child.expect_exact("(stopped)")
    assert gone(pid)  # killed by its PID
    player.hold.unlink()

    child.sendline("/speak")
    child.expect_exact("(not speaking)")
    spoken = len(player.pids())
    say("quiet now")
    child.expect_exact("> ")
    assert len(player.pids()) == spoken
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_speak_without_a_player_says_why(
    server: ServerProcess, tmp_path: Path, children: list[pexpect.spawn]
) -> None:
    env = {**environment(fake_player(tmp_path)), "INTERFERENCE_PLAYER": "no-such-player"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "interference", "chat", "--url", server.url, "--model", "m", "--speak"],
        env=env,
        encoding="utf-8",
        timeout=TIMEOUT,
    )
    children.append(child)
    child.expect_exact(
        "error: cannot speak: $INTERFERENCE_PLAYER names no-such-player, which is not found "
        "(no_speech)"
    )
    child.expect_exact("> ")
    child.sendline("/speak")
    child.expect_exact("error: cannot speak: $INTERFERENCE_PLAYER")
    child.expect_exact("> ")
    child.sendline("hi")
    child.expect_exact(ANSWER)  # the chat goes on, silent
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
