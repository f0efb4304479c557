"""The upstream clients against real servers on 127.0.0.1: httpx beside the fast client, through
a real forward proxy, and over TLS with a private certificate authority (made by trustme).

Every test drives the ``openai`` provider, so what it checks is what a configuration gets:
``client``, ``proxy`` and ``ca_bundle`` in a provider's settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from interference.config import ConfigError, RemoteProviderConfig, config_from_dict
from interference.errors import InterferenceError, RateLimitError, UpstreamError
from interference.providers.openai import OpenAIProvider
from interference.upstream.fast import FastClient
from interference.upstream.httpx_client import HttpxClient
from interference.wire.chat import ChatCompletionRequest
from tests.support.openai_fake import openai_upstream
from tests.support.upstream import FakeUpstream, ForwardProxy, refused_url

REQUEST = ChatCompletionRequest.model_validate(
    {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A private CA's PEM, and a certificate and key it signed for localhost."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    ca_pem, cert, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    return ca_pem, cert, key


@pytest.fixture(scope="module")
def plain() -> Iterator[FakeUpstream]:
    with openai_upstream("plain") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def secure(authority: tuple[Path, Path, Path]) -> Iterator[FakeUpstream]:
    _, cert, key = authority
    with openai_upstream("secure", tls=(str(cert), str(key))) as upstream:
        yield upstream


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(plain: FakeUpstream) -> None:
    plain.reset()


def provider(url: str, **settings: Any) -> OpenAIProvider:
    config = RemoteProviderConfig(
        kind="openai", base_url=f"{url}/v1", timeouts={"connect": 2}, **settings
    )
    return OpenAIProvider("up", config)


def ask(upstream_provider: OpenAIProvider, stream: bool = False) -> str:
    """One chat answer's text, non-streamed or streamed, through a started provider."""

    async def run() -> str:
        await upstream_provider.start()
        try:
            if not stream:
                reply = await upstream_provider.chat(REQUEST, "upstream-model")
                return reply.choices[0].message.content or ""
            pieces = [
                chunk.choices[0].delta.content or ""
                async for chunk in upstream_provider.stream_chat(REQUEST, "upstream-model")
                if chunk.choices
            ]
            return "".join(pieces)
        finally:
            await upstream_provider.aclose()

    return asyncio.run(run())


def test_the_client_follows_the_settings(authority: tuple[Path, Path, Path]) -> None:
    ca_pem = str(authority[0])
    assert RemoteProviderConfig(kind="openai", base_url="http://x").http_client == "fast"
    assert RemoteProviderConfig(kind="openai", base_url="http://x", client="httpx").http_client == (
        "httpx"
    )
    for extra in ({"proxy": "http://127.0.0.1:3128"}, {"ca_bundle": ca_pem}):
        config = RemoteProviderConfig(kind="openai", base_url="http://x", **extra)
        assert config.http_client == "httpx"
    started = provider("http://127.0.0.1:9", client="httpx")
    asyncio.run(started.start())
    assert isinstance(started.client, HttpxClient)
    asyncio.run(started.aclose())
    started = provider("http://127.0.0.1:9")
    asyncio.run(started.start())
    assert isinstance(started.client, FastClient)
    asyncio.run(started.aclose())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"client": "fast", "proxy": "http://127.0.0.1:3128"}, "need `client: httpx`"),
        ({"proxy": "socks5://127.0.0.1:1080"}, "proxy must start with http:// or https://"),
        ({"ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle: no file at"),
    ],
)
def test_bad_client_settings_are_configuration_errors(
    settings: dict[str, Any], message: str
) -> None:
    entry = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", **settings}
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"providers": {"up": entry}}, "x.yaml")


@pytest.mark.parametrize("stream", [False, True], ids=["call", "stream"])
def test_httpx_answers_as_the_fast_client_does(plain: FakeUpstream, stream: bool) -> None:
    fast = ask(provider(plain.url), stream)
    slow = ask(provider(plain.url, client="httpx"), stream)
    assert fast == slow == "Hello from plain w0 w1 w2 w3"
    assert [h["accept-encoding"] for h in plain.observed.headers] == ["identity"] * 2
    assert plain.observed.headers[1]["user-agent"].startswith("interference/")


def test_httpx_failures_map_as_the_fast_client_s(plain: FakeUpstream) -> None:
    plain.faults.status, plain.faults.retry_after = 429, "7"
    with pytest.raises(RateLimitError) as limited:
        ask(provider(plain.url, client="httpx"))
    assert limited.value.retry_after == 7
    plain.faults.status = None
    plain.faults.malformed = True
    with pytest.raises(UpstreamError, match="malformed upstream response"):
        ask(provider(plain.url, client="httpx"))
    with pytest.raises(UpstreamError, match="cannot connect to the upstream") as refused:
        ask(provider(refused_url(), client="httpx"))
    assert refused.value.retryable


def test_a_proxy_carries_the_requests(plain: FakeUpstream, proxy: ForwardProxy) -> None:
    assert ask(provider(plain.url, proxy=proxy.url), stream=True).startswith("Hello from plain")
    assert ask(provider(plain.url, proxy=proxy.url)).startswith("Hello from plain")
    assert proxy.requests
    assert all(line.startswith(f"POST {plain.url}/v1/chat/completions") for line in proxy.requests)
    seen = len(proxy.requests)
    ask(provider(plain.url))  # the fast client goes straight to the upstream
    assert len(proxy.requests) == seen


def test_a_private_authority_is_trusted_with_its_bundle(
    secure: FakeUpstream, authority: tuple[Path, Path, Path]
) -> None:
    ca_pem = str(authority[0])
    with pytest.raises(InterferenceError, match="certificate verify failed") as untrusted:
        ask(provider(secure.url))  # the system's authorities do not know it
    assert untrusted.value.retryable
    assert ask(provider(secure.url, ca_bundle=ca_pem)) == "Hello from secure w0 w1 w2 w3"
    assert ask(provider(secure.url, ca_bundle=ca_pem), stream=True).startswith("Hello")


def test_tls_through_a_proxy_is_tunnelled(
    secure: FakeUpstream, authority: tuple[Path, Path, Path], proxy: ForwardProxy
) -> None:
    settings = {"proxy": proxy.url, "ca_bundle": str(authority[0])}
    assert ask(provider(secure.url, **settings)) == "Hello from secure w0 w1 w2 w3"
    assert proxy.requests == [f"CONNECT localhost:{secure.port} HTTP/1.1"]
