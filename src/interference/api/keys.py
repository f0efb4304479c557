"""API keys as the guard checks them: the key a request presents (``Authorization: Bearer KEY``
or ``x-api-key: KEY``) against the server's keys, kept only as SHA-256 digests and compared in
constant time (every key, no early exit), so neither the memory nor the timing tells a key."""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import Scope


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def presented_key(scope: Scope) -> str | None:
    """The key a request carries: ``Authorization: Bearer KEY`` or ``x-api-key: KEY``."""
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


class KeyRing:
    """The server's keys, as digests."""

    def __init__(self, keys: list[str]) -> None:
        self._digests = [key_digest(k) for k in keys]

    def __bool__(self) -> bool:
        """Whether the server has keys (then every non-public request needs one)."""
        return bool(self._digests)

    def accepts(self, key: str | None) -> bool:
        """Whether ``key`` is one of the server's keys (constant time in the key's content)."""
        if key is None:
            return False
        digest = key_digest(key)
        found = False
        for known in self._digests:  # every key compared, no early exit
            found |= hmac.compare_digest(digest, known)
        return found

    @staticmethod
    def client_label(key: str) -> str:
        """How log lines name a keyed client: 12 hex digits of its key's digest."""
        return KeyRing.digest_label(key_digest(key).hex())

    @staticmethod
    def digest_label(hex_digest: str) -> str:
        """:meth:`client_label` of a key whose SHA-256 digest (hex) is known already."""
        return f"key:{hex_digest[:12]}"
