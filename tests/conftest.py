from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from interference.api.app import create_app
from interference.config import Config
from tests.support.fakes import FakeProvider


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[TestClient]:
    app = create_app(Config(), providers=[fake])
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
