"""Fetch policy: an unreachable remote at start and later, under strict and lenient."""

from __future__ import annotations

import asyncio

import pytest

from tests.gitsync.conftest import SyncFactory, push_through
from tests.support.git_servers import GitDaemon

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


async def test_lenient_keeps_serving_degraded_refuses_writes_and_takes_them_when_back(
    git_daemon: GitDaemon, make_sync: SyncFactory
) -> None:
    remote = git_daemon.create_repo()
    sync = make_sync(remote.url, fetchPolicy="lenient")
    await sync.step()
    served = sync.state.revision
    git_daemon.stop()
    await sync.step()
    assert sync.state.ready and sync.state.degraded and sync.state.last_error
    assert sync.state.revision == served and sync.serves_git()
    _commit, refused = await push_through(sync, {"offline.yaml": "1\n"})
    assert refused is not None and "not pushed" in refused  # never acknowledged while upstream is down
    assert sync.repo.head() == served
    git_daemon.start()
    await sync.step()
    assert sync.state.ready and not sync.state.degraded
    commit, refused = await push_through(sync, {"offline.yaml": "1\n"})
    assert refused is None and remote.head() == commit


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


async def test_a_strict_pod_keeps_serving_a_published_revision_through_a_short_outage(
    git_daemon: GitDaemon, make_sync: SyncFactory
) -> None:
    """/readyz is the pod's readiness: a strict storage whose fetches fail is not Ready in its
    status at once, but its pod keeps serving the published revision until it is staleAfter old."""
    from aiohttp.test_utils import TestClient, TestServer

    from flipt_operator.gitsync.metrics import SyncMetrics
    from flipt_operator.gitsync.server import make_app

    remote = git_daemon.create_repo()
    sync = make_sync(remote.url, fetchPolicy="strict", staleAfter="2s")
    async with TestClient(TestServer(make_app([sync], SyncMetrics()))) as http:
        assert (await http.get("/readyz")).status == 503  # nothing published yet
        await sync.step()
        assert (await http.get("/readyz")).status == 200
        git_daemon.stop()
        await sync.step()
        assert not sync.state.ready and sync.state.last_error  # the storage's status: not Ready
        assert (await http.get("/readyz")).status == 200  # the pod: still serving, for now
        deadline = asyncio.get_running_loop().time() + 10
        while (await http.get("/readyz")).status == 200:
            assert asyncio.get_running_loop().time() < deadline, "still ready long after staleAfter"
            await asyncio.sleep(0.1)
        body = await (await http.get("/readyz")).json()
        assert "older than 2s" in body["storages"]["flags"]
        git_daemon.start()
        await sync.step()
        assert sync.state.ready and (await http.get("/readyz")).status == 200


def test_stale_after_defaults_to_three_polls_and_at_least_a_minute() -> None:
    from flipt_operator.rules.gitsync import pod_serves, stale_after_seconds

    assert stale_after_seconds(30.0, None) == 90.0
    assert stale_after_seconds(5.0, None) == 60.0
    assert stale_after_seconds(5.0, 2.0) == 2.0
    assert not pod_serves("strict", False, 0.0, 60.0)  # nothing published
    assert pod_serves("strict", True, 59.0, 60.0) and not pod_serves("strict", True, 61.0, 60.0)
    assert pod_serves("lenient", True, 10_000.0, 60.0)
