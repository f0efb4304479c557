"""PostgreSQL behind :class:`~interference.store.database.Database`, for gateways that run as
several replicas (``storage.url: postgresql://...``); needs ``pip install 'psycopg[binary]'``.

The connection runs in autocommit mode, with explicit transactions where several statements must
hold together; a lost connection is opened again by the next statement. Statements that would
wait longer than ``storage.timeout_s`` on the server (a lock, a dead peer) fail instead, so
that the background writer never sticks; the request path never waits on the database at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from interference.store.database import Database, Session, statements

try:
    import psycopg
except ImportError:  # pragma: no cover - the message names the install
    psycopg = None  # type: ignore[assignment]

#: the schema for PostgreSQL: the same tables as SQLite's, one script per version, in step with
#: database.MIGRATIONS (floats are double precision: PostgreSQL's REAL has 6 digits)
MIGRATIONS: list[str] = [
    """
    CREATE TABLE keys (
        digest TEXT PRIMARY KEY,
        alias TEXT UNIQUE,
        models TEXT NOT NULL DEFAULT '[]',
        max_budget DOUBLE PRECISION,
        budget_duration TEXT,
        budget_reset_at DOUBLE PRECISION,
        rpm BIGINT,
        tpm BIGINT,
        max_parallel INTEGER,
        expires_at DOUBLE PRECISION,
        blocked INTEGER NOT NULL DEFAULT 0,
        metadata TEXT NOT NULL DEFAULT '{}',
        spend DOUBLE PRECISION NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION
    );
    """,
    """
    CREATE TABLE usage (
        id BIGSERIAL PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        request_id TEXT NOT NULL,
        key_digest TEXT NOT NULL,
        model TEXT NOT NULL,
        deployment TEXT,
        prompt_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        cost DOUBLE PRECISION NOT NULL,
        status INTEGER NOT NULL,
        ms DOUBLE PRECISION NOT NULL,
        ttft_ms DOUBLE PRECISION
    );
    CREATE INDEX usage_at ON usage (at);
    CREATE INDEX usage_key_at ON usage (key_digest, at);
    CREATE TABLE usage_daily (
        day TEXT NOT NULL,
        key_digest TEXT NOT NULL,
        model TEXT NOT NULL,
        requests BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        cost DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (day, key_digest, model)
    );
    """,
    """
    CREATE TABLE usage_batches (
        sender TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    """,
]

#: held while migrating, so that replicas starting together migrate once, in turn
_MIGRATION_LOCK = 0x1F7E_2E9C


class PostgresSession(Session):
    greatest = "GREATEST"

    @staticmethod
    def day_of(seconds: str) -> str:
        return f"to_char(to_timestamp({seconds}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def __init__(self, connection: Any) -> None:  # a psycopg.Connection
        self.pg = connection
        self.integrity_errors = (psycopg.IntegrityError,)
        self._translated: dict[str, str] = {}

    def _sql(self, sql: str) -> str:
        """SQLite's ``?`` placeholders as psycopg's ``%s`` (and a ``%`` as ``%%``)."""
        found = self._translated.get(sql)
        if found is None:
            found = self._translated[sql] = sql.replace("%", "%%").replace("?", "%s")
        return found

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.pg.execute(self._sql(sql), params)
        return cursor.fetchall() if cursor.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self.pg.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.pg.transaction():
            yield


class PostgresDatabase(Database):
    """The PostgreSQL database at ``url`` (``postgresql://user:password@host:port/name``)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        if psycopg is None:
            from interference.config import ConfigError  # the usage writer has no configuration

            raise ConfigError(
                "storage.url names PostgreSQL, but its driver is not installed: "
                "pip install 'psycopg[binary]'"
            )
        super().__init__("postgres")
        self.url = url
        self.timeout_s = timeout_s
        self._connection: Any = None

    @property
    def where(self) -> str:
        parts = urlsplit(self.url)
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"

    def _connect(self) -> PostgresSession:
        self._connection = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=max(2, round(self.timeout_s)),
            application_name="interference",
            # a statement that waits (a lock, a dead server) fails rather than sticking
            options=f"-c statement_timeout={int(self.timeout_s * 1000)}",
            # a peer that vanished without a word is noticed within about 10 s
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
        self._session = PostgresSession(self._connection)
        return self._session

    def _connected(self) -> PostgresSession:
        if self._session is None or self._connection is None or self._connection.closed:
            return self._connect()
        assert isinstance(self._session, PostgresSession)
        return self._session

    def _lost(self, exc: BaseException) -> None:
        broken = self._connection is None or self._connection.closed
        if broken or isinstance(exc, psycopg.OperationalError):
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
        self._connection = None
        self._session = None

    def _open(self) -> int:
        session = self._connect()
        with session.transaction():
            session.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            session.execute(
                "CREATE TABLE IF NOT EXISTS interference_schema (version INTEGER NOT NULL)"
            )
            rows = session.execute("SELECT version FROM interference_schema")
            version = int(rows[0][0]) if rows else 0
            for script in MIGRATIONS[version:]:
                for statement in statements(script):
                    session.execute(statement)
            session.execute("DELETE FROM interference_schema")
            session.execute("INSERT INTO interference_schema VALUES (?)", (len(MIGRATIONS),))
        return len(MIGRATIONS)

    def _close(self) -> None:
        self._drop()
