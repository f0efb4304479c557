"""``pull``: a hub model into the cache, as llama.cpp resolves it, verified; or the cached copy.

1. ``GET /api/models/{repo}/refs``: the commit ``main`` points to;
2. ``GET /api/models/{repo}/tree/{commit}?recursive=true``: the files, their sizes and digests;
3. the file(s) the name means (:mod:`interference.hub.file_choice`);
4. each from ``/{repo}/resolve/{commit}/{path}`` (:mod:`interference.hub.download`), unless
   its blob is there already: a file pulled before, by us, llama.cpp or huggingface_hub, is not
   downloaded again;
5. the snapshot's links, then ``refs/main``.

``HF_HUB_OFFLINE=1`` skips the network: the cached copy, or an error saying it is not there.
A hub that cannot be reached falls back to the cached copy the same way, with a note.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from interference.hub.cache import CachedModel, HubCache
from interference.hub.client import HubClient
from interference.hub.download import Download, PullProgress, RemoteFile
from interference.hub.errors import HubError, HubNotFoundError, HubUnreachableError
from interference.hub.file_choice import pick_files
from interference.hub.names import HubRef

_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_OID = re.compile(r"[0-9a-f]{40}")


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class PullPlan:
    """What a pull will do: the files to fetch at ``revision``, or a cached copy to use
    (``cached``, with ``note`` saying why the hub was not asked)."""

    ref: HubRef
    revision: str
    files: list[RemoteFile] = field(default_factory=list)
    cached: CachedModel | None = None
    note: str | None = None

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Pulled:
    """A pull's outcome: the model in the cache, and which files had to be downloaded."""

    model: CachedModel
    downloaded: list[RemoteFile]
    note: str | None = None  # the fallback to the cache, when there was one


def _tree_files(tree: Any, where: str) -> list[RemoteFile]:
    """The files of a tree listing, checked: a path that could leave the snapshot's folder,
    or a digest of the wrong shape, is the hub's error."""
    if not isinstance(tree, list):
        raise HubError(f"{where}: the tree listing is not a list")
    files: list[RemoteFile] = []
    for entry in tree:
        if not isinstance(entry, dict) or entry.get("type") != "file":
            continue
        path, size, oid, lfs = (entry.get(k) for k in ("path", "size", "oid", "lfs"))
        if not isinstance(path, str) or not isinstance(size, int) or not isinstance(oid, str):
            raise HubError(f"{where}: a tree entry without path, size or oid: {entry!r:.200}")
        parts = path.split("/")
        if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
            raise HubError(f"{where}: the path {path!r} would leave the snapshot's folder")
        if isinstance(lfs, dict):
            oid, size = lfs.get("oid"), lfs.get("size", size)
            if not isinstance(oid, str) or not _SHA256.fullmatch(oid) or not isinstance(size, int):
                raise HubError(f"{where}: {path} has no SHA-256 in its LFS entry")
            files.append(RemoteFile(path, size, oid, lfs=True))
        elif _GIT_OID.fullmatch(oid):  # a blob's name: nothing else may reach the disk
            files.append(RemoteFile(path, size, oid, lfs=False))
        else:
            raise HubError(f"{where}: {path} has an oid that is not a git SHA-1")
    return files


