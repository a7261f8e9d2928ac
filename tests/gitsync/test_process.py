"""The sidecar as a process: config errors, HTTP endpoints, polling, kill -9 recovery, secrets."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flipt_operator.clients.git_hooks import PAUSE_AT_ENV, PAUSE_FILE_ENV
from tests.gitsync.conftest import Sidecar, SyncFactory, storage_config
from tests.support.git_servers import GitDaemon, GitHttpServer, git
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SidecarFactory = Callable[..., Sidecar]


def run_git_sync(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flipt_operator", "git-sync", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ("storages:\n- name: a\n  remote: git://x/r.git\n", "storages[0].repositoryPath"),
        ("storages:\n- name: a\n  remote: git://x/r.git\n  repositoryPath: /r\n  pollInterval: often\n",
         "storages[0].pollInterval"),
        ("storages: []\n", "storages"),
        ("storages: [\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_bad_config_names_the_field_and_exits_2(tmp_path: Path, document: str, field: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(document)
    result = run_git_sync(config)
    assert result.returncode == 2
    assert field in result.stderr and "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_git_sync(tmp_path / "absent.yaml")
    assert result.returncode == 2 and "cannot read config file" in result.stderr


def test_endpoints_polling_and_json_logs(git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path) -> None:
    remote = git_daemon.create_repo()
    other = git_daemon.create_repo("other")
    git_daemon.stop()  # unreachable strict storage first: not ready
    sidecar = sidecars([storage_config(tmp_path, remote.url), storage_config(tmp_path, other.url, name="other",
                                                                              fetchPolicy="lenient")]).start()  # fmt: skip
    sidecar.wait_up()
    wait_for(lambda: sidecar.storage()["lastError"], message="a fetch error")
    assert sidecar.get("/readyz")[0] == 503
    git_daemon.start()
    wait_for(lambda: sidecar.get("/readyz")[0] == 200, message="ready")
    status = sidecar.status()
    assert status["pod"] == "flipt-0"
    assert {s["storage"] for s in status["storages"]} == {"flags", "other"}
    assert sidecar.storage()["revision"] == remote.head()
    # a new remote commit is published within a poll interval or so
    new = remote.commit({"x.yaml": "1\n"})
    started = time.monotonic()
    wait_for(lambda: sidecar.storage()["revision"] == new, message="publication")
    assert time.monotonic() - started < 5
    metrics = sidecar.get("/metrics")[1]
    for name in ("flipt_git_sync_syncs_total", "flipt_git_sync_fetch_duration_seconds_bucket",
                 "flipt_git_sync_last_success_timestamp_seconds",
                 "flipt_git_sync_behind_commits", "flipt_git_sync_conflict"):  # fmt: skip
        assert name in metrics
    assert 'result="fetch_error"' in metrics and 'result="success"' in metrics
    assert sidecar.stop() == 0
    import json

    lines = [json.loads(line) for line in sidecar.logs().splitlines() if line.startswith("{")]
    assert lines and all({"level", "message"} <= set(line) for line in lines)


def test_secret_values_never_reach_logs_or_status(
    git_http_server: GitHttpServer, sidecars: SidecarFactory, tmp_path: Path
) -> None:
    password = git_http_server.users["flipt"]
    token = "tok-never-print-me-987"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "username").write_text("flipt")
    (secrets / "password").write_text("wrong-pass-never-print-me")
    (secrets / "token").write_text(token)
    good, bad, tokened = (git_http_server.create_repo(n) for n in ("good", "bad", "tokened"))
    basic = {"type": "basic", "usernameFile": str(secrets / "username"), "passwordFile": str(secrets / "password")}
    good_password = tmp_path / "good-password"
    good_password.write_text(password)
    sidecar = sidecars([
        storage_config(tmp_path, good.url, name="good", credential={**basic, "passwordFile": str(good_password)}),
        storage_config(tmp_path, bad.url, name="bad", credential=basic),
        storage_config(tmp_path, tokened.url.replace("http://", "http://someone:url-pass-never-print-me@"),
                       name="tokened", credential={"type": "accessToken", "tokenFile": str(secrets / "token")}),
    ]).start(extra_env={})  # fmt: skip
    sidecar.wait_up()
    wait_for(lambda: sidecar.storage("good")["ready"] and sidecar.storage("bad")["lastError"]
             and sidecar.storage("tokened")["lastError"], message="all storages tried")  # fmt: skip
    work = tmp_path / "good-clone"
    git("clone", "-q", sidecar.git_url("good"), str(work))
    (work / "x.yaml").write_text("1\n")
    git("add", "x.yaml", cwd=work)
    git("commit", "-q", "-m", "x", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)  # forwarded with the credential
    assert good.head() == git("rev-parse", "HEAD", cwd=work) == sidecar.storage("good")["revision"]
    captured = sidecar.logs() + sidecar.get("/status")[1] + sidecar.get("/metrics")[1] + sidecar.get("/readyz")[1]
    sidecar.stop()
    captured += sidecar.logs()
    for secret in (password, "wrong-pass-never-print-me", token, "url-pass-never-print-me"):
        assert secret not in captured


# -- kill -9 at each stage, then a restart recovers with no lost commit ------------------------------


def pause_env(tmp_path: Path, stage: str) -> tuple[dict[str, str], Path]:
    marker = tmp_path / f"paused-{stage}"
    return {PAUSE_AT_ENV: stage, PAUSE_FILE_ENV: str(marker)}, marker


def kill_at(sidecars: SidecarFactory, tmp_path: Path, storages: list[dict], stage: str) -> None:
    env, marker = pause_env(tmp_path, stage)
    sidecar = sidecars(storages).start(extra_env=env)
    wait_for(marker.exists, timeout=30, message=f"sidecar paused at {stage}")
    sidecar.kill9()


def restart(sidecars: SidecarFactory, storages: list[dict]) -> Sidecar:
    return sidecars(storages).start().wait_up()


def assert_clean_repository(path: Path) -> None:
    git("fsck", "--no-dangling", cwd=path)
    leftovers = [p for p in (path / ".git").rglob("*") if p.name.endswith(".lock") or p.name.startswith("tmp")]
    assert not leftovers


def test_kill_mid_fetch_of_the_first_clone(git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path) -> None:
    remote = git_daemon.create_repo()
    storages = [storage_config(tmp_path, remote.url)]
    kill_at(sidecars, tmp_path, storages, "mid-fetch")
    sidecar = restart(sidecars, storages)
    wait_for(lambda: sidecar.storage()["ready"], message="ready after restart")
    assert sidecar.storage()["revision"] == remote.head()
    sidecar.stop()
    assert_clean_repository(tmp_path / "volume" / "flags")


@pytest.mark.parametrize("stage", ["mid-publish"])
def test_kill_while_updating_refs(
    git_daemon: GitDaemon, sidecars: SidecarFactory, make_sync: SyncFactory, tmp_path: Path, stage: str
) -> None:
    remote = git_daemon.create_repo()
    storages = [storage_config(tmp_path, remote.url)]
    kill_at(sidecars, tmp_path, storages, stage)
    new = remote.commit({"x.yaml": "1\n"})
    sidecar = restart(sidecars, storages)
    wait_for(lambda: sidecar.storage()["revision"] == new, message="published after restart")
    sidecar.stop()
    assert_clean_repository(tmp_path / "volume" / "flags")


def test_kill_after_upstream_accepted_a_push_loses_nothing(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path
) -> None:
    """Killed between upstream's acceptance and the reply: the client sees a failure (never a
    false success), upstream has the write, and the restarted sidecar serves it."""
    remote = git_daemon.create_repo()
    storages = [storage_config(tmp_path, remote.url)]
    env, marker = pause_env(tmp_path, "after-forward")
    sidecar = sidecars(storages).start(extra_env=env).wait_up()
    wait_for(lambda: sidecar.storage()["ready"], message="ready")
    work = tmp_path / "clone"
    git("clone", "-q", sidecar.git_url(), str(work))
    (work / "local.yaml").write_text("l1\n")
    git("add", "local.yaml", cwd=work)
    git("commit", "-q", "-m", "local", cwd=work)
    mine = git("rev-parse", "HEAD", cwd=work)
    pushing = subprocess.Popen(["git", "push", "-q", "origin", "main"], cwd=work, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    wait_for(marker.exists, timeout=30, message="sidecar paused after forwarding")
    sidecar.kill9()
    assert pushing.wait(timeout=30) != 0  # not acknowledged
    assert remote.head() == mine  # but upstream has it
    restarted = restart(sidecars, storages)
    wait_for(lambda: restarted.storage()["revision"] == mine, message="served after restart")
    assert git("ls-remote", restarted.git_url(), "refs/heads/main", cwd=work).startswith(mine)
    restarted.stop()
    assert_clean_repository(tmp_path / "volume" / "flags")
