"""Fetch policy: an unreachable remote at start and later, under strict and lenient."""

from __future__ import annotations

import pytest

from tests.gitsync.conftest import SyncFactory
from tests.support.git_servers import GitDaemon, flipt_commit

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("policy", ["strict", "lenient"])
async def test_unreachable_at_first_start_serves_nothing(
    git_daemon: GitDaemon, make_sync: SyncFactory, policy: str
) -> None:
    remote = git_daemon.create_repo()
    git_daemon.stop()
    sync = make_sync(remote.url, fetchPolicy=policy)
    for _ in range(3):
        await sync.step()  # keeps trying, never raises
    assert not sync.state.ready and sync.state.revision is None
    assert "refused" in (sync.state.last_error or "").lower()
    assert sync.failures == 3
    git_daemon.start()
    await sync.step()
    assert sync.state.ready and sync.state.revision == remote.head() and sync.state.last_error is None


async def test_strict_failure_later_makes_it_not_ready_until_the_remote_is_back(
    git_daemon: GitDaemon, make_sync: SyncFactory
) -> None:
    remote = git_daemon.create_repo()
    sync = make_sync(remote.url, fetchPolicy="strict")
    await sync.step()
    assert sync.state.ready
    good_fetch = sync.state.last_fetch_time
    git_daemon.stop()
    await sync.step()
    assert not sync.state.ready and sync.state.last_error
    assert sync.state.last_fetch_time == good_fetch and sync.state.last_attempt_time > good_fetch
    git_daemon.start()
    new = remote.commit({"x.yaml": "1\n"})
    await sync.step()
    assert sync.state.ready and sync.state.revision == new and not sync.state.degraded


async def test_lenient_keeps_serving_degraded_and_pushes_when_back(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote = git_daemon.create_repo()
    sync = make_sync(remote.url, fetchPolicy="lenient")
    await sync.step()
    git_daemon.stop()
    local = flipt_commit(sync.storage.repository_path, {"offline.yaml": "1\n"})
    await sync.step()
    assert sync.state.ready and sync.state.degraded and sync.state.last_error
    assert sync.state.revision == local
    git_daemon.start()
    await sync.step()
    assert sync.state.ready and not sync.state.degraded and remote.head() == local


@pytest.mark.parametrize(("policy", "ready"), [("lenient", True), ("strict", False)])
async def test_restart_with_unreachable_remote_and_existing_repository(
    git_daemon: GitDaemon, make_sync: SyncFactory, policy: str, ready: bool
) -> None:
    remote = git_daemon.create_repo()
    first = make_sync(remote.url, fetchPolicy=policy)
    await first.step()
    first.close()
    git_daemon.stop()
    restarted = make_sync(remote.url, fetchPolicy=policy)
    await restarted.step()
    assert restarted.state.ready is ready
    assert restarted.state.degraded is ready
    assert (restarted.state.revision == remote.head()) is ready
