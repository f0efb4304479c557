"""``create_app(config)``: the ASGI application with explicit state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.applications import Starlette

from interference.api.errors import EXCEPTION_HANDLERS
from interference.api.routes import AppState, routes
from interference.config import OPENAI_ALIASES, Config
from interference.engine import resolve_model
from interference.providers import LocalProvider, Provider
from interference.router import Router

logger = logging.getLogger(__name__)


def build_providers(config: Config) -> list[Provider]:
    """The providers a configuration declares (model files are resolved now, loaded later)."""
    providers: list[Provider] = []
    for i, model in enumerate(config.models):
        model_file = resolve_model(model.model)
        name = f"local:{model.id or model_file.id}"
        providers.append(LocalProvider(name, model_file, model))
        logger.debug("model %d: %s from %s", i, name, model_file.path)
    return providers


def build_aliases(config: Config, providers: Sequence[Provider]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    first = providers[0].models()[0].id if providers else None
    if config.openai_aliases and first is not None:
        aliases.update(dict.fromkeys(OPENAI_ALIASES, first))
    for model, provider in zip(config.models, providers, strict=False):
        served = provider.models()[0].id
        aliases.update(dict.fromkeys(model.aliases, served))
    aliases.update(config.aliases)
    return aliases


def create_app(config: Config, providers: Sequence[Provider] | None = None) -> Starlette:
    """The interference ASGI app for ``config``.

    ``providers`` replaces the ones the configuration declares (tests pass fakes here).
    Providers are started by the app's lifespan and closed when it ends.
    """
    provider_list = list(providers) if providers is not None else build_providers(config)
    router = Router(provider_list, build_aliases(config, provider_list))
    state = AppState(config=config, router=router, providers=provider_list)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.gather(*(p.start() for p in provider_list))
        try:
            yield
        finally:
            for provider in provider_list:
                await provider.aclose()

    handlers: Any = EXCEPTION_HANDLERS
    app = Starlette(routes=routes(), exception_handlers=handlers, lifespan=lifespan)
    app.state.interference = state
    return app
