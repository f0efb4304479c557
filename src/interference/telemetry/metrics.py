"""The figures ``GET /metrics`` exposes, counted in plain dictionaries of this process.

The request path only adds to a dictionary entry or a histogram's bucket (no lock: the event
loop is one thread, and nothing else writes them); the Prometheus text is made when a scrape
asks (:mod:`interference.telemetry.exposition`). A :class:`Snapshot` is the plain data of all
the series (JSON-ready), so that the workers of ``--workers N`` can add up each other's.

Histogram buckets are OpenTelemetry's GenAI boundaries, so that an OTLP export is a rename, not
a re-bucketing. Labels are bounded: the public model (never the name a client made up), the
provider, the deployment, a route name, a status code, and closed vocabularies of token types,
error classes and limits; no key, user or request label.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

#: ``gen_ai.server.request.duration`` and ``gen_ai.client.operation.duration``
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
#: ``gen_ai.server.time_to_first_token``
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
#: ``gen_ai.server.time_per_output_token``
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

Labels = tuple[str, ...]


class Counter:
    """A counter per label values (each a one-item list, so that a caller may keep the cell
    of the labels it adds to and skip the look-up: :meth:`cell`)."""

    __slots__ = ("labels", "series")

    def __init__(self, *labels: str) -> None:
        self.labels = labels
        self.series: dict[Labels, list[float]] = {}

    def cell(self, labels: Labels) -> list[float]:
        found = self.series.get(labels)
        if found is None:
            found = self.series[labels] = [0.0]
        return found

    def add(self, labels: Labels, amount: float = 1.0) -> None:
        self.cell(labels)[0] += amount

    def values(self) -> dict[Labels, float]:
        return {labels: cell[0] for labels, cell in self.series.items()}


class Histogram:
    """A histogram per label values: the count in each bucket (not cumulative; the last one
    is past the highest bound), then the sum."""

    __slots__ = ("_width", "bounds", "labels", "series")

    def __init__(self, bounds: tuple[float, ...], *labels: str) -> None:
        self.bounds = bounds
        self.labels = labels
        self.series: dict[Labels, list[float]] = {}
        self._width = len(bounds) + 2

    def row(self, labels: Labels) -> list[float]:
        """The counts of ``labels`` (a caller may keep it and use :func:`observe_into`)."""
        found = self.series.get(labels)
        if found is None:
            found = self.series[labels] = [0.0] * self._width
        return found

    def observe(self, labels: Labels, value: float) -> None:
        observe_into(self.row(labels), self.bounds, value)


def observe_into(row: list[float], bounds: tuple[float, ...], value: float) -> None:
    """Count ``value`` in a histogram's ``row`` (its bucket, and the sum)."""
    row[bisect_left(bounds, value)] += 1
    row[-1] += value


@dataclass
class Snapshot:
    """Every series as plain data: ``counters[name][labels] = value``, ``histograms[name]
    [labels] = [buckets..., sum]``, ``gauges[name][labels] = value``."""

    counters: dict[str, dict[Labels, float]] = field(default_factory=dict)
    histograms: dict[str, dict[Labels, list[float]]] = field(default_factory=dict)
    gauges: dict[str, dict[Labels, float]] = field(default_factory=dict)

    def add(self, other: Snapshot, gauges: bool = True) -> None:
        """Add ``other``'s series to these (``gauges``: its gauges too: a live process's)."""
        for name, series in other.counters.items():
            mine = self.counters.setdefault(name, {})
            for labels, value in series.items():
                mine[labels] = mine.get(labels, 0.0) + value
        for name, rows in other.histograms.items():
            hist = self.histograms.setdefault(name, {})
            for labels, row in rows.items():
                current = hist.get(labels)
                if current is None:
                    hist[labels] = list(row)
                else:
                    hist[labels] = [a + b for a, b in zip(current, row, strict=True)]
        if gauges:
            for name, series in other.gauges.items():
                mine = self.gauges.setdefault(name, {})
                for labels, value in series.items():
                    mine[labels] = mine.get(labels, 0.0) + value

    def to_json(self) -> dict[str, Any]:
        def rows(families: dict[str, dict[Labels, Any]]) -> dict[str, list[Any]]:
            return {name: [[list(k), v] for k, v in s.items()] for name, s in families.items()}

        return {
            "counters": rows(self.counters),
            "histograms": rows(self.histograms),
            "gauges": rows(self.gauges),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        def series(families: dict[str, list[Any]]) -> dict[str, dict[Labels, Any]]:
            return {name: {tuple(k): v for k, v in rows} for name, rows in families.items()}

        return cls(
            series(data.get("counters", {})),
            series(data.get("histograms", {})),
            series(data.get("gauges", {})),
        )


class Metrics:
    """The families that requests add to; the others (deployments, the engine, requests in
    flight) are read when a scrape asks."""

    def __init__(self, key_labels: bool = False) -> None:
        #: whether requests, tokens and spend carry the virtual key's alias (a last label)
        self.key_labels = key_labels
        key = ("key",) if key_labels else ()
        self.requests = Counter("route", "model", "status_code", *key)
        self.duration = Histogram(DURATION_BUCKETS, "route", "model", "provider")
        self.ttft = Histogram(TTFT_BUCKETS, "model", "provider")
        self.tpot = Histogram(TPOT_BUCKETS, "model", "provider")
        self.tokens = Counter("model", "provider", "type", *key)
        self.rate_limited = Counter("limit")
        self.spend = Counter("model", *key)

    def families(self) -> dict[str, Counter | Histogram]:
        return {
            "requests": self.requests,
            "request_duration_seconds": self.duration,
            "time_to_first_token_seconds": self.ttft,
            "time_per_output_token_seconds": self.tpot,
            "tokens": self.tokens,
            "rate_limited": self.rate_limited,
            "spend_usd": self.spend,
        }

    def snapshot(self) -> Snapshot:
        shot = Snapshot()
        for name, family in self.families().items():
            if isinstance(family, Counter):
                shot.counters[name] = family.values()
            else:
                shot.histograms[name] = {k: list(v) for k, v in family.series.items()}
        return shot
