"""Pack consolidation for the sidecar's repository, safe next to a concurrent reader (go-git).

Every fetch that brings objects adds a pack; Flipt's writes add loose objects. When there are
more than `threshold` packs, `PackMaintenance.run` writes one new pack holding every object
reachable from any ref (HEAD, branches, `refs/remotes/*`, `refs/flipt-sync/*`, reflogs) and
records what it replaces in `<git-dir>/flipt-sync-repack.json`. Nothing is removed then: a
reader that listed the old packs can still open them. On a later call at least
`grace_seconds` after the new pack was written, the replaced packs (index first, then data)
and the loose objects the new pack holds are removed, after checking again that every object
the refs reach now survives without them (anything missing is written to one more pack first).

Crash safety: the new pack is complete (data and index) before the record names it; the record
is written by rename; removal is idempotent and resumes from the record after a restart. A
half-written pack is what `git_refs.recover_repository` already removes.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dulwich.object_store import DiskObjectStore
from dulwich.objects import S_ISGITLINK, Commit, Tag, Tree, valid_hexsha
from dulwich.pack import UnpackedObject, generate_unpacked_objects

from . import git_refs
from .git_hooks import pause_point

log = logging.getLogger(__name__)

RECORD_NAME = "flipt-sync-repack.json"
DEFAULT_THRESHOLD = 20
DEFAULT_GRACE_SECONDS = 60.0
# dulwich caches up to 96 MiB of delta bases per pack; a walk over all history fills that (and
# the process keeps the memory). Consolidation reads through its own store with a small cache.
WALK_DELTA_CACHE_BYTES = 8 * 1024 * 1024


@dataclass
class Pending:
    pack: str  # basename of the consolidated pack, e.g. "pack-<sha>"
    replaced: list[str]  # basenames of the packs it replaces
    loose: list[str]  # loose objects it holds, removed with the packs
    written: float  # wall-clock time the consolidated pack was complete


class PackMaintenance:
    def __init__(self, git_dir: str, store: DiskObjectStore, threshold: int, grace_seconds: float) -> None:
        self.git_dir = git_dir
        self.store = store
        self.threshold = threshold
        self.grace_seconds = grace_seconds
        self.pack_dir = os.path.join(git_dir, "objects", "pack")
        self.record_path = os.path.join(git_dir, RECORD_NAME)

    # -- what is on disk ---------------------------------------------------------------------------

    def pack_names(self) -> list[str]:
        """Complete packs (data and index), by basename."""
        try:
            names = set(os.listdir(self.pack_dir))
        except FileNotFoundError:
            return []
        return sorted(n[: -len(".pack")] for n in names if n.endswith(".pack") and n[: -len(".pack")] + ".idx" in names)

    def read_pending(self) -> Pending | None:
        try:
            with open(self.record_path, encoding="utf-8") as f:
                return Pending(**json.load(f))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            # A damaged record only delays removal: drop it, the old packs stay until next time.
            log.warning("ignoring an unreadable %s", RECORD_NAME)
            self._drop_record()
            return None

    def _write_record(self, pending: Pending) -> None:
        tmp = self.record_path + ".new"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(pending.__dict__, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.record_path)

    def _drop_record(self) -> None:
        for path in (self.record_path, self.record_path + ".new"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def roots(self) -> set[bytes]:
        """Every object a ref, HEAD or a reflog entry names, that the store has."""
        shas = set(git_refs.list_refs(self.git_dir, "refs/").values())
        try:  # a detached HEAD; a symbolic one names a branch already listed
            with open(os.path.join(self.git_dir, "HEAD"), "rb") as f:
                head = f.read().strip()
            if valid_hexsha(head):
                shas.add(head.decode())
        except FileNotFoundError:
            pass
        shas.update(_reflog_shas(os.path.join(self.git_dir, "logs")))
        return {s.encode() for s in shas if s.encode() in self.store}

    @contextmanager
    def _walk_store(self) -> Iterator[DiskObjectStore]:
        store = DiskObjectStore(self.store.path, delta_base_cache_limit=WALK_DELTA_CACHE_BYTES)
        try:
            yield store
        finally:
            store.close()
            self.store._update_pack_cache()  # see packs written through `store`

    def reachable(self, store: DiskObjectStore) -> set[bytes]:
        """Every object the roots reach (hex ids). Blobs are named by their trees, not read."""
        seen: set[bytes] = set()
        todo = list(self.roots())
        while todo:
            sha = todo.pop()
            if sha in seen:
                continue
            seen.add(sha)
            obj = store[sha]
            if isinstance(obj, Commit):
                todo.append(obj.tree)
                todo.extend(obj.parents)
            elif isinstance(obj, Tree):
                for entry in obj.iteritems():
                    if S_ISGITLINK(entry.mode):
                        continue  # a submodule's commit is not in this repository
                    if stat.S_ISDIR(entry.mode):
                        todo.append(entry.sha)
                    else:
                        seen.add(entry.sha)
            elif isinstance(obj, Tag):
                todo.append(obj.object[1])
        return seen

    # -- the two steps -----------------------------------------------------------------------------

    def run(self, now: float) -> str | None:
        """Consolidate or finish a consolidation; returns what was done, for the log."""
        pending = self.read_pending()
        if pending is not None:
            if now - pending.written < self.grace_seconds:
                return None
            removed = self.remove_replaced(pending)
            return f"removed {removed} replaced pack(s)"
        if len(self.pack_names()) <= self.threshold:
            return None
        pending = self.consolidate(now)
        return f"consolidated {len(pending.replaced)} pack(s) into {pending.pack}" if pending else None

    def consolidate(self, now: float) -> Pending | None:
        before = self.pack_names()
        loose_before = set(_loose_objects(self.store.path))
        with self._walk_store() as store:
            objects = self.reachable(store)
            if not objects:
                return None
            records = generate_unpacked_objects(store, [(sha, None) for sha in objects], ofs_delta=True)
            pack = store.add_pack_data(len(objects), _pausing(records))
            assert pack is not None
            name = os.path.basename(pack._basename)
            loose = sorted(sha.decode() for sha in loose_before if sha in pack)
        keep = {n for n in before if os.path.exists(os.path.join(self.pack_dir, n + ".keep"))}
        pending = Pending(pack=name, replaced=[n for n in before if n != name and n not in keep], loose=loose, written=now)
        self._write_record(pending)
        return pending

    def remove_replaced(self, pending: Pending) -> int:
        if pending.pack not in self.pack_names():
            # The consolidated pack is gone (removed by hand?): keep everything.
            log.warning("consolidated pack %s is missing; keeping the packs it replaced", pending.pack)
            self._drop_record()
            return 0
        needed = self._needed(pending)
        removed = 0
        for name in pending.replaced:
            base = os.path.join(self.pack_dir, name)
            if name in needed or os.path.exists(base + ".keep"):
                continue
            # Index first: a pack without its index is invisible and removed by recovery.
            for suffix in (".idx", ".rev", ".bitmap", ".pack"):
                try:
                    os.unlink(base + suffix)
                    if suffix == ".pack":
                        removed += 1
                except FileNotFoundError:
                    pass
                if suffix == ".idx":
                    pause_point("mid-pack-removal")
        for sha in pending.loose:
            if valid_hexsha(sha.encode()):
                try:
                    os.unlink(os.path.join(self.store.path, sha[:2], sha[2:]))
                except FileNotFoundError:
                    pass
        self._drop_record()
        self.store._update_pack_cache()  # forget the removed packs (dulwich would on a miss)
        return removed

    def _needed(self, pending: Pending) -> set[str]:
        """The replaced packs that must stay: they hold an object the refs reach now and no
        surviving pack or loose object does (a ref moved since the consolidation, e.g. set by
        hand to a commit that was unreachable then). The next consolidation includes it."""
        replaced = set(pending.replaced)
        needed: set[str] = set()
        with self._walk_store() as store:
            by_name = {os.path.basename(p._basename): p for p in store.packs}
            survivors = [p for name, p in by_name.items() if name not in replaced]
            going = [p for name, p in by_name.items() if name in replaced]
            for sha in self.reachable(store):
                if any(sha in p for p in survivors) or store.contains_loose(sha):
                    continue
                needed.update(os.path.basename(p._basename) for p in going if sha in p)
        if needed:
            log.warning("keeping %d replaced pack(s): refs reach objects only they hold", len(needed))
        return needed


def _pausing(records: Iterator[UnpackedObject]) -> Iterator[UnpackedObject]:
    for i, record in enumerate(records):
        if i == 1:
            pause_point("mid-repack")
        yield record


def _loose_objects(objects_dir: str) -> Iterable[bytes]:
    for base in os.listdir(objects_dir):
        if len(base) != 2:
            continue
        try:
            names = os.listdir(os.path.join(objects_dir, base))
        except NotADirectoryError:
            continue
        for rest in names:
            sha = (base + rest).encode()
            if valid_hexsha(sha):
                yield sha


def _reflog_shas(logs_dir: str) -> set[str]:
    shas: set[str] = set()
    for dirpath, _dirs, files in os.walk(logs_dir):
        for file_name in files:
            try:
                with open(os.path.join(dirpath, file_name), "rb") as f:
                    for line in f:
                        for part in line.split(b" ", 2)[:2]:
                            if valid_hexsha(part) and part.strip(b"0"):
                                shas.add(part.decode())
            except OSError:
                continue
    return shas
