"""Virtual keys administered over HTTP, with LiteLLM's routes and field names so that its
scripts work unchanged: ``POST /key/generate``, ``/key/update``, ``/key/delete``,
``/key/block``, ``/key/unblock``; ``GET /key/info`` and ``/key/list``. All need the master key,
except ``GET /key/info`` without ``key`` (or naming itself), which a virtual key may ask about
itself. The generated key is in the answer of ``/key/generate`` only; everything else names a
key by the key, its digest (LiteLLM's ``token``) or its alias. Unknown fields (LiteLLM's teams,
users, tags...) are ignored.
"""

from __future__ import annotations

import calendar
import logging
import time
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from interference.api.record import record_of
from interference.api.state import M, json_response, read_model, state_of
from interference.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from interference.store.keys import KeyRecord, KeyStore, duration_s
from interference.store.usage import usage_totals

logger = logging.getLogger(__name__)

Count = Annotated[int, Field(ge=1)]


class KeyFields(BaseModel):
    """What ``/key/generate`` and ``/key/update`` take, in LiteLLM's names."""

    model_config = ConfigDict(extra="ignore")

    key_alias: str | None = None
    models: list[str] | None = None
    max_budget: Annotated[float, Field(ge=0)] | None = None
    budget_duration: str | None = None
    rpm_limit: Count | None = None
    tpm_limit: Count | None = None
    max_parallel_requests: Count | None = None
    duration: str | None = None  # from now until it expires; null: never
    blocked: bool | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("duration", "budget_duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            duration_s(value)  # raises with the accepted forms
        return value

    def changes(self) -> dict[str, Any]:
        """The fields the request set (``null`` included: it clears the field)."""
        changes = self.model_dump(include=self.model_fields_set)
        if changes.get("models") is None and "models" in changes:
            changes["models"] = []
        if changes.get("metadata") is None and "metadata" in changes:
            changes["metadata"] = {}
        if changes.get("blocked") is None and "blocked" in changes:
            changes["blocked"] = False
        return changes


class KeyUpdate(KeyFields):
    key: str


class KeyNames(BaseModel):
    model_config = ConfigDict(extra="ignore")

    keys: list[str] = Field(default_factory=list)
    key_aliases: list[str] = Field(default_factory=list)


class KeyName(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str


def _keys_off() -> NotFoundError:
    return NotFoundError(
        "Virtual keys are off: give the server a master key (server.master_key or "
        "INTERFERENCE_MASTER_KEY).",
        code="keys_disabled",
    )


def _store(request: Request, admin: bool = True) -> KeyStore:
    store = state_of(request).keys
    if store is None:
        raise _keys_off()
    if admin and not record_of(request.scope).admin:
        raise PermissionDeniedError("Only the master key may administer keys.", code="admin_only")
    return store


async def _body(request: Request, model: type[M]) -> M:
    return (await read_model(request, model))[0]


def _named(store: KeyStore, name: str) -> KeyRecord:
    found = store.resolve(name)
    if found is None:
        raise NotFoundError("No such key.", param="key", code="key_not_found")
    return found


async def generate(request: Request) -> Response:
    store = _store(request)
    fields: KeyFields = await _body(request, KeyFields)
    key, record = await store.generate(fields.changes())
    logger.info("key %s created (alias %s)", record.digest[:12], record.alias)
    return json_response(orjson.dumps({"key": key, "key_name": _shown(key), **record.wire()}))


def _shown(key: str) -> str:
    """How a key is shown after its creation: its start and its end."""
    return f"{key[:5]}...{key[-4:]}"


async def update(request: Request) -> Response:
    store = _store(request)
    fields: KeyUpdate = await _body(request, KeyUpdate)
    record = _named(store, fields.key)
    changes = fields.changes()
    changes.pop("key", None)
    changed = await store.update(record, changes)
    return json_response(orjson.dumps(changed.wire()))


async def delete(request: Request) -> Response:
    store = _store(request)
    names: KeyNames = await _body(request, KeyNames)
    if not names.keys and not names.key_aliases:
        raise InvalidRequestError("Name the keys to delete: `keys` or `key_aliases`.", param="keys")
    records = [_named(store, name) for name in [*names.keys, *names.key_aliases]]
    deleted = await store.delete(records)
    return json_response(orjson.dumps({"deleted_keys": deleted}))


async def _set_blocked(request: Request, blocked: bool) -> Response:
    store = _store(request)
    name: KeyName = await _body(request, KeyName)
    changed = await store.update(_named(store, name.key), {"blocked": blocked})
    return json_response(orjson.dumps(changed.wire()))


async def block(request: Request) -> Response:
    return await _set_blocked(request, True)


async def unblock(request: Request) -> Response:
    return await _set_blocked(request, False)


async def info(request: Request) -> Response:
    record = record_of(request.scope)
    asked = request.query_params.get("key")
    own = record.virtual_key
    if own is not None and (asked is None or _store(request, admin=False).resolve(asked) is own):
        return json_response(orjson.dumps({"key": own.digest, "info": _wire(request, own)}))
    store = _store(request)
    if asked is None:
        raise InvalidRequestError("Name the key: ?key=...", param="key")
    found = _named(store, asked)
    return json_response(orjson.dumps({"key": found.digest, "info": _wire(request, found)}))


def _wire(request: Request, record: KeyRecord) -> dict[str, Any]:
    """The key's fields, its spend up to the last request (rows not yet written included)."""
    fields = record.wire()
    accounting = state_of(request).accounting
    if accounting is not None:
        fields["spend"] = accounting.reported_spend(record)
    return fields


async def listed(request: Request) -> Response:
    store = _store(request)
    try:
        page = max(1, int(request.query_params.get("page", "1")))
        size = min(100, max(1, int(request.query_params.get("size", "10"))))
    except ValueError:
        raise InvalidRequestError("`page` and `size` are whole numbers.", param="page") from None
    records, total = store.listed(page, size, request.query_params.get("key_alias"))
    full = request.query_params.get("return_full_object", "").lower() == "true"
    body = {
        "keys": [_wire(request, r) for r in records] if full else [r.digest for r in records],
        "total_count": total,
        "current_page": page,
        "total_pages": max(1, -(-total // size)),
    }
    return json_response(orjson.dumps(body))


def _day(request: Request, name: str, default: float) -> float:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        raise InvalidRequestError(f"`{name}` is a day: YYYY-MM-DD.", param=name) from None


async def usage(request: Request) -> Response:
    """Tokens, requests and cost by day, key and model: all of them for the master key, its
    own for a virtual key (``?start_date=&end_date=``, days, 30 days to today by default)."""
    accounting = state_of(request).accounting
    record = record_of(request.scope)
    if accounting is None:
        raise _keys_off()
    if not record.admin and record.virtual_key is None:
        raise PermissionDeniedError("Ask with the master key or a virtual key.", code="admin_only")
    now = time.time()
    until = _day(request, "end_date", now)
    since = _day(request, "start_date", until - 29 * 86400)
    await accounting.sync()  # the requests that just ended count (and count once in spend)
    own = record.virtual_key.digest if record.virtual_key is not None else None
    rows = await usage_totals(accounting.database, since, until, own)
    names = {r.digest: r.alias or r.digest[:16] for r in accounting.keys.listed(1, 10**9)[0]}
    for row in rows:
        row["key"] = names.get(row["key"], row["key"][:16] or None)
    sums = ("requests", "errors", "prompt_tokens", "cached_tokens", "completion_tokens", "cost")
    total = {name: sum(row[name] for row in rows) for name in sums}
    body = {
        "start_date": time.strftime("%Y-%m-%d", time.gmtime(since)),
        "end_date": time.strftime("%Y-%m-%d", time.gmtime(until)),
        "data": rows,
        "total": total,
    }
    return json_response(orjson.dumps(body))


def key_routes() -> list[BaseRoute]:
    return [
        Route("/key/generate", generate, methods=["POST"]),
        Route("/key/update", update, methods=["POST"]),
        Route("/key/delete", delete, methods=["POST"]),
        Route("/key/block", block, methods=["POST"]),
        Route("/key/unblock", unblock, methods=["POST"]),
        Route("/key/info", info, methods=["GET"]),
        Route("/key/list", listed, methods=["GET"]),
        Route("/usage", usage, methods=["GET"]),
    ]
