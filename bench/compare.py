"""``make bench`` before and after: the gateway bench run alternately on two commits.

A commit's ``src`` is checked out into a temporary git worktree, and ``bench/gateway.py`` runs
``--rounds`` times for each side, alternating (before, after, before, after ...), interference
served from the worktree's ``src`` (``--source``) for "before" and from this checkout for
"after" (the upstream, the pass-through and the load generator are this checkout's both times).
For every cell (non-stream and stream, each concurrency) it prints the median requests/s, CPU
time per request (interference's process: steadier than throughput on a shared machine) and
added p50 latency of each side; ``--limit`` marks cells that lost more than that percentage in
requests/s or in CPU per request.

    .venv/bin/python bench/compare.py BEFORE_COMMIT [--rounds 2] [--limit 3] [gateway.py's options]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def run_gateway(json_path: Path, source: Path | None, extra: list[str]) -> dict[str, Any]:
    # --no-keys, --no-metrics-compare: an older commit may have no virtual keys, no metrics
    # switch and no GET /metrics, and only interference is compared
    argv = [
        sys.executable,
        str(BENCH / "gateway.py"),
        "--json",
        str(json_path),
        "--no-keys",
        "--no-metrics-compare",
        *extra,
    ]
    if source is not None:
        argv += ["--source", str(source)]
    subprocess.run(argv, check=True, cwd=REPO)
    report: dict[str, Any] = json.loads(json_path.read_text())
    return report


def run_hot_path(source: Path | None) -> dict[str, float]:
    """bench/hot_path.py's CPU µs per request, for one side."""
    env = {**os.environ, "PYTHONPATH": str(source)} if source else None
    argv = [sys.executable, str(BENCH / "hot_path.py"), "--requests", "2000", "--repeats", "3"]
    out = subprocess.run([*argv, "--json"], check=True, cwd=REPO, env=env, capture_output=True)
    figures: dict[str, float] = json.loads(out.stdout)
    return figures


def cells(report: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """scenario -> interference's (req/s, added p50 ms, CPU µs per request)."""
    out = {}
    for scenario in report["scenarios"]:
        ours = scenario["targets"]["interference"]
        out[scenario["scenario"]] = (
            ours["rps"],
            ours["added_p50_ms"],
            ours.get("cpu_us_per_request", float("nan")),
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="the commit to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=float, default=3.0, help="percent lost that is flagged")
    parser.add_argument(
        "--hot-path-only", action="store_true", help="only bench/hot_path.py (a minute in all)"
    )
    args, gateway_args = parser.parse_known_args()  # the rest goes to bench/gateway.py
    gateway_args = [arg for arg in gateway_args if arg != "--"]
    runs: dict[str, list[dict[str, tuple[float, float, float]]]] = {"before": [], "after": []}
    hot: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as folder:
        tree = Path(folder) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), args.before], check=True, cwd=REPO
        )
        try:
            for round_ in range(args.rounds):
                for side, source in (("before", tree / "src"), ("after", None)):
                    print(f"\n=== round {round_ + 1}: {side} ===", flush=True)
                    hot[side].append(run_hot_path(source))
                    if args.hot_path_only:
                        continue
                    report = run_gateway(
                        Path(folder) / f"{side}-{round_}.json", source, gateway_args
                    )
                    runs[side].append(cells(report))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False
            )
    rounds = args.rounds
    print(f"\nbefore = {args.before}, after = this checkout; medians of {rounds} alternated rounds")
    print("\nbench/hot_path.py: CPU us per request in interference's own code (one thread)")
    flagged = 0
    for name in hot["before"][0]:
        cost = [statistics.median(run[name] for run in hot[side]) for side in ("before", "after")]
        change = cost[1] / cost[0] - 1
        mark = "  <-- over the limit" if change > args.limit / 100 else ""
        flagged += bool(mark)
        print(f"{name:<16}{cost[0]:>10.1f}{cost[1]:>10.1f}{change:>+8.1%}{mark}")
    if args.hot_path_only:
        print(f"\n{flagged} cell(s) lost more than {args.limit:g} %")
        return 0
    print("\nbench/gateway.py: interference through uvicorn, in front of the fake upstream")
    print(
        f"{'cell':<16}{'req/s before':>13}{'after':>8}{'change':>8}"
        f"{'CPU us/req before':>19}{'after':>8}{'change':>8}{'p50+ ms before':>16}{'after':>7}"
    )
    for name in runs["before"][0]:

        def median(side: str, i: int, cell: str = name) -> float:
            return statistics.median(run[cell][i] for run in runs[side])

        rps = [median("before", 0), median("after", 0)]
        cpu = [median("before", 2), median("after", 2)]
        added = [median("before", 1), median("after", 1)]
        rps_change = rps[1] / rps[0] - 1 if rps[0] else float("nan")
        cpu_change = cpu[1] / cpu[0] - 1 if cpu[0] else float("nan")
        # a loss: fewer requests per second, or more CPU per request
        mark = "  <-- over the limit" if max(-rps_change, cpu_change) > args.limit / 100 else ""
        flagged += bool(mark)
        print(
            f"{name:<16}{rps[0]:>13.0f}{rps[1]:>8.0f}{rps_change:>+8.1%}"
            f"{cpu[0]:>19.1f}{cpu[1]:>8.1f}{cpu_change:>+8.1%}"
            f"{added[0]:>16.2f}{added[1]:>7.2f}{mark}"
        )
    print(f"\n{flagged} cell(s) lost more than {args.limit:g} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
