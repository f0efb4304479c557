"""The stored responses' bounds: time to live, total size (oldest first), replacement."""

from __future__ import annotations

from typing import Any

from interference.api.response_store import ResponseStore
from interference.api.responses_translation import ToolNames


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def response(rid: str, text: str = "x") -> dict[str, Any]:
    return {"id": rid, "output": [text]}


def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    store = ResponseStore(ttl_s=60, max_bytes=10_000, clock=clock)
    store.put(response("a"), [], [])
    clock.now += 30
    store.put(response("b"), [], [])
    clock.now += 31
    assert store.get("a") is None
    stored = store.get("b")
    assert stored is not None
    assert stored.response == response("b")
    clock.now += 30
    assert store.get("b") is None
    assert len(store) == 0
    assert store.size_bytes == 0


def test_the_oldest_go_first_past_the_size_bound() -> None:
    store = ResponseStore(ttl_s=60, max_bytes=300)
    for name in "abcdef":
        store.put(response(name, "y" * 60), [{"role": "user", "content": "z"}], [])
        assert store.size_bytes <= 300
    kept = [name for name in "abcdef" if store.get(name) is not None]
    assert kept == list("abcdef")[-len(kept) :]
    assert 1 <= len(kept) < 6


def test_one_larger_than_the_store_is_not_kept_and_replacing_recounts() -> None:
    store = ResponseStore(ttl_s=60, max_bytes=200)
    store.put(response("huge", "y" * 500), [], [])
    assert store.get("huge") is None
    store.put(response("a"), [], [])
    size = store.size_bytes
    store.put(response("a"), [], [])
    assert store.size_bytes == size
    assert store.delete("a")
    assert not store.delete("a")
    assert store.size_bytes == 0


def test_tool_names_are_flattened_short_and_unique() -> None:
    names = ToolNames()
    long_namespace = "n" * 40
    first = names.add(long_namespace, "t" * 30, "function")
    second = names.add(long_namespace, "t" * 29 + "u", "function")
    assert len(first) == len(second) == 64
    assert first != second
    assert names.origin(first) == (long_namespace, "t" * 30, "function")
    assert names.chat_name("t" * 30, long_namespace) == first
    assert names.add(None, "plain", "custom") == "plain"
    assert names.origin("unknown") == (None, "unknown", "function")
