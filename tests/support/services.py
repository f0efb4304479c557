"""Real PostgreSQL and Redis servers for the tests, each in a temporary folder on a free
loopback port, started and stopped (by PID) by the fixtures in tests/conftest.py.

They come from Debian's packages (``postgresql``, ``redis-server``), which ``make install-test``
installs; where a binary is missing the fixtures skip, saying which. PostgreSQL's ``initdb``
refuses to run as root, so as root the cluster is made and run as the ``postgres`` user that
Debian's package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes] | None, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {seconds} s")


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (the newest), if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _version(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


@dataclass
class Postgres:
    """A throwaway cluster: ``url`` reaches its database ``interference``."""

    folder: Path
    port: int
    bin: Path
    as_user: list[str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/interference"

    @classmethod
    def create(cls, folder: Path) -> Postgres:
        programs = postgres_bin()
        if programs is None:
            raise FileNotFoundError("PostgreSQL is not installed (Debian package postgresql)")
        as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root
            runuser = shutil.which("runuser")
            if runuser is None:
                raise FileNotFoundError("runuser is missing: cannot run PostgreSQL as root")
            as_user = [runuser, "-u", "postgres", "--"]
            folder.mkdir(parents=True, exist_ok=True)
            shutil.chown(folder, "postgres", "postgres")
        data = folder / "data"
        subprocess.run(
            [*as_user, str(programs / "initdb"), "-D", str(data), "-U", "postgres",
             "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        server = cls(folder, free_port(), programs, as_user)
        server.start()
        subprocess.run(
            [str(programs / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U",
             "postgres", "interference"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return server

    def start(self) -> None:
        """Run the server (``postgres`` itself, in the foreground: its PID is ours to stop)."""
        log = (self.folder / "postgres.log").open("ab")
        self.process = subprocess.Popen(
            [*self.as_user, str(self.bin / "postgres"), "-D", str(self.folder / "data"),
             "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={self.folder}", "-c", "fsync=off",
             "-c", "max_connections=50"],
            stdout=log, stderr=log,
        )  # fmt: skip
        _wait_for_port(self.port, self.process, 60)

    def stop(self) -> None:
        """A fast shutdown (SIGINT: sessions are ended, the data is kept)."""
        if self.process is not None and self.process.poll() is None:
            _signal_tree(self.process, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_tree(self.process, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


def _signal_tree(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the server: through runuser, the child it started is the server."""
    pids = [process.pid]
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class Redis:
    """A throwaway ``redis-server`` with nothing saved to disk."""

    folder: Path
    port: int
    binary: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def create(cls, folder: Path) -> Redis:
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
        )
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (Debian package redis-server)")
        folder.mkdir(parents=True, exist_ok=True)
        server = cls(folder, free_port(), binary)
        server.start()
        return server

    def start(self) -> None:
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"],
            stdout=log, stderr=log,
        )  # fmt: skip
        _wait_for_port(self.port, self.process, 30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
