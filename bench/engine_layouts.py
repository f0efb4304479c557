"""Slot count and context of the local model, compared through ``interference serve``.

Each layout is a local provider's settings (a YAML flow mapping; ``{}`` is the defaults). In
one run, layouts are measured in turn, ``--repeats`` times over, alternating (A B C A B C ...),
each in a fresh server: one stream, then ``--streams`` concurrent streams, of ``--tokens``
tokens (end-of-text banned), ``--rounds`` rounds each; the server's resident memory is read
after its runs. The table gives the median over the repeats, and each layout's figures against
the first layout.

    .venv/bin/python bench/engine_layouts.py [--tokens 96] [--rounds 3] [--repeats 2] \\
        [--layout '{parallel: 4}' --layout '{parallel: 8, context: 16384}' ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from engine import interference_process, measure

DEFAULT_LAYOUTS = [
    "{context: 16384, rope_scaling: none}",  # the memory of issue 13's 8 slots of 2048
    "{}",  # the defaults now: 8 slots sharing 32768 tokens, YaRN x4
]


@dataclass
class LayoutFigures:
    layout: str
    one_tps: float
    one_ttft_ms: float
    many_tps: float
    many_ttft_ms: float
    rss_mb: float

    @property
    def gain(self) -> float:
        return self.many_tps / self.one_tps


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_layout(layout: str, weights: str, streams: int, tokens: int, rounds: int) -> LayoutFigures:
    with interference_process(weights, layout) as (url, process):
        one = asyncio.run(measure(layout, url, 1, tokens, rounds))
        many = asyncio.run(measure(layout, url, streams, tokens, rounds))
        memory = rss_mb(process.pid)
    return LayoutFigures(
        layout,
        one.aggregate_tps,
        one.ttft_p50_ms,
        many.aggregate_tps,
        many.ttft_p50_ms,
        memory,
    )


def median_of(runs: list[LayoutFigures]) -> LayoutFigures:
    return LayoutFigures(
        runs[0].layout,
        *(
            statistics.median(getattr(run, name) for run in runs)
            for name in ("one_tps", "one_ttft_ms", "many_tps", "many_ttft_ms", "rss_mb")
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", action="append", help="a provider's settings (repeatable)")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--weights", default="q8_0")
    parser.add_argument("--json", help="also write every run's figures here")
    args = parser.parse_args()
    layouts = args.layout or DEFAULT_LAYOUTS
    runs: dict[str, list[LayoutFigures]] = {layout: [] for layout in layouts}
    for repeat in range(args.repeats):
        for layout in layouts:
            print(f"repeat {repeat + 1}: {layout}", file=sys.stderr, flush=True)
            figures = run_layout(layout, args.weights, args.streams, args.tokens, args.rounds)
            runs[layout].append(figures)
    table = [median_of(runs[layout]) for layout in layouts]
    base = table[0]
    print(
        f"{os.cpu_count()} CPU cores, weights {args.weights}, {args.tokens} tokens per stream, "
        f"{args.rounds} rounds, median of {args.repeats} alternated repeats"
    )
    print(
        f"{'layout':<48}{'1 tok/s':>8}{'TTFT ms':>8}{f'{args.streams} tok/s':>9}"
        f"{'TTFT ms':>8}{'gain':>6}{'RSS MB':>8}{'1 vs base':>10}{'TTFT vs base':>13}"
    )
    for f in table:
        print(
            f"{f.layout:<48}{f.one_tps:>8.1f}{f.one_ttft_ms:>8.0f}{f.many_tps:>9.1f}"
            f"{f.many_ttft_ms:>8.0f}{f.gain:>5.2f}x{f.rss_mb:>8.0f}"
            f"{f.one_tps / base.one_tps - 1:>+10.1%}{f.one_ttft_ms / base.one_ttft_ms - 1:>+13.1%}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({k: [asdict(r) for r in v] for k, v in runs.items()}, indent=2)
        )


if __name__ == "__main__":
    main()
