"""Sampling defaults of a local model (``providers.<name>.sampling``), applied when a request
omits a value."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SamplerName = Literal[
    "penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"
]


class SamplingDefaults(BaseModel):
    """Sampling values applied when the request omits them; ``None`` means the engine's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0, le=2, description="randomness")
    top_p: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="nucleus sampling: the likeliest tokens up to this mass",
    )
    top_k: int | None = Field(
        default=None, ge=0, description="the k likeliest tokens only (0: all)"
    )
    min_p: float | None = Field(
        default=None, ge=0, le=1, description="drop tokens below this share of the likeliest one's"
    )
    typical_p: float | None = Field(
        default=None, ge=0, le=1, description="locally typical sampling (1: off)"
    )
    repeat_penalty: float | None = Field(
        default=None, gt=0, le=10, description="penalty on tokens seen in the last repeat_last_n"
    )
    repeat_last_n: int | None = Field(
        default=None, ge=-1, description="tokens the repeat penalty looks back over (-1: all)"
    )
    presence_penalty: float | None = Field(
        default=None, ge=-2, le=2, description="penalty on any token already present"
    )
    frequency_penalty: float | None = Field(
        default=None, ge=-2, le=2, description="penalty growing with a token's count so far"
    )
    dry_multiplier: float | None = Field(
        default=None,
        ge=0,
        le=10,
        description="DRY: strength of the repeated-sequence penalty (0: off)",
    )
    dry_base: float | None = Field(
        default=None, ge=1, le=10, description="DRY: growth of the penalty with the repeat's length"
    )
    dry_allowed_length: int | None = Field(
        default=None, ge=0, description="DRY: repeats this long go unpenalised"
    )
    samplers: tuple[SamplerName, ...] | None = Field(
        default=None, description="llama.cpp's sampler order (default: the engine's own)"
    )

    def merged(self, override: SamplingDefaults | None) -> SamplingDefaults:
        """These defaults with every value that ``override`` sets replaced."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))

    def values(self) -> dict[str, Any]:
        """The values that are set, by request field name."""
        return self.model_dump(exclude_none=True)
