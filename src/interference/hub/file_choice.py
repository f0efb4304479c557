"""Which GGUF file(s) of a repository a name means: llama.cpp's choice, so that both tools
agree on what ``USER/REPO:QUANT`` is.

1. ``--file NAME`` (or ``:NAME.gguf``): that file, its path or its base name, any case;
2. a tag: the first GGUF whose name has ``TAG`` followed by ``.`` or ``-`` (``:Q4_K_M``,
   ``:UD-Q4_K_XL``), any case;
3. no tag: ``Q4_K_M``, else ``Q8_0``, else the first GGUF.

Projectors, importance matrices and draft models (``mmproj``, ``imatrix``, ``mtp-``,
``eagle3-``...) are never the model. A split model (``-00001-of-00003.gguf``) is all of its
parts, the first one first: llama.cpp opens the first and finds the others beside it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from interference.hub.errors import HubNotFoundError
from interference.hub.names import HubRef

#: parts of a file name that mark a GGUF which is not a model on its own
NOT_A_MODEL = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")
DEFAULT_TAGS = ("Q4_K_M", "Q8_0")
SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
#: a quantization label inside a file name, for listing cached models by tag
QUANT_LABEL = re.compile(
    r"(?:^|[-_.])((?:UD-)?(?:I?Q\d(?:_[A-Z0-9]+)*|B?F16|F32|TQ\d_\d))(?=[-.])", re.IGNORECASE
)
_LISTED = 12  # file names an error message lists, at most


def base_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def model_ggufs(paths: Iterable[str]) -> list[str]:
    """The GGUF files that can be a model, in path order."""
    return sorted(
        path
        for path in paths
        if path.lower().endswith(".gguf")
        and not any(mark in base_name(path).lower() for mark in NOT_A_MODEL)
    )


def _has_tag(path: str, tag: str) -> bool:
    return re.search(rf"(?:^|[-_./]){re.escape(tag)}[.-]", path, re.IGNORECASE) is not None


def split_parts(path: str, paths: Iterable[str]) -> list[str]:
    """The parts of the split model ``path`` belongs to, first part first (``[path]`` when it is
    not split); a :class:`HubNotFoundError` when some part is missing."""
    match = SPLIT.search(path)
    if match is None:
        return [path]
    count = int(match.group(2))
    stem = path[: match.start()]
    wanted = [f"{stem}-{n:05d}-of-{count:05d}.gguf" for n in range(1, count + 1)]
    present = {p.lower(): p for p in paths}
    missing = [w for w in wanted if w.lower() not in present]
    if missing:
        raise HubNotFoundError(
            f"{base_name(path)} is one of {count} parts, and {len(missing)} of them are not "
            f"there ({', '.join(base_name(m) for m in missing[:3])})"
        )
    return [present[w.lower()] for w in wanted]


def _available(ggufs: list[str]) -> str:
    shown = ", ".join(ggufs[:_LISTED])
    return shown + (f" and {len(ggufs) - _LISTED} more" if len(ggufs) > _LISTED else "")


def pick_files(ref: HubRef, paths: Iterable[str], where: str = "the repository") -> list[str]:
    """The file(s) ``ref`` means among ``paths`` (the repository's, or those in the cache): the
    model first, then the other parts of a split model. A :class:`HubNotFoundError` names the
    GGUF files there are when none fits."""
    paths = list(paths)
    if ref.file is not None:
        wanted = ref.file.lower()
        found = [p for p in paths if p.lower() == wanted or base_name(p).lower() == wanted]
        if not found:
            raise HubNotFoundError(
                f"{ref.repo} has no file `{ref.file}` in {where}"
                + (f"; its GGUF files: {_available(model_ggufs(paths))}" if paths else "")
            )
        return split_parts(sorted(found)[0], paths)
    ggufs = model_ggufs(paths)
    if not ggufs:
        raise HubNotFoundError(
            f"{ref.repo} has no GGUF model file in {where}"
            + (f" (it holds {_available(sorted(paths))})" if paths else "")
            + ": interference runs GGUF files; look for a repository named ...-GGUF"
        )
    tags = (ref.quant,) if ref.quant else DEFAULT_TAGS
    for tag in tags:
        matching = [p for p in ggufs if _has_tag(p, tag)]
        if matching:
            return split_parts(matching[0], paths)
    if ref.quant:
        raise HubNotFoundError(
            f"{ref.repo} has no GGUF file tagged `{ref.quant}` in {where}; "
            f"available: {_available(ggufs)}"
        )
    return split_parts(ggufs[0], paths)


def quant_label(path: str) -> str | None:
    """The quantization tag in a GGUF file's name (``Q4_K_M``), upper case; None if none."""
    found = QUANT_LABEL.findall(base_name(path))
    return found[-1].upper() if found else None
