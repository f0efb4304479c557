"""The databases the store supports, each test on each: a SQLite file and a new database on the
session's real PostgreSQL server (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interference.config import StorageConfig
from interference.store.database import Database, database_path, open_database


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> StorageConfig:
    if request.param == "sqlite":
        return StorageConfig(path=str(tmp_path / "k.db"))
    url = request.getfixturevalue("postgres_url")
    return StorageConfig.model_validate({"url": url})


@pytest.fixture
def database(storage: StorageConfig) -> Iterator[Database]:
    opened = open_database(storage)
    yield opened
    opened.close()


@pytest.fixture
def writer_where(storage: StorageConfig) -> dict[str, Any]:
    """Where a usage writer process (store/ledger_writer.py) writes for ``storage``."""
    url = storage.database_url()
    return {"url": url, "timeout_s": 5} if url else {"path": str(database_path(storage.path))}
