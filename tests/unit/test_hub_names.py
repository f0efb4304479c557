"""Hub model names (``hf:USER/REPO[:QUANT]`` and Ollama's spellings) and the choice of file in a
repository's listing: tag, default, exclusions, split models, and the messages when none fits."""

from __future__ import annotations

import pytest

from interference.hub import HubRef, is_hub_name, parse_hub_name
from interference.hub.errors import HubNameError, HubNotFoundError
from interference.hub.file_choice import pick_files, quant_label


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hf:bartowski/Qwen3-0.6B-GGUF", HubRef("bartowski/Qwen3-0.6B-GGUF")),
        ("hf:bartowski/Qwen3-0.6B-GGUF:Q8_0", HubRef("bartowski/Qwen3-0.6B-GGUF", quant="Q8_0")),
        ("HF:u/r:ud-q4_k_xl", HubRef("u/r", quant="ud-q4_k_xl")),
        ("hf.co/u/r:Q4_K_M", HubRef("u/r", quant="Q4_K_M")),
        ("huggingface.co/u/r", HubRef("u/r")),
        ("https://huggingface.co/u/r/", HubRef("u/r")),
        ("hf:u/r:model-Q4_K_M.gguf", HubRef("u/r", file="model-Q4_K_M.gguf")),
    ],
)
def test_names(name: str, expected: HubRef) -> None:
    assert is_hub_name(name)
    assert parse_hub_name(name) == expected


def test_the_canonical_name_and_id() -> None:
    ref = parse_hub_name("hf.co/u/r:Q4_K_M")
    assert ref.name == "hf:u/r:Q4_K_M"
    assert ref.model_id == "u/r:Q4_K_M"
    assert ref.user == "u"
    assert parse_hub_name("hf:u/r", file="sub/m.gguf").name == "hf:u/r:sub/m.gguf"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("llama3.2", "is not a hub model name"),
        ("hf:justone", "must be USER/REPO"),
        ("hf:u/r/extra", "must be USER/REPO"),
        ("hf:../r", "must be USER/REPO"),
        ("hf:u/r..x", "must be USER/REPO"),
        ("hf:u--x/r", "must be USER/REPO"),
        ("hf:u/r:Q4 K", "is not a quantization tag"),
        ("hf:/r", "must be USER/REPO"),
    ],
)
def test_malformed_names_say_what_is_expected(name: str, message: str) -> None:
    with pytest.raises(HubNameError, match=message):
        parse_hub_name(name)


def test_a_file_that_would_leave_the_repository_is_refused() -> None:
    with pytest.raises(HubNameError, match="not a file name"):
        parse_hub_name("hf:u/r", file="../../etc/passwd")
    with pytest.raises(HubNameError, match="contradicts"):
        parse_hub_name("hf:u/r:a.gguf", file="b.gguf")


FILES = [
    "README.md",
    "model-Q2_K.gguf",
    "model-Q4_K_M.gguf",
    "model-Q4_K_S.gguf",
    "model-Q8_0.gguf",
    "model-UD-Q4_K_XL.gguf",
    "mmproj-model-Q4_K_M.gguf",
    "model.imatrix.gguf",
    "mtp-model-Q4_K_M.gguf",
]


@pytest.mark.parametrize(
    ("ref", "chosen"),
    [
        (HubRef("u/r"), "model-Q4_K_M.gguf"),  # the default, never the projector
        (HubRef("u/r", quant="q2_k"), "model-Q2_K.gguf"),
        (HubRef("u/r", quant="Q4_K"), None),  # a tag is not a prefix of another tag
        (HubRef("u/r", quant="UD-Q4_K_XL"), "model-UD-Q4_K_XL.gguf"),
        (HubRef("u/r", file="MODEL-Q8_0.GGUF"), "model-Q8_0.gguf"),
    ],
)
def test_the_choice_of_file(ref: HubRef, chosen: str | None) -> None:
    if chosen is None:
        with pytest.raises(HubNotFoundError, match="no GGUF file tagged `Q4_K`"):
            pick_files(ref, FILES)
    else:
        assert pick_files(ref, FILES) == [chosen]


def test_the_defaults_fall_back_to_q8_0_then_the_first_model() -> None:
    assert pick_files(HubRef("u/r"), ["a-Q2_K.gguf", "a-Q8_0.gguf"]) == ["a-Q8_0.gguf"]
    only = ["mmproj-F16.gguf", "b-F16.gguf", "a-IQ2_XS.gguf"]
    assert pick_files(HubRef("u/r"), only) == ["a-IQ2_XS.gguf"]


def test_split_models_are_all_their_parts() -> None:
    parts = [f"Q4_K_M/big-Q4_K_M-{n:05d}-of-00003.gguf" for n in (3, 1, 2)]
    chosen = pick_files(HubRef("u/r", quant="Q4_K_M"), [*parts, "big-Q8_0.gguf"])
    assert chosen == sorted(parts)
    by_second = pick_files(HubRef("u/r", file="big-Q4_K_M-00002-of-00003.gguf"), parts)
    assert by_second == sorted(parts)
    with pytest.raises(HubNotFoundError, match="one of 3 parts, and 1 of them are not there"):
        pick_files(HubRef("u/r"), parts[:2])


def test_nothing_to_pick_names_what_there_is() -> None:
    with pytest.raises(HubNotFoundError, match=r"no GGUF model file .*\(it holds a\.bin, b\.json"):
        pick_files(HubRef("u/r"), ["b.json", "a.bin"])
    with pytest.raises(HubNotFoundError, match=r"no file `x\.gguf` .*its GGUF files: model-Q2_K"):
        pick_files(HubRef("u/r", file="x.gguf"), FILES)
    many = [f"m-{n:03d}-Q4_0.gguf" for n in range(30)]
    with pytest.raises(HubNotFoundError, match=r"m-011-Q4_0\.gguf and 18 more"):
        pick_files(HubRef("u/r", quant="Q6_K"), many)


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("Qwen3-0.6B-Q4_K_M.gguf", "Q4_K_M"),
        ("gemma-3-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("Llama-3.2-1B-Instruct-f16.gguf", "F16"),
        ("x/model.IQ3_XS-00001-of-00002.gguf", "IQ3_XS"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("model.gguf", None),
    ],
)
def test_quant_labels(path: str, label: str | None) -> None:
    assert quant_label(path) == label