class Puller:
    """Pulls into one cache from one hub (by default those the environment names)."""

    def __init__(
        self,
        cache: HubCache | None = None,
        client: HubClient | None = None,
        *,
        stall_s: float = 30.0,
        retries: int = 5,
    ) -> None:
        self.cache = cache or HubCache()
        self.client = client or HubClient()
        self.stall_s = stall_s
        self.retries = retries

    def _cached(self, ref: HubRef, why: str, error: HubError | None = None) -> PullPlan:
        cached = self.cache.find(ref)
        if cached is None:
            where = f"{ref.name} is not in the cache ({self.cache.root})"
            if error is not None:
                raise type(error)(f"{error.message}; and {where}") from None
            raise HubNotFoundError(f"{where}, and {why}: nothing can be downloaded")
        return PullPlan(ref, cached.revision, cached=cached, note=f"{why}: using the cached copy")

    def plan(self, ref: HubRef) -> PullPlan:
        """Ask the hub what ``ref`` is now (or fall back to the cache: the module's docstring)."""
        if offline():
            return self._cached(ref, "HF_HUB_OFFLINE is set")
        try:
            return self._ask_hub(ref)
        except HubUnreachableError as exc:
            return self._cached(ref, exc.message, exc)

    def _ask_hub(self, ref: HubRef) -> PullPlan:
        repo = ref.repo
        endpoint = self.client.endpoint
        refs = self.client.get_json(
            f"/api/models/{repo}/refs",
            f"{repo} is not at {endpoint}, or {endpoint} is a mirror without the hub's API "
            f"(GET /api/models/{repo}/refs answered 404)",
        )
        branches = refs.get("branches") if isinstance(refs, dict) else None
        commits = [
            b.get("targetCommit")
            for b in branches or []
            if isinstance(b, dict) and b.get("name") == "main"
        ]
        revision = commits[0] if commits else None
        if not isinstance(revision, str) or not _COMMIT.fullmatch(revision):
            raise HubError(f"{endpoint}: {repo} has no branch main with a commit")
        tree = self.client.get_json(
            f"/api/models/{repo}/tree/{revision}?recursive=true",
            f"{endpoint} lists no files for {repo} at {revision[:12]}",
        )
        files = _tree_files(tree, f"{endpoint}/api/models/{repo}/tree")
        by_path = {f.path: f for f in files}
        chosen = pick_files(ref, by_path)
        return PullPlan(ref, revision, [by_path[path] for path in chosen])

    def fetch(
        self,
        plan: PullPlan,
        progress: PullProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> Pulled:
        """Download what ``plan`` lists and is not cached; a failure to reach the hub on the
        way falls back to a cached copy of the model, if there is one."""
        progress = progress or PullProgress()
        if plan.cached is not None:
            if plan.note:
                progress.note(plan.note)
            return Pulled(plan.cached, [], plan.note)
        repo, downloaded = plan.ref.repo, []
        try:
            for file in plan.files:
                blob = self.cache.blob(repo, file.oid)
                with self.cache.locked(repo, file.oid):
                    if blob.is_file() and blob.stat().st_size == file.size:
                        progress.start(file, file.size)  # pulled before, by any tool
                        progress.finish(file)
                    else:
                        self._download(plan, file, progress, cancel)
                        downloaded.append(file)
                self.cache.link(repo, plan.revision, file.path, file.oid)
        except HubUnreachableError as exc:
            fallback = self._cached(plan.ref, exc.message, exc)
            assert fallback.cached is not None
            progress.note(fallback.note or "")
            return Pulled(fallback.cached, downloaded, fallback.note)
        self.cache.write_ref(repo, plan.revision)
        snapshot = self.cache.snapshot(repo, plan.revision)
        model = CachedModel(plan.ref, plan.revision, [snapshot / f.path for f in plan.files])
        return Pulled(model, downloaded)

    def _download(
        self,
        plan: PullPlan,
        file: RemoteFile,
        progress: PullProgress,
        cancel: threading.Event | None,
    ) -> None:
        path = urllib.parse.quote(file.path)
        url = self.client.url(f"/{plan.ref.repo}/resolve/{plan.revision}/{path}")
        blob = self.cache.blob(plan.ref.repo, file.oid)
        download = Download(
            self.client, url, file, blob, progress, self.stall_s, self.retries, cancel
        )
        download.run()

    def pull(
        self,
        ref: HubRef,
        progress: PullProgress | None = None,
        cancel: threading.Event | None = None,
    ) -> Pulled:
        return self.fetch(self.plan(ref), progress, cancel)
