"""Thousands of slow streams open at once: through interference, and to the upstream directly.

A batch job or a busy team keeps hundreds or thousands of answers streaming at the same time, each
for seconds. This script starts, each in a process of its own on 127.0.0.1: a fake upstream
(bench/fake_upstream.py) whose streams send a role event, ``--chunks`` content deltas, a finish
event, a usage event and ``[DONE]``, ``--delay-ms`` apart (20 deltas 250 ms apart by default: about
5.5 s per stream), and ``interference serve`` at its defaults with only that upstream configured
(``--workers`` as asked). Then, for each size N of ``--streams``, a client process opens N streams
at once, one connection each, first to the upstream directly, then through each interference, and
reports:

- *ok / failed*: streams that ended with ``data: [DONE]`` after a 200; the others by reason (the
  status, a cut connection, a timeout);
- *first token p50/p95*: from the moment the burst starts to the first content delta of each
  stream, and *added*: interference's p50 minus the direct p50 in the same run;
- *wall*: from the burst's start to the end of its last stream;
- *RSS per open stream*: the gateway's peak resident memory during the burst (all its processes,
  sampled every 50 ms) less its memory just before, divided by N;
- *CPU per chunk*: the gateway's CPU time (all its processes) over the burst divided by the
  events it relayed (every ``data:`` line the client received through it);
- *upstream conns*: the connections the gateway holds to the upstream right after the burst
  (``/v1/providers``; with ``--workers``, one worker's).

``--upstream-http 1.1,2`` measures each interference twice, side by side: talking HTTP/1.1 to the
upstream (one connection per open stream), and HTTP/2 (``http2: always``, h2c: up to
``--h2-max-streams`` streams per connection); the upstream then speaks both.

LiteLLM's proxy is measured too when a ``litellm`` command is on the PATH (``--litellm CMD``),
with bursts up to ``--litellm-max`` streams (1,000).

    .venv/bin/python bench/streams.py [--streams 1000,5000,10000] [--workers 1,2]
        [--upstream-http 1.1,2]

The client is ``python bench/streams.py --client HOST PORT N ...``: it prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gateway
from fake_upstream import event_loop_factory

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
MODEL = gateway.MODEL
FIRST_WORD = b"Hello"  # the fake upstream's first content delta
DONE = b"data: [DONE]"


# --- the client: N streams at once, one connection each


@dataclass
class StreamResult:
    status: int = 0
    first_token: float = float("nan")  # seconds from the burst's start
    ended: float = float("nan")
    events: int = 0
    failure: str = ""  # empty: ended with [DONE]


class StreamProtocol(asyncio.Protocol):
    """One stream: send the request, note the first content delta and [DONE], count events."""

    def __init__(self, request: bytes, started: float, result: StreamResult) -> None:
        self.request, self.started, self.result = request, started, result
        self.tail = b""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        result = self.result
        if not result.status:
            try:
                result.status = int(data[9:12])
            except ValueError:
                result.status = -1
        window = self.tail + data
        result.events += data.count(b"data: ")
        if result.first_token != result.first_token and FIRST_WORD in window:
            result.first_token = time.perf_counter() - self.started
        if DONE in window:
            result.ended = time.perf_counter() - self.started
            if self.transport is not None:
                self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
        self.tail = window[-16:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if not self.result.failure:
                status = self.result.status
                self.result.failure = f"status {status}" if status not in (0, 200) else "cut"
            self.done.set_result(None)


def stream_request(port: int, model: str) -> bytes:
    body = json.dumps(
        {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": "Tell me a story."}],
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {HOST}:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one_stream(port: int, request: bytes, started: float, timeout_s: float) -> StreamResult:
    result = StreamResult()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            _, protocol = await loop.create_connection(
                lambda: StreamProtocol(request, started, result), HOST, port
            )
            await protocol.done
            if result.failure == "" and result.ended != result.ended:
                result.failure = "cut"
    except TimeoutError:
        result.failure = "timeout"
    except OSError as exc:
        result.failure = f"connect: {exc.strerror or exc}"
    return result


async def burst(port: int, model: str, count: int, timeout_s: float) -> dict[str, Any]:
    request = stream_request(port, model)
    started = time.perf_counter()
    results = await asyncio.gather(
        *(one_stream(port, request, started, timeout_s) for _ in range(count))
    )
    wall = time.perf_counter() - started
    failures: dict[str, int] = {}
    for result in results:
        if result.failure:
            failures[result.failure] = failures.get(result.failure, 0) + 1
    ok = [r for r in results if not r.failure]
    firsts = sorted(r.first_token for r in ok if r.first_token == r.first_token)
    nan = float("nan")
    return {
        "streams": count,
        "ok": len(ok),
        "failed": failures,
        "wall_s": wall,
        "last_end_s": max((r.ended for r in ok), default=float("nan")),
        "first_token_p50_ms": 1000 * statistics.median(firsts) if firsts else nan,
        "first_token_p95_ms": 1000 * firsts[int(0.95 * (len(firsts) - 1))] if firsts else nan,
        "events": sum(r.events for r in ok),
    }


def client_main(argv: list[str]) -> None:
    host_port, model, count, timeout_s = argv[0], argv[1], int(argv[2]), float(argv[3])
    port = int(host_port.rsplit(":", 1)[1])
    with asyncio.Runner(loop_factory=event_loop_factory) as runner:
        report = runner.run(burst(port, model, count, timeout_s))
    print(json.dumps(report), flush=True)


# --- the driver


@dataclass
class Target:
    name: str
    port: int
    model: str
    pid: int | None  # the gateway's process, measured (None: the upstream itself)
    log: Path | None = None  # its output
    provider: str | None = None  # its upstream provider, whose connections are reported


@dataclass
class Sampler:
    """The peak RSS of a process tree, sampled every 50 ms in a thread while a burst runs."""

    pid: int
    peak_mb: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, gateway.rss_mb(self.pid))


def measure(target: Target, count: int, timeout_s: float) -> dict[str, Any]:
    """One burst of ``count`` streams against ``target``, from a client process of its own."""
    rss_before = cpu_before = 0.0
    sampler = None
    if target.pid is not None:
        time.sleep(1.0)  # what the last burst left behind settles
        rss_before = gateway.rss_mb(target.pid)
        cpu_before = gateway.cpu_seconds(target.pid)
        sampler = Sampler(target.pid, rss_before)
        threading.Thread(target=sampler.run, daemon=True).start()
    argv = [sys.executable, str(Path(__file__)), "--client"]
    argv += [f"{HOST}:{target.port}", target.model, str(count), str(timeout_s)]
    finished = subprocess.run(argv, capture_output=True, timeout=timeout_s + 60, check=False)
    if finished.returncode != 0:
        raise gateway.BenchError(f"the client failed:\n{finished.stderr.decode()[-2000:]}")
    report: dict[str, Any] = json.loads(finished.stdout.splitlines()[-1])
    report["target"] = target.name
    if report["failed"] and target.log is not None:  # what the gateway said about them
        lines = target.log.read_text(errors="replace").splitlines()
        report["log"] = [line for line in lines if " WARNING " in line or " ERROR " in line][-5:]
        for line in report["log"]:
            print(f"    {line[:300]}", flush=True)
    if sampler is not None and target.pid is not None:
        sampler.stop.set()
        report["cpu_s"] = gateway.cpu_seconds(target.pid) - cpu_before
        report["rss_before_mb"] = rss_before
        report["rss_peak_mb"] = sampler.peak_mb
        report["rss_kb_per_stream"] = 1024 * (sampler.peak_mb - rss_before) / count
        events = report["events"]
        report["cpu_us_per_chunk"] = 1e6 * report["cpu_s"] / events if events else float("nan")
    if target.provider is not None:
        report["upstream_connections"] = upstream_connections(target)
    return report


def upstream_connections(target: Target) -> int:
    """Connections the gateway holds to the upstream now (one worker's, with several)."""
    answer = json.loads(gateway.call(target.port, "GET", "/v1/providers", None))
    pools = [p["connections"] for p in answer["providers"] if p["name"] == target.provider]
    return int(pools[0]["open"]) if pools else -1


def interference_config(upstream: str, http: str = "1.1") -> str:
    """The defaults, and the one upstream (``http``: "2" speaks HTTP/2 to it, h2c)."""
    http2 = ", http2: always" if http == "2" else ""
    return (
        "providers:\n"
        f'  up: {{kind: openai, base_url: "{upstream}/v1"{http2}}}\n'
        "models:\n"
        f"  {MODEL}:\n"
        f"    deployments: [{{provider: up, model: {MODEL}}}]\n"
        "openai_aliases: false\n"
    )


def litellm_config(upstream: str) -> str:
    return (
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: none\n"
    )


def start_targets(
    processes: gateway.Processes, args: argparse.Namespace
) -> tuple[list[Target], dict[str, float]]:
    python = sys.executable
    upstream_argv = [python, str(BENCH / "fake_upstream.py"), "--chunks", str(args.chunks)]
    upstream_argv += ["--delay-ms", str(args.delay_ms)]
    if "2" in args.upstream_http:
        upstream_argv += ["--http2", "--h2-max-streams", str(args.h2_max_streams)]
    upstream = processes.launch("upstream", upstream_argv)
    upstream.url = gateway.wait_for_line(upstream, gateway.LISTENING, args.startup_timeout).group(1)
    targets = [Target("direct", upstream.port, MODEL, None)]
    startup: dict[str, float] = {}
    for workers in args.workers:
        for http in args.upstream_http:
            name = "interference" if workers == 1 else f"interference --workers {workers}"
            if len(args.upstream_http) > 1:
                name += f" (upstream HTTP/{http})"
            config = processes.log_dir / f"interference-http{http}.yaml"
            config.write_text(interference_config(upstream.url, http))
            argv = [python, "-m", "interference", "serve", "--port", "0", "--config", str(config)]
            argv += ["--log-level", "warning", "--workers", str(workers)]
            server = processes.launch(f"interference-w{workers}-http{http}", argv)
            server.url = gateway.wait_for_line(server, gateway.READY, args.startup_timeout).group(2)
            startup[name] = gateway.wait_until_answering(server, MODEL, args.startup_timeout)
            targets.append(Target(name, server.port, MODEL, server.popen.pid, server.log, "up"))
    litellm = args.litellm or shutil.which("litellm")
    if litellm:
        litellm_yaml = processes.log_dir / "litellm.yaml"
        litellm_yaml.write_text(litellm_config(upstream.url))
        port = free_port()
        proxy = processes.launch(
            "litellm",
            [litellm, "--config", str(litellm_yaml), "--port", str(port)],
            {
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # it would fetch its price list
                # on 127.0.0.1 only, as interference without keys: no master key
                "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
            },
        )
        proxy.url = f"http://{HOST}:{port}"
        startup["litellm"] = gateway.wait_until_answering(proxy, MODEL, 120.0)
        targets.append(Target("litellm", port, MODEL, proxy.popen.pid))
    return targets, startup


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def fmt(value: Any, digits: int = 0) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:,.{digits}f}"
    return str(value)


