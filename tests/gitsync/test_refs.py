"""Reading the mirror's refs, and crash recovery (local files only)."""

from __future__ import annotations

from pathlib import Path

from flipt_operator.clients import git_refs

A, B = "a" * 40, "b" * 40


def test_loose_refs_override_packed_ones(tmp_path: Path) -> None:
    (tmp_path / "packed-refs").write_text(f"# pack-refs with: peeled\n{A} refs/heads/main\n{A} refs/heads/other\n")
    (tmp_path / "refs" / "heads").mkdir(parents=True)
    (tmp_path / "refs" / "heads" / "main").write_text(B + "\n")
    assert git_refs.read_ref(str(tmp_path), "refs/heads/main") == B
    assert git_refs.read_ref(str(tmp_path), "refs/heads/other") == A
    assert git_refs.read_ref(str(tmp_path), "refs/heads/none") is None
    assert git_refs.list_refs(str(tmp_path), "refs/heads/") == {"refs/heads/main": B, "refs/heads/other": A}


def test_recovery_removes_what_a_killed_sidecar_left(tmp_path: Path) -> None:
    git_dir = tmp_path
    for rel in ("objects/pack", "objects/ab", "refs/heads/flipt"):
        (git_dir / rel).mkdir(parents=True)
    leftovers = [
        "objects/pack/tmpabc123.pack",  # add_pack in progress
        "objects/pack/pack-1234.pack",  # renamed in, index never written
        "objects/tmp_pack_xyz",
        "objects/ab/cdef.lock",
        "refs/heads/main.lock",  # only the sidecar writes the mirror: its predecessor left it
        "refs/heads/flipt/x.lock",
        "packed-refs.lock",
    ]
    for rel in leftovers:
        (git_dir / rel).write_text("partial")
    (git_dir / "objects/pack/pack-5678.pack").write_text("complete")
    (git_dir / "objects/pack/pack-5678.idx").write_text("complete")
    removed = git_refs.recover_repository(str(git_dir))
    assert sorted(removed) == sorted(leftovers)
    assert (git_dir / "objects/pack/pack-5678.pack").exists()
