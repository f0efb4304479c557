"""The hub cache on disk: which folder the environment names, finding a model in a snapshot,
listing the cached models, deleting one, and the engine's catalog reading it (``hf:`` names)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from interference.engine.catalog import ModelFileError, resolve_model
from interference.engine.sampling import GENERIC, SMOLLM2_135M
from interference.hub import HubCache, HubRef, cache_dir, parse_hub_name
from interference.hub.errors import HubNotFoundError

COMMIT = "a" * 40
OLDER = "b" * 40


def put(cache: HubCache, repo: str, path: str, content: bytes, revision: str = COMMIT) -> Path:
    """A file in the cache as a pull leaves it: its blob, the snapshot's link, refs/main."""
    oid = hashlib.sha256(content).hexdigest()
    blob = cache.blob(repo, oid)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    cache.write_ref(repo, revision)
    return cache.link(repo, revision, path, oid)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"INTERFERENCE_MODELS": "/m", "HF_HUB_CACHE": "/h", "HF_HOME": "/home"}, "/m"),
        ({"HF_HUB_CACHE": "/h", "HUGGINGFACE_HUB_CACHE": "/old", "HF_HOME": "/home"}, "/h"),
        ({"HUGGINGFACE_HUB_CACHE": "/old", "HF_HOME": "/home"}, "/old"),
        ({"HF_HOME": "/home", "XDG_CACHE_HOME": "/xdg"}, "/home/hub"),
        ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/huggingface/hub"),
    ],
)
def test_the_cache_folder_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    for name in ("INTERFERENCE_MODELS", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert cache_dir() == Path(expected)


def test_find_uses_the_snapshot_main_points_to(tmp_path: Path) -> None:
    cache = HubCache(tmp_path)
    put(cache, "u/r", "m-Q8_0.gguf", b"old", revision=OLDER)
    link = put(cache, "u/r", "m-Q4_K_M.gguf", b"new")
    found = cache.find(HubRef("u/r"))
    assert found is not None
    assert found.path == link
    assert found.revision == COMMIT
    assert found.size == 3
    assert found.digest == hashlib.sha256(b"new").hexdigest()
    assert cache.find(HubRef("u/r", quant="Q8_0")) is None  # not in main's snapshot
    assert cache.find(HubRef("u/other")) is None


def test_without_refs_the_newest_snapshot_is_used(tmp_path: Path) -> None:
    cache = HubCache(tmp_path)
    put(cache, "u/r", "m-Q4_K_M.gguf", b"x")
    (cache.repo_dir("u/r") / "refs" / "main").unlink()
    found = cache.find(HubRef("u/r"))
    assert found is not None
    assert found.revision == COMMIT


def test_a_dangling_link_is_not_a_cached_file(tmp_path: Path) -> None:
    cache = HubCache(tmp_path)
    link = put(cache, "u/r", "m-Q4_K_M.gguf", b"x")
    link.resolve().unlink()  # the blob went away
    assert cache.find(HubRef("u/r")) is None


def test_the_list_names_each_model_so_that_find_finds_it(tmp_path: Path) -> None:
    cache = HubCache(tmp_path)
    put(cache, "u/r", "m-Q4_K_M.gguf", b"4")
    put(cache, "u/r", "a/m-Q8_0.gguf", b"8")
    put(cache, "u/r", "b/m-Q8_0.gguf", b"8b")  # the same tag twice: named by file
    put(cache, "u/r", "mmproj-m-F16.gguf", b"p")  # not a model
    put(cache, "u/r", "README.md", b"r")
    for n in (1, 2):
        put(cache, "u/split", f"s-Q2_K-{n:05d}-of-00002.gguf", b"part")
    put(cache, "u/broken", "s-Q2_K-00001-of-00002.gguf", b"part one only")
    names = {model.ref.name: model for model in cache.models()}
    assert sorted(names) == [
        "hf:u/r:Q4_K_M",
        "hf:u/r:a/m-Q8_0.gguf",
        "hf:u/r:b/m-Q8_0.gguf",
        "hf:u/split:Q2_K",
    ]
    assert len(names["hf:u/split:Q2_K"].paths) == 2
    assert names["hf:u/split:Q2_K"].size == 8
    for name, model in names.items():
        found = cache.find(parse_hub_name(name))
        assert found is not None
        assert found.paths == model.paths


def test_remove_a_model_or_the_whole_repository(tmp_path: Path) -> None:
    cache = HubCache(tmp_path)
    shared = put(cache, "u/r", "m-Q4_K_M.gguf", b"same bytes", revision=OLDER)
    link = put(cache, "u/r", "m-Q4_K_M.gguf", b"same bytes")
    put(cache, "u/r", "m-Q8_0.gguf", b"8")
    blob = link.resolve()
    removed = cache.remove(HubRef("u/r", quant="Q4_K_M"))
    assert sorted(removed) == sorted([shared, link, blob])  # the blob once its last link went
    assert not blob.exists()
    assert cache.find(HubRef("u/r", quant="Q8_0")) is not None
    with pytest.raises(HubNotFoundError, match="is not in the cache"):
        cache.remove(HubRef("u/r", quant="Q4_K_M"))
    assert cache.remove(HubRef("u/r")) == [cache.repo_dir("u/r")]
    assert not cache.repo_dir("u/r").exists()
    with pytest.raises(HubNotFoundError, match="hf:u/r is not in the cache"):
        cache.remove(HubRef("u/r"))


def test_the_catalog_serves_a_cached_hub_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTERFERENCE_MODELS", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    cache = HubCache(tmp_path)
    link = put(cache, "bartowski/Qwen3-0.6B-GGUF", "Qwen3-0.6B-Q4_K_M.gguf", b"GGUF...")
    model = resolve_model("hf:bartowski/Qwen3-0.6B-GGUF")
    assert model.id == "bartowski/Qwen3-0.6B-GGUF"
    assert model.path == link
    assert model.sampling == GENERIC
    assert model.owned_by == "bartowski"
    # a file interference knows by name brings its tuned sampling defaults along
    put(cache, "HuggingFaceTB/SmolLM2", "SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF")
    known = resolve_model("hf.co/HuggingFaceTB/SmolLM2:Q4_1")
    assert known.id == "HuggingFaceTB/SmolLM2:Q4_1"
    assert known.sampling == SMOLLM2_135M
    with pytest.raises(ModelFileError, match=r"run `interference pull hf:u/absent:Q8_0`"):
        resolve_model("hf:u/absent:Q8_0")
    with pytest.raises(ModelFileError, match="must be USER/REPO"):
        resolve_model("hf:no-slash")
