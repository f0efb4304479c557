"""Keys and usage kept in the database, for a server with a master key: the virtual keys the
guard checks, the usage ledger every request that named a model adds a row to (with its cost),
and the background task that writes the rows and re-reads the keys every
``storage.refresh_s``."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from interference.api.record import RequestRecord
from interference.config import Config
from interference.store.database import Database, default_path
from interference.store.keys import KeyStore
from interference.store.prices import PriceList
from interference.store.usage import UsageLedger, UsageRow

logger = logging.getLogger(__name__)


class Accounting:
    def __init__(self, config: Config) -> None:
        storage = config.storage
        self.path = Path(storage.path).expanduser() if storage.path else default_path()
        self.database = Database(self.path)
        self.database.open()
        self.keys = KeyStore(self.database)
        self.keys.load()
        self.ledger = UsageLedger(self.database, storage.retention_days)
        self.prices = PriceList(config.prices)
        self.every = storage.refresh_s
        self._local = {name for name, entry in config.providers.items() if entry.kind == "local"}
        logger.info("virtual keys: %d in %s", len(self.keys), self.path)

    def record(self, record: RequestRecord, elapsed_ms: float) -> None:
        """The guard's report of a request that named a model: a ledger row, and its cost on
        the key's spend (in memory at once, in the database with the next flush)."""
        prompt, completion = record.prompt_tokens or 0, record.completion_tokens or 0
        cost = 0.0
        deployment = record.deployment
        if deployment is not None and (prompt or completion):
            provider, _, upstream_model = deployment.partition("/")
            if provider not in self._local:
                cost = self.prices.cost((upstream_model, record.model or ""), prompt, 0, completion)
        key = record.virtual_key
        if key is not None:
            key.spend += cost
        self.ledger.add(
            UsageRow(
                at=time.time(),
                request_id=record.id,
                key_digest=key.digest if key is not None else "",
                model=record.model or "",
                deployment=deployment,
                prompt_tokens=prompt,
                cached_tokens=0,
                completion_tokens=completion,
                cost=cost,
                status=record.status,
                ms=round(elapsed_ms, 1),
                ttft_ms=None if record.ttft_ms is None else round(record.ttft_ms, 1),
            )
        )

    async def sync(self) -> None:
        """Write the pending rows, then re-read the keys (their spend included)."""
        await self.ledger.flush()
        await self.keys.refresh()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.sync()
            except Exception:  # a locked or broken file: keep serving, say so, try again
                logger.exception("cannot write usage or re-read the virtual keys")

    async def close(self) -> None:
        try:
            await self.sync()
        finally:
            self.database.close()
