"""The mirror against a real `git daemon`: every branch followed, pushes forwarded, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from flipt_operator.gitsync.loop import StorageSync
from tests.gitsync.conftest import SyncFactory, push_through
from tests.support.git_servers import GitDaemon, RemoteRepo, git, read_committed

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


async def test_first_sync_mirrors_every_branch_then_follows_upstream(git_daemon: GitDaemon,
                                                                     make_sync: SyncFactory) -> None:  # fmt: skip
    remote = git_daemon.create_repo()
    git("branch", "flipt/staging/one", "main", cwd=remote.bare)
    sync = make_sync(remote.url)
    await sync.step()
    assert sync.state.ready and sync.state.revision == remote.head()
    assert set(sync.repo.heads()) == {"refs/heads/main", "refs/heads/flipt/staging/one"}
    assert (local_path(sync) / ".git" / "HEAD").read_text().strip() == "ref: refs/heads/main"
    new = remote.commit({FLAGS: "namespace: default\nflags: [a]\n"})
    git("branch", "-D", "flipt/staging/one", cwd=remote.bare)
    await sync.step()
    assert sync.state.revision == new and sync.state.remote_revision == new
    assert read_committed(local_path(sync), FLAGS) == "namespace: default\nflags: [a]\n"
    assert set(sync.repo.heads()) == {"refs/heads/main"}  # a branch deleted upstream goes


async def test_a_forwarded_write_lands_upstream_and_then_moves_the_mirror(git_daemon: GitDaemon,
                                                                          make_sync: SyncFactory) -> None:  # fmt: skip
    remote, sync = await synced(git_daemon, make_sync)
    commit, refused = await push_through(sync, {"team/features.yaml": "flags: [x]\n"})
    assert refused is None
    assert remote.head() == commit and sync.repo.head() == commit
    assert remote.read("team/features.yaml") == "flags: [x]"
    assert sync.state.last_push_time is not None
    assert sync.metrics.push_duration.labels("flags")._sum.get() > 0


async def test_a_write_from_a_stale_head_is_refused_and_upstream_keeps_its_commit(
    git_daemon: GitDaemon, make_sync: SyncFactory
) -> None:
    remote, sync = await synced(git_daemon, make_sync)
    theirs = remote.commit({FLAGS: "flags: [theirs]\n"})  # not polled yet: the mirror is behind
    commit, refused = await push_through(sync, {FLAGS: "flags: [mine]\n"})
    assert refused is not None and "fetch first" in refused
    assert remote.head() == theirs and remote.read(FLAGS) == "flags: [theirs]"
    conflict = sync.state.conflict
    assert conflict is not None and conflict.files == [FLAGS]
    assert conflict.local_revision == commit and conflict.remote_revision.startswith(theirs[:12])


async def test_a_rejection_upstream_is_reported_and_the_mirror_does_not_move(git_daemon: GitDaemon,
                                                                             make_sync: SyncFactory) -> None:  # fmt: skip
    remote, sync = await synced(git_daemon, make_sync)
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = remote.head()
    _commit, refused = await push_through(sync, {FLAGS: "flags: [blocked]\n"})
    assert refused is not None
    assert remote.head() == before and sync.repo.head() == before
    assert "refused" in (sync.state.last_error or "")
    assert sync.metrics.pushes.labels("flags", "refused")._value.get() == 1


async def test_a_force_push_upstream_is_followed(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote, sync = await synced(git_daemon, make_sync)
    first = remote.head()
    assert first is not None
    remote.commit({FLAGS: "flags: [later]\n"})
    await sync.step()
    remote.force_to(first)
    await sync.step()
    assert sync.repo.head() == first and sync.state.revision == first


async def test_branch_creation_and_deletion_are_forwarded(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote, sync = await synced(git_daemon, make_sync)
    head = remote.head()
    assert head is not None
    zero = "0" * 40
    outcome = await sync.forward([(zero, head, "refs/heads/flipt/production/new")])
    assert outcome == {"refs/heads/flipt/production/new": None}
    assert git("rev-parse", "refs/heads/flipt/production/new", cwd=remote.bare) == head
    assert sync.repo.head("refs/heads/flipt/production/new") == head
    outcome = await sync.forward([(head, zero, "refs/heads/flipt/production/new")])
    assert outcome == {"refs/heads/flipt/production/new": None}
    assert "flipt/production/new" not in git("branch", "--list", cwd=remote.bare)
    assert sync.repo.head("refs/heads/flipt/production/new") is None


async def test_an_existing_repository_is_reused(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote, sync = await synced(git_daemon, make_sync)
    packs_before = sorted((local_path(sync) / ".git" / "objects" / "pack").glob("*.pack"))
    sync.close()
    again = make_sync(remote.url)
    await again.step()
    assert again.state.ready and again.state.revision == remote.head()
    assert sorted((local_path(again) / ".git" / "objects" / "pack").glob("*.pack")) == packs_before
