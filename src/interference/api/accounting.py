"""Keys and usage kept in the database, for a server with a master key: the virtual keys the
guard checks, the usage ledger every request that named a model adds a row to (with its cost),
the budgets, and the background task that writes the rows and re-reads the keys every
``storage.refresh_s``.

A key's budget holds because a request reserves its worst-case cost before it is forwarded, in
the same atomic step as the check: its prompt counted as one token per byte of the request
body (a token is at least a byte) at the highest input price of the model's deployments, and
its answer as its ``max_tokens`` (``server.limits.max_tokens`` when it sets none) at the highest
output price. The request is refused (429 ``budget_exceeded``) when spend + reservations + its
own would pass ``max_budget``; when it ends its reservation gives way to its real cost. The
reservations are counted by :class:`~interference.store.counters.KeyCounters`: in Redis for the
whole gateway when ``storage.redis_url`` is set, else in each process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from interference.api.record import RequestRecord
from interference.config import Config
from interference.errors import BudgetExceededError
from interference.routing.table import PublicModel
from interference.store.counters import KeyCounters
from interference.store.database import open_database
from interference.store.keys import KeyRecord, KeyStore
from interference.store.ledger_writer import LedgerWriter, writer_target
from interference.store.prices import PriceList, token_cost
from interference.store.usage import UsageLedger

logger = logging.getLogger(__name__)


def _nothing() -> None:
    return None


_FREE = (0.0, 0.0, 0.0)  # the token prices of a local model


class Accounting:
    def __init__(self, config: Config) -> None:
        storage = config.storage
        self.database = open_database(storage)
        self.where = self.database.where
        self.keys = KeyStore(self.database)
        self.keys.load()
        writer = LedgerWriter(writer_target(storage), timeout_s=storage.timeout_s + 10)
        self.ledger = UsageLedger(writer, storage.retention_days)
        self.prices = PriceList(config.prices)
        self.counters = KeyCounters(
            storage.redis(), storage.redis_timeout_s, storage.budgets_when_down
        )
        self.every = storage.refresh_s
        self.error: str | None = None  # why the last write or read failed, until one works
        self._local = {name for name, entry in config.providers.items() if entry.kind == "local"}
        self._max_output = config.server.limits.max_tokens
        self._pending: dict[str, float] = {}  # key digest -> cost of rows not yet written
        self._rates: dict[str, tuple[float, float]] = {}  # model -> highest (input, output)
        #: time.time() - time.perf_counter(), for the rows' times (once per sync)
        self._wall_offset = time.time() - time.perf_counter()
        #: (deployment, model asked) -> prices of its tokens (charge)
        self._token_rates: dict[tuple[str, str | None], tuple[float, float, float]] = {}
        self._syncing = asyncio.Lock()
        #: counts the requests that ended but wait in the guard's batch (create_app sets it)
        self.count_ended: Callable[[], None] = _nothing
        logger.info("virtual keys: %d in %s", len(self.keys), self.where)
        if self.counters.redis is not None:
            logger.info("limits and budgets counted in Redis (%s)", self.counters.redis.where)
        elif storage.database_url():
            logger.warning(
                "storage.url without storage.redis_url: rpm, tpm, max_parallel and budget "
                "reservations are counted per replica (each replica allows a key its whole "
                "limit); set storage.redis_url to share them"
            )

    def reported_spend(self, key: KeyRecord) -> float:
        """:meth:`spend` with the requests that just ended (what ``/key/info`` shows)."""
        self.count_ended()
        return self.spend(key)

    def spend(self, key: KeyRecord) -> float:
        """What the key has spent: the database's figure and the rows not yet written."""
        current = self.keys.by_digest(key.digest) or key  # as last read: a refresh replaces it
        return current.spend + self._pending.get(key.digest, 0.0)

    def reserve_here(
        self, record: RequestRecord, key: KeyRecord, model: PublicModel, output: int | None
    ) -> bool:
        """:meth:`reserve` when this process counts the budgets (no await); False when Redis
        counts them (then call :meth:`reserve`)."""
        counters = self.counters
        if counters.redis is not None:
            return False
        cost = self._worst_case(record, model, output)
        try:
            counters.reserve_here(key, cost, self.spend(key), self.error is None)
        except BudgetExceededError:
            # requests that ended hold their reservations until their batch is counted
            # (RequestGuard.count_ended): count it, then ask again
            self.count_ended()
            counters.reserve_here(key, cost, self.spend(key), self.error is None)
        record.reserved = cost
        return True

    async def reserve(self, record: RequestRecord, model: PublicModel, output: int | None) -> None:
        """Hold the request's worst-case cost against its key's budget, or refuse it."""
        key = record.virtual_key
        if key is None or key.max_budget is None:
            return
        if self.reserve_here(record, key, model, output):
            return
        cost = self._worst_case(record, model, output)
        record.reserved_shared = await self.counters.reserve(
            key, record.id, cost, self.spend(key), self.error is None
        )
        record.reserved = cost

    def _worst_case(self, record: RequestRecord, model: PublicModel, output: int | None) -> float:
        """USD for the request's body as prompt tokens and its bound as output tokens, at
        the highest prices of the model's deployments."""
        rates = self._rates.get(model.name)
        if rates is None:  # the highest prices of the model's deployments, once per model
            found = [self._rate(d.provider.name, d.model, model.name) for d in model.deployments]
            rates = self._rates[model.name] = (
                max((r[0] for r in found), default=0.0),
                max((r[1] for r in found), default=0.0),
            )
        bound = self._max_output if output is None else output
        return (record.body_bytes * rates[0] + bound * rates[1]) / 1_000_000

    def _rate(self, provider: str, upstream: str, public: str) -> tuple[float, float]:
        if provider in self._local:
            return 0.0, 0.0
        price = self.prices.price((upstream, public))
        return (0.0, 0.0) if price is None else (price.input, price.output)

    def charge(self, record: RequestRecord) -> tuple[int, int, int]:
        """Count a request's cost against its key and release its budget reservation: the
        guard calls this as the request ends when it reserved (a budget must not wait for
        :meth:`record`'s batch), :meth:`record` for the others. Its (prompt, cached,
        completion) tokens."""
        tokens = prompt, cached, completion = _tokens(record)
        cost = 0.0
        deployment = record.deployment
        if deployment is not None and (prompt or completion):
            rates = self._token_rates.get((deployment, record.model))
            if rates is None:
                rates = self._token_rates_of(deployment, record.model)
            if rates is not _FREE:
                cost = token_cost(rates, prompt, cached, completion)
        record.cost = cost
        record.charged = True
        key = record.virtual_key
        if key is None:
            return tokens
        if cost:
            self._pending[key.digest] = self._pending.get(key.digest, 0.0) + cost
        if record.reserved:
            if record.reserved_shared:
                known = self.spend(key) - cost
                self.counters.settle(key, record.id, record.reserved, cost, known, True)
            else:  # this process's hold (the spend does not matter to it)
                self.counters.settle(key, record.id, record.reserved, cost, 0.0, False)
        return tokens

    def _token_rates_of(self, deployment: str, model: str | None) -> tuple[float, float, float]:
        """The prices of a deployment's tokens for requests that asked for ``model``, once
        per pair (:attr:`_token_rates`)."""
        provider, _, upstream_model = deployment.partition("/")
        rates = _FREE
        if provider not in self._local:
            rates = self.prices.rates((upstream_model, model or ""))
        self._token_rates[(deployment, model)] = rates
        return rates

    def record(self, record: RequestRecord, elapsed_ms: float) -> None:
        """The guard's report of a request that named a model, in its batch of ended ones
        (``RequestGuard.count_ended``): its cost counted (unless :meth:`charge` did already)
        and a ledger row, stamped with the moment the request ended."""
        prompt, cached, completion = _tokens(record) if record.charged else self.charge(record)
        key, ttft = record.virtual_key, record.ttft_ms
        row = (
            record.started + elapsed_ms / 1000 + self._wall_offset,  # when it ended
            record.id,
            key.digest if key is not None else "",
            record.model or "",
            record.deployment,
            prompt,
            cached,
            completion,
            record.cost,
            record.status,
            round(elapsed_ms, 1),
            None if ttft is None else round(ttft, 1),
        )
        self.ledger.add(row)  # a plain tuple, in UsageRow's order (store.usage.Row)

    async def sync(self) -> None:
        """Write the pending rows, then re-read the keys (their spend now includes them). One
        at a time (the loop, ``GET /usage``): a row's cost leaves ``_pending`` only after the
        re-read that includes it."""
        self.count_ended()  # the requests that just ended, waiting in the guard's batch
        self._wall_offset = time.time() - time.perf_counter()  # the wall clock may be set
        async with self._syncing:
            written = await self.ledger.flush()
            await self.keys.reset_budgets(time.time())  # after the old period's costs
            await self.keys.refresh()
            for digest, cost in written.costs.items():  # no await since the refresh: the
                left = self._pending.get(digest, 0.0) - cost  # spend is never counted twice
                self._pending[digest] = max(0.0, left)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.counters.maintain()
            try:
                await self.sync()
            except Exception as exc:  # a locked or broken file: keep serving, say so, retry
                if self.error is None:
                    logger.exception("cannot write usage or re-read the virtual keys")
                self.error = f"{type(exc).__name__}: {exc}"[:300]
            else:
                if self.error is not None:
                    logger.info("usage written and keys read again after: %s", self.error)
                self.error = None

    def describe(self) -> dict[str, object]:
        """What ``/health`` says of the database: keys known, rows waiting, the last error."""
        self.count_ended()
        return {
            "path": self.where,
            "ok": self.error is None,
            "error": self.error,
            "keys": len(self.keys),
            "usage_rows_waiting": self.ledger.pending,
            **self.counters.describe(),
        }

    async def close(self) -> None:
        try:
            await self.sync()
        finally:
            try:
                await self.ledger.close()
                await self.counters.close()
            finally:
                self.database.close()


def _tokens(record: RequestRecord) -> tuple[int, int, int]:
    """The request's (prompt, cached, completion) tokens as the ledger counts them."""
    prompt, completion = record.prompt_tokens or 0, record.completion_tokens or 0
    cached = min(record.cached_tokens or 0, prompt)
    if record.completion_tokens is None and record.chunks:
        # a stream without usage (an upstream that sends none, a client that left before it):
        # a token per chunk, as OpenAI-style servers stream, and 4 bytes per token
        completion = record.chunks
        prompt = prompt or -(-record.body_bytes // 4)
    return prompt, cached, completion
