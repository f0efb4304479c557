from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import Config
from tests.support.fakes import FakeProvider
from tests.support.services import Postgres, Redis


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[TestClient]:
    app = create_app(Config(), providers=[fake])
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


# --- real PostgreSQL and Redis servers (tests/support/services.py), one of each per session


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    folder = Path(tempfile.mkdtemp(prefix="interference-pg-"))
    try:
        server = Postgres.create(folder)
    except (FileNotFoundError, subprocess.CalledProcessError, RuntimeError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"no PostgreSQL server for the tests: {exc} {detail.decode()[-300:]}")
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: Postgres) -> str:
    """A new, empty database on the session's server."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return postgres_server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    folder = Path(tempfile.mkdtemp(prefix="interference-redis-"))
    try:
        server = Redis.create(folder)
    except (FileNotFoundError, RuntimeError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"no Redis server for the tests: {exc}")
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: Redis) -> str:
    """The session's Redis, emptied."""
    redis = pytest.importorskip("redis", reason="the redis client is not installed")
    if redis_server.process is None:
        redis_server.start()  # a test stopped it
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url
