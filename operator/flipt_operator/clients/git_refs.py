"""Ref updates that are safe next to Flipt, and recovery of a repository after a crash.

Flipt (go-git) updates a ref in place: it opens the ref file, takes an flock on it, checks the
old value, truncates and writes. git and dulwich instead write `<ref>.lock` and rename it over
the ref. Mixing the two naively loses writes: go-git may be waiting on the flock of the inode a
rename has just replaced, then find the old value there and write into a file nobody reads.

`compare_and_swap` therefore does both: it creates `<ref>.lock` exclusively (keeps git-style
writers out), holds the flock of the current ref file while it compares (keeps go-git out),
renames the lock file into place (readers see old or new, never a partial file), and finally
writes the new value into the replaced inode too, so a go-git writer that was waiting on it
sees a changed value and fails its own compare-and-swap instead of writing into the void.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import time
from collections.abc import Iterator

from .git_hooks import pause_point

_SHA = re.compile(rb"^[0-9a-f]{40}$")
# How often to re-read a ref file that a go-git writer has truncated and is rewriting in place.
_TORN_READ_RETRIES = 50


class RefLockedError(RuntimeError):
    """Another writer holds `<ref>.lock`."""


class RefReadError(RuntimeError):
    """A ref file holds something that is not a commit id."""


def _packed_ref(git_dir: str, name: str) -> str | None:
    try:
        with open(os.path.join(git_dir, "packed-refs"), "rb") as f:
            for line in f:
                parts = line.strip().split(b" ", 1)
                if len(parts) == 2 and parts[1].decode() == name and _SHA.match(parts[0]):
                    return parts[0].decode()
    except FileNotFoundError:
        pass
    return None


def _parse(data: bytes) -> str | None:
    value = data.strip()
    return value.decode() if _SHA.match(value) else None


def read_ref(git_dir: str, name: str) -> str | None:
    """The commit id a ref holds, or None when it does not exist."""
    path = os.path.join(git_dir, name)
    for _ in range(_TORN_READ_RETRIES):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return _packed_ref(git_dir, name)
        except IsADirectoryError:
            return None
        sha = _parse(data)
        if sha is not None:
            return sha
        time.sleep(0.002)  # torn read of an in-place write; the writer holds it for microseconds
    raise RefReadError(f"{name} does not hold a commit id")


def compare_and_swap(git_dir: str, name: str, old: str | None, new: str | None) -> bool:
    """Set ref `name` to `new` (None deletes it) only if it holds `old` (None: does not exist).

    Returns False when the ref holds something else; raises RefLockedError when another
    writer holds the lock file."""
    path = os.path.join(git_dir, name)
    lock_path = path + ".lock"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        lock_fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise RefLockedError(f"{name} is locked by another writer ({name}.lock exists)") from None
    renamed = False
    ref_fd: int | None = None
    try:
        try:
            ref_fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            ref_fd = None
        if ref_fd is not None:
            fcntl.flock(ref_fd, fcntl.LOCK_EX)
            current = _parse(os.pread(ref_fd, 4096, 0))
        else:
            current = _packed_ref(git_dir, name)
        if current != old:
            return False
        if new is None:
            if ref_fd is not None:
                os.unlink(path)
            _drop_packed_ref(git_dir, name)
            return True
        payload = new.encode() + b"\n"
        os.write(lock_fd, payload)
        os.fsync(lock_fd)
        os.close(lock_fd)
        lock_fd = -1
        pause_point("mid-publish" if name.startswith("refs/heads/") else "mid-ref-update")
        os.rename(lock_path, path)
        renamed = True
        if ref_fd is not None:
            os.ftruncate(ref_fd, 0)
            os.pwrite(ref_fd, payload, 0)
        _fsync_dir(os.path.dirname(path))
        return True
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)
        if ref_fd is not None:
            os.close(ref_fd)  # releases the flock
        if not renamed:
            try:
                os.unlink(lock_path)
            except FileNotFoundError:
                pass


def set_ref(git_dir: str, name: str, new: str | None, attempts: int = 5) -> None:
    """Set a ref the sidecar alone writes, whatever it holds now."""
    for _ in range(attempts):
        if compare_and_swap(git_dir, name, read_ref(git_dir, name), new):
            return
    raise RefLockedError(f"{name} keeps changing under the sidecar")


def _drop_packed_ref(git_dir: str, name: str) -> None:
    packed = os.path.join(git_dir, "packed-refs")
    if _packed_ref(git_dir, name) is None:
        return
    with open(packed, "rb") as f:
        lines = f.readlines()
    kept, skip_peeled = [], False
    for line in lines:
        if skip_peeled and line.startswith(b"^"):
            continue
        skip_peeled = line.strip().endswith(b" " + name.encode())
        if not skip_peeled:
            kept.append(line)
    tmp = packed + ".flipt-sync-tmp"
    with open(tmp, "wb") as f:
        f.writelines(kept)
    os.rename(tmp, packed)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_refs(git_dir: str, prefix: str) -> dict[str, str]:
    """Loose and packed refs under a prefix such as `refs/flipt-sync/`."""
    refs: dict[str, str] = {}
    try:
        with open(os.path.join(git_dir, "packed-refs"), "rb") as f:
            for line in f:
                parts = line.strip().split(b" ", 1)
                if len(parts) == 2 and _SHA.match(parts[0]) and parts[1].decode().startswith(prefix):
                    refs[parts[1].decode()] = parts[0].decode()
    except FileNotFoundError:
        pass
    root = os.path.join(git_dir, prefix)
    for dirpath, _dirs, files in os.walk(root):
        for file_name in files:
            if file_name.endswith(".lock"):
                continue
            full = os.path.join(dirpath, file_name)
            name = os.path.relpath(full, git_dir).replace(os.sep, "/")
            try:
                sha = read_ref(git_dir, name)
            except RefReadError:
                continue
            if sha:
                refs[name] = sha
    return refs


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.path.getmtime(path) > seconds
    except FileNotFoundError:
        return False


def break_stale_lock(git_dir: str, name: str, stale_after: float) -> bool:
    """Remove `<ref>.lock` if it is older than `stale_after` seconds: its writer died."""
    lock_path = os.path.join(git_dir, name) + ".lock"
    if _older_than(lock_path, stale_after):
        try:
            os.unlink(lock_path)
            return True
        except FileNotFoundError:
            pass
    return False


def _files(pattern: str) -> Iterator[str]:
    yield from glob.glob(pattern, recursive=True)


def recover_repository(git_dir: str, own_ref_prefixes: tuple[str, ...], stale_after: float) -> list[str]:
    """Clean what a killed sidecar may have left behind; returns what was removed (relative paths).

    - Lock files of the refs only the sidecar writes go at once (their writer is this process's
      predecessor); other lock files (the served branch, packed-refs) only once stale.
    - Temporary and half-written packs (a pack without its index) and half-written loose
      objects: no ref points at their content, because refs move only after objects are complete.
    """
    removed: list[str] = []

    def remove(path: str) -> None:
        try:
            os.unlink(path)
            removed.append(os.path.relpath(path, git_dir))
        except FileNotFoundError:
            pass

    for prefix in own_ref_prefixes:
        for path in _files(os.path.join(git_dir, prefix, "**", "*.lock")):
            remove(path)
    for pattern in ("refs/heads/**/*.lock", "packed-refs.lock", "HEAD.lock", "config.lock"):
        for path in _files(os.path.join(git_dir, pattern)):
            if _older_than(path, stale_after):
                remove(path)
    objects = os.path.join(git_dir, "objects")
    for pattern in ("tmp_pack_*", "incoming-*", "pack/tmp*", "pack/*.lock", "??/*.lock"):
        for path in _files(os.path.join(objects, pattern)):
            remove(path)
    for pack in _files(os.path.join(objects, "pack", "*.pack")):
        if not os.path.exists(pack[: -len(".pack")] + ".idx"):
            remove(pack)
    return removed
