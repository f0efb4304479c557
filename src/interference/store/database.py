"""One SQLite file, created and migrated at start, used from one thread of its own.

SQLite is the default store because it needs nothing installed and holds a gateway's keys and
usage with room to spare. The file is opened in WAL mode (readers never wait for the writer) with
``synchronous=NORMAL`` (a committed transaction survives a crash of the process; a power cut may
lose the last ones). All statements run in a single worker thread, so that the event loop never
blocks on the disk and no two statements race on the connection; :meth:`Database.run` hands a
function the connection there.

Migrations are numbered SQL scripts (:data:`MIGRATIONS`); ``PRAGMA user_version`` records how many
ran, and those not yet run are applied in order, in one transaction, at start.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: the schema, one script per version; never edit one that shipped, add the next
MIGRATIONS: list[str] = [
    # 1: virtual keys, by the SHA-256 digest of the key (the key itself is never stored)
    """
    CREATE TABLE keys (
        digest TEXT PRIMARY KEY,
        alias TEXT UNIQUE,
        models TEXT NOT NULL DEFAULT '[]',
        max_budget REAL,
        budget_duration TEXT,
        budget_reset_at REAL,
        rpm INTEGER,
        tpm INTEGER,
        max_parallel INTEGER,
        expires_at REAL,
        blocked INTEGER NOT NULL DEFAULT 0,
        metadata TEXT NOT NULL DEFAULT '{}',
        spend REAL NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        last_used_at REAL
    );
    """,
    # 2: the usage ledger (one row per request, never prompt text) and its daily rollup
    """
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        request_id TEXT NOT NULL,
        key_digest TEXT NOT NULL,
        model TEXT NOT NULL,
        deployment TEXT,
        prompt_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cost REAL NOT NULL,
        status INTEGER NOT NULL,
        ms REAL NOT NULL,
        ttft_ms REAL
    );
    CREATE INDEX usage_at ON usage (at);
    CREATE INDEX usage_key_at ON usage (key_digest, at);
    CREATE TABLE usage_daily (
        day TEXT NOT NULL,
        key_digest TEXT NOT NULL,
        model TEXT NOT NULL,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cost REAL NOT NULL,
        PRIMARY KEY (day, key_digest, model)
    );
    """,
]


def default_path() -> Path:
    """``$XDG_DATA_HOME/interference/interference.db``, else under ``~/.local/share``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "interference" / "interference.db"


def database_path(configured: str | None) -> Path:
    """The file ``storage.path`` names, or the default one."""
    return Path(configured).expanduser() if configured else default_path()


class Database:
    """The SQLite file at ``path``, migrated to the latest version on :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection: sqlite3.Connection | None = None

    def open(self) -> int:
        """Open (creating the file and its folder) and migrate; the schema version now."""
        return self._executor.submit(self._open).result()

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA busy_timeout=5000")  # another process (CLI, worker) writing
        self._connection = connection
        # one transaction: processes starting together (--workers) migrate once, in turn
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = int(connection.execute("PRAGMA user_version").fetchone()[0])
            for script in MIGRATIONS[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        connection.execute(statement)
            connection.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return len(MIGRATIONS)

    def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` with the connection in the database's thread, and wait (for callers
        outside an event loop: the CLI, start-up)."""
        return self._executor.submit(self._with_connection, work).result()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` with the connection in the database's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_connection, work)

    def _with_connection(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            raise RuntimeError("the database is not open")
        return work(self._connection)

    def close(self) -> None:
        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        self._executor.submit(close).result()
        self._executor.shutdown(wait=True)
