"""Tools as the translating providers (local, Anthropic, Gemini) see them: functions only, and
``tool_choice`` resolved to a mode, the one function it names, and the functions callable.

``allowed_tools`` (call only these of the declared tools) becomes the declared functions
narrowed to those, which every target can express; custom tools (free-form input) have no
equivalent there and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from interference.errors import InvalidRequestError
from interference.wire.chat import ChatCompletionRequest
from interference.wire.tools import (
    AllowedToolsChoice,
    CustomTool,
    FunctionDefinition,
    NamedFunctionChoice,
)


@dataclass(frozen=True)
class ToolUse:
    #: the functions the model may call (``allowed_tools`` applied)
    functions: list[FunctionDefinition]
    mode: Literal["none", "auto", "required"]
    #: the function ``tool_choice`` names, if it names one
    named: str | None = None

    @property
    def callable(self) -> list[FunctionDefinition]:
        """The functions a call may name: the named one only, when ``tool_choice`` names one."""
        return [f for f in self.functions if self.named in (None, f.name)]


def tool_use(request: ChatCompletionRequest, target: str) -> ToolUse | None:
    """The request's tools for ``target`` (a phrase naming the provider), None without tools."""
    if not request.tools:
        return None
    functions = []
    for i, tool in enumerate(request.tools):
        if isinstance(tool, CustomTool):
            raise InvalidRequestError(
                f"Custom tools are not supported by {target}; declare a `function` tool.",
                param=f"tools[{i}].type",
                code="unsupported",
            )
        functions.append(tool.function)
    choice = request.tool_choice or "auto"
    if isinstance(choice, str):
        return ToolUse(functions, choice)
    if isinstance(choice, NamedFunctionChoice):
        return ToolUse(functions, "required", choice.function.name)
    if isinstance(choice, AllowedToolsChoice):
        allowed = set(choice.allowed_tools.names())
        return ToolUse([f for f in functions if f.name in allowed], choice.allowed_tools.mode)
    # a named custom tool: the wire checked it is declared, and declared ones are refused above
    raise AssertionError(f"unexpected tool_choice {choice!r}")
