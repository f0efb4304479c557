"""Speed and output of the default model in other weight formats: Q4_1 (shipped), Q8_0, Q4_0.

The shipped Q4_1 GGUF is re-quantised with the ``gguf`` package (dequantise each Q4_1 tensor,
quantise it to the target type, copy everything else) into ``--out`` (a temporary folder by
default). Each file is then loaded in-process and measured: single-stream tokens/s, aggregate
tokens/s of 8 concurrent streams, and how much of its greedy (temperature 0) output agrees with
the Q4_1 model's, token for token, over a few prompts.

    .venv/bin/pip install gguf && .venv/bin/python bench/weight_formats.py [--tokens 96]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

from interference.engine import EngineSettings, LlamaEngine, resolve_model

PROMPTS = [
    "Write a poem about a tree.",
    "Explain why the sky is blue.",
    "Give three tips for learning to cook.",
    "Tell a short story about a lost dog.",
]
FILE_TYPES = {GGMLQuantizationType.Q8_0: 7, GGMLQuantizationType.Q4_0: 2}  # llama_ftype values


def requantize(source: Path, target: Path, qtype: GGMLQuantizationType) -> None:
    reader = GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    writer = GGUFWriter(target, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_uint32(name, FILE_TYPES[qtype])
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
    for tensor in reader.tensors:
        if tensor.tensor_type == GGMLQuantizationType.Q4_1:
            weights = quants.dequantize(tensor.data, tensor.tensor_type)
            data = quants.quantize(weights.astype(np.float32), qtype)
            writer.add_tensor(tensor.name, data, raw_dtype=qtype)
        else:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


async def stream_tokens(engine: LlamaEngine, prompt: str, tokens: int) -> int:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "logit_bias": {"2": -100},
        "temperature": 0.7,
        "seed": 1,
        "stream_options": {"include_usage": True},
    }
    count = 0
    async for chunk in engine.stream_chat(body):
        if chunk.get("usage"):
            count = chunk["usage"]["completion_tokens"]
    return count


async def greedy(engine: LlamaEngine, prompt: str, tokens: int) -> str:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
    }
    data = await engine.complete_chat(body)
    return str(data["choices"][0]["message"]["content"])


async def measure(path: Path, tokens: int) -> tuple[float, float, list[str]]:
    engine = LlamaEngine(EngineSettings(path=path, parallel=8, context=512, embeddings=False))
    await engine.start()
    try:
        await stream_tokens(engine, "Hi", 8)  # warm-up
        started = time.perf_counter()
        single = await stream_tokens(engine, PROMPTS[0], tokens) / (time.perf_counter() - started)
        started = time.perf_counter()
        counts = await asyncio.gather(
            *(stream_tokens(engine, PROMPTS[i % 4], tokens) for i in range(8))
        )
        aggregate = sum(counts) / (time.perf_counter() - started)
        texts = [await greedy(engine, prompt, 48) for prompt in PROMPTS]
    finally:
        engine.close()
    return single, aggregate, texts


def agreement(reference: list[str], texts: list[str]) -> float:
    same = total = 0
    for a, b in zip(reference, texts, strict=True):
        words_a, words_b = a.split(), b.split()
        total += max(len(words_a), 1)
        for x, y in zip(words_a, words_b, strict=False):
            if x != y:
                break
            same += 1
    return same / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="weights-"))
    source = resolve_model("smollm2-135m-instruct").path
    files = {"Q4_1 (shipped)": source}
    for qtype in (GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0):
        target = out / f"SmolLM2-135M-Instruct.{qtype.name}.gguf"
        started = time.perf_counter()
        requantize(source, target, qtype)
        print(
            f"{qtype.name}: converted in {time.perf_counter() - started:.1f} s, "
            f"{target.stat().st_size / 1e6:.0f} MB"
        )
        files[qtype.name] = target
    results = {name: asyncio.run(measure(path, args.tokens)) for name, path in files.items()}
    reference = results["Q4_1 (shipped)"][2]
    print(
        f"\n{'format':<16}{'1 stream tok/s':>15}{'8 streams tok/s':>16}{'8/1':>6}"
        f"{'greedy agreement':>18}"
    )
    for name, (single, aggregate, texts) in results.items():
        print(
            f"{name:<16}{single:>15.1f}{aggregate:>16.1f}{aggregate / single:>6.2f}"
            f"{agreement(reference, texts):>18.0%}"
        )


if __name__ == "__main__":
    main()
