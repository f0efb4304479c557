"""Chat chunks in, the Responses event stream out (in the order that
:mod:`interference.api.responses_output` describes)."""

from __future__ import annotations

from typing import Any

import orjson

from interference.api.responses_output import (
    call_item,
    finished,
    message_item,
    new_id,
    reasoning_item,
)
from interference.api.responses_translation import ToolNames

Json = dict[str, Any]


class ResponseEvents:
    """The events of one streamed response; ``response`` is the object they describe."""

    def __init__(self, response: Json, names: ToolNames) -> None:
        self.response = response
        self.names = names
        self.sequence = 0
        self.item: Json | None = None  # the open output item
        self.kind = ""  # of the open item: "reasoning", "message", "call:<tool call index>"
        self.text = ""  # the open item's text or arguments so far
        self._chat_name = ""  # the open tool call's function name, as the chat side has it
        self.finish: str | None = None
        self.usage: Json | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def start(self) -> bytes:
        snapshot = dict(self.response)
        return self._event("response.created", response=snapshot) + self._event(
            "response.in_progress", response=snapshot
        )

    @property
    def _index(self) -> int:
        return len(self.response["output"]) - 1

    def _open(self, kind: str, item: Json) -> bytes:
        out = self._close()
        self.response["output"].append(item)
        self.item, self.kind, self.text = item, kind, ""
        out += self._event("response.output_item.added", output_index=self._index, item=item)
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._where("response.content_part.added", content_index=0, part=part)
        return out

    def _where(self, kind: str, **fields: Any) -> bytes:
        assert self.item is not None
        return self._event(kind, item_id=self.item["id"], output_index=self._index, **fields)

    def _close(self) -> bytes:
        item = self.item
        if item is None:
            return b""
        out = b""
        if self.kind == "message":
            part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
            out += self._where(
                "response.output_text.done", content_index=0, text=self.text, logprobs=[]
            )
            out += self._where("response.content_part.done", content_index=0, part=part)
            done = message_item(self.text)
        elif self.kind == "reasoning":
            out += self._where("response.reasoning_text.done", content_index=0, text=self.text)
            done = reasoning_item(self.text)
        else:
            done = call_item(item["call_id"], self._chat_name, self.text, self.names, "completed")
            if done["type"] == "function_call":
                out += self._where(
                    "response.function_call_arguments.done", name=done["name"], arguments=self.text
                )
            else:
                out += self._where("response.custom_tool_call_input.done", input=done["input"])
        done["id"] = item["id"]
        self.response["output"][self._index] = done
        out += self._event("response.output_item.done", output_index=self._index, item=done)
        self.item, self.kind, self.text = None, "", ""
        return out

    def _calls(self, calls: list[Json]) -> bytes:
        out = b""
        for call in calls:
            kind = f"call:{call.get('index', 0)}"
            function = call.get("function") or {}
            if self.kind != kind:
                self._chat_name = function.get("name") or ""
                call_id = call.get("id") or new_id("call")
                item = call_item(call_id, self._chat_name, "", self.names, "in_progress")
                out += self._open(kind, item)
            arguments = function.get("arguments")
            if arguments:
                self.text += arguments
                if self.item is not None and self.item["type"] == "function_call":
                    out += self._where("response.function_call_arguments.delta", delta=arguments)
        return out

    def feed(self, chunk: Json) -> bytes:
        """The events for one chat chunk (possibly none)."""
        out = b""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # a response has one answer
            delta = choice.get("delta") or {}
            thinking = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(thinking, str) and thinking:
                if self.kind != "reasoning":
                    out += self._open("reasoning", reasoning_item("", "in_progress"))
                self.text += thinking
                out += self._where("response.reasoning_text.delta", content_index=0, delta=thinking)
            text = delta.get("content")
            if text:
                if self.kind != "message":
                    out += self._open("message", message_item("", "in_progress"))
                self.text += text
                out += self._where(
                    "response.output_text.delta", content_index=0, delta=text, logprobs=[]
                )
            if delta.get("tool_calls"):
                out += self._calls(delta["tool_calls"])
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def end(self) -> bytes:
        """The open item's end, then ``response.completed`` (or ``.incomplete``)."""
        out = self._close()
        response = finished(self.response, self.finish, self.usage)
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return out + self._event(kind, response=response)

    def failed(self, code: str, message: str) -> bytes:
        """``response.failed``: the items done so far, and the error."""
        self.item, self.kind = None, ""
        self.response["output"] = [i for i in self.response["output"] if i["status"] == "completed"]
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}
        return self._event("response.failed", response=self.response)
