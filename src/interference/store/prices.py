"""What a request costs: tokens times the model's price (USD per million tokens).

:data:`DEFAULT_PRICES` holds the published list prices of well-known upstream model ids as of
late 2025; the configuration's ``prices`` (same shape, by upstream model id or public name)
overrides and extends them. Local models cost nothing. A model with no price costs 0, and the
log says so once per model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from interference.config import ModelPrice

logger = logging.getLogger(__name__)


def _price(input_usd: float, output_usd: float, cached_usd: float | None = None) -> ModelPrice:
    return ModelPrice(input=input_usd, output=output_usd, cached_input=cached_usd)


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-4o": _price(2.50, 10.00, 1.25),
    "gpt-4o-mini": _price(0.15, 0.60, 0.075),
    "gpt-4.1": _price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": _price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _price(0.10, 0.40, 0.025),
    "gpt-5": _price(1.25, 10.00, 0.125),
    "gpt-5-mini": _price(0.25, 2.00, 0.025),
    "gpt-5-nano": _price(0.05, 0.40, 0.005),
    "o3": _price(2.00, 8.00, 0.50),
    "o4-mini": _price(1.10, 4.40, 0.275),
    "claude-opus-4-1": _price(15.00, 75.00, 1.50),
    "claude-sonnet-4-5": _price(3.00, 15.00, 0.30),
    "claude-haiku-4-5": _price(1.00, 5.00, 0.10),
    "gemini-2.5-pro": _price(1.25, 10.00, 0.31),
    "gemini-2.5-flash": _price(0.30, 2.50, 0.075),
    "text-embedding-3-small": _price(0.02, 0.0),
    "text-embedding-3-large": _price(0.13, 0.0),
}


class PriceList:
    """The defaults, then the configuration's prices over them."""

    def __init__(self, configured: Mapping[str, ModelPrice]) -> None:
        self._prices = {**DEFAULT_PRICES, **configured}
        self._unpriced: set[str] = set()

    def price(self, names: tuple[str, ...]) -> ModelPrice | None:
        """The price of the first of ``names`` that has one."""
        return next((self._prices[n] for n in names if n in self._prices), None)

    def rates(self, names: tuple[str, ...]) -> tuple[float, float, float]:
        """USD per million (input, cached input, output) tokens at the price of the first of
        ``names`` (upstream id, public name) that has one; zeros when none has (said once)."""
        for name in names:
            price = self._prices.get(name)
            if price is not None:
                cached_rate = price.input if price.cached_input is None else price.cached_input
                return price.input, cached_rate, price.output
        if names and names[0] not in self._unpriced:
            self._unpriced.add(names[0])
            logger.warning("no price for %s: its requests cost 0 (set `prices`)", names[0])
        return 0.0, 0.0, 0.0


def token_cost(
    rates: tuple[float, float, float], prompt: int, cached: int, completion: int
) -> float:
    """USD for the tokens at ``rates`` (:meth:`PriceList.rates`); ``cached`` is a part of
    ``prompt``."""
    fresh = max(0, prompt - cached)
    return (fresh * rates[0] + cached * rates[1] + completion * rates[2]) / 1_000_000
