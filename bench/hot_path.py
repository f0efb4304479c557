"""The CPU time interference's own code spends per request, in one thread, without the network's
and the machine's noise: for comparing two versions of the hot path.

The app (``create_app``) is driven directly through ASGI on a uvloop loop in the main thread,
in front of the fake upstream of ``bench/fake_upstream.py`` running in another thread; the main
thread's CPU time (``time.thread_time``) per request is what the guard, the routes, the router,
the provider, the upstream client and the SSE relay cost together (uvicorn's HTTP parsing and
the client's sockets are not in it). Non-stream and stream (50 chunks), one at a time and 16 at
once; the best of ``--repeats`` runs of ``--requests`` each. With ``--keys`` the server has a
master key and every request presents one virtual key with limits and a budget (SQLite in a
temporary folder: the key checked in memory, rate limits, the budget's reservation, a usage row
per request); the script then also writes 20,000 usage rows at once and prints rows/s.

    .venv/bin/python bench/hot_path.py [--requests 3000] [--repeats 5] [--keys | --metrics]
    PYTHONPATH=/path/to/other/checkout/src .venv/bin/python bench/hot_path.py   # another version
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from typing import Any

import orjson

from fake_upstream import event_loop_factory, upstream_in_thread
from interference.api.app import create_app
from interference.config import config_from_dict
from interference.server import tune_gc

MODEL = "bench-model"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}]}


def app_for(upstream_url: str, storage: str | None = None, metrics: bool = True) -> Any:
    """The app in front of the fake upstream; with ``storage``, keys and usage kept there;
    ``metrics``: counting requests for ``GET /metrics`` (the default) or not."""
    settings: dict[str, Any] = {
        "providers": {"up": {"kind": "openai", "base_url": f"{upstream_url}/v1"}},
        "models": {MODEL: {"deployments": [{"provider": "up"}]}},
        "openai_aliases": False,
        "metrics": {"enabled": metrics},
    }
    if storage is not None:
        settings["server"] = {"master_key": "bench-master"}
        settings["storage"] = {"path": storage}
        settings["prices"] = {MODEL: {"input": 1, "output": 2}}
    return create_app(config_from_dict(settings, "hot_path.py"), providers=None)


HEADERS: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"), (b"host", b"bench")]


async def call(app: Any, body: bytes) -> int:
    """One POST through the app; the bytes of the answer it sent."""
    delivered = False
    size = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal size
        size += len(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": HEADERS,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {},
        "app": app,
    }
    await app(scope, receive, send)
    return size


async def scenario(app: Any, stream: bool, concurrency: int, requests: int) -> float:
    """Main-thread CPU µs per request for ``requests`` calls, ``concurrency`` at a time."""
    body = orjson.dumps({**BODY, "stream": stream})
    for _ in range(concurrency * 4):  # warm-up: connections, caches
        await call(app, body)
    started = time.thread_time()
    done = 0
    while done < requests:
        batch = min(concurrency, requests - done)
        sizes = await asyncio.gather(*(call(app, body) for _ in range(batch)))
        assert all(sizes), "an empty answer"
        done += batch
    # the requests still waiting in the guard's batch are counted now, in this app's turn
    # (its timer would fire during the other app's, in --metrics)
    app.state.interference.guard.count_ended()
    return (time.thread_time() - started) / requests * 1e6


async def run(
    upstream_url: str, requests: int, repeats: int, storage: str | None
) -> dict[str, float]:
    app = app_for(upstream_url, storage)
    results: dict[str, list[float]] = {}
    async with app.router.lifespan_context(app):
        accounting = app.state.interference.accounting
        if accounting is not None:
            limits = {"rpm_limit": 10**9, "tpm_limit": 10**12, "max_budget": 10**9}
            key, _ = await accounting.keys.generate({"key_alias": "bench", **limits})
            HEADERS.append((b"authorization", f"Bearer {key}".encode()))
        for _ in range(repeats):
            for stream in (False, True):
                for concurrency in (1, 16):
                    name = f"{'stream' if stream else 'non-stream'} c={concurrency}"
                    count = requests // 4 if stream else requests
                    cost = await scenario(app, stream, concurrency, count)
                    results.setdefault(name, []).append(cost)
        if accounting is not None:
            results["ledger rows/s"] = [await ledger_rate(accounting.ledger)]
    return {name: min(costs) for name, costs in results.items()}


async def metrics_cost(
    upstream_url: str, requests: int, repeats: int, control: bool = False
) -> dict[str, tuple[float, float]]:
    """Main-thread CPU µs per request with metrics off and on, best of ``repeats`` rounds in
    which the two apps take turns (ABBA), for each scenario: (off, on). ``control``: both
    with metrics on (an A/A run: what two identical apps differ by)."""
    off = app_for(upstream_url, metrics=control)
    on = app_for(upstream_url)
    costs: dict[tuple[str, bool], list[float]] = {}
    async with on.router.lifespan_context(on), off.router.lifespan_context(off):
        for round_ in range(repeats):
            for stream in (False, True):
                for concurrency in (1, 16):
                    name = f"{'stream' if stream else 'non-stream'} c={concurrency}"
                    count = requests // 4 if stream else requests
                    for app in (on, off) if round_ % 2 == 0 else (off, on):
                        cost = await scenario(app, stream, concurrency, count)
                        costs.setdefault((name, app is on), []).append(cost)
    names = dict.fromkeys(name for name, _ in costs)
    return {name: (min(costs[(name, False)]), min(costs[(name, True)])) for name in names}


async def ledger_rate(ledger: Any) -> float:
    """Usage rows written per second, 20,000 in one flush (rollup and spends included)."""
    from interference.store.usage import UsageRow

    await ledger.flush()
    now = time.time()
    for i in range(20_000):
        ledger.add(UsageRow(now, f"r{i}", "", MODEL, "up/x", 10, 0, 50, 0.0001, 200, 3.0, 1.0))
    started = time.perf_counter()
    await ledger.flush()
    return 20_000 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="non-stream; streams: 1/4")
    parser.add_argument("--repeats", type=int, default=5, help="the best of these is kept")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    parser.add_argument("--keys", action="store_true", help="a virtual key on every request")
    parser.add_argument(
        "--metrics", action="store_true", help="metrics off against on, in turns (issue 17)"
    )
    parser.add_argument(
        "--control", action="store_true", help="with --metrics: both apps on (an A/A run)"
    )
    args = parser.parse_args()
    tune_gc()  # the garbage collector as `interference serve` sets it
    if args.metrics:
        with upstream_in_thread(chunks=50) as upstream:
            loop = event_loop_factory()
            try:
                pairs = loop.run_until_complete(
                    metrics_cost(upstream.url, args.requests, args.repeats, args.control)
                )
            finally:
                loop.close()
        if args.json:
            print(json.dumps(pairs))
            return
        for name, (off, on) in pairs.items():
            cost = f"off {off:7.1f}  on {on:7.1f} us of CPU per request"
            print(f"{name:<16}{cost}  on/off {on / off:.3f}")
        return
    with upstream_in_thread(chunks=50) as upstream, tempfile.TemporaryDirectory() as folder:
        storage = f"{folder}/bench.db" if args.keys else None
        loop = event_loop_factory()
        try:
            figures = loop.run_until_complete(
                run(upstream.url, args.requests, args.repeats, storage)
            )
        finally:
            loop.close()
    if args.json:
        print(json.dumps(figures))
        return
    for name, cost in figures.items():
        if name == "ledger rows/s":
            print(f"usage ledger: {cost:,.0f} rows/s written (20,000 in one flush)")
        else:
            print(f"{name:<16}{cost:8.1f} us of CPU per request")


if __name__ == "__main__":
    main()
