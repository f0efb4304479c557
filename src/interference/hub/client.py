"""The hub's HTTP API, over the standard library's ``http.client``.

Why not the gateway's own client (:mod:`interference.upstream.fast`): that one is asyncio-only,
POSTs to one base URL and follows no redirect, by design; a download needs GETs across hosts
(the hub redirects ``resolve`` to a CDN), ``Range`` requests and a read timeout per socket read
(the stall detector), and it runs in a plain thread (``interference pull``) as well as beside
the server's event loop (``POST /api/pull``). A blocking client does all that in little code.

- ``HF_ENDPOINT`` names the hub (a mirror); all of ``refs``, ``tree`` and ``resolve`` go there.
- ``HF_TOKEN`` is sent as ``Authorization: Bearer`` only over https, and only to the endpoint's
  own host: never in clear text, never to the CDN a download is redirected to (its URL is
  signed).
- Redirects are followed (at most ``_MAX_REDIRECTS``), relative ones too.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from interference import __version__
from interference.errors import InterferenceError
from interference.hub.errors import HubAuthError, HubError, HubNotFoundError, HubUnreachableError

DEFAULT_ENDPOINT = "https://huggingface.co"
_MAX_REDIRECTS = 10
_MAX_JSON = 64 << 20  # bytes of an API answer (a tree listing of a large repository)
_MAX_PAGES = 50  # of a paginated tree listing (1,000 entries each on the hub)
_RETRIED = frozenset({429, 500, 502, 503, 504})
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


class HubAnswer:
    """A response whose body is read by the caller (then closed, or used as a context)."""

    def __init__(self, connection: http.client.HTTPConnection, url: str) -> None:
        self._connection = connection
        self.url = url
        self.response = connection.getresponse()
        self.status = self.response.status

    def header(self, name: str) -> str | None:
        return self.response.getheader(name)

    def read(self, limit: int = _MAX_JSON) -> bytes:
        body = self.response.read(limit + 1)
        if len(body) > limit:
            raise HubError(f"{self.url}: the answer exceeds {limit} bytes")
        return body

    def read_some(self, size: int) -> bytes:
        """What the socket has, up to ``size`` bytes (waits for one byte at least; b"" at the
        end). A socket read that waits past the read timeout raises ``TimeoutError``."""
        return self.response.read1(size)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> HubAnswer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class HubClient:
    """GETs against one hub endpoint (default: ``HF_ENDPOINT``, else huggingface.co)."""

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        backoff_s: float = 1.0,
    ) -> None:
        self.endpoint = (endpoint or hub_endpoint()).rstrip("/")
        parts = urllib.parse.urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HubError(f"HF_ENDPOINT must be an http(s) URL, not {self.endpoint!r}")
        self._netloc = parts.netloc
        self.token = token if token is not None else hub_token()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.backoff_s = backoff_s
        self._ssl: ssl.SSLContext | None = None

    @property
    def sends_token(self) -> bool:
        """Whether the token goes to the endpoint (it has one, and it speaks https)."""
        return bool(self.token) and self.endpoint.startswith("https://")

    def _headers_for(self, url: str, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {"user-agent": f"interference/{__version__}", "accept-encoding": "identity"}
        headers.update(extra)
        parts = urllib.parse.urlsplit(url)
        if self.token and parts.scheme == "https" and parts.netloc == self._netloc:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def _connect(self, url: str, read_timeout: float) -> http.client.HTTPConnection:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            if self._ssl is None:  # the system's authorities (SSL_CERT_FILE, SSL_CERT_DIR)
                self._ssl = ssl.create_default_context()
            connection = http.client.HTTPSConnection(
                host, parts.port, timeout=self.connect_timeout, context=self._ssl
            )
        elif parts.scheme == "http":
            connection = http.client.HTTPConnection(host, parts.port, timeout=self.connect_timeout)
        else:
            raise HubError(f"the hub redirected to {url!r}, which is not http(s)")
        try:
            connection.connect()
        except TimeoutError:
            connection.close()
            raise ConnectionError(
                f"no connection to {host} within {self.connect_timeout:g} s"
            ) from None
        except ssl.SSLCertVerificationError as exc:  # not worth retrying
            connection.close()
            raise HubUnreachableError(f"{host}: its certificate is not trusted: {exc}") from None
        if connection.sock is not None:
            connection.sock.settimeout(read_timeout)  # a read waiting longer is a stall
        return connection

    def open(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        method: str = "GET",
        read_timeout: float | None = None,
    ) -> HubAnswer:
        """Send a request, following redirects; the final answer, its body unread. Network
        failures raise ``OSError`` or ``http.client.HTTPException`` (the caller retries)."""
        for _ in range(_MAX_REDIRECTS + 1):
            connection = self._connect(url, read_timeout or self.read_timeout)
            try:
                target = urllib.parse.urlsplit(url)
                path = target.path or "/"
                if target.query:
                    path += "?" + target.query
                connection.request(method, path, headers=self._headers_for(url, headers or {}))
                answer = HubAnswer(connection, url)
            except BaseException:
                connection.close()
                raise
            location = answer.header("location")
            if answer.status in (301, 302, 303, 307, 308) and location:
                answer.close()
                url = urllib.parse.urljoin(url, location)
                continue
            return answer
        raise HubError(f"more than {_MAX_REDIRECTS} redirects from {url}")

    def url(self, path: str) -> str:
        return self.endpoint + path

    def get_json(self, path: str, missing: str) -> Any:
        """GET an API path's JSON; a paginated listing (``Link: rel="next"``) is joined.
        ``missing`` is the message of a 404."""
        url = self.url(path)
        pages: list[Any] = []
        for _ in range(_MAX_PAGES):
            body, following = self._get_page(url, missing)
            try:
                data = json.loads(body)
            except ValueError:
                raise HubError(f"{url}: the hub's answer is not JSON") from None
            if following is None and not pages:
                return data
            if not isinstance(data, list):
                raise HubError(f"{url}: a paginated answer that is not a list")
            pages.extend(data)
            if following is None:
                return pages
            url = urllib.parse.urljoin(url, following)
        raise HubError(f"{self.url(path)}: more than {_MAX_PAGES} pages")

    def _get_page(self, url: str, missing: str) -> tuple[bytes, str | None]:
        """One API answer's body and the next page's URL; 429 and 5xx retried twice."""
        for attempt in range(3):
            try:
                with self.open(url, {"accept": "application/json"}) as answer:
                    body = answer.read()
                    status, link = answer.status, answer.header("link") or ""
            except (OSError, http.client.HTTPException) as exc:
                raise HubUnreachableError(f"cannot reach {self.endpoint}: {exc}") from None
            if status == 200:
                following = _NEXT.search(link)
                return body, following.group(1) if following else None
            if status in _RETRIED and attempt < 2:
                time.sleep(self.backoff_s * 2**attempt)
                continue
            raise self.status_error(status, url, missing, body)
        raise AssertionError("unreachable")

    def status_error(
        self, status: int, url: str, missing: str, body: bytes = b""
    ) -> InterferenceError:
        """The error for an answer's status (not 2xx)."""
        if status in (401, 403):
            return HubAuthError(self.auth_hint(status))
        if status == 404:
            return HubNotFoundError(missing)
        detail = body[:200].decode("utf-8", "replace").strip()
        where = url.split("?", 1)[0]  # a CDN's URL is signed in its query: not for a log
        message = f"{where}: HTTP {status}" + (f": {detail}" if detail else "")
        if status in _RETRIED:  # down or overloaded, still after retries: as if unreachable
            return HubUnreachableError(message)
        return HubError(message)

    def auth_hint(self, status: int) -> str:
        """Why the hub refused, and what to do."""
        if self.token and not self.sends_token:
            return (
                f"the hub answered {status}: HF_TOKEN is set, but interference sends it over "
                f"https only and HF_ENDPOINT is {self.endpoint}"
            )
        if self.token:
            return (
                f"the hub answered {status} with HF_TOKEN: the token is not valid, or has no "
                "access to this repository (a gated one: accept its terms on its page)"
            )
        return (
            f"the hub answered {status}: the repository is gated or private, or does not "
            "exist; set HF_TOKEN to a token of yours (https://huggingface.co/settings/tokens)"
        )
