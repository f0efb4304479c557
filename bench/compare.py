"""``make bench`` before and after: the gateway bench run alternately on two commits.

A commit's ``src`` is checked out into a temporary git worktree, and ``bench/gateway.py`` runs
``--rounds`` times for each side, alternating (before, after, before, after ...), interference
served from the worktree's ``src`` (``--source``) for "before" and from this checkout for
"after" (the upstream, the pass-through and the load generator are this checkout's both times).
For every cell (non-stream and stream, each concurrency) it prints the median requests/s and
added p50 latency of each side, and the change; ``--limit`` marks cells that lost more.

    .venv/bin/python bench/compare.py BEFORE_COMMIT [--rounds 2] [--limit 3] [gateway.py's options]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def run_gateway(json_path: Path, source: Path | None, extra: list[str]) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "gateway.py"), "--json", str(json_path), *extra]
    if source is not None:
        argv += ["--source", str(source)]
    subprocess.run(argv, check=True, cwd=REPO)
    report: dict[str, Any] = json.loads(json_path.read_text())
    return report


def cells(report: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """scenario -> (interference req/s, interference added p50 ms)."""
    return {
        s["scenario"]: (
            s["targets"]["interference"]["rps"],
            s["targets"]["interference"]["added_p50_ms"],
        )
        for s in report["scenarios"]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="the commit to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=float, default=3.0, help="percent lost that is flagged")
    args, gateway_args = parser.parse_known_args()  # the rest goes to bench/gateway.py
    gateway_args = [arg for arg in gateway_args if arg != "--"]
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as folder:
        tree = Path(folder) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), args.before], check=True, cwd=REPO
        )
        try:
            for round_ in range(args.rounds):
                for side, source in (("before", tree / "src"), ("after", None)):
                    print(f"\n=== round {round_ + 1}: {side} ===", flush=True)
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
    header = f"{'cell':<16}{'req/s before':>14}{'after':>10}{'change':>9}"
    print(f"{header}{'p50+ before':>13}{'after':>9}")
    flagged = 0
    for name in runs["before"][0]:
        before = statistics.median(run[name][0] for run in runs["before"])
        after = statistics.median(run[name][0] for run in runs["after"])
        added_before = statistics.median(run[name][1] for run in runs["before"])
        added_after = statistics.median(run[name][1] for run in runs["after"])
        change = after / before - 1 if before else float("nan")
        mark = "  <-- over the limit" if change < -args.limit / 100 else ""
        flagged += bool(mark)
        print(
            f"{name:<16}{before:>14.0f}{after:>10.0f}{change:>+9.1%}"
            f"{added_before:>11.2f}ms{added_after:>7.2f}ms{mark}"
        )
    print(f"\n{flagged} cell(s) lost more than {args.limit:g} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
