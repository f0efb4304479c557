"""The databases the store supports, each test on each: a SQLite file and a new database on the
session's real PostgreSQL server (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interference.config import StorageConfig
from interference.store.database import Database, open_database
from interference.store.ledger_writer import writer_target


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
    return writer_target(storage)
