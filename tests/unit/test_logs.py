"""Log formats: plain key=value lines and JSON lines, both carrying the request id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from interference.logs import REQUEST_ID, RESPONSE_CUT, configure_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in before[0]:
        root.addHandler(handler)
    root.setLevel(before[1])


def use(stream: io.StringIO, fmt: str) -> None:
    configure_logging("info", fmt)  # type: ignore[arg-type]
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)


FIELDS = {"request_id": "req_1", "status": 200, "model": "m x", "ttft_ms": None, "stream": True}


def test_plain_lines_put_fields_after_the_message(captured: io.StringIO) -> None:
    use(captured, "plain")
    logging.getLogger("interference.requests").info("POST /v1/x 200", extra={"fields": FIELDS})
    line = captured.getvalue().strip()
    assert line.endswith(
        'interference.requests: POST /v1/x 200 request_id=req_1 status=200 model="m x" stream=True'
    )
    assert "ttft_ms" not in line  # fields left at None are not written


def test_json_lines_are_one_object_each(captured: io.StringIO) -> None:
    use(captured, "json")
    logger = logging.getLogger("interference.requests")
    logger.info("POST /v1/x 200", extra={"fields": FIELDS})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["level"] == "info"
    assert first["message"] == "POST /v1/x 200"
    assert (first["request_id"], first["status"], first["model"]) == ("req_1", 200, "m x")
    assert "ttft_ms" not in first
    assert first["time"].endswith("Z")
    assert second["level"] == "error"
    assert "ValueError: boom" in second["traceback"]


def test_lines_written_while_serving_a_request_carry_its_id(captured: io.StringIO) -> None:
    use(captured, "plain")
    token = REQUEST_ID.set("req_abc")
    try:
        logging.getLogger("interference.engine").warning("slow decode")
    finally:
        REQUEST_ID.reset(token)
    logging.getLogger("interference.engine").warning("outside")
    first, second = captured.getvalue().splitlines()
    assert first.endswith("slow decode request_id=req_abc")
    assert second.endswith("outside")


def test_uvicorn_line_for_a_response_ended_on_purpose_is_dropped(captured: io.StringIO) -> None:
    use(captured, "plain")
    uvicorn_log = logging.getLogger("uvicorn.error")
    seen: list[str] = []
    collect = logging.Handler()
    collect.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    uvicorn_log.addHandler(collect)  # uvicorn's own logging set-up may stop propagation
    level, uvicorn_log.level = uvicorn_log.level, logging.INFO
    message = "ASGI callable returned without completing response."
    try:
        uvicorn_log.error(message)  # not ours: kept
        token = RESPONSE_CUT.set(True)
        try:
            uvicorn_log.error(message)  # the guard ended it: already logged once
        finally:
            RESPONSE_CUT.reset(token)
    finally:
        uvicorn_log.removeHandler(collect)
        uvicorn_log.setLevel(level)
    assert seen == [message]
