"""A :class:`~interference.telemetry.metrics.Snapshot` as Prometheus text (prometheus_client's
own writer, fed by a collector made for one scrape), every name prefixed ``interference_``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from interference.telemetry.metrics import Snapshot

PREFIX = "interference_"

#: name -> (help, label names, bucket bounds for histograms)
FAMILIES: dict[str, tuple[str, tuple[str, ...], tuple[float, ...] | None]] = {}


def describe(
    name: str, help_text: str, labels: tuple[str, ...], bounds: tuple[float, ...] | None = None
) -> None:
    FAMILIES[name] = (help_text, labels, bounds)


class _Collector:
    def __init__(
        self, snapshot: Snapshot, build: dict[str, str], labels: dict[str, tuple[str, ...]]
    ) -> None:
        self.snapshot = snapshot
        self.build = build
        self.labels = labels  # a family's labels when they differ from FAMILIES' (key_labels)

    def _family(self, name: str) -> tuple[str, tuple[str, ...], tuple[float, ...] | None]:
        help_text, labels, bounds = FAMILIES.get(name, (name, (), None))
        return help_text, self.labels.get(name, labels), bounds

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            PREFIX + "build_info", "interference's version (always 1)", labels=list(self.build)
        )
        info.add_metric(list(self.build.values()), 1.0)
        yield info
        shot = self.snapshot
        for name, series in sorted(shot.counters.items()):
            help_text, labels, _ = self._family(name)
            counter = CounterMetricFamily(PREFIX + name, help_text, labels=list(labels))
            for values, value in sorted(series.items()):
                counter.add_metric(list(values), value)
            yield counter
        for name, rows in sorted(shot.histograms.items()):
            help_text, labels, bounds = self._family(name)
            assert bounds is not None, name
            histogram = HistogramMetricFamily(PREFIX + name, help_text, labels=list(labels))
            for values, row in sorted(rows.items()):
                cumulative, buckets = 0.0, []
                for bound, count in zip([*map(_le, bounds), "+Inf"], row[:-1], strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                histogram.add_metric(list(values), buckets, sum_value=row[-1])
            yield histogram
        for name, series in sorted(shot.gauges.items()):
            help_text, labels, _ = self._family(name)
            gauge = GaugeMetricFamily(PREFIX + name, help_text, labels=list(labels))
            for values, value in sorted(series.items()):
                gauge.add_metric(list(values), value)
            yield gauge


def _le(bound: float) -> str:
    return repr(float(bound))


def render(
    snapshot: Snapshot, build: dict[str, str], labels: dict[str, tuple[str, ...]] | None = None
) -> bytes:
    """The Prometheus text of ``snapshot`` (format 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot, build, labels or {}))
    return generate_latest(registry)


def parse_engine(text: str) -> dict[str, Any]:
    """llama.cpp's own ``llamacpp:*`` metrics (its server's /metrics text), by name."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, Any] = {}
    for family in text_string_to_metric_families(text.replace("llamacpp:", "llamacpp_")):
        for sample in family.samples:
            values[sample.name] = sample.value
    return values
