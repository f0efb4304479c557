"""Pulling from a fake hub over real sockets (tests/support/fake_hub.py): the choice of file, the
cache layout, resume after a cut, a 200 instead of a 206, stalls, 503s, a digest that does not
match, tokens over https only, an unchanged file not fetched again, offline and unreachable
hubs falling back to the cache, and a mirror through ``HF_ENDPOINT``."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from interference.hub import HubCache, HubClient, Puller, PullProgress, RemoteFile, parse_hub_name
from interference.hub.errors import (
    DigestMismatchError,
    HubAuthError,
    HubNotFoundError,
    HubUnreachableError,
    PullCancelledError,
)
from tests.support.fake_hub import FakeHub, HubFile, smollm2_gguf
from tests.support.upstream import refused_url

SMALL = os.urandom(3 << 20)  # 3 MB: most tests need bytes, not a model


def blob_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.fixture(autouse=True)
def hub_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT", "INTERFERENCE_MODELS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # never the user's cache


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


@pytest.fixture
def fresh(hub: FakeHub) -> FakeHub:
    hub.reset()
    return hub


class Recorder(PullProgress):
    def __init__(self, cancel_at: int | None = None) -> None:
        self.notes: list[str] = []
        self.events: list[tuple[str, str, int]] = []
        self.cancel = threading.Event()
        self.cancel_at = cancel_at

    def note(self, text: str) -> None:
        self.notes.append(text)

    def start(self, file: RemoteFile, completed: int) -> None:
        self.events.append(("start", file.path, completed))

    def advance(self, file: RemoteFile, completed: int) -> None:
        if self.cancel_at is not None and completed >= self.cancel_at:
            self.cancel.set()

    def finish(self, file: RemoteFile) -> None:
        self.events.append(("finish", file.path, file.size))


def puller(hub: FakeHub, root: Path, **options: object) -> Puller:
    client = HubClient(hub.url, backoff_s=0.01)
    return Puller(HubCache(root), client, **options)  # type: ignore[arg-type]


def test_default_pick_the_cache_layout_and_a_real_gguf(fresh: FakeHub, tmp_path: Path) -> None:
    gguf = smollm2_gguf()
    repo = fresh.add_repo(
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
        {
            "SmolLM2-135M-Instruct-Q4_K_M.gguf": gguf,
            "SmolLM2-135M-Instruct-Q8_0.gguf": SMALL,
            "mmproj-SmolLM2-Q4_K_M.gguf": b"GGUF projector",
            "README.md": b"# readme",
        },
    )
    root = tmp_path / "hub"
    started = time.perf_counter()
    pulled = puller(fresh, root).pull(parse_hub_name("hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"))
    seconds = time.perf_counter() - started
    folder = root / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF"
    link = folder / "snapshots" / repo.commit / "SmolLM2-135M-Instruct-Q4_K_M.gguf"
    assert pulled.model.path == link
    assert link.is_symlink()
    assert os.readlink(link) == f"../../blobs/{blob_of(gguf)}"
    assert link.read_bytes() == gguf
    assert (folder / "refs" / "main").read_text() == repo.commit
    assert [f.path for f in pulled.downloaded] == ["SmolLM2-135M-Instruct-Q4_K_M.gguf"]
    assert fresh.observed.cdn_bytes == len(gguf)  # only the model: no README, no projector
    assert not list((folder / "blobs").glob("*.incomplete"))
    print(f"\n98 MB from the fake hub in {seconds:.2f} s ({len(gguf) / seconds / 1e6:.0f} MB/s)")


def test_pick_by_tag_and_the_fallbacks(fresh: FakeHub, tmp_path: Path) -> None:
    files = {"m-Q2_K.gguf": b"GGUF2", "m-Q8_0.gguf": b"GGUF8", "m-Q4_K_M.gguf": b"GGUF4"}
    fresh.add_repo("u/tags", files)
    pull = puller(fresh, tmp_path / "hub")
    assert pull.pull(parse_hub_name("hf:u/tags:q2_k")).model.path.name == "m-Q2_K.gguf"
    assert pull.pull(parse_hub_name("hf:u/tags")).model.path.name == "m-Q4_K_M.gguf"
    fresh.add_repo("u/eight", {"m-Q2_K.gguf": b"GGUF2", "m-Q8_0.gguf": b"GGUF8"})
    assert pull.pull(parse_hub_name("hf:u/eight")).model.path.name == "m-Q8_0.gguf"
    fresh.add_repo("u/any", {"mmproj-a.gguf": b"P", "z-F16.gguf": b"F", "b-IQ3_XS.gguf": b"I"})
    assert pull.pull(parse_hub_name("hf:u/any")).model.path.name == "b-IQ3_XS.gguf"
    by_file = pull.pull(parse_hub_name("hf:u/any", file="z-F16.gguf"))
    assert by_file.model.path.read_bytes() == b"F"


def test_no_gguf_and_no_such_tag_say_what_there_is(fresh: FakeHub, tmp_path: Path) -> None:
    fresh.add_repo("u/safetensors", {"model.safetensors": b"x", "config.json": b"{}"})
    fresh.add_repo("u/quants", {"m-Q4_K_M.gguf": b"a", "m-Q8_0.gguf": b"b"})
    pull = puller(fresh, tmp_path / "hub")
    with pytest.raises(HubNotFoundError, match=r"no GGUF model file.*config\.json, model\.safe"):
        pull.pull(parse_hub_name("hf:u/safetensors"))
    with pytest.raises(HubNotFoundError, match=r"no GGUF file tagged `Q5_K_S`.*m-Q4_K_M\.gguf"):
        pull.pull(parse_hub_name("hf:u/quants:Q5_K_S"))
    with pytest.raises(HubNotFoundError, match="u/missing is not at"):
        pull.pull(parse_hub_name("hf:u/missing"))
    assert fresh.observed.cdn_bytes == 0


def test_a_split_model_pulls_every_part(fresh: FakeHub, tmp_path: Path) -> None:
    parts = {f"Q4_K_M/big-Q4_K_M-{n:05d}-of-00003.gguf": os.urandom(1000 + n) for n in (1, 2, 3)}
    repo = fresh.add_repo("u/split", {**parts, "big-Q8_0.gguf": b"other"})
    pulled = puller(fresh, tmp_path / "hub").pull(parse_hub_name("hf:u/split:Q4_K_M"))
    snapshot = tmp_path / "hub" / "models--u--split" / "snapshots" / repo.commit
    assert pulled.model.paths == [snapshot / path for path in sorted(parts)]
    assert pulled.model.path.name == "big-Q4_K_M-00001-of-00003.gguf"
    for path, content in parts.items():
        assert (snapshot / path).read_bytes() == content
    assert fresh.observed.cdn_bytes == sum(len(c) for c in parts.values())


def test_a_cut_download_resumes_with_range(fresh: FakeHub, tmp_path: Path) -> None:
    gguf = smollm2_gguf()
    fresh.add_repo("u/cut", {"m-Q4_K_M.gguf": gguf})
    fresh.faults.cut_after, fresh.faults.cuts = 30_000_000, 2
    recorder = Recorder()
    pulled = puller(fresh, tmp_path / "hub").pull(parse_hub_name("hf:u/cut"), recorder)
    assert fresh.observed.cdn_answers == [
        (200, ""),
        (206, "bytes=30000000-"),
        (206, "bytes=60000000-"),
    ]
    assert fresh.observed.cdn_bytes == len(gguf)  # not a byte twice
    assert pulled.model.path.read_bytes() == gguf
    assert any("retrying" in note for note in recorder.notes)


def test_a_cancelled_pull_leaves_its_bytes_for_the_next(fresh: FakeHub, tmp_path: Path) -> None:
    fresh.add_repo("u/resume", {"m-Q4_K_M.gguf": SMALL})
    fresh.faults.bytes_per_s = 8 << 20  # slow enough to be cancelled in the middle
    stopping = Recorder(cancel_at=1 << 20)
    with pytest.raises(PullCancelledError):
        puller(fresh, tmp_path / "hub").pull(
            parse_hub_name("hf:u/resume"), stopping, stopping.cancel
        )
    partial = tmp_path / "hub" / "models--u--resume" / "blobs" / f"{blob_of(SMALL)}.incomplete"
    kept = partial.stat().st_size
    assert 1 << 20 <= kept < len(SMALL)
    fresh.reset()
    again = Recorder()
    pulled = puller(fresh, tmp_path / "hub").pull(parse_hub_name("hf:u/resume"), again)
    assert fresh.observed.cdn_answers == [(206, f"bytes={kept}-")]
    assert ("start", "m-Q4_K_M.gguf", kept) in again.events
    assert pulled.model.path.read_bytes() == SMALL
    assert not partial.exists()


def test_a_200_to_a_range_request_starts_over(fresh: FakeHub, tmp_path: Path) -> None:
    fresh.add_repo("u/norange", {"m-Q4_K_M.gguf": SMALL})
    fresh.faults.cut_after, fresh.faults.ignore_range = 1_000_000, True
    recorder = Recorder()
    pulled = puller(fresh, tmp_path / "hub").pull(parse_hub_name("hf:u/norange"), recorder)
    assert fresh.observed.cdn_answers == [(200, ""), (200, "bytes=1000000-")]
    assert pulled.model.path.read_bytes() == SMALL
    assert any("whole file instead of the rest; starting over" in n for n in recorder.notes)


def test_stalls_reconnect_and_503s_are_retried(fresh: FakeHub, tmp_path: Path) -> None:
    fresh.add_repo("u/stall", {"m-Q4_K_M.gguf": SMALL})
    fresh.faults.stall_after, fresh.faults.stall_s = 1_000_000, 10.0
    fresh.faults.server_errors = 2
    recorder = Recorder()
    started = time.monotonic()
    pull = puller(fresh, tmp_path / "hub", stall_s=0.3)
    pulled = pull.pull(parse_hub_name("hf:u/stall"), recorder)
    assert time.monotonic() - started < 5  # the stall of 10 s was not waited out
    assert [status for status, _ in fresh.observed.cdn_answers] == [503, 503, 200, 206]
    assert fresh.observed.cdn_answers[-1] == (206, "bytes=1000000-")
    assert any("no data for 0.3 s; reconnecting" in note for note in recorder.notes)
    assert pulled.model.path.read_bytes() == SMALL


def test_a_digest_mismatch_deletes_the_file_and_fails(fresh: FakeHub, tmp_path: Path) -> None:
    fresh.add_repo("u/corrupt", {"m-Q4_K_M.gguf": SMALL})
    fresh.faults.corrupt = True
    folder = tmp_path / "hub" / "models--u--corrupt"
    with pytest.raises(DigestMismatchError, match=f"the hub's is {blob_of(SMALL)}.*deleted"):
        puller(fresh, tmp_path / "hub").pull(parse_hub_name("hf:u/corrupt"))
    assert list((folder / "blobs").iterdir()) == []  # neither the blob nor the partial file
    assert not (folder / "snapshots").exists()
    assert not (folder / "refs").exists()


def test_an_unchanged_file_is_not_downloaded_again(fresh: FakeHub, tmp_path: Path) -> None:
    fresh.add_repo("u/same", {"m-Q4_K_M.gguf": SMALL})
    pull = puller(fresh, tmp_path / "hub")
    assert pull.pull(parse_hub_name("hf:u/same")).downloaded
    fresh.reset()
    again = pull.pull(parse_hub_name("hf:u/same"))
    assert again.downloaded == []
    assert fresh.observed.paths("/cdn") == []
    assert fresh.observed.paths("/u/same/resolve") == []
    newer = fresh.add_repo("u/same", {"m-Q4_K_M.gguf": SMALL, "notes.txt": b"new commit"})
    moved = pull.pull(parse_hub_name("hf:u/same"))  # a new commit, the same file: linked
    assert moved.downloaded == []
    assert moved.model.revision == newer.commit
    assert moved.model.path.read_bytes() == SMALL
    assert fresh.observed.cdn_bytes == 0


def test_offline_and_unreachable_hubs_fall_back_to_the_cache(
    fresh: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = fresh.add_repo("u/offline", {"m-Q4_K_M.gguf": SMALL})
    root = tmp_path / "hub"
    puller(fresh, root).pull(parse_hub_name("hf:u/offline"))
    fresh.reset()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recorder = Recorder()
    pulled = puller(fresh, root).pull(parse_hub_name("hf:u/offline"), recorder)
    assert pulled.model.revision == repo.commit
    assert pulled.model.path.read_bytes() == SMALL
    assert fresh.observed.requests == []
    assert recorder.notes == ["HF_HUB_OFFLINE is set: using the cached copy"]
    with pytest.raises(HubNotFoundError, match=r"not in the cache .*HF_HUB_OFFLINE is set"):
        puller(fresh, root).pull(parse_hub_name("hf:u/never-pulled"))
    monkeypatch.delenv("HF_HUB_OFFLINE")

    down = Puller(HubCache(root), HubClient(refused_url()))
    fallback = down.pull(parse_hub_name("hf:u/offline"), recorder)
    assert fallback.model.path.read_bytes() == SMALL
    assert fallback.note is not None
    assert fallback.note.startswith("cannot reach http://127.0.0.1")
    assert fallback.note.endswith("using the cached copy")
    with pytest.raises(HubUnreachableError, match=r"cannot reach .*not in the cache"):
        down.pull(parse_hub_name("hf:u/never-pulled"))

    fresh.faults.api_errors = 3  # a hub that answers 503, still after two retries
    busy = puller(fresh, root).pull(parse_hub_name("hf:u/offline"))
    assert busy.note is not None
    assert "refs: HTTP 503" in busy.note
    assert busy.model.path.read_bytes() == SMALL
    assert fresh.observed.paths("/api/") == ["/api/models/u/offline/refs"] * 3


def test_a_mirror_through_hf_endpoint(
    fresh: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh.add_repo("u/mirrored", {"m-Q4_K_M.gguf": SMALL})
    monkeypatch.setenv("HF_ENDPOINT", fresh.url + "/")
    pulled = Puller().pull(parse_hub_name("hf:u/mirrored"))  # the environment's hub and cache
    assert pulled.model.path.is_relative_to(tmp_path / "hub")
    assert fresh.observed.paths("/api/models/u/mirrored/refs")
    assert fresh.observed.cdn_bytes
    fresh.faults.no_api = True
    with pytest.raises(HubNotFoundError, match="a mirror without the hub's API"):
        Puller().pull(parse_hub_name("hf:u/mirrored:Q8_0"))


@pytest.fixture(scope="module")
def secure_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeHub, Path]]:
    """The fake hub over https, its certificate signed by a private authority (trustme)."""
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    issued = authority.issue_cert("localhost", "127.0.0.1")
    ca, cert, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    authority.cert_pem.write_to_path(str(ca))
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    with FakeHub(token="hf_" + "a" * 34, tls=(str(cert), str(key))) as running:
        yield running, ca


def test_a_private_repo_wants_the_token_over_https(
    secure_hub: tuple[FakeHub, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, ca = secure_hub
    hub.reset()
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    hub.add_repo("u/private", [HubFile("m-Q4_K_M.gguf", SMALL)], private=True)
    root = tmp_path / "hub"
    with pytest.raises(HubAuthError, match=r"gated or private.*set HF_TOKEN"):
        Puller(HubCache(root), HubClient(hub.url)).pull(parse_hub_name("hf:u/private"))
    assert [status for status, _ in hub.observed.cdn_answers] == []
    hub.reset()
    monkeypatch.setenv("HF_TOKEN", hub.token or "")
    pulled = Puller(HubCache(root), HubClient(hub.url)).pull(parse_hub_name("hf:u/private"))
    assert pulled.model.path.read_bytes() == SMALL
    sent = {path: headers.get("authorization") for _, path, headers in hub.observed.requests}
    bearer = f"Bearer {hub.token}"
    assert [v for p, v in sent.items() if not p.startswith("/cdn/")] == [bearer] * 3
    assert [v for p, v in sent.items() if p.startswith("/cdn/")] == [None]  # a signed URL


def test_the_token_never_goes_over_plain_http(
    fresh: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh.token = "hf_" + "b" * 34
    fresh.add_repo("u/private-http", {"m-Q4_K_M.gguf": SMALL}, private=True)
    monkeypatch.setenv("HF_TOKEN", fresh.token)
    with pytest.raises(HubAuthError, match="sends it over https only"):
        puller(fresh, tmp_path / "hub").pull(parse_hub_name("hf:u/private-http"))
    assert all("authorization" not in headers for _, _, headers in fresh.observed.requests)


def huggingface_hub(script: str, tmp_path: Path, **env: str) -> Any:
    """Run ``script`` with huggingface_hub in a process of its own: it reads its settings
    (endpoint, home) once, at import, and keeps files in its home; here all of that is this
    test's. The script prints its result as JSON."""
    if importlib.util.find_spec("huggingface_hub") is None:
        pytest.skip("huggingface_hub is not installed (a test dependency)")
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    settings = {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "import json, huggingface_hub as hub\n" + script],
        env=keep | settings | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_huggingface_hub_reads_the_cache_a_pull_writes(fresh: FakeHub, tmp_path: Path) -> None:
    repo = fresh.add_repo("u/theirs", {"m-Q4_K_M.gguf": SMALL})
    pulled = puller(fresh, tmp_path / "hub").pull(parse_hub_name("hf:u/theirs"))
    script = (
        "found = hub.try_to_load_from_cache('u/theirs', 'm-Q4_K_M.gguf')\n"
        "scan = hub.scan_cache_dir()\n"
        "print(json.dumps([found, [str(w) for w in scan.warnings], [(r.repo_id, r.size_on_disk,"
        " [v.commit_hash for v in r.revisions]) for r in scan.repos]]))"
    )
    found, warnings, repos = huggingface_hub(
        script, tmp_path, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1"
    )
    assert Path(found) == pulled.model.path
    assert warnings == []
    assert repos == [["u/theirs", len(SMALL), [repo.commit]]]


