"""OpenAI's Responses dialect: ``POST /v1/responses`` (https://platform.openai.com/docs/api-reference/responses),
as the gateway reads the requests.

Codex, the agents SDK and the openai SDK send more than a chat server can use: ``reasoning``,
``include``, ``prompt_cache_key``, ``client_metadata``, ``service_tier``, tools only OpenAI runs.
So the request is read tolerantly: unknown fields are ignored, and ``input`` items and tools stay
plain JSON here, each checked by the translation when it is used (a refusal names its place,
``input.3.call_id``). What is checked here are the fields whose type the gateway relies on.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

_TOLERANT = ConfigDict(strict=True, extra="ignore")


class ResponsesRequest(BaseModel):
    model_config = _TOLERANT

    model: Annotated[str, Field(min_length=1)]
    #: a string (one user message) or input items; Codex probes with an empty one
    input: str | list[dict[str, Any]] = ""
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    store: bool | None = None
    previous_response_id: Annotated[str, Field(min_length=1)] | None = None
    stream: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: str | None = None
