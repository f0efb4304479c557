"""One file from the hub into the cache: resumed, retried, verified, renamed into place.

- The bytes go to ``blobs/<oid>.incomplete``; a later pull continues it with ``Range:
  bytes=<size>-`` (huggingface_hub names its partial files the same, so either tool resumes the
  other's). A server that answers 200 instead of 206 sends the whole file: it is written from
  the start again.
- A read that waits ``stall_s`` without a byte is a stall: the connection is dropped and a new
  one resumes where the file stands (Ollama's 30 s). Stalls are not failures, but bounded.
- A failed attempt (reset, cut, 5xx) is retried after 1, 2, 4... s; an attempt that brought
  bytes resets that count, so a connection cut every few minutes still finishes.
- The SHA-256 (for small files kept in git, git's SHA-1) is computed while writing, and
  compared with the hub's LFS digest: on a mismatch the file is deleted and the pull fails.
- Only a verified file is renamed to its blob name, so a blob is always whole.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interference.hub.client import HubAnswer, HubClient
from interference.hub.errors import (
    DigestMismatchError,
    HubError,
    HubUnreachableError,
    PullCancelledError,
)

CHUNK = 1 << 20
MAX_STALLS = 20  # reconnections after a stall, per file
MAX_CONNECTIONS = 200  # per file, whatever happened
_RETRIED = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RemoteFile:
    """A file of the repository as the hub's tree lists it."""

    path: str
    size: int
    oid: str  # the blob's name: the LFS SHA-256, else git's SHA-1 of the content
    lfs: bool

    @property
    def digest(self) -> str:
        """As Ollama's clients show a digest: ``sha256:<hex>`` (``sha1:`` for a git file)."""
        return f"{'sha256' if self.lfs else 'sha1'}:{self.oid}"


class PullProgress:
    """What a pull tells as it goes (each method may be called from a download thread); the
    defaults say nothing."""

    def note(self, text: str) -> None:
        """Something the user should read: a stall, a restart, a fallback to the cache."""

    def start(self, file: RemoteFile, completed: int) -> None:
        """``file`` begins, ``completed`` bytes of it already there (the whole file: cached)."""

    def advance(self, file: RemoteFile, completed: int) -> None:
        """``completed`` bytes of ``file`` are written."""

    def verifying(self, file: RemoteFile) -> None:
        """All bytes are there; the digest is being compared."""

    def finish(self, file: RemoteFile) -> None:
        """``file`` is in the cache, verified."""


class _RetryError(Exception):
    """An attempt failed in a way another attempt may not."""


def _hasher(file: RemoteFile) -> Any:
    if file.lfs:
        return hashlib.sha256()
    hasher = hashlib.sha1()  # git's blob id: sha1("blob <size>\0" + content)
    hasher.update(b"blob %d\0" % file.size)
    return hasher


def _hash_existing(path: Path, file: RemoteFile, cancel: threading.Event | None) -> Any:
    hasher = _hasher(file)
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            if cancel is not None and cancel.is_set():
                raise PullCancelledError()
            hasher.update(block)
    return hasher


