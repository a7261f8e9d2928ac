"""A remote that never finishes: each cycle's deadline, no starvation, liveness, SIGTERM.

The slow remotes are real servers behind a fault-injecting proxy (`tests/support/fault_proxy.py`)
that forwards their replies one byte every fraction of a second: never silent long enough for
a per-read timeout.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flipt_operator.clients.git_hooks import PAUSE_AT_ENV, PAUSE_FILE_ENV
from tests.gitsync.conftest import Sidecar, SyncFactory, storage_config
from tests.gitsync.test_transports import ssh_credential
from tests.support.fault_proxy import fault_proxy, wait_until_connected
from tests.support.git_servers import GitDaemon, GitHttpServer, SshServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SidecarFactory = Callable[..., Sidecar]


def http_credential(server: GitHttpServer, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "user").write_text("flipt")
    (tmp_path / "password").write_text(server.users["flipt"])
    return {"type": "basic", "usernameFile": str(tmp_path / "user"), "passwordFile": str(tmp_path / "password")}


async def _times_out_then_recovers(sync, proxy, timeout: float) -> None:  # noqa: ANN001
    started = time.monotonic()
    await sync.step()
    elapsed = time.monotonic() - started
    assert proxy.connections >= 1  # it did reach the dripping remote
    assert f"sync timed out after {timeout:g}s" in (sync.state.last_error or ""), sync.state.last_error
    assert not sync.state.ready and sync.state.revision is None
    assert elapsed < timeout + 3, f"the cycle took {elapsed:.1f}s with a {timeout}s deadline"
    wait_for(lambda: proxy.open_connections() == 0, timeout=5, message="the cut connections closed")
    proxy.mode = "pass"  # the next cycle (the retry) gets through
    await sync.step()
    assert sync.state.ready and sync.state.last_error is None


async def test_dripping_http_remote_is_cut_at_the_deadline(
    git_http_server: GitHttpServer, make_sync: SyncFactory, tmp_path: Path
) -> None:
    remote = git_http_server.create_repo()
    port = int(git_http_server.base_url.rsplit(":", 1)[1])
    with fault_proxy("127.0.0.1", port, mode="drip", drip_seconds=0.2) as proxy:
        sync = make_sync(proxy.url_for(remote.url), syncTimeout="1.5s",
                         credential=http_credential(git_http_server, tmp_path))  # fmt: skip
        await _times_out_then_recovers(sync, proxy, 1.5)
        assert sync.state.revision == remote.head()


async def test_dripping_git_daemon_is_cut_at_the_deadline(git_daemon: GitDaemon, make_sync: SyncFactory) -> None:
    remote = git_daemon.create_repo()
    with fault_proxy("127.0.0.1", git_daemon.port, mode="drip", drip_seconds=0.2) as proxy:
        sync = make_sync(proxy.url_for(remote.url), syncTimeout="1.5s")
        await _times_out_then_recovers(sync, proxy, 1.5)
        assert sync.state.revision == remote.head()


async def test_dripping_ssh_remote_is_cut_at_the_deadline(
    ssh_server: SshServer, make_sync: SyncFactory, tmp_path: Path
) -> None:
    remote = ssh_server.create_repo()
    with fault_proxy("127.0.0.1", ssh_server.port, mode="drip", drip_seconds=0.05) as proxy:
        known_hosts = tmp_path / "proxy_known_hosts"
        known_hosts.write_text(ssh_server.known_hosts.read_text().replace(f"]:{ssh_server.port} ", f"]:{proxy.port} "))
        url = remote.url.replace(f":{ssh_server.port}/", f":{proxy.port}/")
        sync = make_sync(url, syncTimeout="2s", credential=ssh_credential(ssh_server, str(known_hosts)))
        await _times_out_then_recovers(sync, proxy, 2)
        assert sync.state.revision == remote.head()


def test_dripping_storages_do_not_starve_a_healthy_one(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path
) -> None:
    """Seven storages whose remote drips (more than the default thread pool of a 2-core
    machine) and one healthy storage, in one sidecar process."""
    slow_remote = git_daemon.create_repo("slow")
    healthy = git_daemon.create_repo("healthy")
    with fault_proxy("127.0.0.1", git_daemon.port, mode="drip", drip_seconds=0.3) as proxy:
        storages = [storage_config(tmp_path, proxy.url_for(slow_remote.url), name=f"slow{i}", syncTimeout="2s")
                    for i in range(7)]  # fmt: skip
        storages.append(storage_config(tmp_path, healthy.url, name="healthy", syncTimeout="2s"))
        sidecar = sidecars(storages).start().wait_up()
        wait_until_connected(proxy, 7)
        wait_for(lambda: sidecar.storage("healthy")["ready"], timeout=10, message="healthy storage ready")
        attempts: dict[str, set[str]] = {f"slow{i}": set() for i in range(7)}
        end = time.monotonic() + 9  # several deadlines of every slow storage
        while time.monotonic() < end:
            new = healthy.commit({"x.yaml": f"{time.monotonic()}\n"})
            started = time.monotonic()
            wait_for(lambda new=new: sidecar.storage("healthy")["revision"] == new, timeout=5, message="healthy publishes")
            assert time.monotonic() - started < 3
            assert sidecar.get("/healthz")[0] == 200  # the slow loops are not stuck: their cycles end
            for s in sidecar.status()["storages"]:
                if s["storage"] in attempts and s.get("lastAttemptTime"):
                    attempts[s["storage"]].add(s["lastAttemptTime"])
        for s in sidecar.status()["storages"]:
            if s["storage"] != "healthy":
                assert not s["ready"] and "sync timed out after 2s" in s["lastError"], s
        assert all(len(seen) >= 2 for seen in attempts.values()), attempts  # retried after each timeout
        assert 'result="timeout"' in sidecar.get("/metrics")[1]


def test_liveness_fails_for_a_cycle_stuck_past_its_deadline_and_sigterm_ends_it(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path
) -> None:
    """A cycle stuck in local work (the test hook freezes it mid-fetch, beyond reach of the
    connection cut) makes /healthz fail after deadline + margin; SIGTERM still ends the process."""
    remote = git_daemon.create_repo(files={"big.bin": os.urandom(256 * 1024).hex()})
    marker = tmp_path / "paused"
    sidecar = sidecars([storage_config(tmp_path, remote.url, syncTimeout="1s")]).start(
        extra_env={PAUSE_AT_ENV: "mid-fetch", PAUSE_FILE_ENV: str(marker),
                   "FLIPT_GIT_SYNC_STUCK_MARGIN_SECONDS": "1"}  # fmt: skip
    )
    sidecar.wait_up()
    wait_for(marker.exists, timeout=10, message="cycle frozen mid-fetch")
    frozen = time.monotonic()
    code, body = wait_for(lambda: (r := sidecar.get("/healthz"))[0] == 503 and r, timeout=10, message="healthz 503")
    assert time.monotonic() - frozen >= 1.0  # not before the deadline has passed
    assert "flags" in json.loads(body)["storages"]
    assert "sync timed out after 1s" in (sidecar.storage()["lastError"] or "")
    assert sidecar.process is not None
    started = time.monotonic()
    os.kill(sidecar.process.pid, signal.SIGTERM)
    assert sidecar.process.wait(timeout=15) == 0
    assert time.monotonic() - started < 6  # the grace is 3 s; the frozen thread is abandoned
    assert "git-sync stopped" in sidecar.logs()


def test_sigterm_during_a_dripping_cycle_exits_promptly(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path
) -> None:
    remote = git_daemon.create_repo()
    with fault_proxy("127.0.0.1", git_daemon.port, mode="drip", drip_seconds=0.5) as proxy:
        # The default deadline (120 s): only SIGTERM can end this cycle early.
        sidecar = sidecars([storage_config(tmp_path, proxy.url_for(remote.url))]).start().wait_up()
        wait_until_connected(proxy)
        time.sleep(1.5)  # well into the dripping reply
        assert sidecar.process is not None and sidecar.process.poll() is None
        started = time.monotonic()
        os.kill(sidecar.process.pid, signal.SIGTERM)
        assert sidecar.process.wait(timeout=15) == 0
        took = time.monotonic() - started
        assert took < 3, f"exited {took:.1f}s after SIGTERM"
        assert "git-sync stopped" in sidecar.logs()
