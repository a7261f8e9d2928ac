"""Sync semantics against a real `git daemon`: publish, push, replay, conflicts, force-push."""

from __future__ import annotations

from pathlib import Path

import pytest

from flipt_operator.clients import git_refs
from flipt_operator.gitsync.loop import StorageSync
from tests.gitsync.conftest import SyncFactory
from tests.support.git_servers import GitDaemon, RemoteRepo, flipt_commit, git, read_committed

pytestmark = pytest.mark.integration

FLAGS = "default/features.yaml"


def local_path(sync: StorageSync) -> Path:
    return Path(sync.storage.repository_path)


async def synced(server: GitDaemon, make_sync: SyncFactory) -> tuple[RemoteRepo, StorageSync]:
    """A remote repository and a storage that has completed its first sync."""
    remote = server.create_repo()
    sync = make_sync(remote.url)
    await sync.step()
    assert sync.state.ready, sync.state.last_error
    return remote, sync


async def test_first_sync_clones_and_publishes_then_follows_the_remote(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote, sync = await synced(git_daemon, make_sync)
    assert sync.state.ready and sync.state.revision == remote.head()
    assert (local_path(sync) / ".git" / "HEAD").read_text().strip() == "ref: refs/heads/main"
    new = remote.commit({FLAGS: "namespace: default\nflags: [a]\n"})
    await sync.step()
    assert sync.state.revision == new and sync.state.remote_revision == new
    assert read_committed(local_path(sync), FLAGS) == "namespace: default\nflags: [a]\n"
    assert sync.state.ahead == sync.state.behind == 0
    # the last synced commit is persisted on the volume
    assert git_refs.read_ref(str(local_path(sync) / ".git"), "refs/flipt-sync/last-synced") == new


async def test_a_local_write_is_pushed(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote, sync = await synced(git_daemon, make_sync)
    local = flipt_commit(local_path(sync), {"team/features.yaml": "flags: [x]\n"})
    await sync.step()
    assert remote.head() == local and sync.state.revision == local
    assert remote.read("team/features.yaml") == "flags: [x]"
    assert sync.metrics.push_duration.labels("flags")._sum.get() > 0


async def test_non_overlapping_changes_are_replayed_onto_the_remote_and_pushed(
    git_daemon: GitDaemon, make_sync: SyncFactory
) -> None:
    remote, sync = await synced(git_daemon, make_sync)
    remote_commit = remote.commit({"remote/features.yaml": "flags: [r]\n"})
    flipt_commit(local_path(sync), {"local/features.yaml": "flags: [l1]\n"}, "first local")
    flipt_commit(local_path(sync), {"local/other.yaml": "flags: [l2]\n"}, "second local")
    await sync.step()
    assert sync.state.conflict is None and sync.state.last_error is None
    history = remote.log()
    assert history[2] == remote_commit  # two replayed commits on top of the remote's
    assert git("log", "--format=%s", "-2", "main", cwd=remote.bare).split("\n") == ["second local", "first local"]
    for path, text in {"remote/features.yaml": "flags: [r]", "local/features.yaml": "flags: [l1]",
                       "local/other.yaml": "flags: [l2]"}.items():  # fmt: skip
        assert remote.read(path) == text
    assert sync.state.revision == remote.head()


async def test_overlapping_change_is_a_conflict_nothing_pushed_nothing_lost(
    git_daemon: GitDaemon, make_sync: SyncFactory
) -> None:
    remote, sync = await synced(git_daemon, make_sync)
    remote_commit = remote.commit({FLAGS: "remote edit\n"})
    local_commit = flipt_commit(local_path(sync), {FLAGS: "local edit\n", "other.yaml": "x\n"})
    await sync.step()
    conflict = sync.state.conflict
    assert conflict is not None
    assert conflict.files == [FLAGS]
    assert (conflict.local_revision, conflict.remote_revision) == (local_commit, remote_commit)
    assert remote.head() == remote_commit  # nothing pushed
    git_dir = str(local_path(sync) / ".git")
    assert git_refs.read_ref(git_dir, f"refs/flipt-sync/kept/{local_commit}") == local_commit
    assert sync.state.ready and (sync.state.ahead, sync.state.behind) == (1, 1)
    first_seen = conflict.detected_at
    await sync.step()  # it stays, with the time it was first seen
    assert sync.state.conflict is not None and sync.state.conflict.detected_at == first_seen
    assert sync.metrics.conflicts.labels("flags")._value.get() == 1

    # Resolved by the remote: it reverts its change of the file, so only local changes remain.
    remote.commit({FLAGS: "namespace: default\nflags: []\n"}, "revert")
    await sync.step()
    assert sync.state.conflict is None
    assert remote.read(FLAGS) == "local edit"
    # the kept ref still holds the original local commit
    assert git_refs.read_ref(git_dir, f"refs/flipt-sync/kept/{local_commit}") == local_commit


async def test_conflict_resolved_by_resetting_the_local_branch(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote, sync = await synced(git_daemon, make_sync)
    remote_commit = remote.commit({FLAGS: "remote edit\n"})
    local_commit = flipt_commit(local_path(sync), {FLAGS: "local edit\n"})
    await sync.step()
    assert sync.state.conflict is not None
    git("update-ref", "refs/heads/main", remote_commit, cwd=local_path(sync))
    await sync.step()
    assert sync.state.conflict is None and sync.state.revision == remote_commit
    assert git("cat-file", "-t", local_commit, cwd=local_path(sync)) == "commit"


async def test_force_push_without_local_commits_is_followed(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote = git_daemon.create_repo()
    first = remote.head()
    assert first
    sync = make_sync(remote.url)
    remote.commit({"a.yaml": "1\n"})
    await sync.step()
    remote.force_to(first)  # history rewritten: the synced commit is gone
    rewritten = remote.commit({"b.yaml": "2\n"})
    await sync.step()
    assert sync.state.revision == rewritten and sync.state.conflict is None


async def test_force_push_with_unpushed_local_commits_is_a_conflict_kept_on_a_ref(
    git_daemon: GitDaemon, make_sync: SyncFactory
) -> None:
    remote = git_daemon.create_repo()
    first = remote.head()
    assert first
    sync = make_sync(remote.url)
    remote.commit({"a.yaml": "1\n"})
    await sync.step()
    git_daemon.stop()  # the local write stays unpushed while the remote is rewritten
    local_commit = flipt_commit(local_path(sync), {"local.yaml": "mine\n"})
    remote.force_to(first)
    git_daemon.start()
    await sync.step()
    assert sync.state.conflict is not None and sync.state.conflict.local_revision == local_commit
    assert "rewritten" in (sync.state.last_error or "")
    assert remote.head() == first  # nothing pushed over the rewrite
    assert sync.state.revision == local_commit
    assert git_refs.read_ref(str(local_path(sync) / ".git"), f"refs/flipt-sync/kept/{local_commit}") == local_commit


async def test_server_side_push_rejection_is_reported(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote = git_daemon.create_repo()
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'flags are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    sync = make_sync(remote.url)
    await sync.step()
    before = remote.head()
    local_commit = flipt_commit(local_path(sync), {"x.yaml": "1\n"})
    await sync.step()
    assert remote.head() == before
    assert "rejected" in (sync.state.last_error or "") and "pre-receive" in (sync.state.last_error or "")
    assert sync.metrics.syncs.labels("flags", "push_error")._value.get() == 1
    assert sync.state.revision == local_commit and sync.state.ahead == 1
    hook.unlink()
    await sync.step()
    assert remote.head() == local_commit and sync.state.last_error is None


async def test_an_existing_repository_is_reused(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote = git_daemon.create_repo()
    first = make_sync(remote.url)
    await first.step()
    pack_dir = local_path(first) / ".git" / "objects" / "pack"
    packs_before = sorted(pack_dir.iterdir())
    first.close()
    local_commit = flipt_commit(local_path(first), {"offline.yaml": "1\n"})  # written while the sidecar was down
    second = make_sync(remote.url)
    await second.step()
    assert remote.head() == local_commit
    assert sorted(p for p in pack_dir.iterdir()) == packs_before  # nothing fetched again


async def test_concurrent_flipt_writes_are_never_overwritten(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    """Flipt commits while cycles run: every write ends up on the remote."""
    import asyncio

    remote, sync = await synced(git_daemon, make_sync)
    written: list[str] = []

    async def writer() -> None:
        for i in range(15):
            await asyncio.to_thread(flipt_commit, local_path(sync), {f"w/{i}.yaml": f"{i}\n"}, f"write {i}")
            written.append(f"w/{i}.yaml")
            if i % 5 == 0:
                await asyncio.to_thread(remote.commit, {f"r/{i}.yaml": "r\n"})

    async def syncer() -> None:
        while len(written) < 15:
            await sync.step()
        # Converge: a cycle that raced the last writes needs another. A lost write never would.
        for _ in range(10):
            await sync.step()
            if sync.state.ahead == 0:
                break

    await asyncio.gather(writer(), syncer())
    files = git("ls-tree", "-r", "--name-only", "main", cwd=remote.bare).split()
    assert all(path in files for path in written)
    assert sync.state.ahead == 0 and sync.state.conflict is None
