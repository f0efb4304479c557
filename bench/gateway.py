"""What the interference gateway adds to each call: interference vs the upstream vs a bare proxy.

Starts, each in a process of its own and all on 127.0.0.1: a fake OpenAI-compatible upstream
(bench/fake_upstream.py, far cheaper per request than any gateway), the bare pass-through
reference (bench/passthrough.py: FastAPI + aiohttp, no routing, no validation) and
``interference serve`` with a configuration that has no local model, only that upstream. Then,
for non-stream and stream (50-chunk) chat completions at concurrency 1, 16 and 64, it drives each
target in turn with the closed-loop load generator (bench/loadgen.py): ``direct`` (the upstream
itself), ``passthrough`` and ``interference``, a warm-up first, then a fixed number of requests
bounded in time. A last check streams from a slow upstream (20 chunks, 20 ms apart) through each
target to show whether the chunks are relayed as they come or held back.

Virtual keys: a second ``interference serve``, the same configuration plus a master key and its
SQLite database in the temporary folder, serves ``interference+key``: one virtual key with a
budget and rpm/tpm limits too generous to refuse anything, sent by the load generator on every
request (the key checked in memory, its limits, the budget's reservation, a usage row per
request, written every ``storage.refresh_s``). In each scenario the two servers take turns with
the same load (``--key-rounds`` rounds in ABBA order, each with the scenario's count of requests,
pooled), and a table compares keys on with keys off against the issue's bound (keys
on within 10 %). After the runs ``GET /usage`` (master key) must count every request sent with
the key. ``--no-keys`` leaves the second server out.

Metrics: a third ``interference serve``, the same configuration plus ``metrics: {enabled:
false}``, serves ``interference-no-metrics`` (nothing counted per request for ``GET /metrics``).
It takes turns with ``interference`` (metrics on, the default) in the same rounds
(``--metrics-rounds``, ABBA), and a table compares metrics on with metrics off against the
issue's bound (req/s on/off >= 0.97 in every scenario). At the end a scrape of ``GET /metrics``
on ``interference`` must count, in ``interference_requests_total`` for the bench model, every
request sent to it, and the metrics-off server's none. ``--no-metrics-compare`` leaves the third
server and the scrapes out.

    make bench [ARGS="--quick"]          # = .venv/bin/python bench/gateway.py
    .venv/bin/python bench/gateway.py [--requests 12000] [--json bench/results/gateway-latest.json]

Prints a table and writes the figures as JSON (with the git commit, the date and the CPU count)
so that runs can be compared across commits. Every process it starts is stopped (by PID) at the
end, on errors and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import loadgen

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = "127.0.0.1"
MODEL = "bench-model"
SLOW_MODEL = "bench-slow"
TARGETS = ("direct", "passthrough", "interference")
KEYED = "interference+key"  # the second server, a virtual key on every request
MASTER_KEY = "bench-master-key"
KEY_ALIAS = "bench"
KEY_BOUND = 0.90  # keys on must keep this share of keys off's req/s in every scenario
UNMETERED = "interference-no-metrics"  # the third server, metrics: {enabled: false}
METRICS_BOUND = 0.97  # metrics on must keep this share of metrics off's req/s in every scenario
LISTENING = re.compile(r"listening on (http://\S+)")
READY = re.compile(r"ready in ([0-9.]+) s at (http://\S+)")
STREAM_CHUNKS = 50
SLOW_CHUNKS, SLOW_DELAY_MS = 20, 20.0


@dataclass
class Process:
    """A process this script started; its stdout and stderr go to ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    launched: float  # time.perf_counter() just before the launch
    url: str = ""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            code = self.popen.returncode
            raise BenchError(f"{self.name} exited with status {code}:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Processes:
    """Every process started, so that all of them are stopped whatever happens."""

    log_dir: Path
    started: list[Process] = field(default_factory=list)

    def launch(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            launched = time.perf_counter()
            inherited = {k: v for k, v in os.environ.items() if k != "INTERFERENCE_MASTER_KEY"}
            popen = subprocess.Popen(
                argv,
                cwd=REPO,
                env={**inherited, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches this script only; it stops them
            )
        process = Process(name, popen, log, launched)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.popen.poll() is None:
                process.popen.terminate()
        for process in reversed(self.started):
            try:
                process.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=15)


class BenchError(Exception):
    """A target could not be started or did not answer."""


def wait_for_line(process: Process, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
    """Wait until the process's log has a line matching ``pattern`` (polled every 10 ms)."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        match = pattern.search(process.log.read_text(errors="replace"))
        if match:
            return match
        process.check_alive()
        time.sleep(0.01)
    raise BenchError(f"{process.name} did not print {pattern.pattern!r}:\n{process.tail()}")


def chat_once(port: int, model: str, timeout_s: float = 2.0, key: str | None = None) -> bool:
    """One non-stream chat completion (with ``key`` as the bearer); whether it came back good."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        connection.request("POST", "/v1/chat/completions", body, bearer(key))
        response = connection.getresponse()
        data = response.read()
        return response.status == 200 and json.loads(data).get("object") == "chat.completion"
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        connection.close()


def bearer(key: str | None) -> dict[str, str]:
    """The headers of a JSON request, with ``key`` in ``authorization`` when there is one."""
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return headers


def call(
    port: int, method: str, path: str, key: str | None, body: Any = None, timeout_s: float = 30.0
) -> bytes:
    """One request to a route of a server's own (administration, metrics); its body (a 200),
    else BenchError."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        data = None if body is None else json.dumps(body)
        connection.request(method, path, data, bearer(key))
        response = connection.getresponse()
        answer = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"{method} {path}: {exc}") from exc
    finally:
        connection.close()
    if response.status != 200:
        raise BenchError(f"{method} {path}: status {response.status}: {answer[:300]!r}")
    return answer


def call_json(
    port: int, method: str, path: str, key: str, body: Any = None, timeout_s: float = 30.0
) -> Any:
    """One request to an administration route; its JSON answer (a 200), else BenchError."""
    return json.loads(call(port, method, path, key, body, timeout_s))


def wait_until_answering(
    process: Process, model: str, timeout_s: float, key: str | None = None
) -> float:
    """Seconds from the process's launch to its first good chat completion (polled ~10 ms)."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if chat_once(process.port, model, key=key):
            return time.perf_counter() - process.launched
        process.check_alive()
        time.sleep(0.01)
    raise BenchError(f"{process.name} gave no good chat completion in {timeout_s} s")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers of ``--workers``)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of a process and its descendants (workers), in MB."""
    total = 0.0
    for current in process_tree(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total or math.nan


_TICKS = os.sysconf("SC_CLK_TCK")
_SCHEDSTAT = Path("/proc/self/schedstat").exists()


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process and its descendants have used so far: the time on
    the CPU of each of their threads, in nanoseconds (``/proc/PID/task/TID/schedstat``; a
    run of 1,500 calls at c=1 is about 20 of the 10 ms ticks of ``/proc/PID/stat``, too coarse
    for a 3 % comparison), else in ticks where the kernel has no schedstat. Threads that have
    ended are left out of the former: the servers' threads live as long as they do."""
    total = 0.0
    for current in process_tree(pid):
        if _SCHEDSTAT:
            try:
                threads = list(Path(f"/proc/{current}/task").iterdir())
            except OSError:
                continue
            for thread in threads:
                try:
                    total += int((thread / "schedstat").read_text().split()[0]) / 1e9
                except (OSError, ValueError, IndexError):
                    continue  # ended meanwhile
            continue
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)
    return total


def interference_config(
    upstream: str, slow_upstream: str, storage: Path | None = None, metrics: bool = True
) -> str:
    """A configuration with no local model: two models, one per fake upstream, priced (so that
    a key's budget is reserved and spent); with ``storage``, a master key and its database;
    without ``metrics``, ``metrics: {enabled: false}``."""
    keys = (
        f'server: {{master_key: "{MASTER_KEY}"}}\nstorage: {{path: "{storage}"}}\n'
        if storage
        else ""
    )
    if not metrics:
        keys += "metrics: {enabled: false}\n"
    return keys + (
        "providers:\n"
        f'  up: {{kind: openai, base_url: "{upstream}/v1"}}\n'
        f'  up-slow: {{kind: openai, base_url: "{slow_upstream}/v1"}}\n'
        "models:\n"
        f"  {MODEL}:\n"
        f"    deployments: [{{provider: up, model: {MODEL}}}]\n"
        f"  {SLOW_MODEL}:\n"
        f"    deployments: [{{provider: up-slow, model: {MODEL}}}]\n"
        "openai_aliases: false\n"
        f"prices:\n  {MODEL}: {{input: 1, output: 2}}\n"
    )


@dataclass
class Stack:
    """The running targets: their ports, start-up times and processes."""

    ports: dict[str, int]  # target -> port, for the main scenarios
    slow_ports: dict[str, int]  # target -> port, for the buffering check
    startup_s: dict[str, float]
    interference_banner_s: float  # what interference itself says its start took
    processes: dict[str, Process]
    key: str | None = None  # the virtual key of KEYED, when it runs


def key_limits(args: argparse.Namespace) -> dict[str, Any]:
    """The virtual key's fields: a budget and limits that refuse nothing at the bench's rates
    (unless ``--key-rpm-limit`` is set low, to see refusals counted as errors)."""
    return {
        "key_alias": KEY_ALIAS,
        "max_budget": 1000,
        "rpm_limit": args.key_rpm_limit,
        "tpm_limit": 10**12,
    }


def start_stack(
    processes: Processes,
    timeout_s: float,
    workers: int = 1,
    source: Path | None = None,
    key_fields: dict[str, Any] | None = None,
    metrics_off: bool = False,
    control: bool = False,
) -> Stack:
    """``source``: serve interference from this ``src`` folder (another checkout's) instead;
    ``key_fields``: also start KEYED, with a virtual key made with these fields; ``metrics_off``:
    also start UNMETERED, with metrics off (``control``: on, an A/A run)."""
    python = sys.executable
    upstream = processes.launch(
        "upstream", [python, str(BENCH / "fake_upstream.py"), "--chunks", str(STREAM_CHUNKS)]
    )
    slow_argv = ["--chunks", str(SLOW_CHUNKS), "--delay-ms", str(SLOW_DELAY_MS)]
    slow = processes.launch("upstream-slow", [python, str(BENCH / "fake_upstream.py"), *slow_argv])
    for process in (upstream, slow):
        process.url = wait_for_line(process, LISTENING, timeout_s).group(1)
    config = processes.log_dir / "interference.yaml"
    config.write_text(interference_config(upstream.url, slow.url))

    def passthrough(name: str, to: Process) -> Process:
        argv = [python, str(BENCH / "passthrough.py"), "--port", "0", "--upstream", to.url]
        return processes.launch(name, argv)

    # One at a time, so that each start-up has the CPU to itself.
    startup: dict[str, float] = {}
    proxy = passthrough("passthrough", upstream)
    proxy.url = wait_for_line(proxy, LISTENING, timeout_s).group(1)
    startup["passthrough"] = wait_until_answering(proxy, MODEL, timeout_s)
    serve = ["serve", "--port", "0", "--config", str(config), "--log-level", "warning"]
    serve += ["--workers", str(workers)]
    env = {"PYTHONPATH": str(source)} if source else None
    gateway = processes.launch("interference", [python, "-m", "interference", *serve], env)
    ready = wait_for_line(gateway, READY, timeout_s)
    gateway.url = ready.group(2)
    startup["interference"] = wait_until_answering(gateway, MODEL, timeout_s)
    slow_proxy = passthrough("passthrough-slow", slow)
    slow_proxy.url = wait_for_line(slow_proxy, LISTENING, timeout_s).group(1)
    wait_until_answering(slow_proxy, MODEL, timeout_s)
    stack = Stack(
        ports={"direct": upstream.port, "passthrough": proxy.port, "interference": gateway.port},
        slow_ports={
            "direct": slow.port,
            "passthrough": slow_proxy.port,
            "interference": gateway.port,
        },
        startup_s=startup,
        interference_banner_s=float(ready.group(1)),
        processes={"passthrough": proxy, "interference": gateway},
    )
    if key_fields is not None:
        keyed_config = processes.log_dir / "interference-keys.yaml"
        storage = processes.log_dir / "keys" / "interference.db"
        keyed_config.write_text(interference_config(upstream.url, slow.url, storage))
        serve[serve.index(str(config))] = str(keyed_config)
        keyed = processes.launch(KEYED, [python, "-m", "interference", *serve], env)
        keyed.url = wait_for_line(keyed, READY, timeout_s).group(2)
        stack.startup_s[KEYED] = wait_until_answering(keyed, MODEL, timeout_s, MASTER_KEY)
        made = call_json(keyed.port, "POST", "/key/generate", MASTER_KEY, key_fields)
        stack.key = made["key"]
        stack.ports[KEYED] = keyed.port
        stack.processes[KEYED] = keyed
    if metrics_off:
        unmetered_config = processes.log_dir / "interference-no-metrics.yaml"
        metered = interference_config(upstream.url, slow.url, metrics=control)
        unmetered_config.write_text(metered)
        argv = [*serve]
        argv[argv.index("--config") + 1] = str(unmetered_config)  # serve may name the keyed one
        unmetered = processes.launch(UNMETERED, [python, "-m", "interference", *argv], env)
        unmetered.url = wait_for_line(unmetered, READY, timeout_s).group(2)
        stack.startup_s[UNMETERED] = wait_until_answering(unmetered, MODEL, timeout_s)
        stack.ports[UNMETERED] = unmetered.port
        stack.processes[UNMETERED] = unmetered
    return stack


@dataclass(frozen=True)
class Scenario:
    stream: bool
    concurrency: int
    requests: int

    @property
    def name(self) -> str:
        return f"{'stream' if self.stream else 'non-stream'} c={self.concurrency}"


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    found = []
    for stream in (False, True):
        for concurrency in args.concurrency:
            if stream:
                count = args.stream_requests_c1 if concurrency == 1 else args.stream_requests
            else:
                count = args.requests_c1 if concurrency == 1 else args.requests
            found.append(Scenario(stream, concurrency, count))
    return found


@dataclass
class Measured:
    """What the runs against one target in one scenario measured (pooled over rounds)."""

    result: loadgen.LoadResult
    cpu_us: float  # the target's CPU time per answered request (NaN without its process)
    sent: int  # requests sent, warm-ups included (answered or not)


def measure(
    port: int,
    scenario: Scenario,
    args: argparse.Namespace,
    pid: int | None = None,
    key: str | None = None,
) -> Measured:
    """A warm-up, then the measured run, against one target, with ``key`` as the bearer; with
    ``pid`` (the target's process), also its CPU time per request in µs (steadier than
    throughput on a shared machine, since it does not count time spent waiting for the CPU),
    else NaN."""
    headers = {"authorization": f"Bearer {key}"} if key else None
    request = loadgen.chat_request(HOST, port, MODEL, scenario.stream, headers=headers)
    options = {"concurrency": scenario.concurrency, "stream": scenario.stream}
    count = scenario.requests
    warmup = max(scenario.concurrency * 2, int(count * args.warmup))
    warm = loadgen.run(HOST, port, request, total=warmup, time_limit_s=args.time_limit, **options)
    cpu_before = cpu_seconds(pid) if pid else math.nan
    result = loadgen.run(HOST, port, request, total=count, time_limit_s=args.time_limit, **options)
    cpu = (cpu_seconds(pid) - cpu_before) if pid else math.nan
    done = result.requests or 1
    sent = warm.requests + warm.errors + result.requests + result.errors
    return Measured(result, cpu / done * 1e6, sent)


def pooled(runs: list[Measured]) -> Measured:
    """Several measured runs against one target as one: their answers, errors and durations
    added up, latencies over all their samples."""
    if len(runs) == 1:
        return runs[0]
    results = [run.result for run in runs]
    errors = [r.first_error or "" for r in results for _ in range(r.errors)]
    errors.sort(key=lambda error: not error)  # a real message first
    result = loadgen.summarize(
        [sample for r in results for sample in r.samples],
        errors,
        sum(r.duration_s for r in results),
        any(r.timed_out for r in results),
    )
    done = sum(r.requests for r in results)
    cpu = sum(run.cpu_us * run.result.requests for run in runs) / (done or 1)
    return Measured(result, cpu, sum(run.sent for run in runs))


def comparison_rounds(stack: Stack, args: argparse.Namespace) -> dict[str, int]:
    """The servers compared with ``interference`` -> their number of rounds."""
    rounds = {KEYED: args.key_rounds, UNMETERED: args.metrics_rounds}
    return {target: count for target, count in rounds.items() if target in stack.ports}


def run_order(stack: Stack, args: argparse.Namespace) -> list[list[str]]:
    """The targets of each round of a scenario: direct and passthrough once, then interference,
    with the key and without metrics, in turns: the order of a round reversed in the next one,
    so that each pair with interference goes ABBA (ABBA...) and none always goes first. A
    server compared in fewer rounds than the other sits out the last ones."""
    compared = comparison_rounds(stack, args)
    if not compared:
        return [list(TARGETS)]
    rounds = []
    for number in range(max(compared.values())):
        servers = ["interference", *(t for t, count in compared.items() if number < count)]
        if number % 2:
            servers.reverse()
        rounds.append(([*TARGETS[:2]] if number == 0 else []) + servers)
    return rounds


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def run_scenarios(
    stack: Stack, args: argparse.Namespace, sent: dict[str, int]
) -> list[dict[str, Any]]:
    """Every scenario against every target; ``sent`` gets the requests sent to each target."""
    report = []
    order = run_order(stack, args)
    compared = comparison_rounds(stack, args)
    for scenario in scenarios(args):
        runs: dict[str, list[Measured]] = {}
        for round_ in order:
            for target in round_:
                print(f"  {scenario.name:<15} {target:<23} ...", end="", flush=True)
                process = stack.processes.get(target)
                pid = process.popen.pid if process else None
                key = stack.key if target == KEYED else None
                run = measure(stack.ports[target], scenario, args, pid, key)
                runs.setdefault(target, []).append(run)
                sent[target] = sent.get(target, 0) + run.sent
                result = run.result
                spent = f"  cpu {run.cpu_us:6.1f} us/req" if pid else ""
                failed = f"  {result.errors} errors: {result.first_error}" if result.errors else ""
                print(
                    f" {result.rps:8.0f} req/s  p50 {result.latency_p50_ms:7.2f} ms{spent}{failed}",
                    flush=True,
                )
        measured = {target: pooled(target_runs) for target, target_runs in runs.items()}
        results = {target: m.result for target, m in measured.items()}
        direct = results["direct"].latency_p50_ms
        targets = {
            target: {
                **m.result.summary(),
                "added_p50_ms": m.result.latency_p50_ms - direct,
                "cpu_us_per_request": m.cpu_us,
                "rounds": len(runs[target]),
            }
            for target, m in measured.items()
        }
        entry = {
            "scenario": scenario.name,
            "stream": scenario.stream,
            "concurrency": scenario.concurrency,
            "requests": scenario.requests,
            "targets": targets,
            "throughput_ratio_interference_vs_passthrough": ratio(
                results["interference"].rps, results["passthrough"].rps
            ),
        }
        for target, count in compared.items():
            # interference's runs of the same rounds only (ABBA), pooled apart for each pair
            own = runs["interference"][:count]
            mine = pooled(own)
            side = {**mine.result.summary(), "cpu_us_per_request": mine.cpu_us, "rounds": count}
            if target == KEYED:
                entry["keys_off"] = side  # interference, no key
                entry["keys_on_vs_off"] = on_vs_off(measured[KEYED], mine, runs[KEYED], own)
            else:
                entry["metrics_on"] = side  # interference, metrics on
                entry["metrics_on_vs_off"] = on_vs_off(
                    mine, measured[UNMETERED], own, runs[UNMETERED]
                )
        report.append(entry)
    return report


def on_vs_off(
    on: Measured, off: Measured, on_runs: list[Measured], off_runs: list[Measured]
) -> dict[str, Any]:
    """The ratios, on / off, of two pooled sides; and the ratio of each round (the runs of
    the two sides in the same round: ``on_runs[i]`` with ``off_runs[i]``) and their median.
    The median of the rounds is what the verdicts read: a pooled ratio follows the machine
    when it runs faster for a minute (a virtual machine's neighbours, its clock), and such a
    minute can fall on two runs of one side back to back (ABBA); one round's ratio cannot
    move the median of eight."""
    rounds = [ratio(a.result.rps, b.result.rps) for a, b in zip(on_runs, off_runs, strict=True)]
    cpus = [ratio(a.cpu_us, b.cpu_us) for a, b in zip(on_runs, off_runs, strict=True)]
    return {
        "rps": ratio(on.result.rps, off.result.rps),
        "latency_p50": ratio(on.result.latency_p50_ms, off.result.latency_p50_ms),
        "latency_p99": ratio(on.result.latency_p99_ms, off.result.latency_p99_ms),
        "cpu_us_per_request": ratio(on.cpu_us, off.cpu_us),
        "rps_rounds": rounds,
        "rps_median_of_rounds": statistics.median(rounds),
        "cpu_median_of_rounds": statistics.median(cpus),
    }


def ledger_check(stack: Stack, sent: int) -> dict[str, Any]:
    """``GET /usage`` with the master key (it writes the rows waiting first): the rollup's
    figures for the bench key, against the requests sent with it."""
    usage = call_json(stack.ports[KEYED], "GET", "/usage", MASTER_KEY)
    rows = [row for row in usage["data"] if row["key"] == KEY_ALIAS]
    sums = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost")
    found = {name: sum(row[name] for row in rows) for name in sums}
    health = call_json(stack.ports[KEYED], "GET", "/health", MASTER_KEY)
    return {
        "sent": sent,
        **found,
        "storage": health.get("storage"),
        "matches": found["requests"] == sent,
    }


def scrape_requests(port: int) -> dict[str, float]:
    """``GET /metrics`` (no key: these servers have none), parsed by prometheus_client:
    ``interference_requests_total`` of the bench model, by status code."""
    text = call(port, "GET", "/metrics", None).decode()
    counted: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "interference_requests_total" and sample.labels["model"] == MODEL:
                status = sample.labels["status_code"]
                counted[status] = counted.get(status, 0.0) + sample.value
    return counted


def scrapes(stack: Stack) -> dict[str, dict[str, float]]:
    """The bench model's ``interference_requests_total`` of the metrics-on and -off servers."""
    return {target: scrape_requests(stack.ports[target]) for target in ("interference", UNMETERED)}


def scrape_check(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], sent: dict[str, int]
) -> dict[str, Any]:
    """The scrapes after the runs against the requests sent in them (warm-ups included): the
    metrics-on server must count each (on top of its start-up probe, counted ``before``), the
    metrics-off server none."""
    on, off = after["interference"], after[UNMETERED]
    counted = sum(on.values())
    startup = sum(before["interference"].values())
    return {
        "sent": sent["interference"],
        "counted": counted,
        "counted_at_startup": startup,
        "by_status": on,
        "matches": counted - startup == sent["interference"],
        "metrics_off_counted": sum(off.values()),
        "metrics_off_sent": sent[UNMETERED],
    }


