"""Model names that point into a Hugging Face-compatible hub: ``hf:USER/REPO[:QUANT]``.

``QUANT`` is a tag matched against the repository's GGUF file names (``Q4_K_M``,
``UD-Q4_K_XL``); a tag ending in ``.gguf`` names the file itself. The spellings Ollama users
know, ``hf.co/USER/REPO:QUANT`` and ``huggingface.co/USER/REPO:QUANT``, are accepted too, as is
the repository's web address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from interference.hub.errors import HubNameError

#: the prefixes a hub model name may start with (the first is the one printed)
PREFIXES = ("hf:", "hf.co/", "huggingface.co/", "https://huggingface.co/")
# the hub's own rules for names: letters, digits, '-', '_', '.'; no '--' or '..' (the cache
# writes '/' as '--', and neither may climb out of the cache's folder)
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO = re.compile(rf"({_PART})/({_PART})")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class HubRef:
    """A repository of the hub and which GGUF of it: a tag, a file, or the default pick."""

    repo: str  # "user/name"
    quant: str | None = None
    file: str | None = None  # a path in the repository (from ":NAME.gguf" or --file)

    @property
    def user(self) -> str:
        return self.repo.partition("/")[0]

    @property
    def name(self) -> str:
        """The canonical spelling: ``hf:USER/REPO[:QUANT]`` (or ``:FILE``)."""
        tag = self.file or self.quant
        return f"hf:{self.repo}:{tag}" if tag else f"hf:{self.repo}"

    @property
    def model_id(self) -> str:
        """The id the server lists the model under: the name without ``hf:``."""
        return self.name.removeprefix("hf:")


def is_hub_name(name: str) -> bool:
    """Whether ``name`` is meant as a hub model (it may still be malformed)."""
    return name.lower().startswith(PREFIXES)


def parse_hub_name(name: str, file: str | None = None) -> HubRef:
    """``hf:USER/REPO[:QUANT]`` as a :class:`HubRef`; ``file`` (``--file``) picks a file by
    name. A :class:`HubNameError` says what is expected."""
    rest = name.strip()
    for prefix in PREFIXES:
        if rest.lower().startswith(prefix):
            rest = rest[len(prefix) :]
            break
    else:
        raise HubNameError(f"`{name}` is not a hub model name: expected hf:USER/REPO[:QUANT]")
    repo, _, tag = rest.partition(":")
    repo = repo.strip("/")
    match = _REPO.fullmatch(repo)
    if match is None or ".." in repo or "--" in repo:
        raise HubNameError(
            f"`{name}`: the repository must be USER/REPO (letters, digits, '-', '_', '.'), "
            "e.g. hf:bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M"
        )
    if file is not None:
        file = _file_path(file)
    if tag.lower().endswith(".gguf"):  # a file, maybe in a folder: hf:u/r:Q4_K_M/m.gguf
        if file is not None and file.lower() != tag.lower():
            raise HubNameError(f"`{name}` names a file already: --file {file} contradicts it")
        return HubRef(repo, file=_file_path(tag))
    if tag and not _TAG.fullmatch(tag):
        raise HubNameError(f"`{name}`: `{tag}` is not a quantization tag such as Q4_K_M")
    return HubRef(repo, quant=tag or None, file=file)


def _file_path(path: str) -> str:
    """A path inside the repository (no way out of the snapshot's folder)."""
    path = path.strip().lstrip("/")
    if not path or ".." in path.split("/") or "\\" in path or path.startswith("~"):
        raise HubNameError(f"`{path}` is not a file name of the repository")
    return path
