"""Sampling defaults: the values a request gets for the sampling fields it leaves out.

They are data. Each known model has its own table (tuned by ``bench/sampling_defaults.py``);
a configuration may override any value per model, and every request may override them again.
Field names are those of the chat request (OpenAI names plus llama.cpp's extensions).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SamplerName = Literal[
    "penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"
]
#: top_k first: the repetition penalties and DRY then look at 40 candidates, not the whole
#: vocabulary (49,152 tokens for SmolLM2): 1.2x the 8-stream throughput (bench/README.md)
TOP_K_FIRST: tuple[SamplerName, ...] = (
    "top_k",
    "penalties",
    "dry",
    "top_p",
    "min_p",
    "temperature",
)


class SamplingDefaults(BaseModel):
    """Sampling values applied when the request omits them; ``None`` means the engine's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    typical_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, gt=0, le=10)
    repeat_last_n: int | None = Field(default=None, ge=-1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    dry_multiplier: float | None = Field(default=None, ge=0, le=10)
    dry_base: float | None = Field(default=None, ge=1, le=10)
    dry_allowed_length: int | None = Field(default=None, ge=0)
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


#: For a GGUF we know nothing about: llama.cpp's own choices with a mild repetition guard.
GENERIC = SamplingDefaults(temperature=0.8, top_p=0.95, top_k=40, min_p=0.05, repeat_penalty=1.05)

#: SmolLM2-135M-Instruct loops until its context is full with the engine's defaults. These
#: values come from ``bench/sampling_defaults.py`` (see bench/README.md for the figures).
SMOLLM2_135M = SamplingDefaults(
    temperature=0.3,
    top_p=0.9,
    top_k=40,
    min_p=0.05,
    repeat_penalty=1.15,
    repeat_last_n=256,
    dry_multiplier=0.8,
    dry_base=1.75,
    dry_allowed_length=2,
    samplers=TOP_K_FIRST,
)
