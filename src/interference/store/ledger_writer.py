"""Usage rows written by a process of their own: each serving process that keeps a ledger
starts one writer (``python -m interference.store.ledger_writer``) the first time it has rows,
and hands it every batch (:meth:`UsageLedger.flush <interference.store.usage.UsageLedger.flush>`).

Why a process: in a thread of the serving process the database driver lets go of Python's
global lock for every statement and must take it back from a busy event loop each time. On
the 2-core bench machine that hand-over cost the loop about 7 µs of CPU per request at 8,000
requests/s (a quarter of a virtual key's whole cost, ``bench/README.md``, "Virtual keys"),
and a slow disk or a locked database could hold the lock for as long as it took. The writer
shares nothing with the loop but a pipe; what the serving process pays per row is pickling it.

The pipe carries length-prefixed pickles (both ends are this package, in one install): first
where the database is, then batches ``(sender, number, rows, oldest)``, each answered once its
transaction committed (``(None, cost per key)``) or failed (``(the error's text, None)``). A
batch the writer did not confirm stays with the serving process and is sent again, first, with
the next one; the database notes the last batch number it committed per sender (table
``usage_batches``), so a batch that was committed just before its writer died is not counted
twice.

The writer ends when its input does: at shutdown, after the last batch, and when the serving
process dies (SIGKILL included), after writing what it was sent. It ignores SIGINT and SIGTERM
(a Ctrl-C or a service manager signals the whole process group, and the serving process still
has its last rows to send); the serving process ends a writer that does not answer in time by
its PID, and starts another for the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import secrets
import signal
import sys
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from interference.store.database import database_path
from interference.store.usage import Row, Written, key_costs, write_rows

if TYPE_CHECKING:
    from interference.config import StorageConfig

logger = logging.getLogger(__name__)

_LENGTH = 4  # bytes of each message's length, big-endian
_STOP_WAIT_S = 5.0  # for a writer to end after its input did
#: rows per batch sent (a flush of more is sent as several): a batch is held whole by both
#: processes while it is written, so this bounds their memory (the writer's RSS: 25 MB idle,
#: 46 MB after batches of 18,000 rows)
_ROWS_PER_BATCH = 4096


def writer_target(storage: StorageConfig) -> dict[str, Any]:
    """What a writer opens for ``storage`` (the writer reads no configuration: pydantic's
    models would double its memory)."""
    url = storage.database_url()
    if url:
        return {"url": url, "timeout_s": storage.timeout_s}
    return {"path": str(database_path(storage.path))}


class LedgerWriteError(Exception):
    """The writer failed a batch, died, or did not answer in time."""


class LedgerWriter:
    """The serving process's end of a writer process; one batch at a time."""

    def __init__(self, where: dict[str, Any], timeout_s: float) -> None:
        #: what the writer opens: ``{"path": FILE}`` or ``{"url": URL, "timeout_s": S}``
        self._where = where
        self._timeout_s = timeout_s  # for an answer, beyond the database's own time limits
        self._process: asyncio.subprocess.Process | None = None
        self._sender = secrets.token_hex(8)  # this serving process, in usage_batches
        self._number = 0
        self._unconfirmed: list[tuple[int, list[Row], float]] = []
        self._lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        """Whether a writer was ever needed (a process without rows never starts one)."""
        return self._number > 0

    @property
    def waiting(self) -> int:
        """Rows handed over but not confirmed written."""
        return sum(len(rows) for _, rows, _ in self._unconfirmed)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def write(self, rows: list[Row], oldest: float) -> Written:
        """Write ``rows`` (and prune rows older than ``oldest``), after the batches not yet
        confirmed; what was confirmed written. Raises :class:`LedgerWriteError` when the
        first batch fails; the batches not confirmed stay for the next call."""
        async with self._lock:
            for start in range(0, max(1, len(rows)), _ROWS_PER_BATCH):
                self._number += 1
                self._unconfirmed.append(
                    (self._number, rows[start : start + _ROWS_PER_BATCH], oldest)
                )
            count, costs = 0, dict[str, float]()
            while self._unconfirmed:
                number, batch, batch_oldest = self._unconfirmed[0]
                try:
                    spent = await self._send((self._sender, number, batch, batch_oldest))
                except LedgerWriteError:
                    if not count:
                        raise
                    break  # the rest waits; the error shows at the next call
                del self._unconfirmed[0]
                count += len(batch)
                for digest, cost in spent.items():
                    costs[digest] = costs.get(digest, 0.0) + cost
            return Written(count, costs)

    async def _send(self, batch: tuple[str, int, list[Row], float]) -> dict[str, float]:
        """Send one batch; the costs its rows added to the keys' spend."""
        message = _framed(batch)
        for attempt in (1, 2):  # a writer that died since the last batch: once more, anew
            process = await self._running()
            assert process.stdin is not None
            assert process.stdout is not None
            try:
                async with asyncio.timeout(self._timeout_s):
                    process.stdin.write(message)
                    await process.stdin.drain()
                    answer = await _read_message(process.stdout)
            except TimeoutError:
                await self._end(process, wait_s=0)  # stuck: the next batch gets a new writer
                raise LedgerWriteError(
                    f"the usage writer (PID {process.pid}) did not answer in time"
                ) from None
            except (OSError, EOFError, asyncio.IncompleteReadError):
                await self._end(process)
                if attempt == 2:
                    raise LedgerWriteError(f"the usage writer (PID {process.pid}) ended") from None
                continue
            error, costs = answer
            if error is not None:
                raise LedgerWriteError(f"the usage writer could not write: {error}")
            spent: dict[str, float] = costs
            return spent
        raise AssertionError("unreachable")

    async def _running(self) -> asyncio.subprocess.Process:
        process = self._process
        if process is not None and process.returncode is None:
            return process
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None
        self._process = process
        process.stdin.write(_framed(self._where))
        logger.debug("usage writer started: PID %d", process.pid)
        return process

    async def _end(self, process: asyncio.subprocess.Process, wait_s: float = _STOP_WAIT_S) -> None:
        """End ``process`` (this writer's): its input closed, then, after ``wait_s``, SIGKILL
        by its PID."""
        if self._process is process:
            self._process = None
        if process.stdin is not None:
            process.stdin.close()
        try:
            async with asyncio.timeout(wait_s):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def close(self) -> None:
        """End the writer (after :meth:`write` of the last rows)."""
        async with self._lock:
            if self._process is not None:
                await self._end(self._process)