def table(report: dict[str, Any]) -> str:
    lines = [
        "| streams | target | ok | failed | wall s | first token p50 ms | p95 ms | added p50 ms "
        "| RSS KB/stream | CPU µs/chunk | upstream conns |",
        "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in report["runs"]:
        failed = ", ".join(f"{n} {why}" for why, n in run["failed"].items()) or "0"
        lines.append(
            f"| {run['streams']:,} | {run['target']} | {run['ok']:,} | {failed} "
            f"| {fmt(run['wall_s'], 1)} | {fmt(run['first_token_p50_ms'])} "
            f"| {fmt(run['first_token_p95_ms'])} | {fmt(run.get('added_p50_ms', float('nan')))} "
            f"| {fmt(run.get('rss_kb_per_stream', float('nan')), 1)} "
            f"| {fmt(run.get('cpu_us_per_chunk', float('nan')), 1)} "
            f"| {fmt(run.get('upstream_connections', '-'))} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1000,5000,10000", help="burst sizes, comma-separated")
    parser.add_argument("--workers", default="1,2", help="interference --workers to measure")
    parser.add_argument("--chunks", type=int, default=20, help="content deltas per stream")
    parser.add_argument("--delay-ms", type=float, default=250.0, help="between stream events")
    parser.add_argument("--timeout", type=float, default=120.0, help="per stream, seconds")
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    parser.add_argument(
        "--upstream-http",
        default="1.1",
        help="HTTP versions interference speaks to the upstream, comma-separated: 1.1, 2",
    )
    parser.add_argument(
        "--h2-max-streams", type=int, default=100, help="the upstream's streams per HTTP/2 conn"
    )
    parser.add_argument("--litellm", help="a litellm command to measure too (default: on PATH)")
    parser.add_argument(
        "--litellm-max", type=int, default=1000, help="the largest burst sent to LiteLLM"
    )
    parser.add_argument(
        "--json", type=Path, default=BENCH / "results" / "streams.json", help="figures, as JSON"
    )
    args = parser.parse_args(argv)
    args.streams = [int(n) for n in args.streams.split(",")]
    args.workers = [int(n) for n in args.workers.split(",")]
    args.upstream_http = [v.strip() for v in args.upstream_http.split(",")]
    if not set(args.upstream_http) <= {"1.1", "2"}:
        parser.error("--upstream-http takes 1.1 and 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with gateway.started_processes("bench-streams-") as processes:
        print("starting the upstream and interference ...", flush=True)
        targets, startup = start_targets(processes, args)
        for count in args.streams:
            direct_p50 = float("nan")
            for target in targets:
                if target.name == "litellm" and count > args.litellm_max:
                    continue  # minutes per burst: 1,000 streams already took it 30 s
                print(f"  {count:,} streams: {target.name} ...", flush=True)
                run = measure(target, count, args.timeout)
                if target.name == "direct":
                    direct_p50 = run["first_token_p50_ms"]
                else:
                    run["added_p50_ms"] = run["first_token_p50_ms"] - direct_p50
                runs.append(run)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": gateway.git("rev-parse", "HEAD"),
        "git_dirty": bool(gateway.git("status", "--porcelain", "--untracked-files=no")),
        "cpu_count": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "startup_s": startup,
        "runs": runs,
        "wall_s": time.perf_counter() - began,
    }
    print()
    print(table(report))
    print(f"\ntotal {report['wall_s']:.0f} s; figures in {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(gateway.finite(report), indent=2) + "\n")
    return 0 if all(not run["failed"] for run in runs) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        client_main(sys.argv[2:])
        sys.exit(0)
    try:
        sys.exit(main())
    except gateway.BenchError as exc:
        print(f"streams bench: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)
