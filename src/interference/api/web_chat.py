"""The web chat: the page ``GET /`` shows a browser, and its assets under ``/ui/``.

The page and its assets are static files shipped in the package (``interference/api/ui``), read
once and served with their content type, an ETag and a cache lifetime. Nothing in them comes
from a request, and the page's Content-Security-Policy allows only scripts and styles from this
server (no inline script or style), so model or user text that the page shows is never run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from interference.errors import NotFoundError

#: the page's policy: its own scripts, styles, images and API only (and the speech it fetched,
#: played from a blob: URL)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
#: assets may be cached a while (the ETag revalidates them); the page is revalidated each time
ASSET_MAX_AGE_S = 300
_SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def _asset(name: str) -> Asset | None:
    """The file ``name`` of the ui folder (None when there is no such asset)."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in _TYPES:
        return None
    file = resources.files("interference.api").joinpath("ui", name)
    if not file.is_file():
        return None
    body = file.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return Asset(body, _TYPES[suffix], etag)


def _serve(request: Request, asset: Asset, cache_control: str) -> Response:
    headers = {"etag": asset.etag, "cache-control": cache_control, **_SECURITY_HEADERS}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def chat_page(request: Request) -> Response:
    """The web chat (``ui/index.html``)."""
    page = _asset("index.html")
    assert page is not None, "the package lacks interference/api/ui/index.html"
    return _serve(request, page, "no-cache")


async def ui_asset(request: Request) -> Response:
    """``GET /ui/{name}``: a script, style sheet or icon of the page."""
    name = request.path_params["name"]
    asset = _asset(name)
    if asset is None or name == "index.html":
        raise NotFoundError(f"No such file: /ui/{name}.")
    return _serve(request, asset, f"public, max-age={ASSET_MAX_AGE_S}")
