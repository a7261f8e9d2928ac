"""Pack consolidation on real repositories: bounded pack count, a reader holding the old pack
list, every ref's objects kept, kill -9 mid-repack and mid-removal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from dulwich.objects import Blob
from dulwich.repo import Repo

from flipt_operator.clients.git_repack import RECORD_NAME
from flipt_operator.gitsync.loop import REPACK_GRACE_ENV, REPACK_PACKS_ENV
from tests.gitsync.conftest import Sidecar, SyncFactory, push_through, storage_config
from tests.gitsync.test_process import assert_clean_repository, pause_env
from tests.support.git_servers import GitDaemon, git, read_committed
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SidecarFactory = Callable[..., Sidecar]


def packs(repo_path: Path) -> list[Path]:
    return sorted((repo_path / ".git" / "objects" / "pack").glob("*.pack"))


def all_refs(repo_path: Path) -> dict[str, str]:
    lines = git("for-each-ref", "--format=%(refname) %(objectname)", cwd=repo_path).splitlines()
    return dict(line.split() for line in lines)


async def test_many_fetches_keep_the_pack_count_bounded_and_every_ref_complete(
    git_daemon: GitDaemon, make_sync: SyncFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REPACK_PACKS_ENV, "4")
    monkeypatch.setenv(REPACK_GRACE_ENV, "0")
    remote = git_daemon.create_repo()
    sync = make_sync(remote.url)
    await sync.step()
    path = Path(sync.storage.repository_path)
    # a commit only a ref outside refs/heads reaches, fetched into a pack and then force-pushed away
    before = remote.head()
    dropped = remote.commit({"dropped.yaml": "gone\n"})
    await sync.step()
    remote.force_to(before)
    await sync.step()
    git("update-ref", f"refs/keep/{dropped}", dropped, cwd=path)
    # an object received from a push whose ref has not moved yet
    with Repo(str(path)) as repo:
        pending = Blob.from_string(b"flipt is writing this\n")
        repo.object_store.add_object(pending)
    most = 0
    for i in range(14):
        remote.commit({f"remote-{i}.yaml": f"{i}\n"})
        await sync.step()
        if i % 3 == 0:
            _commit, refused = await push_through(sync, {f"local-{i}.yaml": f"{i}\n"})  # loose objects, then pushed
            assert refused is None, refused
        assert sync.state.ready and sync.state.last_error is None, sync.state.last_error
        most = max(most, len(packs(path)))
    assert most <= 4 + 2  # the threshold, the consolidated pack and one fetched since
    assert len(packs(path)) <= 4 + 2  # after 16 fetches, each of which added a pack
    assert_clean_repository(path)
    for sha in all_refs(path).values():
        git("cat-file", "-e", sha, cwd=path)
        git("rev-list", "--objects", sha, cwd=path)  # fails if any object under it is missing
    assert f"refs/keep/{dropped}" in all_refs(path)
    assert read_committed(path, "local-12.yaml") == "12\n" and remote.read("local-12.yaml") == "12"
    assert git("cat-file", "-t", pending.id.decode(), cwd=path) == "blob"


async def test_replaced_packs_stay_for_the_grace_period_for_a_reader_that_listed_them(
    git_daemon: GitDaemon, make_sync: SyncFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REPACK_PACKS_ENV, "1000")  # the cycles never consolidate; the test does
    remote = git_daemon.create_repo()
    sync = make_sync(remote.url)
    for i in range(4):
        remote.commit({f"f{i}.yaml": f"{i}\n"})
        await sync.step()
    path = Path(sync.storage.repository_path)
    old = packs(path)
    assert len(old) >= 4
    objects = git("rev-list", "--objects", "--all", cwd=path).split("\n")
    shas = [line.split()[0] for line in objects]
    reader = Repo(str(path))  # lists (and maps) the old packs now
    try:
        for sha in shas:
            reader.object_store[sha.encode()]
        repo = sync.repo
        repo.repack_threshold, repo.repack_grace_seconds = 1, 60
        assert repo.maintain(now=1000.0) and (path / ".git" / RECORD_NAME).exists()
        assert len(packs(path)) == len(old) + 1 and all(p.exists() for p in old)
        assert repo.maintain(now=1059.0) is None  # within the grace period: nothing removed
        # the reader with its old list still reads every object, from files still on disk
        for pack in old:
            with open(pack, "rb") as f:
                assert f.read(4) == b"PACK"
        for sha in shas:
            reader.object_store[sha.encode()]
        assert "removed" in (repo.maintain(now=1060.0) or "")
        assert not any(p.exists() for p in old) and len(packs(path)) == 1
        assert not (path / ".git" / RECORD_NAME).exists()
        for sha in shas:  # dulwich readers rescan the pack directory on a miss
            reader.object_store[sha.encode()]
    finally:
        reader.close()
    assert_clean_repository(path)
    await sync.step()
    assert sync.state.ready and sync.state.last_error is None


async def test_a_ref_moved_onto_a_replaced_pack_during_the_grace_period_keeps_its_objects(
    git_daemon: GitDaemon, make_sync: SyncFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REPACK_PACKS_ENV, "1000")
    remote = git_daemon.create_repo()
    sync = make_sync(remote.url)
    await sync.step()
    before = remote.head()
    orphan = remote.commit({"orphan.yaml": "o\n"})
    await sync.step()
    remote.force_to(before)
    await sync.step()  # orphan is now in a pack that no ref reaches
    path = Path(sync.storage.repository_path)
    repo = sync.repo
    repo.repack_threshold, repo.repack_grace_seconds = 1, 60
    assert repo.maintain(now=1000.0)
    git("update-ref", "refs/keep/by-hand", orphan, cwd=path)  # e.g. a person restoring it
    assert repo.maintain(now=1100.0)
    git("rev-list", "--objects", orphan, cwd=path)
    assert_clean_repository(path)


# -- kill -9 mid-repack and mid-removal -----------------------------------------------------------


async def _repository_with_packs(git_daemon: GitDaemon, make_sync: SyncFactory, count: int) -> tuple:
    remote = git_daemon.create_repo()
    sync = make_sync(remote.url)
    for i in range(count):
        remote.commit({f"f{i}.yaml": f"{i}\n"})
        await sync.step()
    sync.close()
    return remote, Path(sync.storage.repository_path)


@pytest.mark.parametrize("stage", ["mid-repack", "mid-pack-removal"])
async def test_kill_during_pack_maintenance_recovers(
    git_daemon: GitDaemon, make_sync: SyncFactory, sidecars: SidecarFactory, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, stage: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(REPACK_PACKS_ENV, "1000")
    remote, path = await _repository_with_packs(git_daemon, make_sync, 4)
    storages = [storage_config(tmp_path, remote.url)]
    settings = {REPACK_PACKS_ENV: "2", REPACK_GRACE_ENV: "0", "FLIPT_GIT_SYNC_STALE_LOCK_SECONDS": "1"}
    env, marker = pause_env(tmp_path, stage)
    paused = sidecars(storages, env=settings).start(extra_env=env)
    wait_for(marker.exists, timeout=30, message=f"sidecar paused at {stage}")
    paused.kill9()
    new = remote.commit({"after.yaml": "a\n"})
    sidecar = sidecars(storages, env=settings).start().wait_up()
    wait_for(lambda: sidecar.storage()["revision"] == new, message="published after restart")
    wait_for(lambda: len(packs(path)) <= 2 and not (path / ".git" / RECORD_NAME).exists(),
             message="consolidation finished after restart")  # fmt: skip
    sidecar.stop()
    assert_clean_repository(path)
    for sha in all_refs(path).values():
        git("rev-list", "--objects", sha, cwd=path)
