"""Soak test: minutes of mixed traffic through interference, watching its memory and descriptors.

Starts, each in a process of its own on 127.0.0.1, a fake OpenAI-compatible upstream
(bench/fake_upstream.py; streams of 20 chunks 5 ms apart) and ``interference serve`` with only
that upstream as an ``openai`` provider; ``--local`` adds the embedded model (the default
``local`` provider, ``parallel: 2``). For ``--duration`` seconds, ``--concurrency`` closed-loop
workers (bench/loadgen.py's raw keep-alive client) send a random mix: non-stream and stream chat
completions, streams the client abandons after 3 events (cancellation), an unknown model (404
expected), invalid JSON (400 expected) and, with ``--local``, short requests to the local model
(at most 4 at once). Besides them, ``--long-streams`` workers (300 by default) each stream
from a second, slow upstream (40 chunks 500 ms apart: 20 s per stream) one answer after
another, so that that many long-lived streams are open at all times. Any other answer (wrong
status, a stream without ``[DONE]``, a timeout, a connection error) is an error. The
gateway's RSS and open descriptors are sampled every few seconds; the baseline is taken after
the warm-up (10 % of the run, 20 s at most), the end once the load has stopped and drained.

    make soak [ARGS="--duration 20"]      # = .venv/bin/python bench/soak.py
    .venv/bin/python bench/soak.py [--duration 300] [--concurrency 16] [--local] [--json PATH]

Prints a table, then PASS, or FAIL with the reason and exit status 1 (any error, or RSS grown by
``--max-growth`` % or more). Every process it starts is stopped (by PID) at the end, on errors
and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fake_upstream
import gateway
import loadgen

HOST = gateway.HOST
MODEL = fake_upstream.MODEL
CHUNKS, DELAY_MS = 20, 5.0  # upstream streams last about 100 ms
LONG_CHUNKS, LONG_DELAY_MS = 40, 500.0  # the long-lived streams last about 20 s
LONG_MODEL = "bench-long"
ABANDON_AFTER = 3  # events a client reads before it closes an abandoned stream
LOCAL_TOKENS = 16
LOCAL_IN_FLIGHT = 4  # local requests at once at most: its 2 slots and 2 waiting
MAX_RATE = 5000  # requests per second the count bound allows (a bound, not a target)
FIRST_ERRORS = 10


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix and the answer it must get."""

    name: str
    weight: float
    request: bytes
    status: int = 200
    stream: bool = False
    abandon: bool = False
    local: bool = False
    long: bool = False  # sent by the long-stream workers only


@dataclass
class Tally:
    done: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # ms, good answers only


@dataclass
class Plan:
    """What the workers share: the mix, the bounds, and what they found."""

    port: int
    kinds: list[Kind]
    remaining: int
    started: float
    deadline: float
    timeout_s: float
    tallies: dict[str, Tally]
    first_errors: list[str] = field(default_factory=list)
    local_busy: int = 0  # local requests in flight
    long_open: int = 0  # long-lived streams in flight

    def take(self) -> bool:
        if self.remaining <= 0 or time.monotonic() >= self.deadline:
            return False
        self.remaining -= 1
        return True


def mix(port: int, local_model: str | None, long_streams: bool = False) -> list[Kind]:
    """The request kinds and their shares (weights in per cent)."""

    def chat(model: str, stream: bool, max_tokens: int = 64, prompt: str = "Say hello.") -> bytes:
        return loadgen.chat_request(HOST, port, model, stream, prompt=prompt, max_tokens=max_tokens)

    cut = b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user"'
    bad_json = loadgen.post_request(HOST, port, "/v1/chat/completions", cut)
    kinds = [
        Kind("completion", 42, chat(MODEL, False)),
        Kind("stream", 42, chat(MODEL, True), stream=True),
        Kind("abandoned", 6, chat(MODEL, True), stream=True, abandon=True),
        Kind("unknown-model", 5, chat("no-such-model", False), status=404),
        Kind("bad-json", 5, bad_json, status=400),
    ]
    if long_streams:
        kinds.append(Kind("long-stream", 0, chat(LONG_MODEL, True), stream=True, long=True))
    if local_model:
        story = "Write a short story about a lighthouse."
        local = chat(local_model, False, LOCAL_TOKENS, story)
        local_stream = chat(local_model, True, LOCAL_TOKENS, story)
        kinds += [
            Kind("local", 2, local, local=True),
            Kind("local-stream", 2, local_stream, stream=True, local=True),
            Kind("local-abandoned", 1, local_stream, stream=True, abandon=True, local=True),
        ]
    return kinds


