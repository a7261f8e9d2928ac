"""Reading the mirror's refs from disk, and recovery of the mirror after a crash.

Only the sidecar writes the mirror (dulwich: `<ref>.lock` renamed over the ref), so a lock file
found at start was left by a killed predecessor.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator

_SHA = re.compile(rb"^[0-9a-f]{40}$")


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
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return _packed_ref(git_dir, name)
    except IsADirectoryError:
        return None
    sha = _parse(data)
    if sha is None:
        raise RefReadError(f"{name} does not hold a commit id")
    return sha


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


def _files(pattern: str) -> Iterator[str]:
    yield from glob.glob(pattern, recursive=True)


def recover_repository(git_dir: str) -> list[str]:
    """Clean what a killed sidecar left behind; returns what was removed (relative paths).

    - Lock files of refs, packed-refs, HEAD and config: their writer was this process's predecessor.
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

    for pattern in ("refs/**/*.lock", "packed-refs.lock", "HEAD.lock", "config.lock"):
        for path in _files(os.path.join(git_dir, pattern)):
            remove(path)
    objects = os.path.join(git_dir, "objects")
    for pattern in ("tmp_pack_*", "incoming-*", "pack/tmp*", "pack/*.lock", "??/*.lock"):
        for path in _files(os.path.join(objects, pattern)):
            remove(path)
    for pack in _files(os.path.join(objects, "pack", "*.pack")):
        if not os.path.exists(pack[: -len(".pack")] + ".idx"):
            remove(pack)
    return removed
