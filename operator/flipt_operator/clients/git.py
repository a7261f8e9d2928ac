"""The sidecar's git I/O on one storage's repository (dulwich): open or create, recover,
fetch, publish by compare-and-swap, history questions, replay and push.

Repository layout (see docs/git-sync.md): `<repositoryPath>/.git` is a normal repository whose
`HEAD` points at `refs/heads/<branch>`, the branch Flipt serves and commits to. No working tree
is checked out: Flipt reads the branch's commits, not files. The sidecar's own refs:
- `refs/remotes/origin/<branch>`: the remote head at the last fetch;
- `refs/flipt-sync/last-synced`: the last remote commit the branch was in step with;
- `refs/flipt-sync/kept/<commit>`: local commits kept aside by a conflict.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dulwich.client import HTTPUnauthorized
from dulwich.diff_tree import tree_changes
from dulwich.errors import NotGitRepository
from dulwich.graph import can_fast_forward, find_merge_base
from dulwich.object_store import ObjectStoreGraphWalker, commit_tree_changes
from dulwich.objects import Commit, Tree
from dulwich.repo import Repo
from dulwich.walk import Walker

from ..rules.gitsync import scrub
from . import git_integrity, git_refs
from .git_hooks import pause_point
from .git_repack import DEFAULT_GRACE_SECONDS, DEFAULT_THRESHOLD, RECORD_NAME, PackMaintenance
from .git_transport import RemoteAccess

log = logging.getLogger(__name__)

SYNC_REF_PREFIX = "refs/flipt-sync/"
LAST_SYNCED_REF = SYNC_REF_PREFIX + "last-synced"
KEPT_REF_PREFIX = SYNC_REF_PREFIX + "kept/"
REMOTE_REF_PREFIX = "refs/remotes/origin/"


class RemoteMovedError(RuntimeError):
    """The remote branch changed between our fetch and our push; the next cycle fetches it."""


class PushRejectedError(RuntimeError):
    """The remote refused the ref update (only visible in the push result's ref_status)."""


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
    10,000-commit history means 10,000 "have" lines per poll. Our heads include the remote head
    of the last fetch, which the server nearly always still has, so a few rounds are enough; in
    the rare other case the server just sends a somewhat larger pack."""

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
    remote_head: str | None  # None: the remote has no such branch
    received_objects: bool


@dataclass
class RebuildResult:
    quarantine: str  # where the damaged files were moved
    damaged: list[str]
    salvaged: int  # objects upstream did not send, recovered intact from a damaged pack
    lost_refs: dict[str, str]  # ref -> commit whose history could not be recovered


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


class LocalRepository:
    """One storage's repository on the shared volume."""

    def __init__(
        self,
        path: str,
        branch: str,
        stale_lock_seconds: float = 10.0,
        repack_threshold: int = DEFAULT_THRESHOLD,
        repack_grace_seconds: float = DEFAULT_GRACE_SECONDS,
    ) -> None:
        self.path = path
        self.branch = branch
        self.branch_ref = f"refs/heads/{branch}"
        self.remote_ref = REMOTE_REF_PREFIX + branch
        self.git_dir = os.path.join(path, ".git")
        self.stale_lock_seconds = stale_lock_seconds
        self.repack_threshold = repack_threshold
        self.repack_grace_seconds = repack_grace_seconds
        self._repo: Repo | None = None
        # Damaged object files found and not yet repaired (see git_integrity).
        self.damage: list[git_integrity.Damage] = []

    # -- opening and recovery ------------------------------------------------------------------

    def open(self) -> list[str]:
        """Open the repository, creating it if needed; returns what crash recovery removed."""
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
        removed = git_refs.recover_repository(
            self.git_dir, (SYNC_REF_PREFIX, REMOTE_REF_PREFIX), self.stale_lock_seconds
        )
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
        else:
            self._drop_dangling_own_refs()
        return removed

    def check_thoroughly(self) -> list[git_integrity.Damage]:
        """After a read failed with a corruption error: look for damaged files, packs included
        byte for byte. What is found is repaired by `rebuild` on the next cycle."""
        self.damage = git_integrity.scan(self.git_dir, thorough=True)
        return self.damage

    def rebuild(self, access: RemoteAccess) -> RebuildResult:
        """Repair after damage: move the damaged files aside, fetch upstream's branch whole (no
        "have" lines: what we have cannot be trusted), salvage what only we had (Flipt's unpushed
        commits) from damaged packs, and drop refs whose history is still incomplete."""
        damaged = [d.describe() for d in self.damage]
        quarantine_dir = git_integrity.quarantine(self.git_dir, self.damage)
        self._reopen()
        fetched = self.fetch(access, full=True)
        if fetched.remote_head is not None:
            git_refs.set_ref(self.git_dir, self.remote_ref, fetched.remote_head)
        refs = {name: sha for name, sha in git_refs.list_refs(self.git_dir, "refs/").items()}
        store = self.repo.object_store
        salvaged: set[bytes] = set()
        while True:  # a salvaged commit or tree shows what it refers to: look again
            missing = git_integrity.missing_objects(store, [sha.encode() for sha in refs.values()])
            recovered = git_integrity.salvage(quarantine_dir, store, missing) if missing else set()
            if not recovered:
                break
            salvaged |= recovered
        lost: dict[str, str] = {}
        if missing:
            for name, sha in refs.items():
                if git_integrity.missing_objects(store, [sha.encode()]):
                    lost[name] = sha
        for name, sha in lost.items():
            if name == self.branch_ref:
                # Flipt's branch lost objects only it had: serve upstream rather than nothing.
                if fetched.remote_head is not None:
                    git_refs.compare_and_swap(self.git_dir, name, sha, fetched.remote_head)
            elif name.startswith(SYNC_REF_PREFIX) or name == self.remote_ref:
                git_refs.set_ref(self.git_dir, name, None)
        self.damage = []
        return RebuildResult(quarantine_dir, damaged, len(salvaged), lost)

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
        config = staged.get_config()
        config.set((b"core",), b"bare", False)
        config.write_to_path()
        staged.refs.set_symbolic_ref(b"HEAD", self.branch_ref.encode())
        staged.close()
        os.rename(staging, self.git_dir)
        return Repo(self.path)

    def _drop_dangling_own_refs(self) -> None:
        store = self.repo.object_store
        for name, sha in git_refs.list_refs(self.git_dir, SYNC_REF_PREFIX).items():
            if sha.encode() not in store:
                git_refs.set_ref(self.git_dir, name, None)
        remote = git_refs.read_ref(self.git_dir, self.remote_ref)
        if remote and remote.encode() not in store:
            git_refs.set_ref(self.git_dir, self.remote_ref, None)

    @property
    def repo(self) -> Repo:
        assert self._repo is not None, "open() first"
        return self._repo

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    # -- refs ------------------------------------------------------------------------------------

    def local_head(self) -> str | None:
        return git_refs.read_ref(self.git_dir, self.branch_ref)

    def remote_head(self) -> str | None:
        return git_refs.read_ref(self.git_dir, self.remote_ref)

    def last_synced(self) -> str | None:
        sha = git_refs.read_ref(self.git_dir, LAST_SYNCED_REF)
        return sha if sha and self.has_commit(sha) else None

    def set_last_synced(self, sha: str) -> None:
        git_refs.set_ref(self.git_dir, LAST_SYNCED_REF, sha)

    def set_remote_head(self, sha: str | None) -> None:
        git_refs.set_ref(self.git_dir, self.remote_ref, sha)

    def publish(self, old: str | None, new: str) -> bool:
        """Move the served branch from `old` to `new` if Flipt has not moved it meanwhile."""
        try:
            return git_refs.compare_and_swap(self.git_dir, self.branch_ref, old, new)
        except git_refs.RefLockedError:
            if git_refs.break_stale_lock(self.git_dir, self.branch_ref, self.stale_lock_seconds):
                log.warning("removed a stale lock on %s", self.branch_ref)
                return git_refs.compare_and_swap(self.git_dir, self.branch_ref, old, new)
            raise

    def keep(self, sha: str) -> str:
        """Keep a commit reachable under refs/flipt-sync/kept/, whatever happens to the branch."""
        name = KEPT_REF_PREFIX + sha
        if git_refs.read_ref(self.git_dir, name) != sha:
            git_refs.set_ref(self.git_dir, name, sha)
        return name

    # -- maintenance -----------------------------------------------------------------------------

    def maintain(self, now: float | None = None) -> str | None:
        """Consolidate packs when there are too many; remove replaced ones after the grace period
        (see `git_repack`). Returns what was done, or None."""
        maintenance = PackMaintenance(
            self.git_dir, self.repo.object_store, self.repack_threshold, self.repack_grace_seconds
        )
        return maintenance.run(time.time() if now is None else now)

    # -- remote traffic ------------------------------------------------------------------------

    def fetch(self, access: RemoteAccess, full: bool = False) -> FetchResult:
        """Fetch the branch's new objects into a complete pack; no ref is touched. `full`: ask
        for the whole history, offering nothing we have (after damage)."""
        wanted_ref = self.branch_ref.encode()
        seen: dict[str, str | None] = {}
        store = self.repo.object_store

        def determine_wants(refs, depth=None):  # noqa: ANN001, ANN202 - dulwich's callback shape
            sha = refs.get(wanted_ref)
            seen["head"] = sha.decode() if sha else None
            if sha is None:
                return []
            return [sha] if full or sha not in store else []

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
                    ref_prefix=[wanted_ref],
                )
            finally:
                os.close(fd)
            if received:
                index_pack(self.git_dir, received_path)  # pack and index complete before any ref points into them
        finally:
            os.unlink(received_path)
        return FetchResult(seen.get("head"), received > 0)

    def _known_heads(self) -> list[bytes]:
        shas = {self.local_head(), self.remote_head(), self.last_synced()}
        shas.update(git_refs.list_refs(self.git_dir, KEPT_REF_PREFIX).values())
        return [s.encode() for s in shas if s and s.encode() in self.repo.object_store]

    def push(self, access: RemoteAccess, expected_remote: str | None, new: str) -> None:
        """Update the remote branch from `expected_remote` to `new`, nothing else.

        Raises RemoteMovedError when the remote is no longer at `expected_remote` (the server
        checks the old value too), PushRejectedError when the server refuses the update."""
        ref = self.branch_ref.encode()
        moved: dict[str, str | None] = {}

        def update_refs(refs):  # noqa: ANN001, ANN202 - dulwich's callback shape
            current = refs.get(ref)
            current_hex = current.decode() if current else None
            if current_hex != expected_remote:
                moved["to"] = current_hex
                return dict(refs)
            return {**refs, ref: new.encode()}

        def generate_pack_data(have, want, *, ofs_delta=False, progress=None):  # noqa: ANN001, ANN202
            return self.repo.generate_pack_data(set(have), set(want), progress=progress, ofs_delta=ofs_delta)

        result = access.client.send_pack(access.path, update_refs, generate_pack_data)
        if moved:
            raise RemoteMovedError(f"remote branch moved to {moved['to']} during the push")
        error = (result.ref_status or {}).get(ref)
        if error is not None:
            raise PushRejectedError(f"remote rejected the update of {self.branch_ref}: {error}")

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

    def merge_base(self, a: str, b: str) -> str | None:
        bases = find_merge_base(self.repo, [a.encode(), b.encode()])
        return bases[0].decode() if bases else None

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

    def first_parent_chain(self, base: str, head: str) -> list[Commit] | None:
        """The commits from just after `base` up to `head`, oldest first; None if `base` is not
        on `head`'s first-parent line."""
        chain: list[Commit] = []
        sha = head
        while sha != base:
            commit = self.commit(sha)
            chain.append(commit)
            if not commit.parents:
                return None
            sha = commit.parents[0].decode()
        chain.reverse()
        return chain

    def replay(self, commits: list[Commit], onto: str, now: Callable[[], float] = time.time) -> str:
        """Re-create `commits` on top of `onto`, each one applying the same per-file changes.

        Only used when no file is changed on both sides, so each file ends up exactly as the
        commit that last wrote it left it. Author, committer and message are kept."""
        store = self.repo.object_store
        parent = onto
        tree_id = self.commit(onto).tree
        for original in commits:
            before = self.commit(original.parents[0].decode()).tree
            edits: list[tuple[bytes, int | None, bytes | None]] = []
            for change in tree_changes(store, before, original.tree):
                if change.old is not None and change.old.path is not None and (
                    change.new is None or change.new.path != change.old.path
                ):
                    edits.append((change.old.path, None, None))
                if change.new is not None and change.new.path is not None:
                    edits.append((change.new.path, change.new.mode, change.new.sha))
            base_tree = store[tree_id]
            assert isinstance(base_tree, Tree)
            tree_id = commit_tree_changes(store, Tree.from_string(base_tree.as_raw_string()), edits)
            replayed = Commit()
            replayed.tree = tree_id
            replayed.parents = [parent.encode()]
            replayed.author = original.author
            replayed.author_time = original.author_time
            replayed.author_timezone = original.author_timezone
            replayed.committer = original.committer
            replayed.commit_time = int(now())
            replayed.commit_timezone = original.commit_timezone
            replayed.encoding = original.encoding
            replayed.message = original.message
            store.add_object(replayed)
            parent = replayed.id.decode()
        pause_point("mid-replay")
        return parent
