"""The trace context an upstream request carries.

:mod:`interference.telemetry.tracing` sets :data:`UPSTREAM_TRACE` around each upstream attempt
(the attempt span's ``traceparent``, and ``tracestate`` when the trace has one); the upstream
clients (:mod:`interference.upstream`) add these headers to the requests they send while it is
set. Empty, the default and always so with tracing off, they add nothing. This module imports
nothing, so that the clients below every other layer can read it.
"""

from __future__ import annotations

from contextvars import ContextVar

#: ``(name, value)`` headers for the upstream requests made in this context
UPSTREAM_TRACE: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("upstream_trace", default=())
