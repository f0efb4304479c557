"""Weight formats: re-quantise a GGUF model once into a cache directory, reuse it afterwards.

SmolLM2-135M ships as Q4_1. On x86 CPUs llama.cpp has fast batched matrix paths for Q8_0 and
Q4_0 (tinyBLAS; Q4_0 is also repacked into an interleaved layout) but none for Q4_1, so a
conversion pays off (``bench/weight_formats.py``, figures in ``bench/README.md``):

* ``q8_0`` (the default): Q4_1's 4-bit values fit Q8_0's grid almost exactly (relative weight
  error 0.55 %, KL to Q4_1 0.006), so output quality is unchanged; prompt processing is 1.56x
  and 8-stream decoding 1.29x as fast, single-stream decoding 0.87x.
* ``q4_0``: the fastest (prompt 1.93x, one stream 1.17x, 8 streams 1.6x) but quantised twice:
  relative weight error 8.7 %, KL 0.28, fewer answers that end by themselves. Opt-in.
* ``shipped``: the file as it is.

Only Q4_1 tensors are converted (SmolLM2's tied embedding/output matrix is Q8_0 already and
stays as it is); everything else is copied unchanged. A file without Q4_1 tensors is used as it
is. Conversion uses the ``gguf`` package's reference quantisers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import get_args

from interference.config import WeightFormat

logger = logging.getLogger(__name__)

WEIGHT_FORMATS: tuple[WeightFormat, ...] = get_args(WeightFormat)
CONVERTER_VERSION = "1"  # part of the cache key: bump when the conversion's output changes
_FILE_TYPES = {"q4_0": 2, "q8_0": 7}  # llama_ftype values for general.file_type


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/interference/models``, else ``~/.cache/interference/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "interference" / "models"


def cache_path(source: Path, fmt: WeightFormat, cache_dir: Path) -> Path:
    """Where the ``fmt`` conversion of ``source`` lives: keyed by the source's identity."""
    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{CONVERTER_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir / f"{source.stem}.{fmt}-{digest}.gguf"


def convert(source: Path, target: Path, fmt: WeightFormat) -> int:
    """Write ``source`` to ``target`` with its Q4_1 tensors re-quantised to ``fmt``.

    Returns the number of tensors converted. ``target`` appears atomically (written to a
    temporary file beside it, then renamed), so a reader never sees half a file.
    """
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

    qtype = GGMLQuantizationType[fmt.upper()]
    reader = GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=target.name, suffix=".part", dir=target.parent)
    os.close(fd)
    converted = 0
    try:
        writer = GGUFWriter(temporary, arch)
        for name, field in reader.fields.items():
            if name.startswith("GGUF.") or name == "general.architecture":
                continue
            if name == "general.file_type":
                writer.add_uint32(name, _FILE_TYPES[fmt])
                continue
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
        for tensor in reader.tensors:
            if tensor.tensor_type == GGMLQuantizationType.Q4_1:
                weights = quants.dequantize(tensor.data, tensor.tensor_type)
                data = quants.quantize(weights, qtype)
                writer.add_tensor(tensor.name, data, raw_dtype=qtype)
                converted += 1
            else:
                writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return converted


def trained_context(source: Path) -> int | None:
    """The context length the model was trained for (``<architecture>.context_length``)."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(source).fields
        architecture = fields["general.architecture"]
        name = bytes(architecture.parts[architecture.data[0]]).decode()
        length = fields[f"{name}.context_length"]
        return int(length.parts[length.data[0]][0])
    except (KeyError, IndexError, ValueError, OSError):
        return None


def has_q4_1(source: Path) -> bool:
    from gguf import GGMLQuantizationType, GGUFReader

    reader = GGUFReader(source)
    return any(t.tensor_type == GGMLQuantizationType.Q4_1 for t in reader.tensors)


def prepare_weights(source: Path, fmt: WeightFormat, cache_dir: Path | None = None) -> Path:
    """The file to load for ``source`` in format ``fmt``, converting it once if needed.

    ``shipped`` and files without Q4_1 tensors give ``source`` itself. A failed conversion is
    logged and falls back to ``source``: a model that can be served never fails to start
    because a cache directory is read-only or full.
    """
    if fmt == "shipped":
        return source
    target = cache_path(source, fmt, cache_dir or default_cache_dir())
    if target.is_file():
        return target
    nothing_to_convert = target.with_suffix(".none")  # remembered: no header parse per start
    if nothing_to_convert.is_file():
        return source
    try:
        if not has_q4_1(source):
            nothing_to_convert.parent.mkdir(parents=True, exist_ok=True)
            nothing_to_convert.touch()
            return source
        started = time.perf_counter()
        count = convert(source, target, fmt)
    except (OSError, ValueError) as exc:
        logger.warning("cannot convert %s to %s (%s); loading it as shipped", source.name, fmt, exc)
        return source
    logger.info(
        "converted %s to %s once (%d tensors, %.1f s): %s",
        source.name,
        fmt.upper(),
        count,
        time.perf_counter() - started,
        target,
    )
    return target
