"""A virtual key's rpm, tpm and parallel limits (store/rate_limits.py): a sliding window that never
admits more than rpm requests in any 60 s, tokens counted as requests end, and the 429s and
x-ratelimit-* headers clients read."""

from __future__ import annotations

from pathlib import Path

import pytest

from interference.errors import RateLimitError
from interference.store.keys import KeyRecord
from interference.store.rate_limits import KeyLimiter, header_pairs
from tests.unit.test_virtual_keys import ADMIN, HI, app_client, bearer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(**limits: int) -> KeyRecord:
    return KeyRecord(digest="d" * 64, created_at=0, **limits)  # type: ignore[arg-type]


def test_at_most_rpm_requests_in_any_minute() -> None:
    clock = Clock()
    limiter = KeyLimiter(clock)
    limited = key(rpm=3)
    admitted = []
    refusals: list[RateLimitError] = []
    for second in range(0, 150, 5):  # one request every 5 s for 150 s, each ending at once
        clock.now = 1000.0 + second
        try:
            limiter.admit(limited)
        except RateLimitError as refused:
            refusals.append(refused)
            continue
        limiter.done(limited, 0)
        admitted.append(second)
    assert {r.code for r in refusals} == {"rate_limit_exceeded"}
    assert all(int(r.headers["retry-after"]) >= 1 for r in refusals)
    assert admitted == [0, 5, 10, 60, 65, 70, 120, 125, 130]
    for i, start in enumerate(admitted):  # the bound, over every window
        assert len([t for t in admitted[i:] if t < start + 60]) <= 3


def text(lines: bytes) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in header_pairs(lines)}


def test_headers_count_down_and_name_the_reset() -> None:
    clock = Clock()
    limiter = KeyLimiter(clock)
    limited = key(rpm=2, tpm=100)
    first = text(limiter.admit(limited))
    assert first["x-ratelimit-limit-requests"] == "2"
    assert first["x-ratelimit-remaining-requests"] == "1"
    assert first["x-ratelimit-remaining-tokens"] == "100"
    limiter.done(limited, 40)
    clock.now += 10
    second = text(limiter.admit(limited))
    assert second["x-ratelimit-remaining-requests"] == "0"
    assert second["x-ratelimit-remaining-tokens"] == "60"
    assert second["x-ratelimit-reset-requests"] == "50s"
    assert limiter.admit(key()) == b""  # no limits: no headers


def test_headers_follow_a_change_of_the_keys_limits() -> None:
    limiter = KeyLimiter(Clock())
    before = text(limiter.admit(key(rpm=5, tpm=100)))
    assert (before["x-ratelimit-limit-requests"], before["x-ratelimit-limit-tokens"]) == (
        "5",
        "100",
    )
    after = text(limiter.admit(key(rpm=7, tpm=300)))  # the same key, updated (a new record)
    assert (after["x-ratelimit-limit-requests"], after["x-ratelimit-limit-tokens"]) == ("7", "300")
    assert after["x-ratelimit-remaining-requests"] == "5"  # its window kept both requests
    assert after["x-ratelimit-reset-tokens"] == "0s"  # no tokens counted yet


def test_tokens_per_minute_refuse_once_reached_until_they_leave_the_window() -> None:
    clock = Clock()
    limiter = KeyLimiter(clock)
    limited = key(tpm=100)
    limiter.admit(limited)
    limiter.done(limited, 120)  # one request may pass the limit: its size is known at its end
    with pytest.raises(RateLimitError) as refused:
        limiter.admit(limited)
    assert refused.value.code == "tokens_rate_limit_exceeded"
    # tokens count per second, and leave the window once the whole second is 60 s old
    assert refused.value.headers["retry-after"] == "61"
    clock.now += 60
    with pytest.raises(RateLimitError):
        limiter.admit(limited)
    clock.now += 1
    limiter.admit(limited)


def test_parallel_requests() -> None:
    limiter = KeyLimiter(Clock())
    limited = key(max_parallel=2)
    limiter.admit(limited)
    limiter.admit(limited)
    with pytest.raises(RateLimitError) as refused:
        limiter.admit(limited)
    assert refused.value.code == "max_parallel_requests_exceeded"
    limiter.done(limited, 0)
    limiter.admit(limited)


def test_a_key_s_rpm_through_the_server(tmp_path: Path) -> None:
    with app_client(tmp_path / "k.db") as client:
        created = client.post("/key/generate", json={"rpm_limit": 2}, headers=ADMIN).json()
        answers = [
            client.post("/v1/chat/completions", json=HI, headers=bearer(created["key"]))
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[0].headers["x-ratelimit-remaining-requests"] == "1"
        assert answers[1].headers["x-ratelimit-remaining-requests"] == "0"
        refused = answers[2]
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.json()["error"]["type"] == "rate_limit_exceeded"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert client.get("/key/list", headers=ADMIN).status_code == 200  # the admin: no limit
