"""Virtual API keys: created, changed and revoked by an administrator, checked on every request.

A key is ``sk-`` and 43 random URL-safe characters; only its SHA-256 digest (hex) is stored, so
the database never holds a usable key. The guard checks keys against an in-memory copy of the
table (no database work on the request path); :meth:`KeyStore.refresh` re-reads the table, so a
change made through another process (a ``--workers`` sibling, the ``interference keys`` command)
takes effect within ``storage.refresh_s``. Field names on the wire are LiteLLM's (``key_alias``,
``rpm_limit``, ``max_parallel_requests``, ``expires``...), so that its scripts work unchanged.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson

from interference.errors import InvalidRequestError
from interference.store.database import Database, Session

KEY_PREFIX = "sk-"
_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w|mo)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def duration_s(text: str) -> float:
    """Seconds in a duration such as ``30s``, ``15m``, ``1h``, ``1d``, ``2w``, ``1mo`` (30 days)."""
    found = _DURATION.match(text.strip())
    if not found:
        raise ValueError(f"`{text}` is not a duration such as 30s, 15m, 1h, 7d, 2w or 1mo")
    return int(found.group(1)) * _SECONDS[found.group(2)]


@dataclass
class KeyRecord:
    """One virtual key, as stored (its digest, never the key)."""

    digest: str
    created_at: float
    alias: str | None = None
    models: list[str] = field(default_factory=list)  # names or patterns; empty: every model
    max_budget: float | None = None  # USD
    budget_duration: str | None = None
    budget_reset_at: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    expires_at: float | None = None
    blocked: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    spend: float = 0.0
    last_used_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def allows(self, model: str) -> bool:
        """Whether the key may use ``model`` (a name or a pattern of its list matches)."""
        if not self.models:
            return True
        folded = model.lower()
        return any(fnmatch.fnmatchcase(folded, allowed.lower()) for allowed in self.models)

    def wire(self) -> dict[str, Any]:
        """The key's fields in LiteLLM's names (``token`` is the digest)."""
        return {
            "token": self.digest,
            "key_alias": self.alias,
            "models": self.models,
            "max_budget": self.max_budget,
            "budget_duration": self.budget_duration,
            "budget_reset_at": _iso(self.budget_reset_at),
            "rpm_limit": self.rpm,
            "tpm_limit": self.tpm,
            "max_parallel_requests": self.max_parallel,
            "expires": _iso(self.expires_at),
            "blocked": self.blocked,
            "metadata": self.metadata,
            "spend": self.spend,
            "created_at": _iso(self.created_at),
            "last_active": _iso(self.last_used_at),
        }


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


#: LiteLLM's field name -> ours, for what /key/generate and /key/update take
WIRE_FIELDS = {
    "key_alias": "alias",
    "models": "models",
    "max_budget": "max_budget",
    "budget_duration": "budget_duration",
    "rpm_limit": "rpm",
    "tpm_limit": "tpm",
    "max_parallel_requests": "max_parallel",
    "blocked": "blocked",
    "metadata": "metadata",
}
_COLUMNS = [f.name for f in fields(KeyRecord)]
_JSON_COLUMNS = {"models", "metadata"}


def _row(record: KeyRecord) -> tuple[Any, ...]:
    values = asdict(record)
    values["blocked"] = int(record.blocked)  # an INTEGER column in both dialects
    return tuple(
        orjson.dumps(values[c]).decode() if c in _JSON_COLUMNS else values[c] for c in _COLUMNS
    )


def _record(row: tuple[Any, ...]) -> KeyRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    for column in _JSON_COLUMNS:
        values[column] = orjson.loads(values[column])
    values["blocked"] = bool(values["blocked"])
    return KeyRecord(**values)


class KeyStore:
    """The virtual keys of ``database``, with the in-memory copy the guard reads."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._by_digest: dict[str, KeyRecord] = {}

    # --- the request path: memory only

    def find(self, key: str) -> KeyRecord | None:
        """The record of a presented key, if it is a virtual key."""
        return self._by_digest.get(digest_of(key)) if key.startswith(KEY_PREFIX) else None

    def by_digest(self, digest: str) -> KeyRecord | None:
        return self._by_digest.get(digest)

    def __len__(self) -> int:
        return len(self._by_digest)

    # --- administration (the database, then the copy)

    def load(self) -> None:
        """Read the table into memory (at start; blocking)."""
        self._by_digest = {r.digest: r for r in self.database.call(_select_all)}

    async def refresh(self) -> None:
        """Write when each key was last used, then read the table again: changes made by other
        processes take effect."""
        used = [(r.last_used_at, r.digest) for r in self._by_digest.values() if r.last_used_at]

        def write_and_read(session: Session) -> list[KeyRecord]:
            session.executemany(
                f"UPDATE keys SET last_used_at = {session.greatest}(COALESCE(last_used_at, 0), ?) "
                "WHERE digest = ?",
                used,
            )
            return _select_all(session)

        self._by_digest = {r.digest: r for r in await self.database.run(write_and_read)}

    async def generate(
        self, changes: dict[str, Any], now: float | None = None
    ) -> tuple[str, KeyRecord]:
        """A new key and its record; the key is returned here only, never stored."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        created = time.time() if now is None else now
        record = KeyRecord(digest=digest_of(key), created_at=created)
        _apply(record, changes, created)

        def insert(session: Session) -> None:
            marks = ", ".join("?" for _ in _COLUMNS)
            session.execute(
                f"INSERT INTO keys ({', '.join(_COLUMNS)}) VALUES ({marks})", _row(record)
            )

        await self.database.run(_unique(insert, record.alias))
        self._by_digest[record.digest] = record
        return key, record

    async def reset_budgets(self, now: float) -> int:
        """Start a new budget period for each key whose ``budget_reset_at`` has come: its spend
        back to 0, the next reset one ``budget_duration`` on (past ``now``). A compare-and-set
        on the reset time, so that processes doing it together reset a key once."""
        due = [
            r for r in self._by_digest.values()
            if r.budget_reset_at is not None and r.budget_duration and r.budget_reset_at <= now
        ]  # fmt: skip
        changes = []
        for record in due:
            every = duration_s(record.budget_duration or "")
            periods = int((now - (record.budget_reset_at or now)) // every) + 1
            changes.append(((record.budget_reset_at or now) + periods * every, record))

        def reset(session: Session) -> None:
            session.executemany(
                "UPDATE keys SET spend = 0, budget_reset_at = ? "
                "WHERE digest = ? AND budget_reset_at = ?",
                [(after, r.digest, r.budget_reset_at) for after, r in changes],
            )

        if changes:
            await self.database.run(reset)
        return len(changes)

    def resolve(self, key_or_digest: str) -> KeyRecord | None:
        """The record named by a key, its digest (LiteLLM's ``token``) or its alias."""
        if _HEX_DIGEST.match(key_or_digest) and key_or_digest in self._by_digest:
            return self._by_digest[key_or_digest]
        found = self._by_digest.get(digest_of(key_or_digest))
        if found is not None:
            return found
        return next((r for r in self._by_digest.values() if r.alias == key_or_digest), None)

    async def update(self, record: KeyRecord, changes: dict[str, Any]) -> KeyRecord:
        changed = KeyRecord(**asdict(record))
        _apply(changed, changes, time.time())
        await self._write(changed)
        return changed

    async def _write(self, record: KeyRecord) -> None:
        def write(session: Session) -> None:
            assignments = ", ".join(f"{c} = ?" for c in _COLUMNS[1:])
            values = _row(record)
            session.execute(
                f"UPDATE keys SET {assignments} WHERE digest = ?", (*values[1:], values[0])
            )

        await self.database.run(_unique(write, record.alias))
        self._by_digest[record.digest] = record

    async def delete(self, records: list[KeyRecord]) -> list[str]:
        digests = [r.digest for r in records]

        def delete(session: Session) -> None:
            session.executemany("DELETE FROM keys WHERE digest = ?", [(d,) for d in digests])

        await self.database.run(delete)
        for digest in digests:
            self._by_digest.pop(digest, None)
        return digests

    def listed(self, page: int, size: int, alias: str | None = None) -> tuple[list[KeyRecord], int]:
        """A page of the keys (oldest first) and how many there are."""
        records = sorted(self._by_digest.values(), key=lambda r: (r.created_at, r.digest))
        if alias is not None:
            records = [r for r in records if r.alias == alias]
        return records[(page - 1) * size : page * size], len(records)


def _unique(work: Callable[[Session], None], alias: str | None) -> Callable[[Session], None]:
    """``work``, with a second key of the same alias refused by the database (so that two
    processes cannot both take it) as a 400 naming ``key_alias``."""

    def guarded(session: Session) -> None:
        try:
            work(session)
        except session.integrity_errors:
            raise InvalidRequestError(
                f"Another key has the alias `{alias}`.", param="key_alias", code="alias_taken"
            ) from None

    return guarded


def _select_all(session: Session) -> list[KeyRecord]:
    rows = session.execute(f"SELECT {', '.join(_COLUMNS)} FROM keys")
    return [_record(row) for row in rows]


def _apply(record: KeyRecord, changes: dict[str, Any], now: float) -> None:
    """Set the fields named in LiteLLM's words; ``duration`` sets the expiry from ``now``."""
    for wire_name, ours in WIRE_FIELDS.items():
        if wire_name in changes:
            setattr(record, ours, changes[wire_name])
    if "duration" in changes:
        duration = changes["duration"]
        record.expires_at = None if duration is None else now + duration_s(duration)
    if "budget_duration" in changes:
        every = record.budget_duration
        record.budget_reset_at = None if every is None else now + duration_s(every)
