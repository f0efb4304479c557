"""The last 15 minutes in 10-second buckets (telemetry/recent.py), on a clock of the test's."""

from __future__ import annotations

from interference.telemetry.recent import BUCKET_S, BUCKETS, Recent, merge, series


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_requests_land_in_their_bucket_and_old_buckets_are_forgotten() -> None:
    clock = Clock()
    recent = Recent(clock)
    recent.request("m", False, 10, 0.05)
    recent.request("m", True, 0, None)
    clock.now += BUCKET_S  # the next bucket
    recent.request("m", False, 30, 0.5)
    recent.deployment_error("up/m")
    points = series(recent.raw(), clock.now)["points"]
    assert len(points) == BUCKETS
    last, before = points[-1], points[-2]
    assert before["models"]["m"]["requests_per_s"] == 2 / BUCKET_S
    assert before["models"]["m"]["errors"] == 1
    assert before["models"]["m"]["tokens_per_s"] == 10 / BUCKET_S
    assert last["models"]["m"]["tokens_per_s"] == 30 / BUCKET_S
    assert 250 <= last["models"]["m"]["ttft_p50_ms"] <= 500  # inside its bucket (0.25-0.5 s]
    assert last["deployments"] == {"up/m": 1}

    clock.now += BUCKET_S * BUCKETS  # a whole window later: the same ring slots, emptied
    recent.request("m", False, 5, None)
    points = series(recent.raw(), clock.now)["points"]
    assert sum(p["models"].get("m", {}).get("requests_per_s", 0) for p in points) == 1 / BUCKET_S
    assert not any(p["deployments"] for p in points)


def test_workers_figures_add_up() -> None:
    clock = Clock()
    one, two = Recent(clock), Recent(clock)
    for _ in range(3):
        one.request("m", False, 1, 0.01)
    two.request("m", False, 1, 0.02)
    two.deployment_error("up/m")
    merged = series(merge([one.raw(), two.raw()]), clock.now)["points"][-1]
    assert merged["models"]["m"]["requests_per_s"] == 4 / BUCKET_S
    assert merged["deployments"] == {"up/m": 1}
