"""Logging: plain lines or one JSON object per line, each tagged with its request's id.

The request currently being served is known through :data:`REQUEST_ID` (set by the request
guard, :mod:`interference.api.guard`), so a line written while serving a request, from any
module, carries that request's id. Structured fields travel in ``extra={"fields": {...}}``:
the plain format writes them as ``key=value`` after the message, the JSON format as keys.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any, Literal

import orjson

#: the id of the request being served in this context ("" outside requests)
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
#: set (in the request's own task) when the guard ended a response on purpose
RESPONSE_CUT: contextvars.ContextVar[bool] = contextvars.ContextVar("response_cut", default=False)


def _plain_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return orjson.dumps(text).decode()
    return text


class PlainFormatter(logging.Formatter):
    """``TIME LEVEL logger[pid]: message key=value ... request_id=ID``."""

    def __init__(self, worker: bool) -> None:
        name = "%(name)s[%(process)d]" if worker else "%(name)s"
        super().__init__(f"%(asctime)s %(levelname)s {name}: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: dict[str, Any] = getattr(record, "fields", None) or {}
        extra = [f"{k}={_plain_value(v)}" for k, v in fields.items() if v is not None]
        request_id = getattr(record, "request_id", "")
        if request_id and "request_id" not in fields:
            extra.append(f"request_id={request_id}")
        if not extra:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the line
        return f"{head} {' '.join(extra)}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, fields, error."""

    def __init__(self, worker: bool) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker:
            out["pid"] = record.process
        request_id = getattr(record, "request_id", "")
        if request_id:
            out["request_id"] = request_id
        fields: dict[str, Any] = getattr(record, "fields", None) or {}
        out.update((k, v) for k, v in fields.items() if v is not None)
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (``record.request_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = REQUEST_ID.get()
        return True


class UnfinishedResponseFilter(logging.Filter):
    """Drops uvicorn's line for a response the guard ended on purpose (a client that stopped
    reading its stream): the request's own line already says so, and an error is logged once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            RESPONSE_CUT.get()
            and record.getMessage() == "ASGI callable returned without completing response."
        )


def configure_logging(
    level: str, log_format: Literal["plain", "json"] = "plain", worker: bool = False
) -> None:
    """Log to stderr at ``level`` in ``log_format``; a worker's lines also name its process."""
    handler = logging.StreamHandler()
    formatter: logging.Formatter = (
        JsonFormatter(worker) if log_format == "json" else PlainFormatter(worker)
    )
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, UnfinishedResponseFilter) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(UnfinishedResponseFilter())


class LimitWarnings:
    """One warning when a configured limit refuses a request, naming the setting to change;
    then at most one per ``interval_s`` for that setting, with the count of refusals since.
    Refusals by a limit the user may not know of (the defaults) must never be silent, and a
    burst of them must not flood the log either."""

    def __init__(
        self, logger: logging.Logger, interval_s: float = 60.0, clock: Any = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}  # setting -> when it was last written
        self._since: dict[str, int] = {}  # setting -> refusals not yet written

    def refused(self, setting: str, message: str) -> None:
        """A request was refused by ``setting``; ``message`` says what happened."""
        now = self._clock()
        last = self._last.get(setting)
        if last is not None and now - last < self._interval:
            self._since[setting] = self._since.get(setting, 0) + 1
            return
        more = self._since.pop(setting, 0)
        tail = f" ({more} more refused since the last warning)" if more else ""
        self._last[setting] = now
        self._logger.warning("%s: refused by %s%s", message, setting, tail)
