"""LimitWarnings: a refusal by a configured limit is written once, then at most once a minute
per setting, with the count of refusals in between."""

from __future__ import annotations

import logging

import pytest

from interference.logs import LimitWarnings


def test_one_line_per_setting_per_interval_with_the_refusals_in_between(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    warnings = LimitWarnings(logging.getLogger("test.limits"), 60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.limits"):
        warnings.refused("limits.a", "a was full")
        for _ in range(5):
            warnings.refused("limits.a", "a was full")
        warnings.refused("providers.b.max_connections", "b was full")
        now[0] += 61
        warnings.refused("limits.a", "a was full again")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "a was full: refused by limits.a",
        "b was full: refused by providers.b.max_connections",
        "a was full again: refused by limits.a (5 more refused since the last warning)",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
