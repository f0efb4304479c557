"""Routing over fake providers: names, strategies, fallback, retries, cooldown, timeouts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, ClassVar

import pytest

from interference.config import ConfigError, CooldownConfig, RetryConfig, RoutingConfig, Timeouts
from interference.errors import (
    InterferenceError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelNotReadyError,
    RateLimitError,
    UpstreamError,
    UpstreamTimeoutError,
)
from interference.providers.base import Provider, ServedModel, collect_chunks
from interference.routing.router import Router
from interference.routing.table import Deployment, PublicModel
from interference.wire.chat import ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, Delta
from interference.wire.chunks import Batch


class Scripted(Provider):
    """Each call takes the next behaviour: "ok", "hang", "hang-mid", "slow-mid", or an exception."""

    kind: ClassVar[str] = "scripted"

    def __init__(self, name: str, script: list[Any] | None = None) -> None:
        super().__init__(name)
        self.script = list(script or [])
        self.calls = 0
        self.closed = 0

    def models(self) -> list[ServedModel]:
        return []

    def _chunk(self, **delta: Any) -> ChatCompletionChunk:
        finish = delta.pop("finish", None)
        return ChatCompletionChunk(
            id="x",
            created=1,
            model="m",
            choices=[ChunkChoice(index=0, delta=Delta(**delta), finish_reason=finish)],
        )

    async def stream_chat(
        self, request: ChatCompletionRequest, model: str
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        self.calls += 1
        step = self.script.pop(0) if self.script else "ok"
        try:
            if isinstance(step, InterferenceError):
                raise step
            if step == "hang":
                await asyncio.sleep(30)
            yield self._chunk(role="assistant", content="")
            if step == "fail-after-role":
                raise UpstreamError("died before content")
            yield self._chunk(content=f"from {self.name}")
            if step == "hang-mid":
                await asyncio.sleep(30)
            if step == "slow-mid":
                for _ in range(20):
                    await asyncio.sleep(0.05)
                    yield self._chunk(content=".")
            yield self._chunk(finish="stop")
        finally:
            self.closed += 1


def request(model: str = "m", **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}
    )


FAST = Timeouts(connect=1, first_token=0.3, idle=0.3, total=5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def router_for(
    deployments: list[Deployment],
    *,
    fallbacks: dict[str, list[Deployment]] | None = None,
    routing: RoutingConfig | None = None,
    clock: Clock | None = None,
    real_time: bool = False,
) -> Router:
    models = {"m": PublicModel("m", deployments, list(fallbacks or {}))}
    for name, deps in (fallbacks or {}).items():
        models[name] = PublicModel(name, deps)
    providers = list(
        {id(d.provider): d.provider for m in models.values() for d in m.deployments}.values()
    )
    if real_time:
        return Router(models, {"alias": "m"}, providers, routing, rng=random.Random(1))
    clock = clock or Clock()
    return Router(
        models,
        {"alias": "m"},
        providers,
        routing,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(1),
    )


async def each_chunk(batches: AsyncIterator[Batch]) -> AsyncIterator[Any]:
    """The chunks of a routed stream, one by one."""
    async for batch in batches:
        for chunk in batch:
            yield chunk


def answer_text(router: Router, req: ChatCompletionRequest | None = None) -> tuple[str, str, int]:
    async def run() -> tuple[str, str, int]:
        streamed = await router.stream(req or request())
        completion = await collect_chunks(each_chunk(streamed.chunks))
        return (
            completion.choices[0].message.content or "",
            streamed.deployment.name,
            streamed.attempts,
        )

    return asyncio.run(run())


# --- names ------------------------------------------------------------------------------


def test_resolves_ids_aliases_and_folded_case() -> None:
    router = router_for([Deployment(Scripted("a"), "up")])
    assert router.resolve("m").name == "m"
    assert router.resolve("alias").name == "m"
    assert router.resolve("ALIAS").name == "m"
    with pytest.raises(ModelNotFoundError):
        router.resolve("gpt-9")
    assert [c.id for c in router.cards()] == ["m", "alias"]


def test_config_references_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"aliases\.x"):
        Router({}, {"x": "missing"}, [])
    model = PublicModel("m", [Deployment(Scripted("a"), "up")], fallbacks=["nope"])
    with pytest.raises(ConfigError, match=r"models\.m\.fallbacks"):
        Router({"m": model}, {}, [])


# --- fallback -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        UpstreamError("refused"),
        UpstreamTimeoutError("timed out"),
        RateLimitError("slow down"),
        UpstreamError("bad key", code="upstream_auth_error"),
        "fail-after-role",
    ],
)
def test_a_retryable_failure_falls_back_to_the_next_deployment(fault: Any) -> None:
    bad, good = Scripted("bad", [fault]), Scripted("good")
    router = router_for(
        [Deployment(bad, "up"), Deployment(good, "up")], routing=RoutingConfig(strategy="ordered")
    )
    text, deployment, attempts = answer_text(router)
    assert (text, deployment, attempts) == ("from good", "good/up", 2)
    assert bad.closed == 1  # the failed attempt's stream was closed


def test_fallback_models_come_after_the_models_own_deployments() -> None:
    a, b = Scripted("a", [UpstreamError("x")]), Scripted("b")
    router = router_for([Deployment(a, "up")], fallbacks={"backup": [Deployment(b, "other")]})
    assert answer_text(router)[1] == "b/other"


@pytest.mark.parametrize(
    "error", [InvalidRequestError("bad", param="messages"), ModelNotFoundError("x")]
)
def test_client_errors_go_straight_back(error: InterferenceError) -> None:
    a, b = Scripted("a", [error]), Scripted("b")
    router = router_for(
        [Deployment(a, "up"), Deployment(b, "up")], routing=RoutingConfig(strategy="ordered")
    )
    with pytest.raises(type(error)):
        answer_text(router)
    assert b.calls == 0


def test_max_attempts_bounds_the_whole_request() -> None:
    providers = [Scripted(f"p{i}", [UpstreamError(f"e{i}")]) for i in range(5)]
    router = router_for(
        [Deployment(p, "up") for p in providers],
        routing=RoutingConfig(strategy="ordered", max_attempts=3),
    )
    with pytest.raises(UpstreamError, match="e2"):
        answer_text(router)
    assert [p.calls for p in providers] == [1, 1, 1, 0, 0]


def test_non_stream_falls_back_too() -> None:
    bad, good = Scripted("bad", [UpstreamError("x")]), Scripted("good")
    router = router_for(
        [Deployment(bad, "up"), Deployment(good, "up")], routing=RoutingConfig(strategy="ordered")
    )
    answer = asyncio.run(router.chat(request()))
    assert answer.result.choices[0].message.content == "from good"
    assert (answer.deployment.name, answer.attempts) == ("good/up", 2)


# --- retries --------------------------------------------------------------------------------


def test_retries_back_off_exponentially_with_jitter() -> None:
    clock = Clock()
    flaky = Scripted("flaky", [UpstreamError("1"), UpstreamError("2")])
    routing = RoutingConfig(
        retry=RetryConfig(attempts_per_deployment=3, backoff_initial=1.0, backoff_max=8),
        cooldown=CooldownConfig(failures=5),
    )
    router = router_for([Deployment(flaky, "up")], routing=routing, clock=clock)
    assert answer_text(router)[2] == 3
    assert len(clock.slept) == 2
    assert 0.5 <= clock.slept[0] <= 1.0
    assert 1.0 <= clock.slept[1] <= 2.0


def test_retry_after_is_honoured() -> None:
    clock = Clock()
    limited = Scripted("limited", [RateLimitError("slow", retry_after=2.5)])
    routing = RoutingConfig(retry=RetryConfig(attempts_per_deployment=2))
    router = router_for([Deployment(limited, "up")], routing=routing, clock=clock)
    # the deployment is cooling for 2.5 s after the 429: the retry waits for the next request
    with pytest.raises(RateLimitError):
        answer_text(router)
    clock.now += 3
    assert answer_text(router)[0] == "from limited"


# --- cooldown -------------------------------------------------------------------------------


def test_cooldown_skips_a_failing_deployment_then_probes_it_again() -> None:
    clock = Clock()
    bad = Scripted("bad", [UpstreamError("1"), UpstreamError("2")])
    good = Scripted("good")
    routing = RoutingConfig(strategy="ordered", cooldown=CooldownConfig(failures=2, seconds=30))
    router = router_for(
        [Deployment(bad, "up"), Deployment(good, "up")], routing=routing, clock=clock
    )
    answer_text(router)
    answer_text(router)  # second consecutive failure: the breaker opens
    assert bad.calls == 2
    status = router.describe()["models"]["m"]["deployments"][0]
    assert status["healthy"] is False
    assert status["cooldown_remaining_s"] == 30
    answer_text(router)
    assert bad.calls == 2  # skipped while cooling
    clock.now += 31
    assert answer_text(router)[1] == "bad/up"  # probed again, and it recovered
    assert router.describe()["models"]["m"]["deployments"][0]["consecutive_failures"] == 0


def test_all_deployments_cooling_is_503_with_retry_after() -> None:
    clock = Clock()
    bad = Scripted("bad", [UpstreamError("x")])
    routing = RoutingConfig(cooldown=CooldownConfig(failures=1, seconds=20))
    router = router_for([Deployment(bad, "up")], routing=routing, clock=clock)
    with pytest.raises(UpstreamError):
        answer_text(router)
    with pytest.raises(ModelNotReadyError) as info:
        answer_text(router)
    assert info.value.status == 503
    assert info.value.headers["retry-after"] == "20"


# --- strategies -----------------------------------------------------------------------------


def test_ordered_takes_the_first_healthy() -> None:
    a, b = Scripted("a"), Scripted("b")
    router = router_for(
        [Deployment(a, "up"), Deployment(b, "up")], routing=RoutingConfig(strategy="ordered")
    )
    assert {answer_text(router)[1] for _ in range(4)} == {"a/up"}


def test_round_robin_alternates() -> None:
    a, b = Scripted("a"), Scripted("b")
    router = router_for(
        [Deployment(a, "up"), Deployment(b, "up")], routing=RoutingConfig(strategy="round-robin")
    )
    assert [answer_text(router)[1] for _ in range(4)] == ["a/up", "b/up", "a/up", "b/up"]


def test_least_busy_prefers_fewer_in_flight_per_weight() -> None:
    a, b = Deployment(Scripted("a"), "up", weight=1), Deployment(Scripted("b"), "up", weight=4)
    router = router_for([a, b])
    a.in_flight, b.in_flight = 1, 2  # 1/1 > 2/4
    assert answer_text(router)[1] == "b/up"
    a.in_flight, b.in_flight = 0, 1
    assert answer_text(router)[1] == "a/up"


def test_latency_prefers_the_fastest_first_token() -> None:
    a, b = Deployment(Scripted("a"), "up"), Deployment(Scripted("b"), "up")
    a.ttft_ewma, b.ttft_ewma = 0.5, 0.1
    router = router_for([a, b], routing=RoutingConfig(strategy="latency"))
    assert answer_text(router)[1] == "b/up"


def test_max_concurrency_skips_a_full_deployment() -> None:
    a, b = Deployment(Scripted("a"), "up", max_concurrency=1), Deployment(Scripted("b"), "up")
    router = router_for([a, b], routing=RoutingConfig(strategy="ordered"))
    a.in_flight = 1
    assert answer_text(router)[1] == "b/up"


def test_every_deployment_full_is_429_with_retry_after() -> None:
    a = Deployment(Scripted("a"), "up", max_concurrency=2)
    router = router_for([a])
    a.in_flight = 2
    with pytest.raises(RateLimitError) as info:
        answer_text(router)
    assert info.value.status == 429
    assert info.value.headers["retry-after"] == "1"
    assert a.failures == 0  # being busy is not a failure: no cooldown
    a.in_flight = 1
    assert answer_text(router)[1] == "a/up"


def test_in_flight_returns_to_zero() -> None:
    a = Deployment(Scripted("a", [UpstreamError("x"), "ok"]), "up")
    router = router_for([a], routing=RoutingConfig(cooldown=CooldownConfig(failures=5)))
    with pytest.raises(UpstreamError):
        answer_text(router)
    answer_text(router)
    assert a.in_flight == 0


# --- pinning --------------------------------------------------------------------------------


def test_a_request_may_pin_a_configured_provider() -> None:
    a, b = Scripted("a"), Scripted("b")
    router = router_for(
        [Deployment(a, "up"), Deployment(b, "up")], routing=RoutingConfig(strategy="ordered")
    )
    assert answer_text(router, request(provider="b"))[1] == "b/up"
    with pytest.raises(InvalidRequestError) as info:
        answer_text(router, request(provider="http://evil.example/v1"))
    assert info.value.param == "provider"


# --- timeouts -------------------------------------------------------------------------------


def test_first_token_timeout_falls_back() -> None:
    slow, good = Scripted("slow", ["hang"]), Scripted("good")
    router = router_for(
        [Deployment(slow, "up", timeouts=FAST), Deployment(good, "up")],
        routing=RoutingConfig(strategy="ordered"),
    )
    _, deployment, _ = answer_text(router)
    assert deployment == "good/up"
    assert (
        "first token within 0.3 s"
        in (router.describe()["models"]["m"]["deployments"][0]["last_error"])
    )


def test_idle_timeout_ends_a_started_stream_with_an_error() -> None:
    hung = Scripted("hung", ["hang-mid"])
    router = router_for([Deployment(hung, "up", timeouts=FAST)])

    seen: list[str] = []

    async def run() -> None:
        streamed = await router.stream(request())
        async for chunk in each_chunk(streamed.chunks):
            seen.append(chunk.choices[0].delta.content or "")

    with pytest.raises(UpstreamTimeoutError, match="idle gap"):
        asyncio.run(run())
    assert "from hung" in seen
    assert hung.closed == 1


def test_total_timeout_bounds_a_slow_stream() -> None:
    slow = Scripted("slow", ["slow-mid"])
    bounds = Timeouts(connect=1, first_token=1, idle=1, total=0.4)
    router = router_for([Deployment(slow, "up", timeouts=bounds)], real_time=True)

    async def run() -> None:
        streamed = await router.stream(request())
        async for _ in streamed.chunks:
            pass

    with pytest.raises(UpstreamTimeoutError, match="total time"):
        asyncio.run(run())


def test_a_provider_that_refuses_a_stream_at_once_leaves_no_request_in_flight() -> None:
    from interference.wire.completions import CompletionRequest

    provider = Scripted("a")
    provider.endpoints = frozenset({"chat", "text"})  # says it does, then refuses when asked
    deployment = Deployment(provider, "up")
    router = router_for([deployment])
    text = CompletionRequest.model_validate({"model": "m", "prompt": "hi"})

    async def run() -> None:
        await router.stream(text, lambda d: d.provider.text_batches(text, d.model))

    with pytest.raises(InvalidRequestError, match="does not serve text completions"):
        asyncio.run(run())
    assert deployment.in_flight == 0


def test_a_request_goes_only_to_deployments_that_serve_its_endpoint() -> None:
    """Embeddings of a model whose first deployment answers chat only go to the next one."""
    from interference.wire.embeddings import EmbeddingList, EmbeddingRequest

    class Embedder(Scripted):
        endpoints = frozenset({"chat", "embeddings"})

        async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingList:
            self.calls += 1
            return EmbeddingList(model=model, data=[], usage={"prompt_tokens": 1})

    chat_only, embedder = Scripted("chat-only"), Embedder("embedder")
    router = router_for([Deployment(chat_only, "up"), Deployment(embedder, "up")])
    request = EmbeddingRequest.model_validate({"model": "m", "input": "hi"})

    async def run() -> Any:
        return await router.call(request, lambda d: d.provider.embed(request, d.model))

    answer = asyncio.run(run())
    assert answer.deployment.provider is embedder
    assert answer.attempts == 1
    assert (chat_only.calls, embedder.calls) == (0, 1)


def test_a_model_no_deployment_of_which_serves_the_endpoint_is_a_400() -> None:
    from interference.wire.embeddings import EmbeddingRequest

    router = router_for([Deployment(Scripted("a"), "up")])
    request = EmbeddingRequest.model_validate({"model": "m", "input": "hi"})

    async def run() -> Any:
        return await router.call(request, lambda d: d.provider.embed(request, d.model))

    with pytest.raises(InvalidRequestError) as refused:
        asyncio.run(run())
    assert refused.value.code == "unsupported"
    assert refused.value.param == "model"
    assert "does not serve embeddings: none of its deployments (scripted) can" in str(refused.value)