@dataclass
class Download:
    """The download of ``file`` from ``url`` to ``blob`` (call :meth:`run`)."""

    client: HubClient
    url: str
    file: RemoteFile
    blob: Path
    progress: PullProgress
    stall_s: float = 30.0
    retries: int = 5
    cancel: threading.Event | None = None

    def __post_init__(self) -> None:
        self.partial = self.blob.with_name(self.blob.name + ".incomplete")
        self.offset = 0

    def run(self) -> None:
        self.blob.parent.mkdir(parents=True, exist_ok=True)
        size = self.partial.stat().st_size if self.partial.exists() else 0
        if size > self.file.size:  # not this file's beginning: start over
            self.partial.unlink()
            size = 0
        hasher = _hash_existing(self.partial, self.file, self.cancel) if size else None
        self.hasher = hasher or _hasher(self.file)
        self.offset = size
        if size:
            self.progress.note(f"{self.file.path}: resuming at {size / 1e6:.1f} MB")
        self.progress.start(self.file, size)
        self._transfer()
        self.progress.verifying(self.file)
        got = self.hasher.hexdigest()
        if got != self.file.oid or self.offset != self.file.size:
            self.partial.unlink(missing_ok=True)
            raise DigestMismatchError(
                f"{self.file.path}: the downloaded bytes' digest is {got}, the hub's is "
                f"{self.file.oid} ({self.offset} of {self.file.size} bytes): the file was "
                "deleted; pull again (a proxy or mirror may have altered it)"
            )
        os.replace(self.partial, self.blob)
        self.progress.finish(self.file)

    def _transfer(self) -> None:
        """Connect and copy until the file is whole, within the retry bounds."""
        failures = stalls = 0
        for _ in range(MAX_CONNECTIONS):
            if self.offset >= self.file.size:
                return
            before = self.offset
            try:
                self._attempt()
                continue
            except TimeoutError:
                stalls += 1
                if stalls > MAX_STALLS:
                    raise HubUnreachableError(
                        f"{self.file.path}: the download stalled {stalls} times"
                    ) from None
                self.progress.note(
                    f"{self.file.path}: no data for {self.stall_s:g} s; reconnecting"
                )
                continue
            except (_RetryError, OSError, http.client.HTTPException) as exc:
                failures = 0 if self.offset > before else failures + 1
                if failures > self.retries:
                    raise HubUnreachableError(
                        f"{self.file.path}: gave up after {self.retries} retries: {exc}"
                    ) from None
                delay = min(self.client.backoff_s * 2 ** max(failures - 1, 0), 30.0)
                self.progress.note(f"{self.file.path}: {exc or type(exc).__name__}; retrying")
                if self.cancel is None:
                    time.sleep(delay)
                elif self.cancel.wait(delay):
                    raise PullCancelledError() from None
        if self.offset < self.file.size:
            raise HubUnreachableError(f"{self.file.path}: {MAX_CONNECTIONS} connections")

    def _attempt(self) -> None:
        headers = {"range": f"bytes={self.offset}-"} if self.offset else {}
        with self.client.open(self.url, headers, read_timeout=self.stall_s) as answer:
            if answer.status == 416 and self.offset:  # asked past the end: start over
                self._restart("the server refused the range")
                return
            if answer.status in _RETRIED:
                raise _RetryError(f"HTTP {answer.status}")
            if answer.status not in (200, 206):
                missing = f"{self.file.path} is no longer in the repository (HTTP 404)"
                raise self.client.status_error(answer.status, answer.url, missing)
            if answer.status == 206 and not self._range_matches(answer):
                self._restart("the server answered another range")
                return
            if answer.status == 200 and self.offset:
                self._restart("the server sent the whole file instead of the rest")
            self._copy(answer)

    def _range_matches(self, answer: HubAnswer) -> bool:
        content_range = answer.header("content-range") or ""
        return content_range.startswith(f"bytes {self.offset}-")

    def _restart(self, why: str) -> None:
        self.progress.note(f"{self.file.path}: {why}; starting over")
        self.partial.unlink(missing_ok=True)
        self.offset = 0
        self.hasher = _hasher(self.file)
        self.progress.advance(self.file, 0)

    def _copy(self, answer: HubAnswer) -> None:
        """Append the answer's body to the partial file (a write error is not retried:
        a full disk stays full)."""
        with self.partial.open("ab") as out:
            out.truncate(self.offset)
            while self.offset < self.file.size:
                if self.cancel is not None and self.cancel.is_set():
                    raise PullCancelledError()
                block = answer.read_some(min(CHUNK, self.file.size - self.offset))
                if not block:
                    raise _RetryError(f"the connection ended at {self.offset} bytes")
                try:
                    out.write(block)
                except OSError as exc:
                    raise HubError(f"cannot write {self.partial}: {exc}") from None
                self.hasher.update(block)
                self.offset += len(block)
                self.progress.advance(self.file, self.offset)