async def read_events(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    """Read a chunked SSE stream until ``ABANDON_AFTER`` events (or its end, ``[DONE]``)."""
    if "chunked" not in headers.get("transfer-encoding", "").lower():
        raise loadgen.ResponseError(f"stream is not chunked: {headers}")
    events = loadgen.Events(time.perf_counter(), keep=True)
    for _ in range(10_000):
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            if events.data and events.data[-1].strip() == loadgen.DONE:
                return  # a short stream that ended on its own: a good answer too
            raise loadgen.ResponseError(f"stream ended after {len(events.times)} events")
        events.feed((await reader.readexactly(size + 2))[:-2])
        if len(events.times) >= ABANDON_AFTER:
            return
    raise loadgen.ResponseError("no events in 10,000 chunks")


async def exchange(kind: Kind, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Send one request and check its answer; whether the connection can be reused."""
    writer.write(kind.request)
    status, headers = await loadgen.read_head(reader)
    if kind.abandon and status == 200:
        await read_events(reader, headers)
        return False  # the caller closes the socket mid-stream
    body, reusable = await loadgen.read_body(reader, headers, None)
    if status != kind.status:
        raise loadgen.ResponseError(f"status {status} (expected {kind.status}): {body[:200]!r}")
    if status != 200 and b'"error"' not in body:
        raise loadgen.ResponseError(f"error answer without an error object: {body[:200]!r}")
    if kind.stream and not body.rstrip().endswith(loadgen.DONE):
        raise loadgen.ResponseError(f"stream does not end with [DONE]: ...{body[-100:]!r}")
    if status == 200 and not kind.stream and b'"chat.completion"' not in body:
        raise loadgen.ResponseError(f"not a chat.completion: {body[:200]!r}")
    return reusable


async def worker(plan: Plan, rng: random.Random) -> None:
    """Send requests of random kinds over one connection (reopened when needed) while allowed.

    A local request is replaced by a remote one while ``LOCAL_IN_FLIGHT`` are under way: else
    the closed loop would soon have most workers waiting for the local model's two slots.
    """
    remote = [kind for kind in plan.kinds if not kind.local]
    with loadgen.Connection(HOST, plan.port) as connection:
        while plan.take():
            kind = rng.choices(plan.kinds, [k.weight for k in plan.kinds])[0]
            if kind.local and plan.local_busy >= LOCAL_IN_FLIGHT:
                kind = rng.choices(remote, [k.weight for k in remote])[0]
            tally = plan.tallies[kind.name]
            plan.local_busy += kind.local
            started = time.perf_counter()
            try:
                streams = await connection.open(plan.timeout_s)
                reusable = await asyncio.wait_for(exchange(kind, *streams), plan.timeout_s)
                tally.done += 1
                tally.latencies.append((time.perf_counter() - started) * 1000)
            except loadgen.FAILURES as exc:
                tally.errors += 1
                if len(plan.first_errors) < FIRST_ERRORS:
                    at = time.monotonic() - plan.started
                    plan.first_errors.append(f"{kind.name} at {at:.1f} s: {exc!r}")
                reusable = False
            finally:
                plan.local_busy -= kind.local
            if not reusable:
                connection.close()


async def long_worker(plan: Plan, kind: Kind, duration_s: float) -> None:
    """Stream long answers one after another over one connection while allowed."""
    tally = plan.tallies[kind.name]
    with loadgen.Connection(HOST, plan.port) as connection:
        while time.monotonic() < plan.deadline:
            started = time.perf_counter()
            plan.long_open += 1
            try:
                streams = await connection.open(plan.timeout_s)
                timeout = plan.timeout_s + duration_s
                reusable = await asyncio.wait_for(exchange(kind, *streams), timeout)
                tally.done += 1
                tally.latencies.append((time.perf_counter() - started) * 1000)
            except loadgen.FAILURES as exc:
                tally.errors += 1
                if len(plan.first_errors) < FIRST_ERRORS:
                    at = time.monotonic() - plan.started
                    plan.first_errors.append(f"{kind.name} at {at:.1f} s: {exc!r}")
                reusable = False
                await asyncio.sleep(0.5)  # a failing gateway is not hammered
            finally:
                plan.long_open -= 1
            if not reusable:
                connection.close()


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def measure(pid: int, started: float) -> dict[str, float]:
    t = time.monotonic() - started
    return {"t_s": round(t, 2), "rss_mb": round(gateway.rss_mb(pid), 2), "fds": open_fds(pid)}


async def sampler(
    pid: int, started: float, times: list[float], done: asyncio.Event, plan: Plan | None = None
) -> list[Any]:
    """Samples at the given offsets from ``started`` until the load is done."""
    samples: list[dict[str, float]] = []
    for at in times:
        delay = started + at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), delay)
        if done.is_set():
            break
        sample = await asyncio.to_thread(measure, pid, started)
        if plan is not None:
            sample["long_open"] = plan.long_open
        samples.append(sample)
    return samples


async def soak(pid: int, port: int, args: argparse.Namespace, kinds: list[Kind]) -> dict[str, Any]:
    started = time.monotonic()
    plan = Plan(
        port,
        kinds,
        remaining=int(args.duration * MAX_RATE),
        started=started,
        deadline=started + args.duration,
        timeout_s=args.request_timeout,
        tallies={kind.name: Tally() for kind in kinds},
    )
    warmup = min(0.1 * args.duration, 20.0)
    every = min(5.0, max(1.0, args.duration / 30))
    times = sorted({warmup, *(i * every for i in range(int(args.duration / every) + 1))})
    done = asyncio.Event()
    sampling = asyncio.create_task(sampler(pid, started, times, done, plan))
    workers = [worker(plan, random.Random(i)) for i in range(args.concurrency)]
    long_s = LONG_CHUNKS * LONG_DELAY_MS / 1000
    for kind in kinds:
        if kind.long:
            workers += [long_worker(plan, kind, long_s) for _ in range(args.long_streams)]
    async with asyncio.timeout(args.duration + args.request_timeout + long_s + 10):
        await asyncio.gather(*workers)
    load_s = time.monotonic() - started
    done.set()
    samples = await sampling
    await asyncio.sleep(2)  # let the gateway finish with the closed connections
    end = await asyncio.to_thread(measure, pid, started)
    baseline = next((s for s in samples if s["t_s"] >= warmup), end)
    total = sum(t.done + t.errors for t in plan.tallies.values())
    return {
        "load_s": load_s,
        "warmup_s": warmup,
        "requests": total,
        "rps": total / load_s,
        "errors": sum(t.errors for t in plan.tallies.values()),
        "first_errors": plan.first_errors,
        "kinds": {
            name: {
                "weight_pct": next(k.weight for k in kinds if k.name == name),
                "share_pct": (t.done + t.errors) / max(1, total) * 100,
                "done": t.done,
                "errors": t.errors,
                "p50_ms": loadgen.percentile(sorted(t.latencies), 50),
                "p95_ms": loadgen.percentile(sorted(t.latencies), 95),
                "max_ms": max(t.latencies, default=float("nan")),
            }
            for name, t in plan.tallies.items()
        },
        "rss_mb": {
            "baseline": baseline["rss_mb"],
            "end": end["rss_mb"],
            "max": max(s["rss_mb"] for s in [*samples, end]),
            "growth_pct": (end["rss_mb"] / baseline["rss_mb"] - 1) * 100,
        },
        "long_streams_open": {
            "min": min((s["long_open"] for s in samples if s["t_s"] >= warmup), default=0),
            "max": max((s["long_open"] for s in samples), default=0),
        },
        "fds": {
            "baseline": baseline["fds"],
            "end": end["fds"],
            "max": max(s["fds"] for s in [*samples, end]),
        },
        "samples": [*samples, end],
    }


def config(
    upstream: str, local: bool, prompt_cache_mib: int | None = None, long_upstream: str = ""
) -> str:
    text = f'providers:\n  up: {{kind: openai, base_url: "{upstream}/v1"}}\n'
    if long_upstream:
        text += f'  up-long: {{kind: openai, base_url: "{long_upstream}/v1"}}\n'
    if local:
        cache = "" if prompt_cache_mib is None else f", prompt_cache_mib: {prompt_cache_mib}"
        text += f"  local: {{kind: local, parallel: 2{cache}}}\n"
    text += f"models:\n  {MODEL}:\n    deployments: [{{provider: up, model: {MODEL}}}]\n"
    if long_upstream:
        text += f"  {LONG_MODEL}:\n    deployments: [{{provider: up-long, model: {MODEL}}}]\n"
    return text + "openai_aliases: false\n"


def local_model_id(port: int) -> str:
    """The id the gateway lists besides the upstream's model: the local model's."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/v1/models", timeout=10) as answer:
        ids = [m["id"] for m in json.load(answer)["data"] if m["id"] not in (MODEL, LONG_MODEL)]
    if len(ids) != 1:
        raise gateway.BenchError(f"expected one local model in /v1/models, found {ids}")
    return str(ids[0])


def verdict(report: dict[str, Any], max_growth: float) -> list[str]:
    """Why the run failed; empty when it passed."""
    reasons = []
    if report["errors"]:
        reasons.append(f"{report['errors']} errors")
    growth = report["rss_mb"]["growth_pct"]
    if not growth < max_growth:  # NaN fails too
        reasons.append(f"RSS grew {growth:.1f} % (limit {max_growth:g} %)")
    if not report["gateway_alive"]:
        reasons.append("interference exited during the run")
    return reasons


def table(report: dict[str, Any]) -> str:
    settings, rss, fds = report["settings"], report["rss_mb"], report["fds"]
    head = f"{'kind':<16} {'share':>6} {'done':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8}"
    head += f" {'max ms':>8}"
    lines = [
        f"{report['cpu_count']} CPUs, {report['date']}, commit {report['git_commit'][:12]}"
        + (" (dirty)" if report["git_dirty"] else "")
        + f"; {settings['duration']:g} s at concurrency {settings['concurrency']}"
        + f", local model: {report['local_model'] or 'no'}",
        head,
        "-" * len(head),
    ]
    for name, k in report["kinds"].items():
        lines.append(
            f"{name:<16} {k['share_pct']:>5.1f}% {k['done']:>8} {k['errors']:>6} "
            f"{gateway.fmt_ms(k['p50_ms']):>8} {gateway.fmt_ms(k['p95_ms']):>8} "
            f"{gateway.fmt_ms(k['max_ms']):>8}"
        )
    lines += [
        f"{'all':<16} {'':>6} {report['requests']:>8} {report['errors']:>6}"
        f"   {report['rps']:.0f} req/s over {report['load_s']:.1f} s",
        "",
        f"RSS MB: baseline {rss['baseline']:.1f} (at {report['warmup_s']:g} s), "
        f"end {rss['end']:.1f}, max {rss['max']:.1f}, growth {rss['growth_pct']:+.1f} %",
        f"open fds: baseline {fds['baseline']}, end {fds['end']}, max {fds['max']}",
        f"long-lived streams open: at least {report['long_streams_open']['min']} after the "
        f"warm-up, at most {report['long_streams_open']['max']}",
        f"tracebacks in interference's log: {report['log_tracebacks']}",
    ]
    if report["first_errors"]:
        lines += ["first errors:", *(f"  {e}" for e in report["first_errors"])]
    return "\n".join(line.rstrip() for line in lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop workers")
    parser.add_argument("--local", action="store_true", help="also the embedded model")
    parser.add_argument(
        "--long-streams", type=int, default=300, help="long-lived streams open at all times"
    )
    parser.add_argument(
        "--prompt-cache-mib",
        type=int,
        help="the local model's prompt cache (default 256: it fills, bounded, as prompts vary)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds")
    parser.add_argument("--max-growth", type=float, default=10.0, help="RSS growth %% that fails")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    python = sys.executable
    with gateway.started_processes("bench-soak-") as processes:
        print("starting the upstream and interference ...", flush=True)
        argv_up = ["--chunks", str(CHUNKS), "--delay-ms", str(DELAY_MS)]
        upstream = processes.launch("upstream", [python, fake_upstream.__file__, *argv_up])
        upstream.url = gateway.wait_for_line(upstream, gateway.LISTENING, 30).group(1)
        long_url = ""
        if args.long_streams:
            argv_long = ["--chunks", str(LONG_CHUNKS), "--delay-ms", str(LONG_DELAY_MS)]
            slow = processes.launch("upstream-long", [python, fake_upstream.__file__, *argv_long])
            long_url = gateway.wait_for_line(slow, gateway.LISTENING, 30).group(1)
        config_file = processes.log_dir / "interference.yaml"
        config_file.write_text(config(upstream.url, args.local, args.prompt_cache_mib, long_url))
        serve = ["serve", "--port", "0", "--config", str(config_file), "--log-level", "warning"]
        served = processes.launch("interference", [python, "-m", "interference", *serve])
        served.url = gateway.wait_for_line(served, gateway.READY, args.startup_timeout).group(2)
        gateway.wait_until_answering(served, MODEL, args.startup_timeout)
        local = local_model_id(served.port) if args.local else None
        print(f"soaking for {args.duration:g} s at concurrency {args.concurrency} ...", flush=True)
        with asyncio.Runner(loop_factory=loadgen.event_loop_factory) as runner:
            kinds = mix(served.port, local, bool(args.long_streams))
            figures = runner.run(soak(served.popen.pid, served.port, args, kinds))
        alive = served.popen.poll() is None
        tracebacks = served.log.read_text(errors="replace").count("Traceback")
        if tracebacks:
            print(f"--- interference's log ends with:\n{served.tail(40)}", file=sys.stderr)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": gateway.git("rev-parse", "HEAD"),
        "git_dirty": bool(gateway.git("status", "--porcelain", "--untracked-files=no")),
        "cpu_count": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "local_model": local,
        "gateway_alive": alive,
        "log_tracebacks": tracebacks,
        **figures,
    }
    reasons = verdict(report, args.max_growth)
    report["passed"], report["fail_reasons"] = not reasons, reasons
    print()
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(gateway.finite(report), indent=2) + "\n")
        print(f"figures in {args.json}")
    print("PASS" if not reasons else f"FAIL: {'; '.join(reasons)}")
    return 1 if reasons else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except gateway.BenchError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)
