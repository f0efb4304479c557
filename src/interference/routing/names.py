"""The public names of the configured models: each model's own name, the aliases (exact, or
patterns with fnmatch's wildcards), matched case-insensitively when nothing matches exactly;
and the ``Model`` cards ``GET /v1/models`` lists."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

from interference.config import ConfigError
from interference.errors import ModelNotFoundError
from interference.providers.base import Endpoint
from interference.routing.table import PublicModel
from interference.wire.models import ModelCard

#: what makes an alias a pattern (fnmatch's wildcards)
_PATTERN = re.compile(r"[*?\[]")


class ModelNames:
    """The names a request may give a model, checked against the configuration."""

    def __init__(self, models: dict[str, PublicModel], aliases: dict[str, str]) -> None:
        self.models = models
        self._aliases: dict[str, str] = {}
        self._patterns: list[tuple[str, str]] = []  # (lower-cased pattern, model), in order
        for alias, target in aliases.items():
            if target not in models:
                raise ConfigError(
                    f"aliases.{alias}: `{target}` is not a configured model "
                    f"(known: {', '.join(sorted(models))})"
                )
            if _PATTERN.search(alias):
                self._patterns.append((alias.lower(), target))
            elif alias not in models:
                self._aliases[alias] = target
        for model in models.values():
            for name in model.fallbacks:
                if name not in models and name not in self._aliases:
                    raise ConfigError(f"models.{model.name}.fallbacks: `{name}` is not a model")
        self._folded = {name.lower(): name for name in [*self._aliases, *models]}

    def resolve(self, name: str) -> PublicModel:
        if name in self.models:
            return self.models[name]
        key = name if name in self._aliases else self._folded.get(name.lower())
        if key is not None:
            return self.models[self._aliases.get(key, key)]
        folded = name.lower()
        for pattern, target in self._patterns:
            if fnmatchcase(folded, pattern):
                return self.models[target]
        raise ModelNotFoundError(name)

    @property
    def model_ids(self) -> list[str]:
        return list(self.models)

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    @property
    def alias_patterns(self) -> dict[str, str]:
        """Patterns (lower-cased) and the model each names, in the order they are tried."""
        return dict(self._patterns)

    def serving(self, endpoint: Endpoint) -> list[str]:
        """The models with a deployment that serves ``endpoint``, then their aliases."""
        names = [
            m.name
            for m in self.models.values()
            if any(m.serves(d, endpoint) for d in m.deployments)
        ]
        return names + [alias for alias, target in self._aliases.items() if target in names]

    def cards(self) -> list[ModelCard]:
        """Every public name (models, then aliases) as a ``Model`` object."""
        cards = [
            ModelCard(id=m.name, created=m.created, owned_by=m.owned_by)
            for m in self.models.values()
        ]
        for alias, target in self._aliases.items():
            model = self.models[target]
            cards.append(ModelCard(id=alias, created=model.created, owned_by=model.owned_by))
        return cards

    def card(self, name: str) -> ModelCard:
        model = self.resolve(name)
        return ModelCard(id=name, created=model.created, owned_by=model.owned_by)
