"""``interference pull`` in a pseudo-terminal (its progress bar) and in pipes (plain lines),
``interference models`` listing the cache, ``interference rm``, and the exit statuses of
failures, against the fake hub over real HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.support.fake_hub import FakeHub

TIMEOUT = 20  # every wait; a passing run takes about a second
CONTENT = os.urandom(6 << 20)
#: name, bar, share, size, speed and time left, as the bar draws them
BAR = re.compile(
    r"m-Q4_K_M\.gguf  \[#* *\]\s+\d+%  [\d.]+ MB/6\.3 MB  [\d.]+ [kM]B/s  \d:\d\d left"
)


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        running.add_repo("u/cli-GGUF", {"m-Q4_K_M.gguf": CONTENT, "m-Q8_0.gguf": b"GGUF8"})
        yield running


@pytest.fixture
def env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    hub.reset()
    drop = ("HF_TOKEN", "HF_HUB_OFFLINE", "INTERFERENCE_MODELS", "INTERFERENCE_CONFIG")
    environment = {k: v for k, v in os.environ.items() if k not in drop}
    return environment | {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hub")}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interference", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_a_progress_bar_on_a_terminal(hub: FakeHub, env: dict[str, str]) -> None:
    hub.faults.bytes_per_s = 6 << 20  # about a second: the bar is drawn several times
    child = pexpect.spawn(
        sys.executable,
        ["-m", "interference", "pull", "hf:u/cli-GGUF"],
        env=env,
        encoding="utf-8",
        timeout=TIMEOUT,
    )
    try:
        child.expect(r"hf:u/cli-GGUF: m-Q4_K_M\.gguf \(6\.3 MB\) at [0-9a-f]{12}")
        child.expect(BAR)
        first = child.after
        child.expect(r"\r\x1b\[K")  # redrawn in place
        child.expect(r"hf:u/cli-GGUF: downloaded 6\.3 MB; \S+m-Q4_K_M\.gguf")
        child.expect("serve it: interference serve --model hf:u/cli-GGUF")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert re.search(r"\d+%", first)


def _interruptible() -> None:
    """Ctrl-C interrupts the child even when this test run was started with SIGINT ignored
    (as tests/integration/test_chat_cli.py explains)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_then_the_same_command_resumes(hub: FakeHub, env: dict[str, str]) -> None:
    hub.faults.bytes_per_s = 3 << 20  # 2 s for the file: Ctrl-C comes in the middle
    child = pexpect.spawn(
        sys.executable,
        ["-m", "interference", "pull", "hf:u/cli-GGUF"],
        env=env,
        encoding="utf-8",
        timeout=TIMEOUT,
        preexec_fn=_interruptible,
    )
    try:
        child.expect(r"\] +[1-9]\d?%")  # some bytes are in
        child.sendintr()
        child.expect("interrupted: the same command resumes the download where it stopped")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
    assert "Traceback" not in (child.before or "")
    hub.reset()
    again = run(env, "pull", "hf:u/cli-GGUF")
    assert again.returncode == 0, again.stderr
    resumed = re.search(r"m-Q4_K_M\.gguf: resuming at ([\d.]+) MB", again.stderr)
    assert resumed, again.stderr
    ((status, asked),) = hub.observed.cdn_answers
    assert status == 206
    assert asked.startswith("bytes=")
    assert asked != "bytes=0-"
    assert 0 < hub.observed.cdn_bytes < len(CONTENT)


def test_plain_lines_models_and_rm(env: dict[str, str], tmp_path: Path) -> None:
    pulled = run(env, "pull", "hf:u/cli-GGUF:Q4_K_M")
    assert pulled.returncode == 0, pulled.stderr
    log = pulled.stderr
    assert "pulling m-Q4_K_M.gguf (6.3 MB)" in log
    assert "verifying the sha256 digest of m-Q4_K_M.gguf" in log
    assert "m-Q4_K_M.gguf: 100% (6.3 MB of 6.3 MB" in log
    assert "\r" not in log
    assert "\x1b" not in log
    assert "downloaded 6.3 MB" in pulled.stdout

    again = run(env, "pull", "hf:u/cli-GGUF", "--file", "m-Q8_0.gguf")
    assert again.returncode == 0, again.stderr
    same = run(env, "pull", "hf:u/cli-GGUF:Q4_K_M")
    assert "hf:u/cli-GGUF:Q4_K_M: already in the cache" in same.stdout

    listed = run(env, "models", "--url", "http://127.0.0.1:9").stdout
    assert f"pulled models (hub cache {tmp_path / 'hub'}):" in listed
    assert re.search(r"hf:u/cli-GGUF:Q4_K_M  6\.3 MB  from u/cli-GGUF@[0-9a-f]{12}", listed)
    assert "hf:u/cli-GGUF:Q8_0  5 B" in listed

    removed = run(env, "rm", "hf:u/cli-GGUF:Q4_K_M")
    assert removed.returncode == 0, removed.stderr
    assert "deleted 2 path(s)" in removed.stdout  # the snapshot's link and the blob
    after = run(env, "models", "--url", "http://127.0.0.1:9").stdout
    assert "Q4_K_M" not in after
    assert "hf:u/cli-GGUF:Q8_0" in after
    assert run(env, "rm", "hf:u/cli-GGUF").returncode == 0
    assert "none: `interference pull" in run(env, "models", "--url", "http://127.0.0.1:9").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pull", "hf:u/absent"), "interference: u/absent is not at http://127.0.0.1"),
        (("pull", "llama3.2"), "`llama3.2` is not a hub model name"),
        (
            ("pull", "hf:u/cli-GGUF:Q2_K"),
            "no GGUF file tagged `Q2_K` in the repository; available: m-Q4_K_M",
        ),
        (("rm", "hf:u/never"), "hf:u/never is not in the cache"),
    ],
)
def test_failures_exit_1_with_a_message(
    env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    failed = run(env, *args)
    assert failed.returncode == 1
    assert message in failed.stderr
    assert "Traceback" not in failed.stderr
