"""``interference keys create|list|info|update|revoke``: virtual keys administered from the
terminal, on the configuration's database (``storage.path`` or ``storage.url``) directly, so that no
server needs to run; a running server sees the change within ``storage.refresh_s``. The fields
are those of ``POST /key/generate`` (docs/operations.md). ``interference usage`` prints the
usage rollup as a table (what ``GET /usage`` answers)."""

from __future__ import annotations

import argparse
import asyncio
import calendar
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import ValidationError

from interference.config import Config, ConfigError
from interference.errors import InterferenceError
from interference.store.database import open_database
from interference.store.keys import KeyRecord, KeyStore
from interference.store.usage import day_of, usage_totals


def add_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="virtual API keys: create, list, info, update, revoke")
    keys.add_argument("--config", help="YAML configuration file (default: $INTERFERENCE_CONFIG)")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="a new key (shown once)")
    update = actions.add_parser("update", help="change a key's fields")
    update.add_argument("key", help="the key, its digest or its alias")
    for parser in (create, update):
        parser.add_argument("--alias", dest="key_alias")
        parser.add_argument("--models", help="comma-separated names or patterns (gpt-*)")
        parser.add_argument("--max-budget", dest="max_budget", type=float, help="USD")
        parser.add_argument("--budget-duration", dest="budget_duration", help="e.g. 30d")
        parser.add_argument("--rpm", dest="rpm_limit", type=int)
        parser.add_argument("--tpm", dest="tpm_limit", type=int)
        parser.add_argument("--max-parallel", dest="max_parallel_requests", type=int)
        parser.add_argument("--duration", help="until it expires, e.g. 30d")
        parser.add_argument("--metadata", help="a JSON object")
    actions.add_parser("list", help="every key: digest, alias, models, limits")
    info = actions.add_parser("info", help="one key's fields and spend")
    info.add_argument("key", help="the key, its digest or its alias")
    revoke = actions.add_parser("revoke", help="delete a key")
    revoke.add_argument("key", help="the key, its digest or its alias")


def add_usage_parser(commands: Any) -> None:
    usage = commands.add_parser("usage", help="tokens, requests and cost by day, key and model")
    usage.add_argument("--config", help="YAML configuration file (default: $INTERFERENCE_CONFIG)")
    usage.add_argument("--start-date", help="YYYY-MM-DD (default: 29 days before the end)")
    usage.add_argument("--end-date", help="YYYY-MM-DD (default: today)")
    usage.add_argument("--key", help="one key: the key, its digest or its alias")


def _day(text: str | None, default: float, option: str) -> float:
    if text is None:
        return default
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        raise ConfigError(f"{option}: a day as YYYY-MM-DD, not `{text}`") from None


def run_usage(args: argparse.Namespace, config: Config) -> int:
    """Print the rollup's rows over the days asked, and their total."""
    with _opened(config) as (store, path):
        until = _day(args.end_date, time.time(), "--end-date")
        since = _day(args.start_date, until - 29 * 86400, "--start-date")
        digest = _named(store, args.key).digest if args.key else None
        rows = asyncio.run(usage_totals(store.database, since, until, digest))
        names = {r.digest: r.alias or r.digest[:16] for r in store.listed(1, 10**9)[0]}
    print(f"usage in {path}, {day_of(since)} to {day_of(until)}")
    header = ["day", "key", "model", "requests", "errors", "prompt", "completion", "cost USD"]
    counts = ("requests", "errors", "prompt_tokens", "completion_tokens")
    table: list[list[str]] = [header]
    for row in rows:
        key = names.get(row["key"], row["key"][:16] or "-")
        table.append(
            [row["day"], key, row["model"], *(str(row[n]) for n in counts), f"{row['cost']:.6f}"]
        )
    sums = [str(sum(r[n] for r in rows)) for n in counts]
    table.append(["total", "", "", *sums, f"{sum(r['cost'] for r in rows):.6f}"])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    return 0


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    """The fields given on the command line, checked as ``/key/generate`` checks them."""
    from interference.api.key_admin import KeyFields

    given: dict[str, Any] = {}
    for name in ("key_alias", "max_budget", "budget_duration", "rpm_limit", "tpm_limit"):
        if getattr(args, name) is not None:
            given[name] = getattr(args, name)
    if args.max_parallel_requests is not None:
        given["max_parallel_requests"] = args.max_parallel_requests
    if args.duration is not None:
        given["duration"] = args.duration
    if args.models is not None:
        given["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.metadata is not None:
        try:
            given["metadata"] = json.loads(args.metadata)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--metadata: not JSON ({exc})") from None
    try:
        return KeyFields.model_validate(given).changes()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def _line(record: KeyRecord) -> str:
    wire = record.wire()
    limits = ", ".join(
        f"{name}={wire[name]}"
        for name in ("max_budget", "rpm_limit", "tpm_limit", "max_parallel_requests", "expires")
        if wire[name] is not None
    )
    state = "blocked" if record.blocked else "active"
    models = ",".join(record.models) or "*"
    return f"{record.digest[:16]}  {record.alias or '-':16}  {state:7}  models={models}  {limits}"


@contextlib.contextmanager
def _opened(config: Config) -> Iterator[tuple[KeyStore, str]]:
    """The keys of the configuration's database (created and migrated if need be), and where
    it is."""
    database = open_database(config.storage)
    try:
        store = KeyStore(database)
        store.load()
        yield store, database.where
    finally:
        database.close()


def run(args: argparse.Namespace, config: Config) -> int:
    with _opened(config) as (store, path):
        try:
            return _act(args, store, path)
        except InterferenceError as exc:
            print(f"interference: {exc.message}", file=sys.stderr)
            return 2


def _named(store: KeyStore, name: str) -> KeyRecord:
    found = store.resolve(name)
    if found is None:
        raise ConfigError(f"no key `{name}` (give the key, its digest or its alias)")
    return found


def _act(args: argparse.Namespace, store: KeyStore, path: str) -> int:
    command: str = args.keys_command
    show: Callable[[KeyRecord], None] = lambda r: print(json.dumps(r.wire(), indent=2))  # noqa: E731
    if command == "create":
        key, record = asyncio.run(store.generate(_changes(args)))
        print(key)
        print(f"(shown once; stored in {path} as its digest {record.digest[:16]}...)")
    elif command == "list":
        records, total = store.listed(1, 1_000_000)
        print(f"{total} key(s) in {path}")
        for record in records:
            print("  " + _line(record))
    elif command == "info":
        show(_named(store, args.key))
    elif command == "update":
        show(asyncio.run(store.update(_named(store, args.key), _changes(args))))
    elif command == "revoke":
        record = _named(store, args.key)
        asyncio.run(store.delete([record]))
        print(f"revoked {record.digest[:16]}... ({record.alias or 'no alias'})")
    return 0
