"""Throughput and latency of the embedded model: interference versus the engine's own server.

For 1, 4 and 8 concurrent streams of ``--tokens`` tokens each (end-of-text banned, so every
stream has the same length) the script reports aggregate tokens/s, per-stream tokens/s and time
to first token (p50, p95), first against llama.cpp's own HTTP server (xllamacpp's listener, in a
process of its own with the same model and settings), then against ``interference serve``, one
after the other so that they never share the CPU, and prints their ratio.

    .venv/bin/python bench/engine.py [--weights q8_0] [--tokens 128] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from interference.engine.sampling import SMOLLM2_135M
from interference.engine.weights import WEIGHT_FORMATS

ROOT = Path(__file__).resolve().parents[1]
PARALLEL = 8
CONTEXT = 8192  # tokens the slots share (llama.cpp's unified KV cache, as interference)
KEY = "bench-key"

ENGINE_SERVER = f"""
import signal, sys, time, xllamacpp
from interference.engine import resolve_model
from interference.engine.weights import prepare_weights
p = xllamacpp.CommonParams()
p.model.path = str(prepare_weights(resolve_model("smollm2-135m-instruct").path, sys.argv[1]))
p.n_parallel = {PARALLEL}
p.n_ctx = {CONTEXT}
p.kv_unified = True
p.ctx_shift = False
p.cache_ram_mib = 256
p.port = 0
p.api_keys = ["{KEY}"]
p.verbosity = -1
server = xllamacpp.Server(p)
print(server.listening_address, flush=True)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
"""


@dataclass
class Figures:
    target: str
    streams: int
    aggregate_tps: float
    per_stream_tps: float
    ttft_p50_ms: float
    ttft_p95_ms: float


@contextmanager
def engine_server(weights: str) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", ENGINE_SERVER, weights], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@contextmanager
def interference_server(weights: str, provider: str | None = None) -> Iterator[str]:
    """``interference serve`` with one local provider: ``provider`` (a YAML flow mapping of
    its settings; ``{}`` for the defaults), else the engine comparison's fixed layout."""
    with interference_process(weights, provider) as (url, _):
        yield url


@contextmanager
def interference_process(
    weights: str, provider: str | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    config = ROOT / "bench" / ".engine-bench.yaml"
    if provider is None:
        provider = f"{{parallel: {PARALLEL}, context: {CONTEXT}, max_queue: 8}}"
    settings = provider.strip().removeprefix("{").removesuffix("}").strip()
    extra = f", {settings}" if settings else ""
    config.write_text(f"providers:\n  local: {{kind: local, weights: {weights}{extra}}}\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "interference",
            "serve",
            "--port",
            "0",
            "--config",
            str(config),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            found = re.search(r"ready in .* at (http://\S+)", line)
            if found:
                yield found.group(1), process
                break
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        config.unlink(missing_ok=True)


async def one_stream(
    client: httpx.AsyncClient, url: str, tokens: int, i: int
) -> tuple[float, float, int]:
    body = {
        "model": "gpt-3.5-turbo",
        "messages": [{"role": "user", "content": f"Write story number {i} about a lighthouse."}],
        "max_tokens": tokens,
        "logit_bias": {"2": -100},
        # the same sampling work on both sides: the model's defaults, sent explicitly
        **SMOLLM2_135M.values(),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    completion = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if not first and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                completion = chunk["usage"]["completion_tokens"]
    return first, time.perf_counter() - started, completion


async def measure(target: str, url: str, streams: int, tokens: int, rounds: int) -> Figures:
    headers = {"authorization": f"Bearer {KEY}"}
    ttfts: list[float] = []
    per_stream: list[float] = []
    aggregate: list[float] = []
    # a fresh connection per stream: llama.cpp's HTTP server may close a kept-alive one
    # between streams, and both targets are measured the same way
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=300, headers=headers, limits=limits) as client:
        await one_stream(client, url, 8, 0)  # warm-up
        for r in range(rounds):
            started = time.perf_counter()
            results = await asyncio.gather(
                *(one_stream(client, url, tokens, r * 100 + i) for i in range(streams))
            )
            wall = time.perf_counter() - started
            aggregate.append(sum(n for _, _, n in results) / wall)
            for first, total, n in results:
                ttfts.append(first)
                per_stream.append(n / total)
    ttfts.sort()
    p95 = ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))]
    return Figures(
        target,
        streams,
        statistics.mean(aggregate),
        statistics.mean(per_stream),
        statistics.median(ttfts) * 1000,
        p95 * 1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--weights", default="q8_0", choices=WEIGHT_FORMATS)
    args = parser.parse_args()
    figures: list[Figures] = []
    for target, server in (("engine", engine_server), ("interference", interference_server)):
        with server(args.weights) as url:
            for streams in (1, 4, 8):
                print(f"measuring {target} with {streams} streams", file=sys.stderr, flush=True)
                figures.append(asyncio.run(measure(target, url, streams, args.tokens, args.rounds)))
    print(
        f"{os.cpu_count()} CPU cores, weights {args.weights}, {args.tokens} tokens per stream, "
        f"{args.rounds} rounds"
    )
    print(
        f"{'streams':>7} {'target':<13}{'agg tok/s':>10}{'tok/s/stream':>13}"
        f"{'TTFT p50 ms':>12}{'TTFT p95 ms':>12}"
    )
    for f in figures:
        print(
            f"{f.streams:>7} {f.target:<13}{f.aggregate_tps:>10.1f}{f.per_stream_tps:>13.1f}"
            f"{f.ttft_p50_ms:>12.0f}{f.ttft_p95_ms:>12.0f}"
        )
    print("\nratio interference / engine (higher is better for tok/s, lower for TTFT):")
    for streams in (1, 4, 8):
        engine, ours = (
            next(f for f in figures if f.target == t and f.streams == streams)
            for t in ("engine", "interference")
        )
        print(
            f"{streams:>7} streams: aggregate {ours.aggregate_tps / engine.aggregate_tps:.2f}x, "
            f"TTFT p50 {ours.ttft_p50_ms / engine.ttft_p50_ms:.2f}x"
        )
    single = next(f for f in figures if f.target == "interference" and f.streams == 1)
    eight = next(f for f in figures if f.target == "interference" and f.streams == 8)
    print(
        f"interference: 8 streams give {eight.aggregate_tps / single.aggregate_tps:.2f}x "
        "the single-stream rate"
    )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(f) for f in figures], indent=2))


if __name__ == "__main__":
    main()
