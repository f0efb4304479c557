"""Model routing: which provider answers a model name.

A public model id is served by a provider; an alias is another name for a public id. The
router resolves the name a client sent (exact first, then case-insensitively) and keeps that
name so responses can echo it.
"""

from __future__ import annotations

from dataclasses import dataclass

from interference.api.wire import ModelCard
from interference.config import ConfigError
from interference.errors import ModelNotFoundError
from interference.providers.base import Provider, ServedModel


@dataclass(frozen=True)
class Route:
    """The answer to "who serves this name?"."""

    requested: str  # the name the client used, echoed in responses
    model: ServedModel
    provider: Provider


class Router:
    def __init__(self, providers: list[Provider], aliases: dict[str, str]) -> None:
        self.providers = providers
        self._models: dict[str, tuple[ServedModel, Provider]] = {}
        for provider in providers:
            for served in provider.models():
                self._models.setdefault(served.id, (served, provider))
        self._aliases: dict[str, str] = {}
        for alias, target in aliases.items():
            if target not in self._models:
                raise ConfigError(
                    f"aliases.{alias}: `{target}` is not a configured model "
                    f"(known: {', '.join(sorted(self._models))})"
                )
            if alias not in self._models:
                self._aliases[alias] = target
        self._folded = {name.lower(): name for name in [*self._aliases, *self._models]}

    def resolve(self, name: str) -> Route:
        key = (
            name
            if name in self._models or name in self._aliases
            else self._folded.get(name.lower())
        )
        if key is None:
            raise ModelNotFoundError(name)
        served, provider = self._models[self._aliases.get(key, key)]
        return Route(requested=name, model=served, provider=provider)

    @property
    def model_ids(self) -> list[str]:
        return list(self._models)

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def cards(self) -> list[ModelCard]:
        """Every public name (models, then aliases) as a ``Model`` object."""
        cards = [
            ModelCard(id=served.id, created=served.created, owned_by=served.owned_by)
            for served, _ in self._models.values()
        ]
        for alias, target in self._aliases.items():
            served, _ = self._models[target]
            cards.append(ModelCard(id=alias, created=served.created, owned_by=served.owned_by))
        return cards

    def card(self, name: str) -> ModelCard:
        route = self.resolve(name)
        served = route.model
        return ModelCard(id=name, created=served.created, owned_by=served.owned_by)
