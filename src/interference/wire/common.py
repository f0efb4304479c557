"""What the wire models of every dialect share: strict request parsing, the base of answer
objects (a field is on the wire exactly when it was set), token usage and stream options.

Requests are validated in strict mode (``"0.5"`` is not a number, ``true`` is not an integer),
unknown top-level fields are ignored as OpenAI does, and each field carries the spec's ranges.
Answers are dumped with ``exclude_unset=True``, so nullable-but-required fields
(``finish_reason: null``) are set explicitly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

REQUEST = ConfigDict(strict=True, extra="ignore", frozen=False)
# Upstream responses keep fields we do not model (``service_tier``, ``annotations``...): a
# gateway passes them on.
RESPONSE = ConfigDict(extra="allow")

#: a prompt or embedding input: text, texts, token ids, or lists of token ids
Prompt = str | list[str] | list[int] | list[list[int]]


class StreamOptions(BaseModel):
    model_config = REQUEST
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class WireModel(BaseModel):
    """Base of response objects: ``to_json`` writes only the fields that were set.

    ``_always`` names the fields that are on the wire even when left at their default (the
    spec requires them: ``object``, nullable ``finish_reason``, ``refusal``...).
    """

    model_config = RESPONSE
    _always: ClassVar[tuple[str, ...]] = ()

    def model_post_init(self, context: Any, /) -> None:
        self.model_fields_set.update(self._always)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_unset=True).encode()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class AnswerMethods:
    """What completions and chunks share: the :class:`~interference.wire.chunks.Reply` and
    :class:`~interference.wire.chunks.StreamChunk` protocols (a plain mixin, no fields)."""

    if TYPE_CHECKING:
        id: str
        created: int
        model: str
        usage: Usage | None
        choices: list[Any]

        @property
        def model_fields_set(self) -> set[str]: ...

    def stamp(self, cid: str, created: int, model: str) -> None:
        self.id = cid
        self.created = created
        self.model = model
        self.model_fields_set.discard("system_fingerprint")  # the upstream's, not ours

    def token_counts(self) -> tuple[int, int] | None:
        usage = self.usage
        return None if usage is None else (usage.prompt_tokens, usage.completion_tokens)

    def completion_tokens(self) -> int | None:
        return None if self.usage is None else self.usage.completion_tokens

    def prompt_tokens(self) -> int | None:
        return None if self.usage is None else self.usage.prompt_tokens

    def cached_tokens(self) -> int | None:
        details = None if self.usage is None else self.usage.prompt_tokens_details
        return None if details is None else details.cached_tokens

    def drop_usage(self) -> None:
        self.model_fields_set.discard("usage")

    def has_choices(self) -> bool:
        return bool(self.choices)


class PromptTokensDetails(WireModel):
    cached_tokens: int = 0


class Usage(WireModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None
