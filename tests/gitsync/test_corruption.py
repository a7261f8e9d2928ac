"""A damaged object file in the local repository: found, moved aside, rebuilt from upstream,
and nothing Flipt committed but did not push yet is lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.gitsync.conftest import SyncFactory
from tests.support.git_servers import GitDaemon, flipt_commit, git, read_committed

pytestmark = pytest.mark.integration

FILES = {f"ns{i}/features.yaml": f"namespace: ns{i}\nflags: []\n" * 20 for i in range(20)}


def packs(repository: Path) -> list[Path]:
    return sorted((repository / ".git" / "objects" / "pack").glob("pack-*.pack"))


def loose_object(repository: Path, sha: str) -> Path:
    return repository / ".git" / "objects" / sha[:2] / sha[2:]


def quarantined(repository: Path) -> list[Path]:
    return [p for p in (repository / ".git" / "flipt-sync-quarantine").rglob("*") if p.is_file()]


async def test_truncated_pack_found_at_start_is_rebuilt_keeping_an_unpushed_commit(
    git_daemon: GitDaemon, make_sync: SyncFactory
) -> None:
    remote = git_daemon.create_repo(files=FILES)
    first = make_sync(remote.url)
    await first.step()
    first.close()  # the sidecar stops...
    repository = Path(first.storage.repository_path)
    local = flipt_commit(repository, {"ns1/features.yaml": "namespace: ns1\nflags: [local]\n"})  # ...Flipt writes
    (pack,) = packs(repository)
    os.truncate(pack, pack.stat().st_size // 2)  # ...and the volume loses half the pack
    upstream = remote.commit({"ns2/features.yaml": "namespace: ns2\nflags: [upstream]\n"})
    assert "error" in _fsck(repository)  # git agrees it is broken

    restarted = make_sync(remote.url)
    await restarted.step()
    assert restarted.state.ready and restarted.state.last_error is None, restarted.state.last_error
    # The local commit was pushed on top of upstream's: both changes are upstream and served.
    assert remote.read("ns1/features.yaml") == "namespace: ns1\nflags: [local]"
    assert remote.read("ns2/features.yaml") == "namespace: ns2\nflags: [upstream]"
    assert restarted.state.revision == remote.head() != upstream
    assert local not in remote.log()  # replayed onto upstream's commit, same change and message
    assert read_committed(repository, "ns2/features.yaml") == "namespace: ns2\nflags: [upstream]\n"
    assert [p.name for p in quarantined(repository)] and pack.name in {p.name.rsplit("_", 1)[-1] for p in quarantined(repository)}
    assert "error" not in _fsck(repository)


async def test_truncated_loose_object_found_by_a_failing_read_is_rebuilt(
    git_daemon: GitDaemon, make_sync: SyncFactory
) -> None:
    remote = git_daemon.create_repo(files=FILES)
    sync = make_sync(remote.url)
    await sync.step()
    repository = Path(sync.storage.repository_path)
    pushed = flipt_commit(repository, {"ns1/features.yaml": "namespace: ns1\nflags: [one]\n"})
    await sync.step()
    assert remote.head() == pushed
    unpushed = flipt_commit(repository, {"ns3/features.yaml": "namespace: ns3\nflags: [two]\n"})
    os.truncate(loose_object(repository, pushed), 12)  # a commit upstream holds too

    await sync.step()  # the running sidecar trips over it
    assert "local repository damaged" in (sync.state.last_error or ""), sync.state.last_error
    assert remote.head() == pushed
    await sync.step()  # and rebuilds
    assert sync.state.ready and sync.state.last_error is None, sync.state.last_error
    assert remote.head() != pushed and unpushed in remote.log()
    assert remote.read("ns3/features.yaml") == "namespace: ns3\nflags: [two]"
    assert sync.state.revision == remote.head()
    assert "error" not in _fsck(repository)


def _fsck(repository: Path) -> str:
    import subprocess

    result = subprocess.run(["git", "fsck", "--no-dangling"], cwd=repository, capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr).lower() + ("" if result.returncode == 0 else "error")


async def test_unpushed_commit_only_in_a_damaged_pack_is_salvaged(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    """Flipt's unpushed commit lives only in a pack (consolidated: its loose copies are gone),
    and that pack's checksum was overwritten (its objects intact). Upstream cannot send the commit: it is copied out of the
    damaged pack, checked against its name, and pushed."""
    remote = git_daemon.create_repo(files=FILES)
    sync = make_sync(remote.url)
    await sync.step()
    sync.close()
    repository = Path(sync.storage.repository_path)
    local = flipt_commit(repository, {"ns4/features.yaml": "namespace: ns4\nflags: [offline]\n"})
    git("repack", "-a", "-d", "-q", cwd=repository)  # one pack of everything, loose copies removed
    assert not loose_object(repository, local).exists()
    (pack,) = packs(repository)
    with open(pack, "r+b") as f:  # only the checksum is damaged: every object is intact
        f.seek(-20, os.SEEK_END)
        f.write(bytes(20))

    restarted = make_sync(remote.url)
    await restarted.step()
    assert restarted.state.ready and restarted.state.last_error is None, restarted.state.last_error
    assert remote.head() == local
    assert remote.read("ns4/features.yaml") == "namespace: ns4\nflags: [offline]"
    assert "error" not in _fsck(repository)
