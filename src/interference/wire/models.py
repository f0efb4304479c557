"""``GET /v1/models``: the model list and one model, as the spec has them."""

from __future__ import annotations

from typing import Literal

from interference.wire.common import WireModel


class ModelCard(WireModel):
    """``Model`` of ``GET /v1/models``."""

    _always = ("object",)

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(WireModel):
    """``ListModelsResponse``."""

    _always = ("object",)

    object: Literal["list"] = "list"
    data: list[ModelCard]
