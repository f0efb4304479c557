"""Chat messages in the shape every chat template takes, for the agent dialects' translations.

Agents send system text in the middle of a conversation (Claude Code's ``role: "system"``
reminders, Codex's ``developer`` messages after the first turn) and several user messages in a
row (an environment context, then the question). Many models' chat templates refuse both: a
system message after the first turn ("System message must be at the beginning"), or two user
turns in a row ("roles must alternate"). So the system messages before the first other message
become one system message, a later one becomes a user turn, and consecutive user turns are
joined: their text by blank lines, their other parts (images) kept in order.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def _as_parts(content: str | list[Json]) -> list[Json]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _join(previous: Json, message: Json) -> None:
    parts = _as_parts(previous["content"]) + _as_parts(message["content"])
    if all(p["type"] == "text" for p in parts):
        previous["content"] = "\n\n".join(p["text"] for p in parts if p["text"])
    else:
        previous["content"] = [p for p in parts if p["type"] != "text" or p["text"]]


def fit_for_templates(messages: list[Json]) -> list[Json]:
    """``messages`` (``system``, ``developer``, ``user``, ``assistant``, ``tool``) reshaped as
    above; the messages given are not changed."""
    out: list[Json] = []
    leading = True  # no message but system ones so far
    for given in messages:
        message = dict(given)
        if message["role"] in ("system", "developer"):
            message["role"] = "system" if leading else "user"
        else:
            leading = False
        previous = out[-1] if out else None
        if (
            previous is not None
            and message["role"] in ("system", "user")
            and previous["role"] == message["role"]
            and "content" in previous
        ):
            _join(previous, message)
        else:
            out.append(message)
    return out
