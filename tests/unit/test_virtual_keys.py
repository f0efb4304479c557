"""Virtual keys (store/keys.py, api/key_admin.py, the guard): created, changed, blocked and
deleted by the master key with LiteLLM's routes and fields, checked on every request, kept in a
SQLite file across restarts and seen by another process's store after a refresh."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from interference import cli
from interference.api.app import create_app
from interference.config import Config
from interference.store.database import MIGRATIONS, SQLiteDatabase
from interference.store.keys import KeyStore, digest_of, duration_s
from tests.support.fakes import FakeProvider

MASTER = "sk-master-123"
ADMIN = {"authorization": f"Bearer {MASTER}"}
HI = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}


def app_client(db: Path, refresh_s: float = 2) -> TestClient:
    config = Config.model_validate(
        {"server": {"master_key": MASTER}, "storage": {"path": str(db), "refresh_s": refresh_s}}
    )
    app = create_app(config, providers=[FakeProvider(), FakeProvider("other", "other-model")])
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "interference.db"


@pytest.fixture
def client(db: Path) -> Iterator[TestClient]:
    with app_client(db) as test_client:
        yield test_client


def generate(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/key/generate", json=fields, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_a_generated_key_answers_and_only_its_digest_is_stored(
    client: TestClient, db: Path
) -> None:
    created = generate(client, key_alias="ci", models=["fake-*"], max_budget=5, rpm_limit=10)
    key = created["key"]
    assert key.startswith("sk-")
    assert len(key) == 46
    assert created["token"] == digest_of(key)
    assert created["key_alias"] == "ci"
    assert created["max_budget"] == 5
    assert created["rpm_limit"] == 10
    assert created["key_name"] == f"{key[:5]}...{key[-4:]}"
    answer = client.post("/v1/chat/completions", json=HI, headers=bearer(key))
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "Hello world!"
    for stored in db.parent.iterdir():  # the file and its write-ahead log: the digest only
        assert key.encode() not in stored.read_bytes()


def test_refusals_in_openai_s_shape(client: TestClient) -> None:
    key = generate(client, models=["fake-model"])["key"]
    unknown = client.post("/v1/chat/completions", json=HI, headers=bearer("sk-nope"))
    assert unknown.status_code == 401
    assert unknown.json()["error"]["type"] == "authentication_error"
    missing = client.post("/v1/chat/completions", json=HI)
    assert missing.json()["error"]["code"] == "missing_api_key"
    other = client.post(
        "/v1/chat/completions", json={**HI, "model": "other-model"}, headers=bearer(key)
    )
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "model_not_allowed"
    assert other.json()["error"]["param"] == "model"
    assert client.post("/key/generate", json={}, headers=bearer(key)).status_code == 403
    assert client.get("/health").status_code == 200  # public


def test_block_unblock_update_and_expiry(client: TestClient) -> None:
    created = generate(client, key_alias="bob")
    key = created["key"]
    assert client.post("/key/block", json={"key": "bob"}, headers=ADMIN).json()["blocked"] is True
    blocked = client.post("/v1/chat/completions", json=HI, headers=bearer(key))
    assert blocked.status_code == 401
    assert blocked.json()["error"]["code"] == "key_blocked"
    client.post("/key/unblock", json={"key": created["token"]}, headers=ADMIN)
    assert client.post("/v1/chat/completions", json=HI, headers=bearer(key)).status_code == 200
    updated = client.post(
        "/key/update", json={"key": key, "models": ["other-*"], "tpm_limit": 99}, headers=ADMIN
    ).json()
    assert updated["models"] == ["other-*"]
    assert updated["tpm_limit"] == 99
    assert updated["key_alias"] == "bob"  # what the update did not name stays
    assert client.post("/v1/chat/completions", json=HI, headers=bearer(key)).status_code == 403
    client.post("/key/update", json={"key": key, "duration": "1s"}, headers=ADMIN)
    store = client.app.state.interference.keys  # type: ignore[attr-defined]
    store.resolve(key).expires_at -= 2  # as if two seconds went by
    expired = client.post("/v1/chat/completions", json=HI, headers=bearer(key))
    assert expired.json()["error"]["code"] == "key_expired"


def test_info_list_and_delete(client: TestClient) -> None:
    first = generate(client, key_alias="one")
    second = generate(client, key_alias="two", metadata={"team": "ml"})
    own = client.get("/key/info", headers=bearer(second["key"])).json()
    assert own["key"] == second["token"]
    assert own["info"]["metadata"] == {"team": "ml"}
    assert own["info"]["spend"] == 0
    assert (
        client.get(f"/key/info?key={first['token']}", headers=bearer(second["key"])).status_code
        == 403
    )
    listed = client.get("/key/list?size=1", headers=ADMIN).json()
    assert listed["keys"] == [first["token"]]
    assert listed["total_count"] == 2
    assert listed["total_pages"] == 2
    full = client.get("/key/list?return_full_object=true&key_alias=two", headers=ADMIN).json()
    assert [k["key_alias"] for k in full["keys"]] == ["two"]
    deleted = client.post("/key/delete", json={"key_aliases": ["one"]}, headers=ADMIN).json()
    assert deleted == {"deleted_keys": [first["token"]]}
    gone = client.post("/v1/chat/completions", json=HI, headers=bearer(first["key"]))
    assert gone.status_code == 401
    assert client.get("/key/info?key=one", headers=ADMIN).status_code == 404


def test_bad_admin_input_is_a_400_naming_the_field(client: TestClient) -> None:
    bad = client.post("/key/generate", json={"rpm_limit": 0}, headers=ADMIN)
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "rpm_limit"
    duration = client.post("/key/generate", json={"duration": "soon"}, headers=ADMIN)
    assert duration.status_code == 400
    assert "30s, 15m, 1h" in duration.json()["error"]["message"]
    generate(client, key_alias="taken")
    again = client.post("/key/generate", json={"key_alias": "taken"}, headers=ADMIN)
    assert again.json()["error"]["code"] == "alias_taken"


def test_keys_survive_a_restart_and_reach_another_process_after_a_refresh(db: Path) -> None:
    with app_client(db) as client:
        key = generate(client, key_alias="kept")["key"]
        client.post("/v1/chat/completions", json=HI, headers=bearer(key))
    with app_client(db) as client:
        assert client.post("/v1/chat/completions", json=HI, headers=bearer(key)).status_code == 200
        info = client.get("/key/info?key=kept", headers=ADMIN).json()["info"]
        assert info["last_active"] is not None  # written at shutdown

    with app_client(db, refresh_s=0.05) as client:
        other = SQLiteDatabase(db)  # as `interference keys` or a --workers sibling would
        assert other.open() == len(MIGRATIONS)
        store = KeyStore(other)
        store.load()
        new_key, _ = asyncio.run(store.generate({"key_alias": "from-elsewhere"}))
        other.close()
        statuses = []
        for _ in range(40):  # bounded: 2 s
            answer = client.post("/v1/chat/completions", json=HI, headers=bearer(new_key))
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                break
            time.sleep(0.05)
        assert statuses[-1] == 200, statuses


def test_durations() -> None:
    assert duration_s("30s") == 30
    assert duration_s("1h") == 3600
    assert duration_s("30d") == 30 * 86400
    assert duration_s("1mo") == 30 * 86400
    with pytest.raises(ValueError, match="not a duration"):
        duration_s("1y")


def test_without_a_master_key_the_key_routes_say_how_to_turn_them_on(tmp_path: Path) -> None:
    config = Config.model_validate({"storage": {"path": str(tmp_path / "x.db")}})
    with TestClient(create_app(config, providers=[FakeProvider()])) as client:
        off = client.get("/key/list")
        assert off.status_code == 404
        assert "INTERFERENCE_MASTER_KEY" in off.json()["error"]["message"]
    assert not (tmp_path / "x.db").exists()  # no database without keys


def test_processes_starting_together_migrate_once(tmp_path: Path) -> None:
    """Eight at once, ten times over: switching a new file to WAL answered "locked" to one of
    them about once in 300 starts, before it waited and retried."""
    for round_ in range(10):
        path = tmp_path / f"shared-{round_}.db"
        databases = [SQLiteDatabase(path) for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            versions = list(pool.map(lambda d: d.open(), databases))
        assert versions == [len(MIGRATIONS)] * 8
        tables = databases[0].call(
            lambda c: c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        )
        assert sorted(tables) == [("keys",), ("usage",), ("usage_batches",), ("usage_daily",)]
        for database in databases:
            database.close()


def test_the_keys_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'k.db'}\n")

    def keys(*args: str) -> tuple[int, str, str]:
        code = cli.main(["keys", "--config", str(config), *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = keys("create", "--alias", "ci", "--models", "gpt-*, claude-*", "--rpm", "10")
    assert code == 0
    key = out.splitlines()[0]
    assert key.startswith("sk-")
    assert "shown once" in out
    code, out, _ = keys("list")
    assert "1 key(s)" in out
    assert "ci" in out
    assert "models=gpt-*,claude-*" in out
    assert "rpm_limit=10" in out
    assert key not in out
    code, out, _ = keys("update", "ci", "--tpm", "500", "--duration", "7d")
    assert json.loads(out)["tpm_limit"] == 500
    assert json.loads(out)["expires"] is not None
    code, out, _ = keys("info", key)
    assert json.loads(out)["key_alias"] == "ci"
    code, _, err = keys("create", "--alias", "ci")
    assert code == 2
    assert "Another key has the alias `ci`" in err
    code, _, err = keys("create", "--rpm", "0")
    assert code == 2
    assert "rpm_limit" in err
    code, out, _ = keys("revoke", "ci")
    assert code == 0
    assert keys("info", "ci")[0] == 2
