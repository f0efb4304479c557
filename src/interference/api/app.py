"""``create_app(config)``: the ASGI application with explicit state."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from interference.api.errors import EXCEPTION_HANDLERS
from interference.api.guard import RequestGuard
from interference.api.routes import AppState, routes
from interference.config import (
    OPENAI_ALIASES,
    Config,
    LocalModelConfig,
    RemoteProviderConfig,
    Timeouts,
)
from interference.providers import Provider, build_provider
from interference.router import Deployment, PublicModel, Router

#: a local generation may legitimately run long (no max_tokens: until its context is full)
LOCAL_TIMEOUTS = Timeouts(first_token=300, idle=120, total=3600)
#: response headers a browser page may read (CORS)
EXPOSED_HEADERS = ["x-request-id", "x-interference-deployment", "x-interference-attempts"]


def build_models(config: Config, providers: Sequence[Provider]) -> dict[str, PublicModel]:
    """Public models: every model a provider serves by itself, then the configured ones."""
    by_name = {p.name: p for p in providers}
    now = int(time.time())
    models: dict[str, PublicModel] = {}
    for provider in providers:
        for served in provider.models():
            deployment = Deployment(
                provider, served.id, max_concurrency=provider.capacity, timeouts=LOCAL_TIMEOUTS
            )
            models[served.id] = PublicModel(
                served.id, [deployment], [], served.owned_by, served.created
            )
    for name, declared in config.models.items():
        deployments = []
        owned_by = declared.owned_by
        for item in declared.deployments:
            provider = by_name[item.provider]
            provider_config = config.providers.get(item.provider)
            own = provider.models()
            timeouts: Timeouts
            limit = item.max_concurrency
            if own:  # a provider of one model (local) serves it whatever the id says
                upstream = own[0].id
                timeouts = item.timeouts or LOCAL_TIMEOUTS
                limit = limit or provider.capacity
            else:
                upstream = item.model or name
                remote = (
                    provider_config if isinstance(provider_config, RemoteProviderConfig) else None
                )
                timeouts = item.timeouts or (remote.timeouts if remote else Timeouts())
            owned_by = owned_by or getattr(provider_config, "owned_by", None) or provider.kind
            deployments.append(Deployment(provider, upstream, item.weight, limit, timeouts))
        models[name] = PublicModel(name, deployments, declared.fallbacks, owned_by or "", now)
    return models


def build_aliases(config: Config, providers: Sequence[Provider]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    served = [m.id for p in providers for m in p.models()]
    if config.openai_aliases and served:
        aliases.update(dict.fromkeys(OPENAI_ALIASES, served[0]))
    for provider in providers:
        provider_config = config.providers.get(provider.name)
        if isinstance(provider_config, LocalModelConfig) and provider.models():
            aliases.update(dict.fromkeys(provider_config.aliases, provider.models()[0].id))
    aliases.update(config.aliases)
    return aliases


def create_app(config: Config, providers: Sequence[Provider] | None = None) -> Starlette:
    """The interference ASGI app for ``config``.

    ``providers`` replaces the ones the configuration declares (tests pass fakes here).
    Providers are started by the app's lifespan and closed when it ends.
    """
    if providers is None:
        providers = [build_provider(name, entry) for name, entry in config.providers.items()]
    provider_list = list(providers)
    router = Router(
        build_models(config, provider_list),
        build_aliases(config, provider_list),
        provider_list,
        config.routing,
    )
    guard = RequestGuard(config.server.keys(), config.server.limits)
    state = AppState(config=config, router=router, providers=provider_list, guard=guard)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.gather(*(p.start() for p in provider_list))
        guard.start()
        try:
            yield
        finally:
            await guard.stop()
            for provider in provider_list:
                await provider.aclose()

    middleware = [Middleware(guard.wrap)]
    if config.server.cors_origins:  # outermost: refusals carry CORS headers too
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=config.server.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=EXPOSED_HEADERS,
                max_age=600,
            ),
        )
    handlers: Any = EXCEPTION_HANDLERS
    app = Starlette(
        routes=routes(), exception_handlers=handlers, lifespan=lifespan, middleware=middleware
    )
    app.state.interference = state
    return app
