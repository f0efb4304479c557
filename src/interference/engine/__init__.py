"""The embedded local model: llama.cpp's engine in-process, and the catalog of GGUF files."""

from interference.config import DEFAULT_MODEL_ID
from interference.engine.catalog import ModelFile, resolve_model
from interference.engine.llama import EngineSettings, LlamaEngine
from interference.engine.sampling import SamplingDefaults

__all__ = [
    "DEFAULT_MODEL_ID",
    "EngineSettings",
    "LlamaEngine",
    "ModelFile",
    "SamplingDefaults",
    "resolve_model",
]
