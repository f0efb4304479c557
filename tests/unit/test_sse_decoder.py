"""Incremental SSE parsing of upstream bodies (upstream.sse.SSEDecoder)."""

from __future__ import annotations

import pytest

from interference.upstream import errors, sse
from interference.upstream.client import ProtocolError
from interference.upstream.sse import SSEDecoder

STREAM = b'data: {"a":1}\n\n: ping\n\nevent: chunk\ndata: {"b":2}\nid: 7\n\ndata: [DONE]\n\n'
EXPECTED = [b'{"a":1}', b'{"b":2}', b"[DONE]"]


def decode(*blocks: bytes) -> tuple[list[bytes], bytes | None]:
    decoder = SSEDecoder()
    out: list[bytes] = []
    for block in blocks:
        out.extend(decoder.feed(block))
    return out, decoder.close()


def test_one_event_per_block() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n\n") == [b"1"]
    assert decoder.feed(b"data: 2\n\n") == [b"2"]
    assert decoder.feed(b"data: [DONE]\n\n") == [b"[DONE]"]
    assert decoder.close() is None


def test_many_events_in_one_block() -> None:
    assert decode(STREAM) == (EXPECTED, None)
    assert decode(b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4") == ([b"1", b"2", b"3"], b"4")


def test_an_incomplete_event_waits_for_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n") == []
    assert decoder.feed(b"\n") == [b"1"]
    assert decoder.feed(b"da") == []
    assert decoder.feed(b"ta: 2\n\nda") == [b"2"]
    assert decoder.close() is None  # "da" is a field without data


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (STREAM, (EXPECTED, None)),
        (STREAM.replace(b"\n", b"\r\n"), (EXPECTED, None)),
        # a final lone CR may yet be followed by its LF: the last event waits for close()
        (STREAM.replace(b"\n", b"\r"), (EXPECTED[:2], EXPECTED[2])),
    ],
    ids=["lf", "crlf", "cr"],
)
def test_every_split_point_gives_the_same_events(
    stream: bytes, expected: tuple[list[bytes], bytes | None]
) -> None:
    for cut in range(len(stream) + 1):
        assert decode(stream[:cut], stream[cut:]) == expected, cut


def test_byte_by_byte_crlf() -> None:
    stream = STREAM.replace(b"\n", b"\r\n")
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == (EXPECTED, None)


def test_cr_at_the_end_of_a_block_and_lf_at_the_start_of_the_next() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\r") == []
    assert decoder.feed(b"\n\r") == []  # \r\n is one line end, not two
    assert decoder.feed(b"\ndata: 2\r") == [b"1"]
    assert decoder.feed(b"\r") == []  # held: the next block may begin with its \n
    assert decoder.feed(b"\n") == [b"2"]
    assert decoder.feed(b"") == []
    assert decoder.close() is None


def test_lone_cr_before_a_new_field() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\r") == []
    assert decoder.feed(b"\rdata: 2\r\r") == [b"1"]
    assert decoder.feed(b"data: 3\r\n\r\n") == [b"2", b"3"]


def test_mixed_line_endings_in_one_block() -> None:
    assert decode(b"data: a\r\ndata: b\rdata: c\n\r\n") == ([b"a\nb\nc"], None)


def test_comments_are_ignored() -> None:
    assert decode(b": ping\n\n:\n\n: keep-alive\ndata: x\n\n") == ([b"x"], None)


def test_data_without_a_space_and_only_one_space_removed() -> None:
    assert decode(b"data:x\n\ndata:  y\n\n") == ([b"x", b" y"], None)


def test_multi_line_data_is_joined_by_newlines() -> None:
    assert decode(b'data: {"a":\ndata: 1}\n\n') == ([b'{"a":\n1}'], None)
    assert decode(b"event: e\ndata: a\nid: 1\ndata: b\nretry: 5\n\n") == ([b"a\nb"], None)


def test_an_event_without_data_yields_nothing() -> None:
    assert decode(b"event: x\n\nid: 3\n\nretry: 100\n\ndata: y\n\n") == ([b"y"], None)
    assert decode(b"\n\n\n\n") == ([], None)


def test_close_returns_a_trailing_event_without_its_blank_line() -> None:
    assert decode(b"data: 1\n\ndata: tail") == ([b"1"], b"tail")
    assert decode(b"data: a\ndata: b\n") == ([], b"a\nb")
    assert decode(b"data: tail\r") == ([], b"tail")
    assert decode(b"data: 1\n\n") == ([b"1"], None)
    assert decode(b"") == ([], None)
    assert decode(b"event: only\n") == ([], None)
    decoder = SSEDecoder()
    decoder.feed(b"data: x")
    assert decoder.close() == b"x"
    assert decoder.close() is None  # closing forgets what was pending


def test_an_empty_data_buffer_dispatches_nothing() -> None:
    assert decode(b"data:\n\ndata: \n\ndata: x\n\n") == ([b"x"], None)


def test_a_leading_byte_order_mark_is_dropped_even_when_split() -> None:
    assert decode(b"\xef\xbb\xbfdata: a\n\n") == ([b"a"], None)
    assert decode(b"\xef", b"\xbb", b"\xbfdata: a\n\ndata: b\n\n") == ([b"a", b"b"], None)
    assert decode(b"data: \xef\xbb\xbf\n\n") == ([b"\xef\xbb\xbf"], None)  # only at the start


@pytest.fixture
def small_events(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sse, "MAX_EVENT", 100)
    return 100


def test_pending_data_over_the_limit_fails(small_events: int) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n\n" + b"data: " + b"x" * 40 + b"\n") == [b"1"]  # 47 pending
    assert decoder.feed(b"data: " + b"x" * 46 + b"\n") == []  # 100 pending: at the limit
    with pytest.raises(ProtocolError, match="exceeds 100 bytes"):
        decoder.feed(b"x")  # an upstream that never ends its event
    assert decoder.close() is None  # what was pending is dropped


def test_a_complete_event_over_the_limit_fails(small_events: int) -> None:
    event = b"data: " + b"x" * 94  # 100 bytes without its blank line
    assert decode(event + b"\n\n") == ([b"x" * 94], None)
    with pytest.raises(ProtocolError, match="exceeds 100 bytes"):
        decode(b"data: 1\n\n" + event + b"x\n\ndata: 2\n\n")  # in one block
    decoder = SSEDecoder()
    decoder.feed(b"data: " + b"x" * 90)
    with pytest.raises(ProtocolError):
        decoder.feed(b"x" * 5 + b"\n\n")  # completed by the next block


def test_many_events_past_the_limit_together_are_fine(small_events: int) -> None:
    block = b"".join(b"data: %d\n\n" % i for i in range(100))  # 1000 bytes at once
    assert decode(block) == ([b"%d" % i for i in range(100)], None)
    assert decode(*[b"data: " + b"x" * 90 + b"\n\n"] * 20) == ([b"x" * 90] * 20, None)


def test_an_event_too_large_is_a_malformed_upstream_answer() -> None:
    error = errors.error_from_exception("up", ProtocolError("an SSE event ... exceeds"))
    assert error.status == 502
    assert error.retryable
    assert "malformed upstream response" in error.message