def test_a_file_huggingface_hub_downloaded_is_not_downloaded_again(
    fresh: FakeHub, tmp_path: Path
) -> None:
    repo = fresh.add_repo("u/shared", {"m-Q4_K_M.gguf": SMALL})
    root = tmp_path / "hub"
    script = "print(json.dumps(hub.hf_hub_download('u/shared', 'm-Q4_K_M.gguf')))"
    theirs = huggingface_hub(
        script, tmp_path, HF_ENDPOINT=fresh.url, HF_HUB_CACHE=str(root), HF_HUB_DISABLE_XET="1"
    )
    assert fresh.observed.cdn_bytes == len(SMALL)
    fresh.reset()
    ours = puller(fresh, root).pull(parse_hub_name("hf:u/shared"))
    assert ours.downloaded == []
    assert fresh.observed.cdn_bytes == 0
    assert ours.model.path == Path(theirs)
    assert ours.model.revision == repo.commit


def test_serve_pulls_what_is_missing_unless_told_never(
    fresh: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from interference.cli import pull_missing
    from interference.config import config_from_dict
    from interference.engine.catalog import ModelFileError, resolve_model

    monkeypatch.setenv("HF_ENDPOINT", fresh.url)
    fresh.add_repo("u/served", {"m-Q4_K_M.gguf": SMALL})
    never = config_from_dict(
        {"providers": {"local": {"kind": "local", "model": "hf:u/served", "pull": "never"}}}
    )
    pull_missing(never)
    assert fresh.observed.requests == []
    with pytest.raises(ModelFileError, match="run `interference pull hf:u/served`"):
        resolve_model("hf:u/served")
    missing = config_from_dict({"providers": {"local": {"kind": "local", "model": "hf:u/served"}}})
    pull_missing(missing)
    assert fresh.observed.cdn_bytes == len(SMALL)
    assert resolve_model("hf:u/served").path.read_bytes() == SMALL
    fresh.reset()
    pull_missing(missing)  # cached: the hub is not asked at all
    assert fresh.observed.requests == []