def _framed(message: Any) -> bytes:
    """``message`` as it goes over the pipe: its pickle's length, then the pickle."""
    payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return len(payload).to_bytes(_LENGTH, "big") + payload


async def _read_message(stream: asyncio.StreamReader) -> Any:
    size = int.from_bytes(await stream.readexactly(_LENGTH), "big")
    return pickle.loads(await stream.readexactly(size))


# --- the writer process


def _read(source: IO[bytes]) -> Any:
    """The next message, or None at the end of the input."""
    head = source.read(_LENGTH)
    if len(head) < _LENGTH:
        return None
    size = int.from_bytes(head, "big")
    body = source.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)


def _reply(channel: IO[bytes], message: Any) -> None:
    channel.write(_framed(message))
    channel.flush()


def serve(source: IO[bytes], channel: IO[bytes]) -> None:
    """Write the batches of ``source`` until it ends, answering each on ``channel``."""
    from interference.store.database import Database, SQLiteDatabase

    where = _read(source)
    if where is None:
        return
    database: Database
    if where.get("url"):
        from interference.store.postgres import PostgresDatabase

        database = PostgresDatabase(where["url"], where["timeout_s"])
    else:
        database = SQLiteDatabase(Path(where["path"]))
    opened = False
    try:
        while (batch := _read(source)) is not None:
            sender, number, rows, oldest = batch
            try:
                if not opened:
                    database.open()  # the serving process migrated it already
                    opened = True
                database.call(partial(write_rows, rows=rows, oldest=oldest, batch=(sender, number)))
            except Exception as exc:
                _reply(channel, (f"{type(exc).__name__}: {exc}"[:300], None))
            else:  # the costs, summed here rather than by the serving process
                _reply(channel, (None, key_costs(rows)))
    finally:
        database.close()


def main() -> None:
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not break the pipe
    with channel:
        serve(sys.stdin.buffer, channel)


if __name__ == "__main__":
    main()
