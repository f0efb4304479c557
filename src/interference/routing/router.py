"""Routing: which deployment answers a request, and what happens when one fails.

A public model name (or an alias of one) has deployments: a provider plus the model id there.
For each request the router orders the model's healthy deployments by the configured strategy,
then tries them, then the model's fallback models, up to ``routing.max_attempts`` attempts:

- a failure before the first content token that another attempt may fix (refused, reset,
  timeout, 5xx, 429, malformed answer) moves on, after a backoff with jitter when it retries the
  same deployment, honouring ``Retry-After``; errors caused by the request itself go straight back;
- a deployment that fails ``cooldown.failures`` times in a row is skipped for
  ``cooldown.seconds``, then probed again by the next request (one success closes the breaker);
- each attempt is bounded by the deployment's timeouts: time to first token, idle gap between
  chunks, and total.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

from interference.config import RoutingConfig
from interference.errors import (
    InterferenceError,
    InvalidRequestError,
    ModelNotReadyError,
    RateLimitError,
    UpstreamBusyError,
    UpstreamError,
    UpstreamTimeoutError,
    error_class,
)
from interference.logs import LimitWarnings
from interference.providers.base import ENDPOINT_NAMES, Endpoint, Provider
from interference.routing.bounds import StreamBounds
from interference.routing.names import ModelNames
from interference.routing.table import Deployment, PublicModel
from interference.telemetry.metrics import DURATION_BUCKETS, Counter, Histogram
from interference.wire.chat import ChatCompletion, ChatCompletionRequest
from interference.wire.chunks import Batch
from interference.wire.completions import CompletionRequest
from interference.wire.embeddings import EmbeddingRequest
from interference.wire.media import MediaCall

if TYPE_CHECKING:
    from interference.telemetry.tracing import AttemptSpan, Tracer

T = TypeVar("T")
#: the requests the router can route: each names a ``model`` and may pin a ``provider``
Routable: TypeAlias = ChatCompletionRequest | CompletionRequest | EmbeddingRequest | MediaCall
_ENDPOINTS: dict[type[Routable], Endpoint] = {
    ChatCompletionRequest: "chat",
    CompletionRequest: "text",
    EmbeddingRequest: "embeddings",
}


def endpoint_of(request: Routable) -> Endpoint:
    """What a request asks for (a media call says it itself)."""
    if isinstance(request, MediaCall):
        return request.endpoint
    return _ENDPOINTS[type(request)]


@dataclass
class Answer(Generic[T]):
    """A non-streamed result and how it was obtained."""

    result: T
    deployment: Deployment
    attempts: int


@dataclass
class StreamAnswer:
    """A stream whose first output has arrived; ``chunks`` yields its batch and the rest."""

    chunks: AsyncGenerator[Batch, None]
    deployment: Deployment
    attempts: int


def _meaningful(batch: Batch) -> bool:
    """Whether a batch carries output (so a failure after it can no longer fall back)."""
    return any(chunk.has_output() for chunk in batch)


class Router(ModelNames):
    """Routes requests to deployments (the module's docstring); answers for the model names
    through :class:`~interference.routing.names.ModelNames`."""

    def __init__(
        self,
        models: dict[str, PublicModel],
        aliases: dict[str, str],
        providers: list[Provider],
        routing: RoutingConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.providers = providers
        self.routing = routing or RoutingConfig()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        ModelNames.__init__(self, models, aliases)
        # what /metrics reads (the deployments' own counts are on each Deployment)
        self.upstream_seconds = Histogram(DURATION_BUCKETS, "provider", "deployment")
        self.fallbacks = Counter("from_model", "to_model", "result")
        self.retries = Counter("provider", "reason")
        #: told of each failed attempt (the status view's errors per deployment)
        self.on_attempt_failed: Callable[[Deployment], None] | None = None
        #: starts a span per attempt (telemetry.otlp_endpoint; None: no tracing)
        self.tracer: Tracer | None = None
        #: a refusal by a configured bound (a pool, a queue) is never silent in the log
        self.limit_warnings = LimitWarnings(logging.getLogger("interference"))
        self._model_of = {id(d): m.name for m in models.values() for d in m.deployments}

    def describe(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "strategy": self.routing.strategy,
            "providers": [p.describe() for p in self.providers],
            "models": {
                m.name: {
                    "deployments": [d.describe(now) for d in m.deployments],
                    "fallbacks": m.fallbacks,
                }
                for m in self.models.values()
            },
        }

    # --- choice -----------------------------------------------------------------------------

    def _order(self, model: PublicModel) -> list[Deployment]:
        """The model's usable deployments, best first, by the configured strategy."""
        now = self._clock()
        usable = [d for d in model.deployments if not d.cooling(now) and not d.saturated()]
        strategy = self.routing.strategy
        if strategy == "ordered":
            return usable
        if strategy == "round-robin":
            if not usable:
                return usable
            start = model.rotation % len(usable)
            model.rotation += 1
            return usable[start:] + usable[:start]
        jitter = {id(d): self._rng.random() for d in usable}
        if strategy == "latency":
            return sorted(usable, key=lambda d: (d.ttft_ewma or 0.0, jitter[id(d)]))
        return sorted(usable, key=lambda d: (d.in_flight / d.weight, jitter[id(d)]))

    def _candidates(self, request: Routable) -> list[Deployment]:
        first = self.resolve(request.model)
        chain = [first]
        for name in first.fallbacks:
            model = self.resolve(name)
            if model not in chain:
                chain.append(model)
        endpoint = endpoint_of(request)
        pinned = request.provider
        if pinned is not None and pinned not in {p.name for p in self.providers}:
            raise InvalidRequestError(f"Unknown provider `{pinned}`.", param="provider")
        candidates: list[Deployment] = []
        for model in chain:
            for deployment in self._order(model):
                if not model.serves(deployment, endpoint):
                    continue  # a later deployment or fallback that can serves it
                if pinned is None or deployment.provider.name == pinned:
                    candidates.append(deployment)
        if not candidates:
            if not any(m.serves(d, endpoint) for m in chain for d in m.deployments):
                kinds = sorted({d.provider.kind for m in chain for d in m.deployments})
                raise InvalidRequestError(
                    f"The model `{request.model}` does not serve {ENDPOINT_NAMES[endpoint]}: "
                    f"none of its deployments ({', '.join(kinds)}) can.",
                    param="model",
                    code="unsupported",
                )
            if pinned is not None and not any(
                d.provider.name == pinned for m in chain for d in m.deployments
            ):
                raise InvalidRequestError(
                    f"The model `{request.model}` has no deployment on provider `{pinned}`.",
                    param="provider",
                )
            now = self._clock()
            full = [d for m in chain for d in m.deployments if d.saturated() and not d.cooling(now)]
            if full:
                names = ", ".join(sorted({d.provider.name for d in full}))
                self.limit_warnings.refused(
                    f"providers.{full[0].provider.name}.max_queue",
                    f"`{request.model}` is at capacity (every slot and queue place of {names} "
                    "taken): a request was answered 429",
                )
                raise RateLimitError(
                    f"`{request.model}` is at capacity: every slot and queue place is taken. "
                    "Retry shortly.",
                    headers={"retry-after": "1"},
                )
            wait = self._cooldown_remaining(chain)
            raise ModelNotReadyError(
                f"Every deployment of `{request.model}` is cooling down after failures; "
                f"retry in {wait:.0f} s.",
                headers={"retry-after": str(max(1, round(wait)))},
            )
        return candidates

    def _cooldown_remaining(self, chain: list[PublicModel]) -> float:
        now = self._clock()
        waits = [d.cooldown_until - now for m in chain for d in m.deployments if d.cooling(now)]
        return min(waits) if waits else 1.0

    # --- health bookkeeping --------------------------------------------------------------------

    def _succeeded(self, deployment: Deployment, ttft: float) -> None:
        self.upstream_seconds.observe((deployment.provider.name, deployment.name), ttft)
        deployment.successes += 1
        deployment.consecutive_failures = 0
        deployment.cooldown_until = 0.0
        previous = deployment.ttft_ewma
        deployment.ttft_ewma = ttft if previous is None else 0.7 * previous + 0.3 * ttft

    def _noted(self, deployment: Deployment, error: InterferenceError) -> None:
        """Count a failed attempt by its class (every failure, whether it counts against the
        deployment's health or not)."""
        kind = error_class(error)
        deployment.errors[kind] = deployment.errors.get(kind, 0) + 1
        if self.on_attempt_failed is not None:
            self.on_attempt_failed(deployment)

    def _failed(self, deployment: Deployment, error: InterferenceError) -> None:
        self._noted(deployment, error)
        deployment.failures += 1
        deployment.consecutive_failures += 1
        deployment.last_error = error.message[:300]
        now = self._clock()
        cooldown = self.routing.cooldown
        if deployment.consecutive_failures >= cooldown.failures:
            deployment.cooldown_until = max(deployment.cooldown_until, now + cooldown.seconds)
        if error.retry_after:
            deployment.cooldown_until = max(deployment.cooldown_until, now + error.retry_after)

    def _backoff(self, retry: int, error: InterferenceError) -> float | None:
        """Seconds to wait before retrying the same deployment, or None to move on."""
        policy = self.routing.retry
        retry_after: float | None = error.retry_after
        if retry_after is not None:
            return retry_after if retry_after <= policy.retry_after_max else None
        ceiling = min(policy.backoff_max, policy.backoff_initial * 2.0 ** (retry - 1))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def _span(self, request: Routable, deployment: Deployment, stream: bool) -> AttemptSpan | None:
        """The attempt's span when tracing (a stream's is ended by :meth:`_rest`)."""
        if self.tracer is None:
            return None
        return self.tracer.attempt(
            endpoint_of(request),
            deployment.provider.kind,
            deployment.model,
            deployment=deployment.name,
            model=self._model_of.get(id(deployment), ""),
            stream=stream,
            request=request,
        )

    async def _attempts(
        self,
        request: Routable,
        attempt: Callable[[Deployment, AttemptSpan | None], Awaitable[Any]],
        stream: bool = False,
    ) -> tuple[Any, Deployment, int]:
        """Run ``attempt`` over the candidates until one succeeds; return its result."""
        attempts = 0
        last: InterferenceError | None = None
        candidates = self._candidates(request)
        first = self._model_of.get(id(candidates[0]), "")
        for deployment in candidates:
            for retry in range(self.routing.retry.attempts_per_deployment):
                if attempts >= self.routing.max_attempts:
                    break
                if retry:
                    assert last is not None
                    delay = self._backoff(retry, last)
                    if delay is None or deployment.cooling(self._clock()):
                        break
                    await self._sleep(delay)
                    self.retries.add((deployment.provider.name, error_class(last)))
                attempts += 1
                span = self._span(request, deployment, stream)
                entered = None if span is None else span.enter()  # its traceparent goes up
                try:
                    result = await attempt(deployment, span)
                except InterferenceError as error:
                    if span is not None:
                        span.failed(error)
                    if not error.retryable:
                        self._noted(deployment, error)
                        raise
                    last = error
                    if isinstance(error, UpstreamBusyError):  # not a fault of its health
                        self._noted(deployment, error)
                        self.limit_warnings.refused(
                            f"providers.{deployment.provider.name}.max_connections",
                            f"{error.message}: a request moved on or was answered 503",
                        )
                        break  # the same pool is as full a moment later: the next deployment
                    self._failed(deployment, error)
                except BaseException as error:
                    if span is not None:
                        span.failed(error)
                    raise
                else:
                    if span is not None and not stream:
                        span.answered(result)
                    model = self._model_of.get(id(deployment), "")
                    if model != first:
                        self.fallbacks.add((first, model, "ok"))
                    return result, deployment, attempts
                finally:
                    if span is not None and entered is not None:
                        span.leave(entered)
        assert last is not None
        if any(self._model_of.get(id(d), "") != first for d in candidates):
            self.fallbacks.add((first, "", "failed"))
        raise last

    # --- answering ----------------------------------------------------------------------------

    async def call(
        self,
        request: Routable,
        operation: Callable[[Deployment], Awaitable[T]],
    ) -> Answer[T]:
        """Run a non-streamed ``operation`` on the best deployment, failing over."""

        async def attempt(deployment: Deployment, span: AttemptSpan | None) -> T:
            started = self._clock()
            deployment.in_flight += 1
            try:
                async with asyncio.timeout(deployment.timeouts.total):
                    result = await operation(deployment)
            except TimeoutError:
                raise UpstreamTimeoutError(
                    f"{deployment.name}: no answer within {deployment.timeouts.total:g} s"
                ) from None
            finally:
                deployment.in_flight -= 1
            self._succeeded(deployment, self._clock() - started)
            return result

        result, deployment, attempts = await self._attempts(request, attempt)
        return Answer(result, deployment, attempts)

    async def chat(self, request: ChatCompletionRequest) -> Answer[ChatCompletion]:
        return await self.call(request, lambda d: d.provider.chat(request, d.model))

    async def stream(
        self,
        request: Routable,
        open_stream: Callable[[Deployment], AsyncGenerator[Batch, None]] | None = None,
    ) -> StreamAnswer:
        """Open a stream on the best deployment, failing over until output arrives.

        ``open_stream`` defaults to the provider's chat stream.
        """

        def default(deployment: Deployment) -> AsyncGenerator[Batch, None]:
            assert isinstance(request, ChatCompletionRequest)
            return deployment.provider.chat_batches(request, deployment.model)

        opener = open_stream or default

        async def attempt(
            deployment: Deployment, span: AttemptSpan | None
        ) -> AsyncGenerator[Batch, None]:
            started = self._clock()
            deployment.in_flight += 1
            try:
                upstream = opener(deployment)  # a provider may refuse at once
            except BaseException:
                deployment.in_flight -= 1
                raise
            head: list[Batch] = []
            try:
                async with asyncio.timeout(deployment.timeouts.first_token):
                    async for batch in upstream:
                        head.append(batch)
                        if _meaningful(batch):
                            break
                    else:
                        raise UpstreamError(f"{deployment.name}: the stream ended without output")
            except TimeoutError:
                await self._release(deployment, upstream)
                limit = deployment.timeouts.first_token
                raise UpstreamTimeoutError(
                    f"{deployment.name}: no first token within {limit:g} s"
                ) from None
            except BaseException:
                await self._release(deployment, upstream)
                raise
            self._succeeded(deployment, self._clock() - started)
            return self._rest(deployment, upstream, head, started, span)

        chunks, deployment, attempts = await self._attempts(request, attempt, stream=True)
        return StreamAnswer(chunks, deployment, attempts)

    async def _release(self, deployment: Deployment, upstream: AsyncGenerator[Any, None]) -> None:
        deployment.in_flight -= 1
        await upstream.aclose()

    async def _rest(
        self,
        deployment: Deployment,
        upstream: AsyncGenerator[Batch, None],
        head: list[Batch],
        started: float,
        span: AttemptSpan | None = None,
    ) -> AsyncGenerator[Batch, None]:
        """The batches already received, then the rest under the idle and total bounds
        (``span``, when tracing, sees each batch and ends with the stream)."""
        timeouts = deployment.timeouts
        bounds: StreamBounds | None = None
        try:
            for batch in head:
                if span is not None:
                    span.saw(batch)
                yield batch
            bounds = StreamBounds(timeouts.idle, timeouts.total - (self._clock() - started))
            while True:
                try:
                    batch = await bounds.next(upstream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise UpstreamTimeoutError(
                        f"{deployment.name}: the stream exceeded its {bounds.crossed} limit"
                    ) from None
                if span is not None:
                    span.saw(batch)
                yield batch
        except InterferenceError as error:
            if span is not None:
                span.failed(error)
            self._noted(deployment, error)
            deployment.failures += 1
            deployment.last_error = error.message[:300]
            raise
        finally:
            if bounds is not None:
                bounds.close()
            if span is not None:
                span.end()
            await self._release(deployment, upstream)
