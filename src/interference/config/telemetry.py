"""What the gateway tells about itself: ``metrics`` (``GET /metrics``) and ``telemetry``
(OpenTelemetry traces, off unless an endpoint is given)."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(extra="forbid")


class MetricsConfig(BaseModel):
    model_config = _STRICT

    enabled: bool = Field(
        default=True, description="count requests for GET /metrics and the Status view's charts"
    )
    key_labels: bool = Field(
        default=False,
        description="label requests, tokens and spend with the virtual key's alias too (one "
        "series per key: mind the cardinality)",
    )


class TelemetryConfig(BaseModel):
    model_config = _STRICT

    otlp_endpoint: str | None = Field(
        default=None,
        description="send OpenTelemetry traces (OTLP over HTTP) here, e.g. "
        "http://127.0.0.1:4318 (also OTEL_EXPORTER_OTLP_ENDPOINT or "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); none: no tracing",
    )
    service_name: str = Field(default="interference", description="the traces' service.name")
    capture_content: bool = Field(
        default=False,
        description="put prompts and answers in the spans (gen_ai.input.messages, "
        "gen_ai.output.messages); off: never",
    )

    def endpoint(self) -> str | None:
        """Where traces go: the configuration, else OpenTelemetry's standard variables."""
        return (
            self.otlp_endpoint
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or None
        )
