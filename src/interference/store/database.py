"""Where keys and usage live: one SQLite file by default, a PostgreSQL database for replicas.

Both are used the same way: all statements run in one worker thread of the :class:`Database`, so
that the event loop never blocks on a disk or a socket and no two statements race on the
connection. :meth:`Database.run` hands a function a :class:`Session` there; the session speaks
SQLite's ``?`` placeholders whichever database is behind it, and knows the two dialects' few
differences (:meth:`Session.transaction`, :attr:`Session.greatest`).

SQLite (``storage.path``, default ``$XDG_DATA_HOME/interference/interference.db``) needs nothing
installed. The file is opened in WAL mode (readers never wait for the writer) with
``synchronous=NORMAL`` (a committed transaction survives a crash of the process; a power cut may
lose the last ones). PostgreSQL (``storage.url``) is :mod:`interference.store.postgres`.

Migrations are numbered SQL scripts, one list per dialect (:data:`MIGRATIONS`); the database
records how many ran, and those not yet run are applied in order, in one transaction, at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from interference.config import StorageConfig

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
    # 3: the last batch of usage rows each serving process's writer committed, so that a batch
    # sent again after its writer died is not counted twice (store.ledger_writer)
    """
    CREATE TABLE usage_batches (
        sender TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        at REAL NOT NULL
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


def statements(script: str) -> list[str]:
    return [s for s in script.split(";") if s.strip()]


class Session:
    """A connection as the stores use it, in the database's thread (SQLite's here; PostgreSQL's
    in :mod:`interference.store.postgres`)."""

    #: SQL's two-argument maximum (SQLite's ``MAX(a, b)``, PostgreSQL's ``GREATEST``)
    greatest = "MAX"
    #: what the driver raises for a broken UNIQUE constraint
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    @staticmethod
    def day_of(seconds: str) -> str:
        """The UTC day (``YYYY-MM-DD``) of the Unix time ``seconds``, in SQL."""
        return f"strftime('%Y-%m-%d', {seconds}, 'unixepoch')"

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.connection.execute(sql, params).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.connection.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together, or not at all. SQLite takes the write lock at
        once, so that two processes never both read, then both write."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")


class Database:
    """A database used from a thread of its own; :meth:`open` connects and migrates."""

    def __init__(self, thread_name: str = "database") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._session: Session | None = None

    @property
    def where(self) -> str:
        """The file or the server (never a password), for logs and ``/health``."""
        raise NotImplementedError

    def open(self) -> int:
        """Connect (creating what is missing) and migrate; the schema version now."""
        return self._executor.submit(self._open).result()

    def _open(self) -> int:
        raise NotImplementedError

    def _connected(self) -> Session:
        """The session, connecting again if the connection was lost."""
        if self._session is None:
            raise RuntimeError("the database is not open")
        return self._session

    def _lost(self, exc: BaseException) -> None:
        """``exc`` ended a statement: forget a connection it broke."""

    def _with_session(self, work: Callable[[Session], T]) -> T:
        session = self._connected()
        try:
            return work(session)
        except Exception as exc:
            self._lost(exc)
            raise

    def call(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` with the session in the database's thread, and wait (for callers
        outside an event loop: the CLI, start-up)."""
        return self._executor.submit(self._with_session, work).result()

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` with the session in the database's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_session, work)

    def _close(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)


class SQLiteDatabase(Database):
    """The SQLite file at ``path``."""

    def __init__(self, path: Path) -> None:
        super().__init__("sqlite")
        self.path = path
        self._connection: sqlite3.Connection | None = None

    @property
    def where(self) -> str:
        return str(self.path)

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout=5000")  # another process (CLI, worker) writing
        for attempt in range(50):  # bounded: 5 s
            # switching to WAL takes the file for itself, and SQLite answers "locked" at once
            # (no busy wait) to processes that try it together (--workers starting)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        connection.execute("PRAGMA synchronous=NORMAL")
        self._connection = connection
        self._session = session = Session(connection)
        # one transaction: processes starting together (--workers) migrate once, in turn
        with session.transaction():
            version = int(connection.execute("PRAGMA user_version").fetchone()[0])
            for script in MIGRATIONS[version:]:
                for statement in statements(script):
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
        return len(MIGRATIONS)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
            self._session = None


def open_database(storage: StorageConfig) -> Database:
    """The database the configuration names (``storage.url``, else the SQLite file of
    ``storage.path``), opened and migrated."""
    from interference.config import ConfigError  # here: the usage writer has no configuration

    database: Database
    url = storage.database_url()
    if url:
        from interference.store.postgres import PostgresDatabase

        database = PostgresDatabase(url, storage.timeout_s)
    else:
        database = SQLiteDatabase(database_path(storage.path))
    try:
        database.open()
    except Exception as exc:  # unreachable, refused, a file that cannot be made
        database.close()
        raise ConfigError(f"cannot open the database {database.where}: {exc}".strip()) from None
    return database
