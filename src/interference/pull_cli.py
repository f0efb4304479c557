"""``interference pull hf:USER/REPO[:QUANT]`` and ``interference rm``: models from a Hugging
Face-compatible hub into the shared hub cache (:mod:`interference.hub`), with a progress bar on
a terminal and plain lines otherwise (a log, a CI job). ``interference models`` lists the cache
through :func:`print_cached`."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any, TextIO

from interference.hub import (
    HubCache,
    HubRef,
    Pulled,
    Puller,
    PullProgress,
    RemoteFile,
    is_hub_name,
    parse_hub_name,
)

_REDRAW_S = 0.1  # the bar is redrawn at most this often
_LINE_EVERY_S = 5.0  # a plain progress line at most this often (and at each 25 %)
_SPEED_WINDOW_S = 3.0  # the speed is that of the last few seconds


def add_parsers(commands: Any) -> None:
    pull = commands.add_parser(
        "pull", help="download a GGUF model from Hugging Face (hf:USER/REPO[:QUANT])"
    )
    pull.add_argument("model", help="hf:USER/REPO[:QUANT], e.g. hf:bartowski/Qwen3-0.6B-GGUF")
    pull.add_argument("--file", help="the repository's file to pull, by name (NAME.gguf)")
    remove = commands.add_parser("rm", help="delete a pulled model from the hub cache")
    remove.add_argument("model", help="hf:USER/REPO (the whole repository) or hf:USER/REPO:QUANT")
    remove.add_argument("--file", help="one file of the repository, by name")


def _size(count: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:.0f} B"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


class _Rate:
    """Bytes per second over the last few seconds."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []

    def add(self, completed: int) -> float:
        now = time.monotonic()
        if self.samples and completed < self.samples[-1][1]:
            self.samples.clear()  # the file started over
        self.samples.append((now, completed))
        while len(self.samples) > 2 and now - self.samples[0][0] > _SPEED_WINDOW_S:
            self.samples.pop(0)
        first_time, first = self.samples[0]
        return (completed - first) / (now - first_time) if now > first_time else 0.0


class TerminalProgress(PullProgress):
    """One line per file, redrawn in place: name, bar, percentage, size, speed, time left."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()
        self._drawn = 0.0
        self._rate = _Rate()

    def note(self, text: str) -> None:
        with self._lock:
            self.out.write(f"\r\033[K{text}\n")
            self.out.flush()

    def start(self, file: RemoteFile, completed: int) -> None:
        self._rate = _Rate()
        self._draw(file, completed, force=True)

    def advance(self, file: RemoteFile, completed: int) -> None:
        self._draw(file, completed)

    def finish(self, file: RemoteFile) -> None:
        self._draw(file, file.size, force=True)
        with self._lock:
            self.out.write("\n")
            self.out.flush()

    def _draw(self, file: RemoteFile, completed: int, force: bool = False) -> None:
        speed = self._rate.add(completed)
        now = time.monotonic()
        if not force and now - self._drawn < _REDRAW_S:
            return
        self._drawn = now
        share = completed / file.size if file.size else 1.0
        bar = "#" * int(share * 24)
        left = (file.size - completed) / speed if speed > 0 else None
        line = (
            f"{file.path[-40:]}  [{bar:<24}] {share:4.0%}  {_size(completed)}/{_size(file.size)}"
            f"  {_size(speed)}/s  {_duration(left) + ' left' if left is not None else ''}"
        )
        with self._lock:
            self.out.write(f"\r\033[K{line}")
            self.out.flush()


class LineProgress(PullProgress):
    """Plain lines, for a log: each file's start and end, and a line every few seconds."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._said = 0.0
        self._quarter = 0
        self._rate = _Rate()

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self._line(text)

    def start(self, file: RemoteFile, completed: int) -> None:
        self._said, self._quarter, self._rate = time.monotonic(), 0, _Rate()
        state = "cached" if completed >= file.size else f"{_size(file.size)}"
        self._line(f"pulling {file.path} ({state})")

    def advance(self, file: RemoteFile, completed: int) -> None:
        speed = self._rate.add(completed)
        quarter = int(4 * completed / file.size) if file.size else 4
        now = time.monotonic()
        if quarter > self._quarter or now - self._said >= _LINE_EVERY_S:
            self._said, self._quarter = now, max(quarter, self._quarter)
            share = completed / file.size if file.size else 1.0
            self._line(
                f"{file.path}: {share:.0%} ({_size(completed)} of {_size(file.size)}, "
                f"{_size(speed)}/s)"
            )

    def verifying(self, file: RemoteFile) -> None:
        self._line(f"verifying the sha256 digest of {file.path}")

    def finish(self, file: RemoteFile) -> None:
        self._line(f"{file.path}: done")


def progress_for(out: TextIO) -> PullProgress:
    return TerminalProgress(out) if out.isatty() else LineProgress(out)


def pull_model(ref: HubRef, out: TextIO | None = None) -> Pulled:
    """Pull ``ref`` into the cache, telling the progress on ``out`` (stderr by default)."""
    out = out or sys.stderr
    puller = Puller()
    plan = puller.plan(ref)
    if plan.cached is None:
        sizes = ", ".join(f"{f.path} ({_size(f.size)})" for f in plan.files)
        out.write(f"{ref.name}: {sizes} at {plan.revision[:12]}\n")
    try:
        return puller.fetch(plan, progress_for(out))
    except KeyboardInterrupt:
        out.write("\ninterrupted: the same command resumes the download where it stopped\n")
        raise


def run_pull(args: argparse.Namespace) -> int:
    ref = parse_hub_name(args.model, args.file)
    pulled = pull_model(ref)
    model = pulled.model
    fetched = sum(f.size for f in pulled.downloaded)
    how = f"downloaded {_size(fetched)}" if pulled.downloaded else "already in the cache"
    print(f"{ref.name}: {how}; {model.path}")
    print(f"serve it: interference serve --model {ref.name}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    ref = parse_hub_name(args.model, args.file)
    cache = HubCache()
    removed = cache.remove(ref)
    print(f"{ref.name}: deleted {len(removed)} path(s) from {cache.root}")
    return 0


def print_cached() -> None:
    """The cached hub models: name, size, where they came from."""
    cache = HubCache()
    models = cache.models()
    print(f"pulled models (hub cache {cache.root}):")
    if not models:
        print("  none: `interference pull hf:USER/REPO[:QUANT]` adds one")
    for model in models:
        files = model.paths[0].name + (f" +{len(model.paths) - 1} parts" if model.paths[1:] else "")
        print(
            f"  {model.ref.name}  {_size(model.size)}  "
            f"from {model.ref.repo}@{model.revision[:12]} ({files})"
        )


__all__ = ["add_parsers", "is_hub_name", "print_cached", "pull_model", "run_pull", "run_remove"]
