"""Wire models of what shapes a chat answer: ``tools``, ``tool_choice`` and ``response_format``.

They mirror the spec's ``ChatCompletionTool`` / ``CustomToolChatCompletions``,
``ChatCompletionToolChoiceOption`` and ``ResponseFormatText`` / ``ResponseFormatJsonObject`` /
``ResponseFormatJsonSchema`` (https://platform.openai.com/docs/api-reference/chat/create), so that
a malformed value is a 400 naming its ``param`` here, before any provider or the engine sees it.
Unknown fields inside them are kept (``extra="allow"``): a pass-through upstream gets them.

The JSON schemas inside (a function's ``parameters``, ``json_schema.schema``) are checked for
the *shape* of every keyword a schema-to-grammar converter reads (``type`` a type name or a
list of them, ``properties`` an object of schemas, ``minItems`` a count...), iteratively, so a
schema nested to the JSON parser's depth limit cannot exhaust Python's stack.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_REQUEST = ConfigDict(strict=True, extra="allow")

#: OpenAI's rule for function, custom tool and schema names
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]

# --- JSON Schema shapes ---------------------------------------------------------------------

_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
_SCHEMA = ("additionalProperties", "additionalItems", "contains", "not", "if", "then", "else",
           "propertyNames", "unevaluatedItems", "unevaluatedProperties")  # fmt: skip
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_STRINGS = ("$ref", "format", "pattern", "title", "description", "$id", "$schema", "$anchor",
            "$comment", "contentEncoding", "contentMediaType")  # fmt: skip
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
           "minContains", "maxContains")  # fmt: skip
_NUMBERS = ("minimum", "maximum", "multipleOf")
#: JSON Schema draft 4 wrote these as booleans beside minimum/maximum; later drafts as numbers
_NUMBERS_OR_FLAGS = ("exclusiveMinimum", "exclusiveMaximum")
#: deeper than any real schema, shallow enough for every converter's recursion
MAX_SCHEMA_DEPTH = 64


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _where(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "the top level"


def schema_problem(schema: Any) -> str | None:
    """What is wrong with the shape of JSON schema ``schema``, or None when nothing is."""
    pending: list[tuple[Any, tuple[str | int, ...], int]] = [(schema, (), 0)]
    while pending:
        node, path, depth = pending.pop()
        where = _where(path)
        if isinstance(node, bool):
            continue  # true / false: every value, or none
        if not isinstance(node, dict):
            return f"a schema must be an object (at {where})"
        if depth > MAX_SCHEMA_DEPTH:
            return f"the schema is nested more than {MAX_SCHEMA_DEPTH} levels deep"
        deeper = depth + 1
        kind = node.get("type")
        if kind is not None:
            kinds = kind if isinstance(kind, list) else [kind]
            if not kinds or any(k not in _TYPES for k in kinds):
                return (
                    f"`type` must be one of {', '.join(_TYPES)} or a list of them "
                    f"(at {where}), not {kind!r}"
                )
        for key in _STRINGS:
            if key in node and not isinstance(node[key], str):
                return f"`{key}` must be a string (at {where})"
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return f"`$ref` must point into the same schema (`#/...`), not {ref!r} (at {where})"
        for key in _COUNTS:
            value = node.get(key)
            if key in node and not (isinstance(value, int) and not isinstance(value, bool)):
                return f"`{key}` must be an integer (at {where})"
            if isinstance(value, int) and not 0 <= value < 2**31:
                return f"`{key}` must be between 0 and 2147483647 (at {where})"
        for key in _NUMBERS:
            if key in node and not _is_number(node[key]):
                return f"`{key}` must be a number (at {where})"
        for key in _NUMBERS_OR_FLAGS:
            if key in node and not (_is_number(node[key]) or isinstance(node[key], bool)):
                return f"`{key}` must be a number (at {where})"
        if "multipleOf" in node and not node["multipleOf"] > 0:
            return f"`multipleOf` must be greater than 0 (at {where})"
        if "required" in node and not (
            isinstance(node["required"], list) and all(isinstance(r, str) for r in node["required"])
        ):
            return f"`required` must be a list of property names (at {where})"
        if "enum" in node and not isinstance(node["enum"], list):
            return f"`enum` must be a list of values (at {where})"
        if "uniqueItems" in node and not isinstance(node["uniqueItems"], bool):
            return f"`uniqueItems` must be true or false (at {where})"
        for key in _SCHEMA:
            if key in node:
                pending.append((node[key], (*path, key), deeper))
        items = node.get("items")
        if isinstance(items, list):  # draft 4's tuple form
            pending.extend((item, (*path, "items", i), deeper) for i, item in enumerate(items))
        elif "items" in node:
            pending.append((items, (*path, "items"), deeper))
        for key in _SCHEMA_LISTS:
            if key not in node:
                continue
            alternatives = node[key]
            if not isinstance(alternatives, list) or not alternatives:
                return f"`{key}` must be a non-empty list of schemas (at {where})"
            pending.extend((item, (*path, key, i), deeper) for i, item in enumerate(alternatives))
        for key in _SCHEMA_MAPS:
            if key not in node:
                continue
            members = node[key]
            if not isinstance(members, dict):
                return f"`{key}` must be an object of schemas (at {where})"
            pending.extend((item, (*path, key, name), deeper) for name, item in members.items())
    return None


def _json_schema(value: dict[str, Any]) -> dict[str, Any]:
    problem = schema_problem(value)
    if problem is not None:
        raise ValueError(f"invalid JSON schema: {problem}")
    return value


def _parameters_schema(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("type", "object") != "object":
        raise ValueError("a function's parameters must be a JSON schema of `type: object`")
    return _json_schema(value)


JsonSchema = Annotated[dict[str, Any], AfterValidator(_json_schema)]

# --- tools ----------------------------------------------------------------------------------


class FunctionDefinition(BaseModel):
    """``FunctionObject``."""

    model_config = _REQUEST
    name: Name
    description: str | None = None
    parameters: Annotated[dict[str, Any], AfterValidator(_parameters_schema)] | None = None
    strict: bool | None = None


class FunctionTool(BaseModel):
    """``ChatCompletionTool``."""

    model_config = _REQUEST
    type: Literal["function"]
    function: FunctionDefinition


class Grammar(BaseModel):
    model_config = _REQUEST
    definition: str
    syntax: Literal["lark", "regex"]


class CustomTextFormat(BaseModel):
    model_config = _REQUEST
    type: Literal["text"]


class CustomGrammarFormat(BaseModel):
    model_config = _REQUEST
    type: Literal["grammar"]
    grammar: Grammar


class CustomToolDefinition(BaseModel):
    model_config = _REQUEST
    name: Name
    description: str | None = None
    format: (
        Annotated[CustomTextFormat | CustomGrammarFormat, Field(discriminator="type")] | None
    ) = None


class CustomTool(BaseModel):
    """``CustomToolChatCompletions``: free-form input instead of JSON arguments."""

    model_config = _REQUEST
    type: Literal["custom"]
    custom: CustomToolDefinition


Tool = Annotated[FunctionTool | CustomTool, Field(discriminator="type")]

# --- tool_choice ----------------------------------------------------------------------------


class ToolName(BaseModel):
    model_config = _REQUEST
    name: Annotated[str, Field(min_length=1)]


class NamedFunctionChoice(BaseModel):
    """``ChatCompletionNamedToolChoice``."""

    model_config = _REQUEST
    type: Literal["function"]
    function: ToolName


class NamedCustomChoice(BaseModel):
    """``ChatCompletionNamedToolChoiceCustom``."""

    model_config = _REQUEST
    type: Literal["custom"]
    custom: ToolName


class AllowedTools(BaseModel):
    model_config = _REQUEST
    mode: Literal["auto", "required"]
    tools: Annotated[list[dict[str, Any]], Field(min_length=1)]

    def names(self) -> list[str]:
        """The names of the allowed tools (``{"type": ..., "<type>": {"name": ...}}`` each)."""
        names = []
        for tool in self.tools:
            inner = tool.get(tool.get("type", ""))
            name = inner.get("name") if isinstance(inner, dict) else None
            if not isinstance(name, str):
                raise ValueError(
                    'each allowed tool must be {"type": "function", "function": {"name": ...}} '
                    'or {"type": "custom", "custom": {"name": ...}}'
                )
            names.append(name)
        return names


class AllowedToolsChoice(BaseModel):
    """``ChatCompletionAllowedToolsChoice``: call only these of the declared tools."""

    model_config = _REQUEST
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


NamedChoice = Annotated[
    NamedFunctionChoice | NamedCustomChoice | AllowedToolsChoice, Field(discriminator="type")
]
ToolChoice = Literal["none", "auto", "required"] | NamedChoice


def choice_problem(choice: ToolChoice, tools: list[Tool] | None) -> str | None:
    """Why ``tool_choice`` cannot be honoured with these ``tools`` (None: it can)."""
    if choice in ("none", "auto"):
        return None  # harmless without tools, as other servers treat it
    if not tools:
        return "`tool_choice` other than `none` or `auto` needs `tools`"
    declared = {(tool.type, _tool_name(tool)) for tool in tools}
    if isinstance(choice, NamedFunctionChoice | NamedCustomChoice):
        name = (
            choice.function.name if isinstance(choice, NamedFunctionChoice) else choice.custom.name
        )
        if (choice.type, name) not in declared:
            return f"`tool_choice` names the {choice.type} `{name}`, which is not among `tools`"
    elif isinstance(choice, AllowedToolsChoice):
        known = {name for _, name in declared}
        missing = [name for name in choice.allowed_tools.names() if name not in known]
        if missing:
            return f"`tool_choice.allowed_tools` names tools not among `tools`: {missing}"
    return None


def _tool_name(tool: Tool) -> str:
    return tool.function.name if isinstance(tool, FunctionTool) else tool.custom.name


# --- response_format ------------------------------------------------------------------------


class TextFormat(BaseModel):
    """``ResponseFormatText``."""

    model_config = _REQUEST
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    """``ResponseFormatJsonObject``, with llama.cpp's and vLLM's optional ``schema``."""

    model_config = _REQUEST
    type: Literal["json_object"]
    schema_: JsonSchema | None = Field(default=None, alias="schema")


class JsonSchemaSpec(BaseModel):
    model_config = _REQUEST
    name: Name
    description: str | None = None
    schema_: JsonSchema | None = Field(default=None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(BaseModel):
    """``ResponseFormatJsonSchema``: Structured Outputs."""

    model_config = _REQUEST
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]
