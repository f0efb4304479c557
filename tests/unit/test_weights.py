"""Weight conversion: a tiny synthetic GGUF re-quantised, cached, reused and bypassed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, quants

from interference.engine import weights
from interference.engine.weights import cache_path, convert, prepare_weights

Q4_1 = GGMLQuantizationType.Q4_1


def make_gguf(path: Path, *, with_q4_1: bool = True) -> np.ndarray:
    """A small llama-style GGUF: one Q4_1 (or F32) matrix, one F32 norm, a few fields."""
    rng = np.random.default_rng(7)
    matrix = rng.normal(0, 0.05, size=(8, 64)).astype(np.float32)
    writer = GGUFWriter(path, "llama")
    writer.add_uint32("general.file_type", 3)  # MOSTLY_Q4_1
    writer.add_string("general.name", "tiny")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    if with_q4_1:
        writer.add_tensor("blk.0.ffn_up.weight", quants.quantize(matrix, Q4_1), raw_dtype=Q4_1)
    else:
        writer.add_tensor("blk.0.ffn_up.weight", matrix)
    writer.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return matrix


def tensors(path: Path) -> dict[str, tuple[GGMLQuantizationType, np.ndarray]]:
    reader = GGUFReader(path)
    return {
        t.name: (t.tensor_type, quants.dequantize(t.data, t.tensor_type).reshape(-1))
        for t in reader.tensors
    }


@pytest.mark.parametrize(
    ("fmt", "qtype", "max_error"),
    [("q8_0", GGMLQuantizationType.Q8_0, 0.01), ("q4_0", GGMLQuantizationType.Q4_0, 0.2)],
)
def test_convert_requantises_q4_1_and_copies_the_rest(
    tmp_path: Path, fmt: weights.WeightFormat, qtype: GGMLQuantizationType, max_error: float
) -> None:
    source, target = tmp_path / "tiny.gguf", tmp_path / "out" / "tiny.gguf"
    make_gguf(source)
    assert convert(source, target, fmt) == 1
    before, after = tensors(source), tensors(target)
    assert after["blk.0.ffn_up.weight"][0] == qtype
    assert after["output_norm.weight"][0] == GGMLQuantizationType.F32
    np.testing.assert_array_equal(after["output_norm.weight"][1], before["output_norm.weight"][1])
    original = before["blk.0.ffn_up.weight"][1]
    error = np.linalg.norm(after["blk.0.ffn_up.weight"][1] - original) / np.linalg.norm(original)
    assert error < max_error
    fields = GGUFReader(target).fields
    assert fields["general.file_type"].contents() == {"q8_0": 7, "q4_0": 2}[fmt]
    assert fields["general.name"].contents() == "tiny"
    assert fields["tokenizer.ggml.tokens"].contents() == ["a", "b", "c"]
    assert fields["general.architecture"].contents() == "llama"
    assert not list(target.parent.glob("*.part")), "no temporary file is left behind"


def test_q8_0_keeps_q4_1_values_almost_exactly(tmp_path: Path) -> None:
    source = tmp_path / "tiny.gguf"
    make_gguf(source)
    target = prepare_weights(source, "q8_0", tmp_path / "cache")
    q4_1 = tensors(source)["blk.0.ffn_up.weight"][1]
    q8_0 = tensors(target)["blk.0.ffn_up.weight"][1]
    assert np.abs(q8_0 - q4_1).max() <= np.abs(q4_1).max() / 127  # within half a Q8_0 step x2


def test_prepare_converts_once_then_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, cache = tmp_path / "tiny.gguf", tmp_path / "cache"
    make_gguf(source)
    first = prepare_weights(source, "q8_0", cache)
    assert first.parent == cache
    assert first != source
    assert first.is_file()
    assert first == cache_path(source, "q8_0", cache)

    def no_second_conversion(*_: object) -> int:
        raise AssertionError("converted again")

    monkeypatch.setattr(weights, "convert", no_second_conversion)
    assert prepare_weights(source, "q8_0", cache) == first


def test_a_changed_source_gets_a_new_conversion(tmp_path: Path) -> None:
    source, cache = tmp_path / "tiny.gguf", tmp_path / "cache"
    make_gguf(source)
    first = prepare_weights(source, "q4_0", cache)
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = prepare_weights(source, "q4_0", cache)
    assert second != first
    assert second.is_file()


def test_shipped_and_files_without_q4_1_are_loaded_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, plain, cache = tmp_path / "tiny.gguf", tmp_path / "plain.gguf", tmp_path / "cache"
    make_gguf(source)
    make_gguf(plain, with_q4_1=False)
    assert prepare_weights(source, "shipped", cache) == source
    assert prepare_weights(plain, "q8_0", cache) == plain
    assert not list(cache.glob("*.gguf"))  # no copy made, only the note that none is needed

    def no_second_look(_: Path) -> bool:
        raise AssertionError("the file's tensors were read again")

    monkeypatch.setattr(weights, "has_q4_1", no_second_look)
    assert prepare_weights(plain, "q8_0", cache) == plain


def test_an_unwritable_cache_falls_back_to_the_shipped_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "tiny.gguf"
    make_gguf(source)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="interference.engine.weights"):
        assert prepare_weights(source, "q8_0", blocker / "cache") == source
    assert "loading it as shipped" in caplog.text


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert weights.default_cache_dir() == tmp_path / "interference" / "models"
