"""``create_app(config)``: the ASGI application with explicit state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from interference.api.errors import EXCEPTION_HANDLERS
from interference.api.guard import RequestGuard
from interference.api.key_admin import key_routes
from interference.api.response_store import ResponseStore
from interference.api.routes import routes
from interference.api.state import AppState
from interference.config import Config
from interference.providers import Provider, build_provider
from interference.routing.router import Router
from interference.routing.table import ModelTable
from interference.store.database import Database, default_path
from interference.store.keys import KeyStore

logger = logging.getLogger(__name__)

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
    keys = _key_store(config) if master else None
    guard = RequestGuard(config.server.keys(), config.server.limits, master, keys)
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
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.gather(*(p.start() for p in provider_list))
        guard.start()
        refresher = None
        if keys is not None:
            refresher = asyncio.create_task(_refresh_keys(keys, config.storage.refresh_s))
        try:
            yield
        finally:
            await guard.stop()
            for provider in provider_list:
                await provider.aclose()
            if refresher is not None and keys is not None:
                refresher.cancel()
                await keys.refresh()  # when each key was last used
                keys.database.close()

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
        routes=[*routes(), *key_routes()],
        exception_handlers=handlers,
        lifespan=lifespan,
        middleware=middleware,
    )
    app.state.interference = state
    return app


def _key_store(config: Config) -> KeyStore:
    """The virtual keys, read from the database (created and migrated if need be)."""
    path = Path(config.storage.path).expanduser() if config.storage.path else default_path()
    database = Database(path)
    database.open()
    store = KeyStore(database)
    store.load()
    logger.info("virtual keys: %d in %s", len(store), path)
    return store


async def _refresh_keys(keys: KeyStore, every: float) -> None:
    """Re-read the keys now and then: changes made by other processes take effect."""
    while True:
        await asyncio.sleep(every)
        try:
            await keys.refresh()
        except Exception:  # a locked or broken file: keep the keys known, say so
            logger.exception("cannot re-read the virtual keys")
