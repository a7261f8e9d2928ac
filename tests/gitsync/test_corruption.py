"""A damaged object file in the mirror: found, moved aside, rebuilt from upstream (everything the
mirror's refs point at came from upstream, so upstream can give it all back)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.gitsync.conftest import SyncFactory, push_through
from tests.support.git_servers import GitDaemon, read_committed

pytestmark = pytest.mark.integration

FILES = {f"ns{i}/features.yaml": f"namespace: ns{i}\nflags: []\n" * 20 for i in range(20)}


def packs(repository: Path) -> list[Path]:
    return sorted((repository / ".git" / "objects" / "pack").glob("pack-*.pack"))


def loose_object(repository: Path, sha: str) -> Path:
    return repository / ".git" / "objects" / sha[:2] / sha[2:]


def quarantined(repository: Path) -> list[Path]:
    return [p for p in (repository / ".git" / "flipt-sync-quarantine").rglob("*") if p.is_file()]


async def test_truncated_pack_found_at_start_is_rebuilt(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote = git_daemon.create_repo(files=FILES)
    first = make_sync(remote.url)
    await first.step()
    first.close()  # the sidecar stops...
    repository = Path(first.storage.repository_path)
    (pack,) = packs(repository)
    os.truncate(pack, pack.stat().st_size // 2)  # ...and the volume loses half the pack
    upstream = remote.commit({"ns2/features.yaml": "namespace: ns2\nflags: [upstream]\n"})
    assert "error" in _fsck(repository)  # git agrees it is broken

    restarted = make_sync(remote.url)
    await restarted.step()
    assert restarted.state.ready and restarted.state.last_error is None, restarted.state.last_error
    assert restarted.state.revision == upstream == remote.head()
    assert read_committed(repository, "ns2/features.yaml") == "namespace: ns2\nflags: [upstream]\n"
    assert read_committed(repository, "ns1/features.yaml") == FILES["ns1/features.yaml"]
    assert pack.name in {p.name.rsplit("_", 1)[-1] for p in quarantined(repository)}  # kept aside, not deleted
    assert "error" not in _fsck(repository)


async def test_truncated_loose_object_found_by_a_failing_read_is_rebuilt(
    git_daemon: GitDaemon, make_sync: SyncFactory
) -> None:
    remote = git_daemon.create_repo(files=FILES)
    sync = make_sync(remote.url)
    await sync.step()
    repository = Path(sync.storage.repository_path)
    pushed, refused = await push_through(sync, {"ns1/features.yaml": "namespace: ns1\nflags: [one]\n"})
    assert refused is None and remote.head() == pushed
    os.truncate(loose_object(repository, pushed), 12)  # a commit upstream holds too
    newer = remote.commit({"ns3/features.yaml": "namespace: ns3\nflags: [two]\n"})

    await sync.step()  # the running sidecar trips over it
    assert "local repository damaged" in (sync.state.last_error or ""), sync.state.last_error
    await sync.step()  # and rebuilds
    assert sync.state.ready and sync.state.last_error is None, sync.state.last_error
    assert sync.state.revision == newer
    assert read_committed(repository, "ns1/features.yaml") == "namespace: ns1\nflags: [one]\n"
    assert "error" not in _fsck(repository)


def _fsck(repository: Path) -> str:
    import subprocess

    result = subprocess.run(["git", "fsck", "--no-dangling"], cwd=repository, capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr).lower() + ("" if result.returncode == 0 else "error")