def content_arrivals(sample: loadgen.Sample) -> list[float]:
    """Arrival times of the events that carry text, then of ``[DONE]``.

    Role-only, finish and usage events are left out: a gateway may merge or drop them without
    holding anything back, and they would shift the comparison by one event.
    """
    arrivals = []
    for at, event in zip(sample.events, sample.event_data, strict=True):
        data = event.partition(b"data:")[2].strip()
        if data == b"[DONE]":
            arrivals.append(at)
            continue
        choices = json.loads(data).get("choices") or [{}]
        if choices[0].get("delta", {}).get("content"):
            arrivals.append(at)
    return arrivals


def buffering_check(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """Stream from the slow upstream through each target; compare event arrivals with direct."""
    mean_arrivals: dict[str, list[float]] = {}
    worst: dict[str, list[float]] = {}
    report: dict[str, Any] = {
        "chunks": SLOW_CHUNKS,
        "delay_ms": SLOW_DELAY_MS,
        "requests": args.buffer_requests,
        "targets": {},
    }
    for target in TARGETS:
        port = stack.slow_ports[target]
        model = SLOW_MODEL if target == "interference" else MODEL
        request = loadgen.chat_request(HOST, port, model, stream=True)
        result = loadgen.run(
            HOST,
            port,
            request,
            total=args.buffer_requests,
            concurrency=1,
            stream=True,
            time_limit_s=args.time_limit,
            keep_events=True,
        )
        runs = [content_arrivals(sample) for sample in result.samples]
        counts = {len(run) for run in runs}
        entry: dict[str, Any] = {"errors": result.errors, "events": sorted(counts)}
        report["targets"][target] = entry
        if result.errors or len(counts) != 1:
            continue
        columns = list(zip(*runs, strict=True))
        mean_arrivals[target] = [sum(col) / len(col) for col in columns]
        worst[target] = [max(col) for col in columns]
    direct = mean_arrivals.get("direct")
    for target in TARGETS:
        mine = mean_arrivals.get(target)
        if direct is None or mine is None or len(mine) != len(direct):
            continue
        extra = [(a - b) * 1000 for a, b in zip(mine, direct, strict=True)]
        worst_extra = [(a - b) * 1000 for a, b in zip(worst[target], direct, strict=True)]
        report["targets"][target].update(
            mean_extra_ms=sum(extra) / len(extra),
            max_extra_ms=max(extra),
            worst_single_extra_ms=max(worst_extra),
            relayed_as_they_come=max(worst_extra) < SLOW_DELAY_MS,
        )
    return report


def git(*argv: str) -> str:
    try:
        done = subprocess.run(
            ["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, recursively (for strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def fmt_ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def table(report: dict[str, Any]) -> str:
    """The readable form of a report."""
    head = (
        f"{'scenario':<15} {'target':<23} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'+p50 ms':>8} {'TTFT p50':>8} {'TTFT p95':>8} {'err':>4} {'int/pt':>6}"
    )
    lines = [
        f"{report['cpu_count']} CPUs, {report['date']}, commit {report['git_commit'][:12]}"
        + (" (dirty)" if report["git_dirty"] else "")
        + f", interference workers: {report['settings'].get('workers', 1)}",
        head,
        "-" * len(head),
    ]
    for scenario in report["scenarios"]:
        for target, r in scenario["targets"].items():
            ratio = scenario["throughput_ratio_interference_vs_passthrough"]
            lines.append(
                f"{scenario['scenario'] if target == 'direct' else '':<15} {target:<23} "
                f"{r['rps']:>8.0f} {fmt_ms(r['latency_p50_ms']):>8} "
                f"{fmt_ms(r['latency_p95_ms']):>8} "
                f"{fmt_ms(r['latency_p99_ms']):>8} {fmt_ms(r['added_p50_ms']):>8} "
                f"{fmt_ms(r['ttft_p50_ms']):>8} {fmt_ms(r['ttft_p95_ms']):>8} {r['errors']:>4} "
                f"{f'{ratio:.2f}' if target == 'interference' else '':>6}"
            )
    lines += keys_table(report)
    lines += metrics_table(report)
    buffering = report["buffering"]
    lines += [
        "",
        f"buffering: {buffering['chunks']} chunks {buffering['delay_ms']:g} ms apart, "
        f"{buffering['requests']} streams at c=1; extra arrival delay of each text event vs direct",
    ]
    for target, b in buffering["targets"].items():
        if "mean_extra_ms" in b:
            lines.append(
                f"  {target:<12} mean {b['mean_extra_ms']:6.2f} ms  max {b['max_extra_ms']:6.2f} ms"
                f"  worst single {b['worst_single_extra_ms']:6.2f} ms  "
                f"relayed as they come: {'yes' if b['relayed_as_they_come'] else 'NO'}"
            )
        else:
            lines.append(f"  {target:<12} not comparable: {b}")
    startup, rss = report["startup_s"], report["rss_mb"]
    lines += [
        "",
        f"start-up, launch to first good completion: interference {startup['interference']:.2f} s"
        f" (its banner: {report['interference_banner_s']:.1f} s), "
        f"passthrough {startup['passthrough']:.2f} s",
        f"RSS after start-up: interference {rss['interference']['start']:.0f} MB, "
        f"passthrough {rss['passthrough']['start']:.0f} MB; after the runs: interference "
        f"{rss['interference']['end']:.0f} MB, passthrough {rss['passthrough']['end']:.0f} MB",
    ]
    if KEYED in rss:
        lines.append(
            f"{KEYED}: start-up {startup[KEYED]:.2f} s, RSS {rss[KEYED]['start']:.0f} MB after "
            f"start-up, {rss[KEYED]['end']:.0f} MB after the runs"
        )
    if UNMETERED in rss:
        lines.append(
            f"{UNMETERED}: start-up {startup[UNMETERED]:.2f} s, RSS {rss[UNMETERED]['start']:.0f} "
            f"MB after start-up, {rss[UNMETERED]['end']:.0f} MB after the runs"
        )
    return "\n".join(line.rstrip() for line in lines)


def keys_verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Whether keys on stayed within the bound: req/s ratio in every scenario, no errors on
    either side, every request sent with the key in the ledger."""
    cells = [s for s in report["scenarios"] if "keys_on_vs_off" in s]
    worst = min(cells, key=lambda s: s["keys_on_vs_off"]["rps_median_of_rounds"])
    errors = sum(s["targets"][t]["errors"] for s in cells for t in ("interference", KEYED))
    ledger = report["ledger"]
    median = worst["keys_on_vs_off"]["rps_median_of_rounds"]
    passed = median >= KEY_BOUND and not errors and ledger["matches"]
    return {
        "passed": passed,
        "bound": KEY_BOUND,
        "worst_scenario": worst["scenario"],
        "worst_rps_ratio": median,
        "worst_pooled_rps_ratio": min(s["keys_on_vs_off"]["rps"] for s in cells),
        "errors": errors,
        "ledger_matches": ledger["matches"],
    }


def on_off_rows(
    title: str,
    cells: list[dict[str, Any]],
    sides: list[tuple[dict[str, Any], dict[str, Any], dict[str, float]]],
    what: str,
    digits: int,
) -> list[str]:
    """A comparison's table: the title, a row per scenario (off, on and their ratio for req/s,
    p50, p99 and CPU per request; ratios to ``digits`` places), each side's first error."""
    head = (
        f"{'scenario':<15} {'off req/s':>9} {'on req/s':>9} {'on/off':>6} {'off p50':>8} "
        f"{'on p50':>8} {'on/off':>6} {'off p99':>8} {'on p99':>8} {'off cpu':>8} "
        f"{'on cpu':>8} {'on/off':>6} {'err':>4} {'rounds: req/s':>13} {'cpu':>6}"
    )
    lines = ["", title, head, "-" * len(head)]
    for cell, (off, on, r) in zip(cells, sides, strict=True):
        lines.append(
            f"{cell['scenario']:<15} {off['rps']:>9.0f} {on['rps']:>9.0f} {r['rps']:>6.{digits}f} "
            f"{fmt_ms(off['latency_p50_ms']):>8} {fmt_ms(on['latency_p50_ms']):>8} "
            f"{r['latency_p50']:>6.{digits}f} {fmt_ms(off['latency_p99_ms']):>8} "
            f"{fmt_ms(on['latency_p99_ms']):>8} {off['cpu_us_per_request']:>8.1f} "
            f"{on['cpu_us_per_request']:>8.1f} {r['cpu_us_per_request']:>6.{digits}f} "
            f"{off['errors'] + on['errors']:>4} {r['rps_median_of_rounds']:>13.{digits}f} "
            f"{r['cpu_median_of_rounds']:>6.{digits}f}"
        )
        for side, figures in ((f"{what} off", off), (f"{what} on", on)):
            if figures["errors"]:
                lines.append(
                    f"  {side}: {figures['errors']} errors, first: {figures['first_error']}"
                )
    return lines


def keys_table(report: dict[str, Any]) -> list[str]:
    """Keys on against keys off, the ledger's count and the verdict (none without KEYED)."""
    cells = [s for s in report["scenarios"] if "keys_on_vs_off" in s]
    if not cells:
        return []
    rounds = report["settings"]["key_rounds"]
    title = (
        f"virtual keys: {KEYED} (one virtual key: budget, rpm/tpm limits, SQLite, a usage row per "
        f"request) vs interference (no keys), {rounds} rounds in turns, pooled; ms, cpu in us/req; "
        "rounds: the median of the rounds' on/off ratios"
    )
    sides = [
        (cell.get("keys_off", cell["targets"]["interference"]), cell["targets"][KEYED],
         cell["keys_on_vs_off"])
        for cell in cells
    ]  # fmt: skip
    lines = on_off_rows(title, cells, sides, "keys", 2)
    ledger = report["ledger"]
    storage = ledger.get("storage") or {}
    lines.append(
        f"ledger (GET /usage after the runs): {ledger['requests']:,} requests of key "
        f"{KEY_ALIAS!r} for {ledger['sent']:,} sent with it "
        f"({'all there' if ledger['matches'] else 'MISMATCH'}), {ledger['errors']} errors, "
        f"{ledger['prompt_tokens']:,} + {ledger['completion_tokens']:,} tokens, "
        f"{ledger['cost']:.4f} USD; storage ok: {storage.get('ok')}, rows waiting: "
        f"{storage.get('usage_rows_waiting')}"
    )
    verdict = report["keys_verdict"]
    complete = "complete" if verdict["ledger_matches"] else "INCOMPLETE"
    lines.append(
        f"{'PASS' if verdict['passed'] else 'FAIL'}: keys on within "
        f"{(1 - KEY_BOUND) * 100:.0f} % of keys off (req/s on/off >= {KEY_BOUND:.2f} in every "
        f"scenario, the median of its rounds; worst {verdict['worst_scenario']} "
        f"{verdict['worst_rps_ratio']:.2f}; pooled: worst "
        f"{verdict['worst_pooled_rps_ratio']:.2f}), "
        f"{verdict['errors']} errors, ledger {complete}"
    )
    return lines


def metrics_verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Whether metrics on stayed within the bound: req/s ratio in every scenario, no errors on
    either side, every request counted by the scrape (and none by the metrics-off server)."""
    cells = [s for s in report["scenarios"] if "metrics_on_vs_off" in s]
    worst = min(cells, key=lambda s: s["metrics_on_vs_off"]["rps_median_of_rounds"])
    worst_cpu = max(cells, key=lambda s: s["metrics_on_vs_off"]["cpu_median_of_rounds"])
    errors = sum(s["metrics_on"]["errors"] + s["targets"][UNMETERED]["errors"] for s in cells)
    scrape = report["scrape"]
    control = report["settings"].get("metrics_control", False)  # A/A: both count
    counted = scrape["matches"] and (control or not scrape["metrics_off_counted"])
    median = worst["metrics_on_vs_off"]["rps_median_of_rounds"]
    passed = median >= METRICS_BOUND and not errors and counted
    return {
        "passed": passed,
        "bound": METRICS_BOUND,
        "worst_scenario": worst["scenario"],
        "worst_rps_ratio": median,
        "worst_pooled_rps_ratio": min(s["metrics_on_vs_off"]["rps"] for s in cells),
        "worst_cpu_scenario": worst_cpu["scenario"],
        "worst_cpu_ratio": worst_cpu["metrics_on_vs_off"]["cpu_median_of_rounds"],
        "errors": errors,
        "scrape_matches": counted,
    }


def metrics_table(report: dict[str, Any]) -> list[str]:
    """Metrics on against metrics off, the scrape's count and the verdict (none without
    UNMETERED)."""
    cells = [s for s in report["scenarios"] if "metrics_on_vs_off" in s]
    if not cells:
        return []
    rounds = report["settings"]["metrics_rounds"]
    control = report["settings"].get("metrics_control", False)
    title = (
        f"metrics: interference (metrics on, the default) vs {UNMETERED} (metrics: {{enabled: "
        f"{'true: an A/A control run' if control else 'false'}}}), {rounds} rounds in turns, "
        "pooled; ms, cpu in us/req; rounds: the median of the rounds' on/off ratios"
    )
    sides = [
        (cell["targets"][UNMETERED], cell["metrics_on"], cell["metrics_on_vs_off"])
        for cell in cells
    ]
    lines = on_off_rows(title, cells, sides, "metrics", 3)
    scrape = report["scrape"]
    statuses = ", ".join(f"{code}: {n:,.0f}" for code, n in sorted(scrape["by_status"].items()))
    lines.append(
        f'scrape (GET /metrics after the runs): interference_requests_total{{model="{MODEL}"}} '
        f"= {scrape['counted']:,.0f} ({statuses}) = {scrape['sent']:,} sent in the runs + "
        f"{scrape['counted_at_startup']:,.0f} at start-up: "
        f"{'all there' if scrape['matches'] else 'MISMATCH'}; {UNMETERED}: "
        f"{scrape['metrics_off_counted']:,.0f} counted for {scrape['metrics_off_sent']:,} sent"
    )
    verdict = report["metrics_verdict"]
    lines.append(
        f"{'PASS' if verdict['passed'] else 'FAIL'}: metrics on within "
        f"{(1 - METRICS_BOUND) * 100:.0f} % of metrics off (req/s on/off >= {METRICS_BOUND:.2f} "
        f"in every scenario, the median of its rounds; worst {verdict['worst_scenario']} "
        f"{verdict['worst_rps_ratio']:.3f}; pooled: worst "
        f"{verdict['worst_pooled_rps_ratio']:.3f}), "
        f"CPU per request on/off at most {verdict['worst_cpu_ratio']:.3f} "
        f"({verdict['worst_cpu_scenario']}), {verdict['errors']} errors, scrape "
        f"{'complete' if verdict['scrape_matches'] else 'WRONG'}"
    )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=12000, help="non-stream, c > 1")
    parser.add_argument("--requests-c1", type=int, default=1500, help="non-stream, c = 1")
    parser.add_argument("--stream-requests", type=int, default=3000, help="stream, c > 1")
    parser.add_argument("--stream-requests-c1", type=int, default=800, help="stream, c = 1")
    parser.add_argument("--buffer-requests", type=int, default=10, help="slow streams per target")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 16, 64], help="levels to run"
    )
    parser.add_argument(
        "--warmup", type=float, default=0.1, help="warm-up requests, as a share of the run"
    )
    parser.add_argument(
        "--time-limit", type=float, default=60.0, help="seconds per run (warm-up or measured)"
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    parser.add_argument(
        "--workers", type=int, default=1, help="interference's worker processes (--workers)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: a tenth of every request count"
    )
    parser.add_argument(
        "--no-keys", action="store_true", help=f"leave out {KEYED} (a server with a virtual key)"
    )
    parser.add_argument(
        "--key-rounds",
        type=int,
        default=2,
        help="turns of keys off and on per scenario (ABBA), each with the scenario's requests",
    )
    parser.add_argument(
        "--no-metrics-compare",
        action="store_true",
        help=f"leave out {UNMETERED} (a server with metrics off) and the scrape of GET /metrics",
    )
    parser.add_argument(
        "--metrics-rounds",
        type=int,
        default=8,  # 4 left single cells at c=64 varying by 5-8 % between runs of the same code
        help="turns of metrics on and off per scenario (ABBA BAAB), each with the scenario's "
        "requests",
    )
    parser.add_argument(
        "--metrics-control",
        action="store_true",
        help=f"an A/A run: {UNMETERED} with metrics on as well (what two identical servers "
        "differ by; the scrape check then ignores its count)",
    )
    parser.add_argument(
        "--key-rpm-limit",
        type=int,
        default=10**9,
        help="the virtual key's rpm_limit (set it low to see refusals counted as errors)",
    )
    parser.add_argument(
        "--json", type=Path, default=BENCH / "results" / "gateway-latest.json", help="output"
    )
    parser.add_argument(
        "--source",
        type=Path,
        help="serve interference from this src folder (another checkout: bench/compare.py)",
    )
    args = parser.parse_args(argv)
    if args.key_rounds < 1:
        parser.error("--key-rounds: at least 1")
    if args.metrics_rounds < 1:
        parser.error("--metrics-rounds: at least 1")
    if args.quick:
        for name in ("requests", "requests_c1", "stream_requests", "stream_requests_c1"):
            setattr(args, name, max(10, getattr(args, name) // 10))
        args.buffer_requests = min(args.buffer_requests, 3)
    return args


@contextlib.contextmanager
def started_processes(prefix: str = "bench-gateway-") -> Iterator[Processes]:
    """A :class:`Processes` logging into a fresh temporary folder; all stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix=prefix) as log_dir:
        processes = Processes(Path(log_dir))
        try:
            yield processes
        except BenchError:
            raise
        except BaseException:
            for process in processes.started:
                if process.popen.poll() is not None:
                    print(f"--- {process.name} exited early:\n{process.tail()}", file=sys.stderr)
            raise
        finally:
            processes.stop_all()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    with started_processes() as processes:
        print("starting the upstreams, the pass-through and interference ...", flush=True)
        key_fields = None if args.no_keys else key_limits(args)
        metrics_off = not args.no_metrics_compare
        stack = start_stack(
            processes,
            args.startup_timeout,
            args.workers,
            args.source,
            key_fields,
            metrics_off,
            args.metrics_control,
        )
        rss_start = {name: rss_mb(p.popen.pid) for name, p in stack.processes.items()}
        counted_before = scrapes(stack) if metrics_off else {}
        sent: dict[str, int] = {}
        scenario_report = run_scenarios(stack, args, sent)
        ledger = ledger_check(stack, sent[KEYED]) if stack.key else None
        print("  buffering check ...", flush=True)
        buffering = buffering_check(stack, args)
        scrape = scrape_check(counted_before, scrapes(stack), sent) if metrics_off else None
        rss_end = {name: rss_mb(p.popen.pid) for name, p in stack.processes.items()}
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD"),
        "source": str(args.source) if args.source else None,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpu_count": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "startup_s": stack.startup_s,
        "interference_banner_s": stack.interference_banner_s,
        "rss_mb": {
            name: {"start": rss_start[name], "end": rss_end[name]} for name in stack.processes
        },
        "scenarios": scenario_report,
        "buffering": buffering,
        "wall_s": time.perf_counter() - began,
    }
    if ledger is not None:
        report["ledger"] = ledger
        report["keys_verdict"] = keys_verdict(report)
    if scrape is not None:
        report["scrape"] = scrape
        report["metrics_verdict"] = metrics_verdict(report)
    print()
    print(table(report))
    print(f"\ntotal {report['wall_s']:.0f} s; figures in {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(finite(report), indent=2) + "\n")
    verdict = report.get("keys_verdict")
    if verdict is not None and (verdict["errors"] or not verdict["ledger_matches"]):
        return 1  # refused or failed requests, or rows missing: wrong, not merely slow
    verdict = report.get("metrics_verdict")
    if verdict is not None and (verdict["errors"] or not verdict["scrape_matches"]):
        return 1  # failed requests, or requests not counted: wrong, not merely slow
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"gateway bench: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; every started process was stopped", file=sys.stderr)
        sys.exit(130)
