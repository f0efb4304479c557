"""Stored responses, for ``previous_response_id`` and ``GET``/``DELETE /v1/responses/{id}``.

Kept in this process's memory, bounded in time (``ttl_s`` after the response was stored) and in
size (the oldest go first past ``max_mib`` of JSON): a gateway serves agents that resend their
whole conversation (Codex: ``store: false``) as well as clients that chain responses by id, and
neither may grow it without bound. A response stored here is lost when the server stops; the
docs say so, and a chain that refers to one answers 400 naming ``previous_response_id``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

Json = dict[str, Any]


@dataclass
class StoredResponse:
    response: Json
    #: the whole conversation up to and with this response, as chat messages (instructions
    #: apart: they do not carry over to the next response)
    conversation: list[Json]
    input_items: list[Json]
    expires: float
    size: int


class ResponseStore:
    def __init__(
        self, ttl_s: float, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def put(self, response: Json, conversation: list[Json], input_items: list[Json]) -> None:
        size = len(orjson.dumps([response, conversation, input_items]))
        if size > self.max_bytes:
            return  # larger than the whole store: not kept (a chain to it answers 400)
        self.delete(response["id"])
        expires = self._clock() + self.ttl_s
        self._entries[response["id"]] = StoredResponse(
            response, conversation, input_items, expires, size
        )
        self._bytes += size
        self._expire()
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def get(self, response_id: str) -> StoredResponse | None:
        self._expire()
        return self._entries.get(response_id)

    def delete(self, response_id: str) -> bool:
        if response_id not in self._entries:
            return False
        self._drop(response_id)
        return True

    def _drop(self, response_id: str) -> None:
        self._bytes -= self._entries.pop(response_id).size

    def _expire(self) -> None:
        now = self._clock()
        while self._entries:
            oldest = next(iter(self._entries))
            if self._entries[oldest].expires > now:
                return
            self._drop(oldest)
