"""Finding damaged object files in a storage's mirror.

A truncated pack or loose object (a full disk, a volume restored from a partial backup) makes
every read that touches it fail, for good: a fetch walks history from the local heads, so the
storage could never sync again although upstream holds every object. `scan` finds such files;
the mirror moves them aside (never deletes them) and fetches upstream's history whole again
(`MirrorRepository.rebuild`): every ref of the mirror points at what upstream has.

Checks, by cost:
- quick (every start): each pack's trailer against the checksum its index recorded (a
  truncated or replaced pack), the index's own checksum, and every loose object decompressed
  to its end with its length and name verified (loose objects are the few latest pushes);
- thorough (after a read failed with a corruption error): also every pack's SHA-1 over its
  whole content, streamed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from dulwich.errors import ApplyDeltaError, ChecksumMismatch, FileFormatException
from dulwich.object_format import SHA1, ObjectFormat
from dulwich.pack import load_pack_index

log = logging.getLogger(__name__)

QUARANTINE_DIR = "flipt-sync-quarantine"
CHUNK = 1 << 20
GITLINK_MODE = 0o160000

# What a read of a damaged object raises (dulwich's and zlib's own errors; a missing object
# behind a damaged index shows as KeyError). Network errors are not among them.
CORRUPTION_ERRORS: tuple[type[BaseException], ...] = (
    zlib.error,
    ChecksumMismatch,
    FileFormatException,  # includes ObjectFormatException
    ApplyDeltaError,
)


def looks_like_corruption(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, CORRUPTION_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@dataclass(frozen=True)
class Damage:
    files: tuple[str, ...]  # paths relative to the git directory (a pack and its index together)
    reason: str

    def describe(self) -> str:
        return f"{self.files[0]}: {self.reason}"


def scan(git_dir: str, thorough: bool = False, object_format: ObjectFormat = SHA1) -> list[Damage]:
    """Damaged packs and loose objects (the sidecar's repositories are SHA-1 ones)."""
    objects = os.path.join(git_dir, "objects")
    damage = [d for d in (_check_pack(git_dir, idx, thorough, object_format) for idx in _pack_indexes(objects)) if d]
    damage.extend(d for d in (_check_loose(git_dir, path) for path in _loose_objects(objects)) if d)
    return damage


def _pack_indexes(objects: str) -> list[str]:
    pack_dir = os.path.join(objects, "pack")
    try:
        names = sorted(os.listdir(pack_dir))
    except FileNotFoundError:
        return []
    return [os.path.join(pack_dir, n) for n in names if n.startswith("pack-") and n.endswith(".idx")]


def _loose_objects(objects: str) -> Iterable[str]:
    try:
        fans = sorted(os.listdir(objects))
    except FileNotFoundError:
        return
    for fan in fans:
        if len(fan) != 2:
            continue
        directory = os.path.join(objects, fan)
        for name in sorted(os.listdir(directory)):
            if len(name) == 38 and not name.startswith("tmp"):
                yield os.path.join(directory, name)


def _check_pack(git_dir: str, idx_path: str, thorough: bool, object_format: ObjectFormat) -> Damage | None:
    pack_path = idx_path[: -len(".idx")] + ".pack"
    files = tuple(os.path.relpath(p, git_dir) for p in (pack_path, idx_path))
    try:
        index = load_pack_index(idx_path, object_format)
        try:
            index.check()  # the index's own trailer
            expected = index.get_pack_checksum()
        finally:
            index.close()
    except Exception as exc:  # any failure to read the index means it is damaged
        return Damage(files, f"pack index unreadable ({type(exc).__name__}: {exc})")
    try:
        size = os.path.getsize(pack_path)
        with open(pack_path, "rb") as f:
            header = f.read(4)
            if size < 32 or header != b"PACK":
                return Damage(files, f"pack truncated or not a pack ({size} bytes)")
            f.seek(size - 20)
            trailer = f.read(20)
            if trailer != expected:
                return Damage(files, "pack does not end with the checksum its index recorded (truncated?)")
            if thorough:
                digest = hashlib.sha1(usedforsecurity=False)
                f.seek(0)
                remaining = size - 20
                while remaining:
                    chunk = f.read(min(CHUNK, remaining))
                    if not chunk:
                        break
                    digest.update(chunk)
                    remaining -= len(chunk)
                if digest.digest() != trailer:
                    return Damage(files, "pack content does not match its checksum")
    except FileNotFoundError:
        return Damage(files, "pack index without its pack")
    return None


def _check_loose(git_dir: str, path: str) -> Damage | None:
    """Decompress to the end (streamed): the header's length and the object's name must match."""
    files = (os.path.relpath(path, git_dir),)
    expected = os.path.basename(os.path.dirname(path)) + os.path.basename(path)
    decompressor = zlib.decompressobj()
    digest = hashlib.sha1(usedforsecurity=False)
    length = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                data = decompressor.decompress(chunk)
                digest.update(data)
                length += len(data)
                if decompressor.eof:
                    break
        data = decompressor.flush()
        digest.update(data)
        length += len(data)
    except (OSError, zlib.error) as exc:
        return Damage(files, f"loose object unreadable ({exc})")
    if not decompressor.eof:
        return Damage(files, "loose object truncated")
    if digest.hexdigest() != expected:
        return Damage(files, "loose object content does not match its name")
    del length  # the name covers the header and the content
    return None


def quarantine(git_dir: str, damage: list[Damage]) -> str:
    """Move damaged files under `.git/flipt-sync-quarantine/<time>/` (kept for a person to look
    at; nothing reads them). Returns that directory."""
    target = os.path.join(git_dir, QUARANTINE_DIR, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    os.makedirs(target, exist_ok=True)
    for item in damage:
        for relative in item.files:
            source = os.path.join(git_dir, relative)
            if os.path.exists(source):
                os.rename(source, os.path.join(target, relative.replace(os.sep, "_")))
    return target
