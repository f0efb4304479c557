"""``create_app(config)``: the ASGI application with explicit state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from interference.api.accounting import Accounting
from interference.api.errors import EXCEPTION_HANDLERS
from interference.api.guard import RequestGuard
from interference.api.key_admin import key_routes
from interference.api.ollama import ollama_routes
from interference.api.response_store import ResponseStore
from interference.api.routes import routes
from interference.api.state import AppState
from interference.api.telemetry import Telemetry, telemetry_routes
from interference.config import Config
from interference.providers import Provider, build_provider
from interference.routing.router import Router
from interference.routing.table import ModelTable
from interference.telemetry.tracing import make_tracer

#: response headers a browser page may read (CORS)
EXPOSED_HEADERS = ["x-request-id", "x-interference-deployment", "x-interference-attempts"]


def create_app(config: Config, providers: Sequence[Provider] | None = None) -> Starlette:
    """The interference ASGI app for ``config``.

    ``providers`` replaces the ones the configuration declares (tests pass fakes here).
    Providers are started by the app's lifespan and closed when it ends.
    """
    if providers is None:
        providers = [build_provider(name, entry) for name, entry in config.providers.items()]
    provider_list = list(providers)
    table = ModelTable.from_config(config, provider_list)
    router = Router(table.models, table.aliases, provider_list, config.routing)
    master = config.server.master()
    accounting = Accounting(config) if master else None
    keys = accounting.keys if accounting is not None else None
    guard = RequestGuard(config.server.keys(), config.server.limits, master, keys)
    if accounting is not None:
        guard.on_finished = accounting.record
        guard.charge = accounting.charge
        guard.counters = accounting.counters
        accounting.count_ended = guard.count_ended
    telemetry = Telemetry(router, guard, provider_list, config.metrics)
    if config.metrics.enabled:
        guard.telemetry = telemetry.finished
    guard.tracer = router.tracer = tracer = make_tracer(config.telemetry)  # None: no traces
    stored = config.server.response_store
    responses = (
        ResponseStore(stored.ttl_s, int(stored.max_mib * 1024 * 1024)) if stored.enabled else None
    )
    state = AppState(
        config=config,
        router=router,
        providers=provider_list,
        guard=guard,
        responses=responses,
        keys=keys,
        accounting=accounting,
        telemetry=telemetry,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.gather(*(p.start() for p in provider_list))
        guard.start()
        syncer = asyncio.create_task(accounting.run()) if accounting is not None else None
        writer = asyncio.create_task(telemetry.run())  # with --workers: for the others' scrapes
        try:
            yield
        finally:
            writer.cancel()
            await telemetry.write()  # this worker's last figures stay in the sum
            await guard.stop()
            for provider in provider_list:
                await provider.aclose()
            if syncer is not None and accounting is not None:
                syncer.cancel()
                await accounting.close()  # the last usage rows, when each key was last used
            if tracer is not None:
                await asyncio.to_thread(tracer.shutdown)  # the spans not yet sent

    middleware = [Middleware(guard.wrap)]
    if config.server.cors_origins:  # outermost: refusals carry CORS headers too
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=config.server.cors_origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=EXPOSED_HEADERS,
                max_age=600,
            ),
        )
    handlers: Any = EXCEPTION_HANDLERS
    app = Starlette(
        routes=[*routes(), *key_routes(), *telemetry_routes(), *ollama_routes()],
        exception_handlers=handlers,
        lifespan=lifespan,
        middleware=middleware,
    )
    app.state.interference = state
    return app
