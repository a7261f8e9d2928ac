"""Ref compare-and-swap next to a go-git style writer, and crash recovery (local files only)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from flipt_operator.clients import git_refs

A, B, C = "a" * 40, "b" * 40, "c" * 40


def test_compare_and_swap(tmp_path: Path) -> None:
    git_dir = str(tmp_path)
    assert git_refs.compare_and_swap(git_dir, "refs/heads/main", None, A)
    assert git_refs.read_ref(git_dir, "refs/heads/main") == A
    assert not git_refs.compare_and_swap(git_dir, "refs/heads/main", B, C)
    assert git_refs.compare_and_swap(git_dir, "refs/heads/main", A, B)
    assert git_refs.read_ref(git_dir, "refs/heads/main") == B
    assert git_refs.compare_and_swap(git_dir, "refs/heads/main", B, None)
    assert git_refs.read_ref(git_dir, "refs/heads/main") is None
    assert not os.path.exists(tmp_path / "refs/heads/main.lock")


def test_packed_refs_are_read_and_overridden(tmp_path: Path) -> None:
    (tmp_path / "packed-refs").write_text(f"# pack-refs with: peeled\n{A} refs/heads/main\n")
    assert git_refs.read_ref(str(tmp_path), "refs/heads/main") == A
    assert git_refs.compare_and_swap(str(tmp_path), "refs/heads/main", A, B)
    assert git_refs.read_ref(str(tmp_path), "refs/heads/main") == B


def test_a_held_lock_file_refuses_and_a_stale_one_can_be_broken(tmp_path: Path) -> None:
    git_dir = str(tmp_path)
    git_refs.compare_and_swap(git_dir, "refs/heads/main", None, A)
    lock = tmp_path / "refs/heads/main.lock"
    lock.write_text("")
    with pytest.raises(git_refs.RefLockedError):
        git_refs.compare_and_swap(git_dir, "refs/heads/main", A, B)
    assert not git_refs.break_stale_lock(git_dir, "refs/heads/main", stale_after=60)
    old = time.time() - 120
    os.utime(lock, (old, old))
    assert git_refs.break_stale_lock(git_dir, "refs/heads/main", stale_after=60)
    assert git_refs.compare_and_swap(git_dir, "refs/heads/main", A, B)


def test_a_go_git_writer_waiting_on_the_flock_fails_instead_of_writing_into_the_void(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """go-git opens the ref, waits for the flock, compares, writes in place. Our swap replaces the
    file while it waits; it must then see the new value in the old inode and give up."""
    git_dir = str(tmp_path)
    git_refs.compare_and_swap(git_dir, "refs/heads/main", None, A)
    waiter_fd = os.open(tmp_path / "refs/heads/main", os.O_RDWR)  # opened before our swap
    seen: list[bytes] = []

    def go_git_writer() -> None:
        fcntl.flock(waiter_fd, fcntl.LOCK_EX)
        seen.append(os.pread(waiter_fd, 100, 0).strip())
        os.close(waiter_fd)

    waiter = threading.Thread(target=go_git_writer)

    def while_we_hold_the_flock(stage: str) -> None:
        waiter.start()
        time.sleep(0.05)  # let it block on the flock we hold
        assert not seen

    monkeypatch.setattr(git_refs, "pause_point", while_we_hold_the_flock)
    assert git_refs.compare_and_swap(git_dir, "refs/heads/main", A, B)
    waiter.join(5)
    assert git_refs.read_ref(git_dir, "refs/heads/main") == B
    assert seen == [B.encode()]  # the waiter's compare (expecting A) fails


def test_recovery_removes_what_a_killed_sidecar_left(tmp_path: Path) -> None:
    git_dir = tmp_path
    for rel in ("objects/pack", "objects/ab", "refs/flipt-sync", "refs/heads"):
        (git_dir / rel).mkdir(parents=True)
    leftovers = [
        "objects/pack/tmpabc123.pack",  # add_pack in progress
        "objects/pack/pack-1234.pack",  # renamed in, index never written
        "objects/tmp_pack_xyz",
        "objects/ab/cdef.lock",
        "refs/flipt-sync/last-synced.lock",
    ]
    for rel in leftovers:
        (git_dir / rel).write_text("partial")
    (git_dir / "objects/pack/pack-5678.pack").write_text("complete")
    (git_dir / "objects/pack/pack-5678.idx").write_text("complete")
    (git_dir / "refs/heads/main.lock").write_text("")  # fresh: may belong to a live writer
    removed = git_refs.recover_repository(str(git_dir), ("refs/flipt-sync/",), stale_after=30)
    assert sorted(removed) == sorted(leftovers)
    assert (git_dir / "refs/heads/main.lock").exists()
    assert (git_dir / "objects/pack/pack-5678.pack").exists()
