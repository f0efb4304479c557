"""Sampling defaults: the values a request gets for the sampling fields it leaves out.

They are data. Each known model has its own table (tuned by ``bench/sampling_defaults.py``);
a configuration may override any value per model, and every request may override them again.
Field names are those of the chat request (OpenAI names plus llama.cpp's extensions).
"""

from __future__ import annotations

from interference.config import SamplerName, SamplingDefaults

__all__ = ["GENERIC", "SMOLLM2_135M", "TOP_K_FIRST", "SamplerName", "SamplingDefaults"]

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
