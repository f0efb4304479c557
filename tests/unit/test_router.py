from __future__ import annotations

import pytest

from interference.config import ConfigError
from interference.errors import ModelNotFoundError
from interference.router import Router
from tests.fakes import FakeProvider


def make_router() -> tuple[Router, FakeProvider, FakeProvider]:
    a, b = FakeProvider("a", "model-a"), FakeProvider("b", "model-b")
    return Router([a, b], {"gpt-4": "model-a", "Fast": "model-b"}), a, b


def test_resolves_ids_aliases_and_folded_case() -> None:
    router, a, b = make_router()
    assert router.resolve("model-a").provider is a
    assert router.resolve("gpt-4").provider is a
    route = router.resolve("GPT-4")
    assert route.provider is a
    assert route.requested == "GPT-4"
    assert route.model.id == "model-a"
    assert router.resolve("fast").provider is b


def test_unknown_model() -> None:
    router, _, _ = make_router()
    with pytest.raises(ModelNotFoundError) as info:
        router.resolve("gpt-9")
    assert info.value.code == "model_not_found"
    assert "gpt-9" in info.value.message


def test_cards_list_models_then_aliases() -> None:
    router, _, _ = make_router()
    assert [c.id for c in router.cards()] == ["model-a", "model-b", "gpt-4", "Fast"]


def test_alias_to_an_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"aliases\.x"):
        Router([FakeProvider()], {"x": "missing"})
