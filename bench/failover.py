"""How long a request takes to fail over from a broken deployment to a healthy one.

Two fake OpenAI-compatible upstreams on 127.0.0.1 (the test suite's fakes) sit behind the
gateway app; the first deployment is made to refuse connections or to hang before its first
byte, and the script times complete requests (stream and non-stream) that end up answered by the
second. The hung case is bounded by the deployment's ``first_token`` timeout (streams) or
``total`` timeout (non-stream), set here to 1 s and 2 s.

    .venv/bin/python bench/failover.py [--requests 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.testclient import TestClient
from tests.support.openai_fake import openai_upstream
from tests.support.upstream import refused_url

from interference.api.app import create_app
from interference.config import config_from_dict

TIMEOUTS = {"connect": 1, "first_token": 1, "idle": 1, "total": 2}


def config(first: str, second: str) -> dict[str, Any]:
    providers = {
        name: {"kind": "openai", "base_url": f"{url}/v1", "timeouts": TIMEOUTS}
        for name, url in (("first", first), ("second", second))
    }
    deployments = [{"provider": "first", "model": "m"}, {"provider": "second", "model": "m"}]
    return {
        "providers": providers,
        "models": {"gpt-x": {"deployments": deployments}},
        # a fresh breaker for every request: we time the failover itself, not the cooldown
        "routing": {"strategy": "ordered", "cooldown": {"failures": 1000, "seconds": 1}},
    }


def measure(case: str, requests: int, stream: bool) -> list[float]:
    good = openai_upstream("good").start()
    bad = openai_upstream("bad").start()
    try:
        if case == "hung":
            bad.faults.hang_before_first_byte = 30
        first = {"refused": refused_url(), "hung": bad.url}.get(case, good.url)
        body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        times = []
        with TestClient(create_app(config_from_dict(config(first, good.url)))) as client:
            for _ in range(requests):
                started = time.perf_counter()
                response = client.post("/v1/chat/completions", json=body)
                times.append(time.perf_counter() - started)
                assert response.status_code == 200
                expected = "first/m" if case == "healthy" else "second/m"
                assert response.headers["x-interference-deployment"] == expected
        return times
    finally:
        good.stop()
        bad.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    print(f"{'case':<10}{'mode':<12}{'n':>4}{'p50 ms':>10}{'max ms':>10}")
    for case in ("healthy", "refused", "hung"):
        for stream in (True, False):
            n = args.requests if case != "hung" else max(3, args.requests // 5)
            times = measure(case, n, stream)
            mode = "stream" if stream else "non-stream"
            p50 = statistics.median(times) * 1000
            print(f"{case:<10}{mode:<12}{n:>4}{p50:>10.1f}{max(times) * 1000:>10.1f}")


if __name__ == "__main__":
    main()
