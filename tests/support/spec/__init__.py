"""Validation of our JSON against the official OpenAI spec vendored beside this module.

The spec is OpenAPI 3.1, whose schemas are JSON Schema 2020-12 except for the OpenAPI 3.0
leftover ``nullable: true``; it is rewritten as a ``null`` alternative before validating.
"""

from __future__ import annotations

import base64
import functools
import json
import struct
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).with_name("openapi.json")  # provenance and licence: README.md here
DOC_URI = "urn:openai-spec"


def _nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items()}
    if out.pop("nullable", False) is True:
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _registry() -> Registry[Any]:
    document = _nullable(json.loads(SPEC_PATH.read_text()))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return Registry().with_resource(DOC_URI, resource)


def validate(instance: Any, schema_name: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` is a valid ``schema_name``."""
    schema = {"$ref": f"{DOC_URI}#/components/schemas/{schema_name}"}
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        raise errors[0]


def float_embeddings(body: Any) -> Any:
    """An embeddings answer with its base64 embeddings (``encoding_format: "base64"``: the
    little-endian float32 bytes, as OpenAI sends them) decoded into lists of floats, the only
    form the spec's ``Embedding`` models. Each must decode to whole float32 values."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return body
    data = []
    for item in body["data"]:
        if isinstance(item, dict) and isinstance(item.get("embedding"), str):
            raw = base64.b64decode(item["embedding"], validate=True)
            assert raw, "an empty embedding"
            assert len(raw) % 4 == 0, f"{len(raw)} bytes are no float32 vector"
            item = {**item, "embedding": list(struct.unpack(f"<{len(raw) // 4}f", raw))}
        data.append(item)
    return {**body, "data": data}
