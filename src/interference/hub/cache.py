"""The Hugging Face hub cache: where pulled models live, shared with llama.cpp and Python tools.

The layout is ``huggingface_hub``'s (and llama.cpp's since March 2026), so that a model any of
them downloaded is found here and never downloaded twice::

    <cache>/models--USER--REPO/
        blobs/<sha256>                   the content, named by its digest (git's for small files)
        blobs/<sha256>.incomplete        a download under way, resumed from its size
        snapshots/<commit>/<path>        a relative symlink to ../../blobs/<sha256>
        refs/main                        the commit that ``main`` pointed to when last pulled
    <cache>/.locks/models--USER--REPO/<sha256>.lock   held while a blob is written

The folder: ``$INTERFERENCE_MODELS``, else ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``,
``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``, ``~/.cache/huggingface/hub``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from interference.hub.errors import HubNotFoundError
from interference.hub.file_choice import model_ggufs, pick_files, quant_label, split_parts
from interference.hub.names import HubRef


def cache_dir() -> Path:
    """The hub cache folder the environment names (see the module's docstring)."""
    for variable in ("INTERFERENCE_MODELS", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "huggingface" / "hub"


def repo_folder_name(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


@dataclass(frozen=True)
class CachedModel:
    """A model found in the cache: its snapshot's files, the first one being what is loaded."""

    ref: HubRef
    revision: str
    paths: list[Path]  # in the snapshot folder; symlinks to the blobs, usually

    @property
    def path(self) -> Path:
        return self.paths[0]

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.paths)

    @property
    def digest(self) -> str:
        """The first file's blob name: its SHA-256 (what Ollama's clients show as ``digest``)."""
        return self.paths[0].resolve().name

    @property
    def modified(self) -> datetime:
        return datetime.fromtimestamp(self.paths[0].stat().st_mtime, UTC)


class HubCache:
    """One cache folder (by default :func:`cache_dir`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else cache_dir()

    def repo_dir(self, repo: str) -> Path:
        return self.root / repo_folder_name(repo)

    def blob(self, repo: str, oid: str) -> Path:
        return self.repo_dir(repo) / "blobs" / oid

    def snapshot(self, repo: str, revision: str) -> Path:
        return self.repo_dir(repo) / "snapshots" / revision

    @contextlib.contextmanager
    def locked(self, repo: str, oid: str) -> Iterator[None]:
        """Hold the blob's lock (huggingface_hub's lock file, so that it and we never write one
        blob at once; another pull of ours waits here, then finds the blob done)."""
        import fcntl

        lock = self.root / ".locks" / repo_folder_name(repo) / f"{oid}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def revision(self, repo: str) -> str | None:
        """The commit ``refs/main`` names, else the newest snapshot's, else None."""
        folder = self.repo_dir(repo)
        with contextlib.suppress(OSError):
            commit = (folder / "refs" / "main").read_text().strip()
            if commit and (folder / "snapshots" / commit).is_dir():
                return commit
        snapshots = [p for p in (folder / "snapshots").glob("*") if p.is_dir()]
        return max(snapshots, key=lambda p: p.stat().st_mtime).name if snapshots else None

    def write_ref(self, repo: str, revision: str) -> None:
        refs = self.repo_dir(repo) / "refs"
        refs.mkdir(parents=True, exist_ok=True)
        _write_atomically(refs / "main", revision.encode())

    def link(self, repo: str, revision: str, path: str, oid: str) -> Path:
        """Make ``snapshots/<revision>/<path>`` point at the blob (a relative symlink; a copy
        where the file system has none); returns the snapshot path."""
        target = self.snapshot(repo, revision) / path
        blob = self.blob(repo, oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and target.resolve() == blob.resolve():
            return target
        target.unlink(missing_ok=True)
        try:
            os.symlink(os.path.relpath(blob, target.parent), target)
        except OSError:
            shutil.copyfile(blob, target)
        return target

    def snapshot_files(self, repo: str, revision: str) -> list[str]:
        """The repository paths present (whole: their blobs exist) in a snapshot."""
        folder = self.snapshot(repo, revision)
        return sorted(
            path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()
        )

    def find(self, ref: HubRef) -> CachedModel | None:
        """The cached model ``ref`` means (its pick among the files of the snapshot ``main``
        last pointed to), or None when the cache has no such file."""
        revision = self.revision(ref.repo)
        if revision is None:
            return None
        try:
            chosen = pick_files(ref, self.snapshot_files(ref.repo, revision), "the cache")
        except HubNotFoundError:
            return None
        folder = self.snapshot(ref.repo, revision)
        return CachedModel(ref, revision, [folder / path for path in chosen])

    def models(self) -> list[CachedModel]:
        """Every GGUF model in the cache, one entry per model (a split model's parts together),
        named so that :meth:`find` finds it again: by its tag when that is unambiguous."""
        found: list[CachedModel] = []
        for folder in sorted(self.root.glob("models--*--*")):
            repo = folder.name.removeprefix("models--").replace("--", "/", 1)
            revision = self.revision(repo)
            if revision is None:
                continue
            files = self.snapshot_files(repo, revision)
            models = [parts for parts in _whole_models(files) if parts]
            labels = [quant_label(parts[0]) for parts in models]
            snapshot = self.snapshot(repo, revision)
            for parts, label in zip(models, labels, strict=True):
                unique = label is not None and labels.count(label) == 1
                ref = HubRef(repo, quant=label) if unique else HubRef(repo, file=parts[0])
                found.append(CachedModel(ref, revision, [snapshot / p for p in parts]))
        return found

    def remove(self, ref: HubRef) -> list[Path]:
        """Delete what ``ref`` names from the cache: the repository's whole folder when it has
        no tag or file, else that model's files (and their blobs, when no other snapshot
        uses them). Returns what was deleted; a :class:`HubNotFoundError` when nothing."""
        folder = self.repo_dir(ref.repo)
        if not folder.is_dir():
            raise HubNotFoundError(f"{ref.name} is not in the cache ({self.root})")
        if ref.quant is None and ref.file is None:
            shutil.rmtree(folder)
            return [folder]
        removed: list[Path] = []
        for snapshot in sorted((folder / "snapshots").glob("*")):
            try:
                chosen = pick_files(ref, self.snapshot_files(ref.repo, snapshot.name))
            except HubNotFoundError:
                continue
            for path in chosen:
                link = snapshot / path
                blob = link.resolve()
                link.unlink()
                removed.append(link)
                if blob != link and blob.is_file() and not self._linked(folder, blob):
                    blob.unlink()
                    removed.append(blob)
        if not removed:
            raise HubNotFoundError(f"{ref.name} is not in the cache ({self.root})")
        return removed

    @staticmethod
    def _linked(folder: Path, blob: Path) -> bool:
        return any(
            path.is_symlink() and path.resolve() == blob
            for path in (folder / "snapshots").rglob("*")
        )


def _whole_models(files: list[str]) -> list[list[str]]:
    """The model GGUFs among ``files``, each with its parts (a split model with parts
    missing is left out: it cannot be loaded)."""
    models = []
    for path in model_ggufs(files):
        try:
            parts = split_parts(path, files)
        except HubNotFoundError:
            continue
        if parts[0] == path:
            models.append(parts)
    return models


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
