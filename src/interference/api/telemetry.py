"""``GET /metrics`` (Prometheus) and ``GET /v1/status/recent`` (the web chat's live charts):
what each request adds when it ends, what is read from the router, the guard and the local
engine when a scrape asks, and the workers' figures added together.

With ``--workers N`` each worker writes its figures to a file of its own every second
(``INTERFERENCE_METRICS_DIR``, made by the supervisor); the worker that answers a scrape adds
the others' files to its own live figures, so that one scrape shows the whole server. A worker
that died keeps its counters in the sum (a counter never goes back) but not its gauges.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from interference import __version__
from interference.api.record import RequestRecord, record_of
from interference.config import MetricsConfig
from interference.errors import PermissionDeniedError
from interference.telemetry import recent as recent_module
from interference.telemetry.exposition import describe, parse_engine, render
from interference.telemetry.metrics import (
    DURATION_BUCKETS,
    TPOT_BUCKETS,
    TTFT_BUCKETS,
    Metrics,
    Snapshot,
    observe_into,
)
from interference.telemetry.recent import Recent

if TYPE_CHECKING:
    from interference.api.guard import RequestGuard
    from interference.providers.base import Provider
    from interference.routing.router import Router

logger = logging.getLogger(__name__)

#: set by the supervisor of ``--workers``: where the workers leave their figures
DIRECTORY_ENV = "INTERFERENCE_METRICS_DIR"
WRITE_EVERY_S = 1.0

_ROUTES = {
    "/chat/completions": "chat", "/completions": "completions", "/embeddings": "embeddings",
    "/responses": "responses", "/messages": "messages", "/messages/count_tokens": "count_tokens",
    "/models": "models", "/health": "health", "/metrics": "metrics", "/providers": "providers",
    "/status/recent": "status", "/usage": "usage", "/": "ui",
}  # fmt: skip
_PREFIXES = (("/responses/", "responses"), ("/models/", "models"), ("/key/", "keys"),
             ("/ui/", "ui"))  # fmt: skip
#: the error codes of refusals by a limit -> the ``limit`` label
_LIMITS = {
    "rate_limit_exceeded": "rpm",
    "tokens_rate_limit_exceeded": "tpm",
    "max_parallel_requests_exceeded": "parallel",
    "budget_exceeded": "budget",
    "concurrency_limit_exceeded": "client_concurrency",
}

describe(
    "requests", "requests answered, by route, model and status", ("route", "model", "status_code")
)
describe("request_duration_seconds", "time from a request's arrival to its last byte",
         ("route", "model", "provider"), DURATION_BUCKETS)  # fmt: skip
describe("time_to_first_token_seconds", "time from a stream's request to its first output",
         ("model", "provider"), TTFT_BUCKETS)  # fmt: skip
describe("time_per_output_token_seconds", "a stream's time after its first token, per token",
         ("model", "provider"), TPOT_BUCKETS)  # fmt: skip
describe("tokens", "tokens by type: input (not cached), cached_input, output",
         ("model", "provider", "type"))  # fmt: skip
describe("rate_limited", "requests refused by a limit (rpm, tpm, parallel, budget, "
         "client_concurrency)", ("limit",))  # fmt: skip
describe("spend_usd", "what requests cost, in USD (the usage ledger's prices)", ("model",))
describe("upstream_requests", "attempts on each deployment, by outcome and error class",
         ("provider", "deployment", "outcome", "error_class"))  # fmt: skip
describe("upstream_duration_seconds", "an upstream's time to its answer (non-stream) or to "
         "its first output (stream)", ("provider", "deployment"), DURATION_BUCKETS)  # fmt: skip
describe("fallbacks", "requests answered by (ok) or failed after (failed) a fallback model",
         ("from_model", "to_model", "result"))  # fmt: skip
describe("retries", "attempts made again on the same deployment, by the error before",
         ("provider", "reason"))  # fmt: skip
describe("deployment_state", "0 healthy, 1 cooling down after failures",
         ("provider", "deployment"))  # fmt: skip
describe(
    "deployment_in_flight", "attempts in flight on each deployment", ("provider", "deployment")
)
describe("requests_in_flight", "requests being answered", ("model", "provider"))
describe("upstream_connections", "connections to each upstream, in_use or idle",
         ("provider", "state"))  # fmt: skip
describe("upstream_pool_waiting", "requests waiting now for a connection to the upstream",
         ("provider",))  # fmt: skip
describe("upstream_pool_waits", "requests that found every connection to the upstream in use "
         "and waited for one", ("provider",))  # fmt: skip
describe("upstream_pool_wait_seconds", "time requests spent waiting for a connection to the "
         "upstream, in total", ("provider",))  # fmt: skip
describe("upstream_pool_refused", "requests refused (503 upstream_busy or moved to another "
         "deployment) after pool_timeout with no free connection", ("provider",))  # fmt: skip
describe("requests_queued", "requests waiting for a slot of the local engine", ("model",))
describe("local_slots_busy", "the local engine's slots decoding", ("model",))
describe("local_prompt_tokens", "prompt tokens the local engine computed", ("model",))
describe("local_prompt_cache_hit_tokens", "prompt tokens the local engine reused from its "
         "prompt cache", ("model",))  # fmt: skip
describe("local_generated_tokens", "tokens the local engine generated", ("model",))


#: (snapshot part, our name, llama.cpp's name) of the local engines' figures
_ENGINE_FIGURES = (
    ("gauges", "local_slots_busy", "llamacpp_requests_processing"),
    ("gauges", "requests_queued", "llamacpp_requests_deferred"),
    ("counters", "local_prompt_tokens", "llamacpp_prompt_tokens_total"),
    ("counters", "local_prompt_cache_hit_tokens", "llamacpp_prompt_tokens_cached_total"),
    ("counters", "local_generated_tokens", "llamacpp_tokens_predicted_total"),
)


#: kinds of request whose cells are kept (past it the cache starts again: unknown paths)
_CELLS_CAP = 4096


@dataclass(slots=True)
class _Cells:
    """Where a kind of request adds: counter cells and histogram rows of its labels."""

    requests: list[float]
    limited: list[float] | None
    model: str = ""
    duration: list[float] | None = None  # None: the request reached no model
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    tokens_in: list[float] = field(default_factory=list)
    tokens_out: list[float] = field(default_factory=list)
    spend: list[float] = field(default_factory=list)
    token_labels: tuple[str, ...] = ()


def route_of(path: str) -> str:
    """A route name for the ``route`` label (a closed set; unknown paths are ``other``)."""
    bare = path[3:] if path.startswith("/v1/") else path
    found = _ROUTES.get(bare)
    if found is not None:
        return found
    for prefix, name in _PREFIXES:
        if bare.startswith(prefix):
            return name
    return "other"


class Telemetry:
    def __init__(
        self,
        router: Router,
        guard: RequestGuard,
        providers: list[Provider],
        config: MetricsConfig | None = None,
    ) -> None:
        self.router = router
        self.guard = guard
        self.providers = providers
        self.config = config or MetricsConfig()
        self.metrics = Metrics(self.config.key_labels)
        self._cells: dict[tuple[Any, ...], _Cells] = {}
        self.recent = Recent()
        router.on_attempt_failed = lambda d: self.recent.deployment_error(d.name)
        folder = os.environ.get(DIRECTORY_ENV)
        self.directory = Path(folder) if folder else None
        self._file = self.directory / f"{os.getpid()}.json" if self.directory else None

    # --- the request path

    def finished(self, record: RequestRecord, elapsed_ms: float) -> None:
        """A request ended (the guard tells of every one). Its labels are resolved to their
        cells once per kind of request (:meth:`_cells_of`); then it is a few additions."""
        virtual = record.virtual_key if self.metrics.key_labels else None
        kind = (
            record.path, record.public_model, record.status, record.deployment, record.error,
            (virtual.alias or virtual.digest[:12]) if virtual is not None else None,
        )  # fmt: skip
        cells = self._cells.get(kind)
        if cells is None:
            cells = self._cells_of(record, kind)
        cells.requests[0] += 1
        if cells.limited is not None:
            cells.limited[0] += 1
        if cells.duration is None:  # no model: nothing more to count
            return
        observe_into(cells.duration, DURATION_BUCKETS, elapsed_ms / 1000)
        ttft_ms = record.ttft_ms
        completion = record.completion_tokens or 0
        if ttft_ms is not None:
            observe_into(cells.ttft, TTFT_BUCKETS, ttft_ms / 1000)
            if completion > 1:
                per_token = (elapsed_ms - ttft_ms) / 1000 / (completion - 1)
                observe_into(cells.tpot, TPOT_BUCKETS, max(0.0, per_token))
        prompt = record.prompt_tokens or 0
        if prompt:
            cached = min(record.cached_tokens or 0, prompt)
            cells.tokens_in[0] += prompt - cached
            if cached:
                self.metrics.tokens.add((*cells.token_labels[:2], "cached_input",
                                         *cells.token_labels[2:]), cached)  # fmt: skip
        if completion:
            cells.tokens_out[0] += completion
        if record.cost:
            cells.spend[0] += record.cost
        self.recent.request(
            cells.model,
            record.status >= 400,
            completion,
            None if ttft_ms is None else ttft_ms / 1000,
        )

    def _cells_of(self, record: RequestRecord, kind: tuple[Any, ...]) -> _Cells:
        """The cells a request of this kind adds to (kept for the next ones: the kinds are
        bounded by the labels', the path aside, hence the cap)."""
        if len(self._cells) >= _CELLS_CAP:
            self._cells.clear()
        metrics = self.metrics
        model = record.public_model or ""
        route = route_of(record.path)
        key = (kind[-1] or "",) if metrics.key_labels else ()
        code = record.error
        limited = metrics.rate_limited.cell((_LIMITS[code],)) if code in _LIMITS else None
        requests = metrics.requests.cell((route, model, str(record.status), *key))
        if not model:
            cells = _Cells(requests, limited)
        else:
            provider = (record.deployment or "").partition("/")[0]
            pair = (model, provider)
            cells = _Cells(
                requests,
                limited,
                model=model,
                duration=metrics.duration.row((route, model, provider)),
                ttft=metrics.ttft.row(pair),
                tpot=metrics.tpot.row(pair),
                tokens_in=metrics.tokens.cell((model, provider, "input", *key)),
                tokens_out=metrics.tokens.cell((model, provider, "output", *key)),
                spend=metrics.spend.cell((model, *key)),
                token_labels=(model, provider, *key),
            )
        self._cells[kind] = cells
        return cells

    # --- a scrape

    async def snapshot(self) -> Snapshot:
        """This process's figures, with those read now from the router, the guard and the
        local engines."""
        self.guard.count_ended()  # the requests that ended since the guard's last batch
        shot = self.metrics.snapshot()
        now = time.monotonic()
        upstream: dict[tuple[str, ...], float] = {}
        state: dict[tuple[str, ...], float] = {}
        in_flight: dict[tuple[str, ...], float] = {}
        seen: set[str] = set()
        for model in self.router.models.values():
            for d in model.deployments:
                if d.name in seen:
                    continue
                seen.add(d.name)
                labels = (d.provider.name, d.name)
                upstream[(*labels, "ok", "")] = float(d.successes)
                for kind, count in d.errors.items():
                    upstream[(*labels, "error", kind)] = float(count)
                state[labels] = 1.0 if d.cooling(now) else 0.0
                in_flight[labels] = float(d.in_flight)
        router = self.router
        shot.counters["upstream_requests"] = upstream
        shot.counters["fallbacks"] = router.fallbacks.values()
        shot.counters["retries"] = router.retries.values()
        shot.histograms["upstream_duration_seconds"] = {
            k: list(v) for k, v in router.upstream_seconds.series.items()
        }
        shot.gauges["deployment_state"] = state
        shot.gauges["deployment_in_flight"] = in_flight
        requests: dict[tuple[str, ...], float] = {}
        for record in list(self.guard.active):
            if record.public_model:
                provider = (record.deployment or "").partition("/")[0]
                key = (record.public_model, provider)
                requests[key] = requests.get(key, 0.0) + 1
        shot.gauges["requests_in_flight"] = requests
        self._pools(shot)
        await self._engines(shot)
        return shot

    def _pools(self, shot: Snapshot) -> None:
        """The remote providers' connection pools."""
        connections: dict[tuple[str, ...], float] = {}
        waiting: dict[tuple[str, ...], float] = {}
        waits: dict[tuple[str, ...], float] = {}
        wait_seconds: dict[tuple[str, ...], float] = {}
        refused: dict[tuple[str, ...], float] = {}
        for provider in self.providers:
            pool = provider.pool()
            if pool is None:
                continue
            name = (provider.name,)
            connections[(provider.name, "in_use")] = float(pool.in_use)
            connections[(provider.name, "idle")] = float(max(0, pool.open - pool.in_use))
            waiting[name] = float(pool.waiting)
            waits[name] = float(pool.waited)
            wait_seconds[name] = pool.wait_seconds
            refused[name] = float(pool.refused)
        shot.gauges["upstream_connections"] = connections
        shot.gauges["upstream_pool_waiting"] = waiting
        shot.counters["upstream_pool_waits"] = waits
        shot.counters["upstream_pool_wait_seconds"] = wait_seconds
        shot.counters["upstream_pool_refused"] = refused

    async def _engines(self, shot: Snapshot) -> None:
        """The local engines' own figures (llama.cpp's metrics), for loaded models."""
        from interference.providers.local import LocalProvider

        loop = asyncio.get_running_loop()
        for provider in self.providers:
            if not isinstance(provider, LocalProvider):
                continue
            try:
                text = await asyncio.wait_for(
                    loop.run_in_executor(None, provider.engine.metrics_text), 2.0
                )
            except Exception:  # an engine that does not answer: its figures are left out
                logger.debug("no metrics from %s", provider.name, exc_info=True)
                continue
            if text is None:
                continue
            values = parse_engine(text)
            model = (provider.model_id,)
            for kind, name, source in _ENGINE_FIGURES:
                if source in values:
                    getattr(shot, kind).setdefault(name, {})[model] = float(values[source])

    # --- workers

    async def whole(self) -> tuple[Snapshot, dict[str, Any]]:
        """The figures of the whole server: this process's, and the other workers' files."""
        shot = await self.snapshot()
        raws = [self.recent.raw()]
        if self.directory is not None:
            for path in self.directory.glob("*.json"):
                if path == self._file:
                    continue
                try:
                    data = orjson.loads(path.read_bytes())
                except (OSError, orjson.JSONDecodeError):
                    continue  # being replaced, or gone
                alive = _alive(int(path.stem)) if path.stem.isdigit() else False
                shot.add(Snapshot.from_json(data["metrics"]), gauges=alive)
                if alive:
                    raws.append(data["recent"])
        return shot, recent_module.merge(raws)

    async def run(self) -> None:
        """Write this worker's figures every :data:`WRITE_EVERY_S` (with ``--workers``)."""
        if self._file is None:
            return
        while True:
            await self.write()
            await asyncio.sleep(WRITE_EVERY_S)

    async def write(self) -> None:
        if self._file is None:
            return
        shot = await self.snapshot()
        body = orjson.dumps({"metrics": shot.to_json(), "recent": self.recent.raw()})
        partial = self._file.with_suffix(".tmp")
        try:
            partial.write_bytes(body)
            partial.replace(self._file)  # atomic: a reader sees the old or the new
        except OSError:
            logger.warning("cannot write this worker's metrics to %s", self._file, exc_info=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _admin_only(request: Request) -> None:
    """Figures of every key: the master key (or a configured key, without one), not a
    virtual key."""
    record = record_of(request.scope)
    guard: RequestGuard = request.app.state.interference.guard
    if record.virtual_key is not None or (guard.master and not record.admin):
        raise PermissionDeniedError(
            "These figures cover every key: ask with the master key.", code="admin_only"
        )


async def metrics_route(request: Request) -> Response:
    _admin_only(request)
    telemetry: Telemetry = request.app.state.interference.telemetry
    shot, _ = await telemetry.whole()
    labels = {name: family.labels for name, family in telemetry.metrics.families().items()}
    body = render(shot, {"version": __version__}, labels)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def recent_route(request: Request) -> Response:
    _admin_only(request)
    telemetry: Telemetry = request.app.state.interference.telemetry
    _, raw = await telemetry.whole()
    body = orjson.dumps(recent_module.series(raw, time.time()))
    return Response(body, media_type="application/json")


def telemetry_routes() -> list[Route]:
    return [
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/v1/status/recent", recent_route, methods=["GET"]),
    ]
