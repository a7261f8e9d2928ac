"""The sidecar's git I/O on one storage's mirror (dulwich): open or create, recover, fetch every
branch from upstream, publish it, forward pushes upstream, history questions.

The mirror (see docs/git-sync.md) is `<repositoryPath>/.git`, written only by the sidecar: its
`refs/heads/*` are upstream's branches as last fetched (or as last pushed through the sidecar and
accepted upstream), `HEAD` points at the storage's branch. Flipt keeps its own repository and
reaches this one only over the sidecar's smart HTTP (`gitsync/git_http.py`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dulwich.client import HTTPUnauthorized
from dulwich.diff_tree import tree_changes
from dulwich.errors import NotGitRepository
from dulwich.graph import can_fast_forward
from dulwich.object_store import ObjectStoreGraphWalker
from dulwich.objects import ZERO_SHA, Commit
from dulwich.repo import Repo
from dulwich.walk import Walker

from ..rules.gitsync import scrub
from . import git_integrity, git_refs
from .git_hooks import pause_point
from .git_repack import DEFAULT_GRACE_SECONDS, DEFAULT_THRESHOLD, RECORD_NAME, PackMaintenance
from .git_transport import RemoteAccess

log = logging.getLogger(__name__)

HEADS_PREFIX = "refs/heads/"
ZERO = ZERO_SHA.decode()

# One ref update a client asked for: (old, new, ref), ZERO for "absent".
RefUpdate = tuple[str, str, str]


def describe_error(exc: BaseException, secrets: list[str] | None = None) -> str:
    """A one-line error for logs and status, with URL user-info and secret values removed."""
    if isinstance(exc, HTTPUnauthorized):
        text = f"authentication failed (HTTP 401) for {exc.url}: check the credential"
    else:
        detail = str(exc).strip() or repr(exc)
        text = f"{type(exc).__name__}: {detail}" if type(exc).__module__.startswith("dulwich") else detail
    return scrub(" ".join(text.split()), secrets or [])


class _BoundedHaves:
    """Offers the server our heads and their nearest ancestors only.

    dulwich's walker keeps offering every ancestor until the server says "ready", which on a
    10,000-commit history means 10,000 "have" lines per poll. Our heads are upstream's heads of
    the last fetch, which the server nearly always still has, so a few rounds are enough; in the
    rare other case the server just sends a somewhat larger pack."""

    MAX_HAVES = 256

    def __init__(self, walker: ObjectStoreGraphWalker, max_haves: int = MAX_HAVES) -> None:
        self._walker = walker
        self._offered = 0
        self._max_haves = max_haves

    def next(self) -> bytes | None:
        if self._offered >= self._max_haves:
            return None
        self._offered += 1
        return self._walker.next()

    __next__ = next

    def __getattr__(self, name: str) -> Any:  # ack, nak, shallow, update_shallow, ...
        return getattr(self._walker, name)


@dataclass
class FetchResult:
    heads: dict[str, str]  # upstream's branches: refs/heads/<name> -> commit
    received_objects: bool


@dataclass
class RebuildResult:
    quarantine: str  # where the damaged files were moved
    damaged: list[str]


# `git index-pack` streams blobs larger than this (hashing them without holding them).
INDEX_PACK_BIG_FILE_THRESHOLD = "16m"


class IndexPackError(RuntimeError):
    """`git index-pack` refused a received pack."""


def index_pack(git_dir: str, pack_path: str) -> None:
    """Move a received pack into the repository with its index, completing a thin pack.

    git does this with memory bounded by the largest object below its big-file threshold;
    dulwich's indexer holds each object whole, compressed and not, so a 200 MB blob upstream
    took the sidecar to 456 MB for good (see docs/decisions.md). The pack and its index appear
    complete (git writes temporary files and renames them in: a kill leaves `tmp_*` files,
    removed at start)."""
    env = {**os.environ, "GIT_DIR": git_dir, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    with open(pack_path, "rb") as pack:
        result = subprocess.run(
            ["git", "-c", f"core.bigFileThreshold={INDEX_PACK_BIG_FILE_THRESHOLD}", "index-pack", "--stdin",
             "--fix-thin"],
            stdin=pack, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise IndexPackError(f"git index-pack refused the received pack: {' '.join(result.stderr.split())}")


class MirrorRepository:
    """One storage's mirror of upstream on the sidecar's volume."""

    def __init__(
        self,
        path: str,
        branch: str,
        repack_threshold: int = DEFAULT_THRESHOLD,
        repack_grace_seconds: float = DEFAULT_GRACE_SECONDS,
    ) -> None:
        self.path = path
        self.branch = branch
        self.branch_ref = HEADS_PREFIX + branch
        self.git_dir = os.path.join(path, ".git")
        self.repack_threshold = repack_threshold
        self.repack_grace_seconds = repack_grace_seconds
        self._repo: Repo | None = None
        # Damaged object files found and not yet repaired (see git_integrity).
        self.damage: list[git_integrity.Damage] = []

    # -- opening and recovery ------------------------------------------------------------------

    def open(self) -> list[str]:
        """Open the mirror, creating it if needed; returns what crash recovery removed."""
        os.makedirs(self.path, exist_ok=True)
        if os.path.isdir(self.git_dir):
            try:
                repo = Repo(self.path)
            except NotGitRepository:
                # Half-created (killed during init) or damaged: keep it aside, never delete it.
                aside = f"{self.git_dir}.broken-{int(time.time())}"
                log.error("repository at %s is not valid; moved aside to %s", self.path, aside)
                os.rename(self.git_dir, aside)
                repo = self._init()
        else:
            repo = self._init()
        self._repo = repo
        removed = git_refs.recover_repository(self.git_dir)
        half_written_record = os.path.join(self.git_dir, RECORD_NAME + ".new")
        if os.path.exists(half_written_record):
            os.unlink(half_written_record)
            removed.append(RECORD_NAME + ".new")
        self.damage = git_integrity.scan(self.git_dir)
        if self.damage:
            log.error(
                "repository at %s is damaged: %s; it is rebuilt from upstream on the next sync",
                self.path,
                "; ".join(d.describe() for d in self.damage),
            )
        return removed

    def check_thoroughly(self) -> list[git_integrity.Damage]:
        """After a read failed with a corruption error: look for damaged files, packs included
        byte for byte. What is found is repaired by `rebuild` on the next cycle."""
        self.damage = git_integrity.scan(self.git_dir, thorough=True)
        return self.damage

    def rebuild(self, access: RemoteAccess) -> RebuildResult:
        """Repair after damage: move the damaged files aside and fetch upstream's branches whole
        (no "have" lines: what we have cannot be trusted). Everything the mirror's refs point at
        came from upstream, so upstream can give all of it back; the caller publishes."""
        damaged = [d.describe() for d in self.damage]
        quarantine_dir = git_integrity.quarantine(self.git_dir, self.damage)
        self._reopen()
        self.fetch(access, full=True)
        self.damage = []
        return RebuildResult(quarantine_dir, damaged)

    def _reopen(self) -> None:
        if self._repo is not None:
            self._repo.close()
        self._repo = Repo(self.path)

    def _init(self) -> Repo:
        # Build the repository beside its final place and rename it in: a kill during
        # creation leaves a temporary directory, never a half-made `.git`.
        staging = os.path.join(self.path, ".git.creating")
        shutil.rmtree(staging, ignore_errors=True)
        Repo.init_bare(staging, mkdir=True).close()
        staged = Repo(staging)
        staged.refs.set_symbolic_ref(b"HEAD", self.branch_ref.encode())
        staged.close()
        os.rename(staging, self.git_dir)
        return Repo(self.path)

    @property
    def repo(self) -> Repo:
        assert self._repo is not None, "open() first"
        return self._repo

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    # -- refs ------------------------------------------------------------------------------------

    def heads(self) -> dict[str, str]:
        """The mirror's branches: refs/heads/<name> -> commit."""
        return git_refs.list_refs(self.git_dir, HEADS_PREFIX)

    def head(self, ref: str | None = None) -> str | None:
        return git_refs.read_ref(self.git_dir, ref or self.branch_ref)

    def publish(self, heads: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
        """Make the mirror's branches exactly `heads` (objects are complete already); returns
        what moved: ref -> (old, new)."""
        moved: dict[str, tuple[str | None, str | None]] = {}
        current = self.heads()
        for ref in sorted(set(current) | set(heads)):
            old, new = current.get(ref), heads.get(ref)
            if old == new:
                continue
            pause_point("mid-publish")
            self.set_head(ref, new)
            moved[ref] = (old, new)
        return moved

    def set_head(self, ref: str, sha: str | None) -> None:
        refs = self.repo.refs
        if sha is None:
            refs.remove_if_equals(ref.encode(), None)
        else:
            refs.set_if_equals(ref.encode(), None, sha.encode())

    # -- maintenance -----------------------------------------------------------------------------

    def maintain(self, now: float | None = None) -> str | None:
        """Consolidate packs when there are too many; remove replaced ones after the grace period
        (see `git_repack`). Returns what was done, or None."""
        maintenance = PackMaintenance(
            self.git_dir, self.repo.object_store, self.repack_threshold, self.repack_grace_seconds
        )
        return maintenance.run(time.time() if now is None else now)

    # -- upstream traffic ----------------------------------------------------------------------

    def fetch(self, access: RemoteAccess, full: bool = False) -> FetchResult:
        """Fetch every upstream branch's new objects into a complete pack; no ref is touched.
        `full`: ask for the whole history, offering nothing we have (after damage)."""
        seen: dict[str, str] = {}
        store = self.repo.object_store

        def determine_wants(refs, depth=None):  # noqa: ANN001, ANN202 - dulwich's callback shape
            for name, sha in refs.items():
                if name.startswith(HEADS_PREFIX.encode()) and sha is not None:
                    seen[name.decode()] = sha.decode()
            return sorted({sha.encode() for sha in seen.values() if full or sha.encode() not in store})

        fd, received_path = tempfile.mkstemp(dir=os.path.join(self.git_dir, "objects", "pack"), prefix="tmp-fetch-")
        received = 0

        def write_pack(data: bytes) -> int:
            nonlocal received
            written = os.write(fd, data)
            if received == 0 and data:
                pause_point("mid-fetch")
            received += len(data)
            return written

        try:
            try:
                access.client.fetch_pack(
                    access.path,
                    determine_wants,
                    _BoundedHaves(
                        self.repo.get_graph_walker(heads=self._known_heads()), 0 if full else _BoundedHaves.MAX_HAVES
                    ),
                    write_pack,
                    ref_prefix=[HEADS_PREFIX.encode()],
                )
            finally:
                os.close(fd)
            if received:
                index_pack(self.git_dir, received_path)  # pack and index complete before any ref points into them
        finally:
            os.unlink(received_path)
        return FetchResult(seen, received > 0)

    def _known_heads(self) -> list[bytes]:
        return [s.encode() for s in set(self.heads().values()) if s.encode() in self.repo.object_store]

    def upstream_heads(self, access: RemoteAccess) -> dict[str, str]:
        """Upstream's branches as it advertises them now (no objects)."""
        refs = access.client.get_refs(access.path).refs
        return {
            name.decode(): sha.decode()
            for name, sha in refs.items()
            if name.startswith(HEADS_PREFIX.encode()) and sha is not None
        }

    def forward(self, access: RemoteAccess, updates: Iterable[RefUpdate]) -> dict[str, str | None]:
        """Push `updates` upstream, each only from the old value the client saw: a ref upstream
        has moved meanwhile is not touched. Returns ref -> None (accepted) or why it was not.

        Raises what the transport raises: then the outcome is unknown (see `settle`)."""
        wanted = {ref.encode(): (old, new) for old, new, ref in updates}
        stale: dict[str, str] = {}

        def update_refs(refs):  # noqa: ANN001, ANN202 - dulwich's callback shape
            result = dict(refs)
            for ref, (old, new) in wanted.items():
                current = refs.get(ref)
                current_hex = current.decode() if current else ZERO
                if current_hex != old:
                    stale[ref.decode()] = f"fetch first (upstream moved to {current_hex[:12]})"
                    continue
                result[ref] = new.encode()
            return result

        def generate_pack_data(have, want, *, ofs_delta=False, progress=None):  # noqa: ANN001, ANN202
            return self.repo.generate_pack_data(set(have), set(want), progress=progress, ofs_delta=ofs_delta)

        result = access.client.send_pack(access.path, update_refs, generate_pack_data)
        pause_point("after-forward")
        outcome: dict[str, str | None] = {}
        for ref in wanted:
            name = ref.decode()
            error = (result.ref_status or {}).get(ref)
            outcome[name] = stale.get(name) or (error.decode() if isinstance(error, bytes) else error)
        return outcome

    # -- history ---------------------------------------------------------------------------------

    def has_commit(self, sha: str) -> bool:
        return sha.encode() in self.repo.object_store

    def commit(self, sha: str) -> Commit:
        obj = self.repo.object_store[sha.encode()]
        assert isinstance(obj, Commit)
        return obj

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether `ancestor` is `descendant` or one of its ancestors."""
        return ancestor == descendant or can_fast_forward(self.repo, ancestor.encode(), descendant.encode())

    def count_only_in(self, include: str | None, exclude: str | None) -> int:
        """Commits reachable from `include` but not from `exclude`."""
        if include is None or include == exclude:
            return 0
        walker = Walker(self.repo.object_store, [include.encode()], exclude=[exclude.encode()] if exclude else None)
        return sum(1 for _ in walker)

    def changed_files(self, old: str, new: str) -> set[str]:
        """Paths whose content differs between two commits."""
        changes = tree_changes(self.repo.object_store, self.commit(old).tree, self.commit(new).tree)
        paths: set[str] = set()
        for change in changes:
            for entry in (change.old, change.new):
                if entry is not None and entry.path is not None:
                    paths.add(entry.path.decode("utf-8", "replace"))
        return paths
