"""The sidecar as Flipt's git remote: smart HTTP over the mirror, pushes forwarded upstream.

Clients are real: the `git` CLI, and `gogit_flipt_standin` (a stand-in for Flipt's go-git client,
built from go-git v5: see tests/support/gogit_standin.py). Upstreams are real servers on loopback
(`git http-backend` with basic auth, `git daemon`).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gitsync.conftest import Sidecar, storage_config
from tests.gitsync.test_transports import ssh_credential
from tests.support.git_servers import GitDaemon, GitHttpServer, RemoteRepo, SshServer, git
from tests.support.gogit_standin import EXIT_CONFLICT, GoGitFliptStandin, StandinResult, standin_binary
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

SidecarFactory = Callable[..., Sidecar]
# Refusals are reported after this grace (default 5 s): shorter here, the stand-in retries at once.
FAST_REFUSAL = {"FLIPT_GIT_SYNC_REFUSAL_GRACE_SECONDS": "1"}


def http_storage(tmp_path: Path, server: GitHttpServer, remote: RemoteRepo, **fields: object) -> dict[str, object]:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "username").write_text("flipt")
    (secrets / "password").write_text(server.users["flipt"])
    credential = {"type": "basic", "usernameFile": str(secrets / "username"), "passwordFile": str(secrets / "password")}
    return storage_config(tmp_path, remote.url, credential=credential, **fields)


def started(sidecars: SidecarFactory, storage: dict[str, object]) -> Sidecar:
    sidecar = sidecars([storage], env=FAST_REFUSAL).start().wait_up()
    wait_for(lambda: sidecar.get("/readyz")[0] == 200, timeout=20, message="first revision published")
    return sidecar


@pytest.fixture(scope="session")
def standin_path() -> Path:
    return standin_binary()


def git_client(tmp_path: Path, url: str, name: str = "clone") -> Path:
    work = tmp_path / name
    git("clone", "-q", url, str(work))
    return work


def commit_file(work: Path, path: str, content: str) -> str:
    (work / path).parent.mkdir(parents=True, exist_ok=True)
    (work / path).write_text(content)
    git("add", path, cwd=work)
    git("commit", "-q", "-m", f"write {path}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def http_client_with_a_write(server: GitHttpServer, sidecars: SidecarFactory,
                             tmp_path: Path) -> tuple[RemoteRepo, Sidecar, Path, str]:  # fmt: skip
    """An upstream behind basic auth, its sidecar, a git clone from the sidecar with one commit."""
    remote = server.create_repo()
    sidecar = started(sidecars, http_storage(tmp_path, server, remote))
    work = git_client(tmp_path, sidecar.git_url())
    return remote, sidecar, work, commit_file(work, "default/features.yaml", "flags: [mine]\n")


def protect(remote: RemoteRepo) -> Path:
    """A pre-receive hook upstream that refuses every push (branch protection); returns it."""
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    return hook


def push(work: Path, *refspecs: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "push", "--porcelain", "origin", *refspecs], cwd=work, capture_output=True,
                          text=True, check=False)  # fmt: skip


# -- the git CLI as the client -----------------------------------------------------------------------


def test_every_upstream_branch_is_served_and_upstream_commits_reach_the_client(
    git_http_server: GitHttpServer, sidecars: SidecarFactory, tmp_path: Path
) -> None:
    remote = git_http_server.create_repo()
    git("branch", "flipt/staging/feature", "main", cwd=remote.bare)
    sidecar = started(sidecars, http_storage(tmp_path, git_http_server, remote))
    work = git_client(tmp_path, sidecar.git_url())
    branches = git("ls-remote", "--heads", "origin", cwd=work)
    assert "refs/heads/main" in branches and "refs/heads/flipt/staging/feature" in branches
    new = remote.commit({"default/features.yaml": "flags: [upstream]\n"})
    wait_for(lambda: git("ls-remote", "origin", "refs/heads/main", cwd=work).startswith(new), timeout=10,
             message="upstream commit served after a poll")  # fmt: skip
    git("pull", "-q", "--ff-only", cwd=work)
    assert (work / "default/features.yaml").read_text() == "flags: [upstream]\n"
    assert sidecar.storage()["fliptRevision"] == new  # the sidecar saw what its client fetched


def test_a_push_lands_upstream_before_it_is_acknowledged_and_branches_are_created_and_deleted(
    git_http_server: GitHttpServer, sidecars: SidecarFactory, tmp_path: Path
) -> None:
    remote, sidecar, work, mine = http_client_with_a_write(git_http_server, sidecars, tmp_path)
    result = push(work, "main")
    assert result.returncode == 0, result.stderr
    assert remote.head() == mine  # upstream has it when the client gets its ok
    assert sidecar.storage()["lastPushTime"] is not None
    assert push(work, "main:refs/heads/flipt/production/new").returncode == 0
    assert git("rev-parse", "refs/heads/flipt/production/new", cwd=remote.bare) == mine
    assert push(work, ":refs/heads/flipt/production/new").returncode == 0
    assert git("rev-parse", "--verify", "-q", "refs/heads/flipt/production/new", cwd=remote.bare,
               check=False) == ""  # fmt: skip
    assert "flipt/production/new" not in git("ls-remote", "--heads", "origin", cwd=work)
    # Only branches are forwarded (Flipt pushes nothing else); a tag is refused, not half-done.
    git("tag", "v1", cwd=work)
    tag = push(work, "refs/tags/v1")
    assert tag.returncode != 0 and "only branches" in tag.stdout + tag.stderr
    # Upstream decides each ref on its own: an all-or-none push is not offered.
    atomic = subprocess.run(["git", "push", "--atomic", "origin", "main:refs/heads/a", "main:refs/heads/b"],
                            cwd=work, capture_output=True, text=True, check=False)  # fmt: skip
    assert atomic.returncode != 0 and "atomic" in atomic.stderr
    assert git("branch", "--list", "a", "b", cwd=remote.bare) == ""


def test_a_push_behind_upstream_is_refused_as_non_fast_forward_and_nothing_moves(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path
) -> None:
    remote = git_daemon.create_repo()
    sidecar = started(sidecars, storage_config(tmp_path, remote.url, pollInterval="60s"))
    work = git_client(tmp_path, sidecar.git_url())
    theirs = remote.commit({"other.yaml": "1\n"})  # the sidecar has not polled since
    commit_file(work, "default/features.yaml", "flags: [mine]\n")
    result = push(work, "main")
    assert result.returncode != 0
    assert "rejected" in result.stdout + result.stderr  # git saw the fresh ref: fetch first
    assert remote.head() == theirs
    assert git("ls-remote", "origin", "refs/heads/main", cwd=work).startswith(theirs)


def test_an_upstream_rejection_is_reported_per_ref_and_the_mirror_does_not_move(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path
) -> None:
    remote = git_daemon.create_repo()
    protect(remote)
    before = remote.head()
    sidecar = started(sidecars, storage_config(tmp_path, remote.url))
    work = git_client(tmp_path, sidecar.git_url())
    mine = commit_file(work, "default/features.yaml", "flags: [mine]\n")
    result = push(work, "main")
    assert result.returncode != 0
    assert "!\trefs/heads/main:refs/heads/main" in result.stdout  # reported as a failed ref
    assert remote.head() == before
    assert git("ls-remote", "origin", "refs/heads/main", cwd=work).startswith(before)
    state = sidecar.storage()
    assert state["conflict"]["localRevision"] == mine and state["conflict"]["remoteRevision"] == before
    assert "refused upstream" in sidecar.logs()  # lastError too, until the next successful poll
    assert state["conflict"]["files"] == ["default/features.yaml"]
    assert git("cat-file", "-t", mine, cwd=work) == "commit"  # the client still has its write


def test_a_push_whose_reply_is_lost_is_settled_by_reading_upstream(
    git_http_server: GitHttpServer, sidecars: SidecarFactory, tmp_path: Path
) -> None:
    remote, sidecar, work, mine = http_client_with_a_write(git_http_server, sidecars, tmp_path)
    git_http_server.lose_push_replies()
    result = push(work, "main")
    assert result.returncode == 0, result.stdout + result.stderr  # upstream has it: ok, not a false failure
    assert remote.head() == mine
    assert "outcome unknown" in sidecar.logs()
    git_http_server.lose_push_replies(False)
    assert git("ls-remote", "origin", "refs/heads/main", cwd=work).startswith(mine)


@pytest.mark.parametrize("policy", ["strict", "lenient"])
def test_upstream_down_refuses_pushes_and_the_fetch_policy_decides_fetches(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path, policy: str
) -> None:
    remote = git_daemon.create_repo()
    sidecar = started(sidecars, storage_config(tmp_path, remote.url, fetchPolicy=policy))
    work = git_client(tmp_path, sidecar.git_url())
    git_daemon.stop()
    wait_for(lambda: sidecar.storage().get("lastError"), timeout=10, message="failed poll")
    commit_file(work, "default/features.yaml", "flags: [offline]\n")
    result = push(work, "main")
    assert result.returncode != 0 and "503" in result.stderr  # never acknowledged
    # A published revision keeps being served (strict: within staleAfter; lenient: always).
    assert subprocess.run(["git", "fetch", "-q", "origin"], cwd=work, check=False).returncode == 0
    git_daemon.start()
    wait_for(lambda: "lastError" not in sidecar.storage(), timeout=10, message="upstream back")
    assert push(work, "main").returncode == 0
    assert remote.read("default/features.yaml") == "flags: [offline]"


def test_strict_serves_nothing_before_a_first_fetch(git_daemon: GitDaemon, sidecars: SidecarFactory,
                                                    tmp_path: Path) -> None:  # fmt: skip
    remote = git_daemon.create_repo()
    git_daemon.stop()
    sidecar = sidecars([storage_config(tmp_path, remote.url)]).start().wait_up()
    result = subprocess.run(["git", "ls-remote", sidecar.git_url()], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "503" in result.stderr


# -- the go-git stand-in for Flipt as the client -----------------------------------------------------


def test_gogit_client_fetches_upstream_commits_and_its_write_lands_upstream(
    git_http_server: GitHttpServer, sidecars: SidecarFactory, tmp_path: Path, standin_path: Path
) -> None:
    remote = git_http_server.create_repo()
    sidecar = started(sidecars, http_storage(tmp_path, git_http_server, remote))
    flipt = GoGitFliptStandin(standin_path, tmp_path / "flipt", sidecar.git_url())
    assert flipt.fetch() == remote.head()
    new = remote.commit({"default/features.yaml": "flags: [upstream]\n"})
    wait_for(lambda: flipt.fetch() == new, timeout=10, message="upstream commit reaches go-git")
    written = flipt.write("default/features.yaml", "flags: [flipt]\n")
    assert written.code == 0 and written.attempts == 1, written
    assert remote.head() == written.commit
    assert remote.read("default/features.yaml") == "flags: [flipt]"
    assert sidecar.storage()["fliptRevision"] == written.commit


def test_gogit_client_through_the_sidecar_to_an_ssh_upstream(
    ssh_server: SshServer, sidecars: SidecarFactory, tmp_path: Path, standin_path: Path
) -> None:
    remote = ssh_server.create_repo()
    credential = ssh_credential(ssh_server, str(ssh_server.known_hosts))
    sidecar = started(sidecars, storage_config(tmp_path, remote.url, credential=credential))
    flipt = GoGitFliptStandin(standin_path, tmp_path / "flipt", sidecar.git_url())
    assert flipt.fetch() == remote.head()
    written = flipt.write("default/features.yaml", "flags: [over-ssh]\n")
    assert written.code == 0 and remote.head() == written.commit, written
    branch = flipt.run("create-branch", branch="flipt/staging/x", **{"from": "main"})
    assert branch.code == 0 and git("rev-parse", "refs/heads/flipt/staging/x", cwd=remote.bare) == written.commit
    assert flipt.run("delete-branch", branch="flipt/staging/x").code == 0
    assert "flipt/staging/x" not in git("branch", "--list", cwd=remote.bare)


def standin_behind_a_slow_poll(server: GitDaemon, sidecars: SidecarFactory, tmp_path: Path,
                               standin_path: Path) -> tuple[RemoteRepo, Sidecar, GoGitFliptStandin, str]:  # fmt: skip
    """A go-git client that has fetched, through a sidecar that polls upstream rarely (so only a
    push's fresh advertisement shows upstream's later commits). Returns what it fetched too."""
    remote = server.create_repo()
    sidecar = started(sidecars, storage_config(tmp_path, remote.url, pollInterval="60s"))
    flipt = GoGitFliptStandin(standin_path, tmp_path / "flipt", sidecar.git_url())
    return remote, sidecar, flipt, flipt.fetch()


def test_gogit_write_after_upstream_moved_gets_non_fast_forward_and_its_retry_lands(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path, standin_path: Path
) -> None:
    remote, sidecar, flipt, _fetched = standin_behind_a_slow_poll(git_daemon, sidecars, tmp_path, standin_path)
    remote.commit({"other/features.yaml": "flags: [theirs]\n"})
    written = flipt.write("default/features.yaml", "flags: [mine]\n")
    assert written.code == 0 and written.attempts == 2, written  # refused once by go-git, then landed
    assert remote.head() == written.commit
    assert remote.read("other/features.yaml") == "flags: [theirs]"
    assert remote.read("default/features.yaml") == "flags: [mine]"
    assert sidecar.storage().get("conflict") is None  # a retried write is no conflict


def test_gogit_write_expecting_a_revision_upstream_moved_past_is_refused_and_reported(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path, standin_path: Path
) -> None:
    remote, sidecar, flipt, expected = standin_behind_a_slow_poll(git_daemon, sidecars, tmp_path, standin_path)
    theirs = remote.commit({"default/features.yaml": "flags: [theirs]\n"})
    written = flipt.write("default/features.yaml", "flags: [mine]\n", expect_revision=expected)
    assert written.code == EXIT_CONFLICT and written.result == "conflict", written
    assert remote.head() == theirs  # upstream untouched
    conflict = wait_for(lambda: sidecar.storage().get("conflict"), timeout=10, message="refusal reported")
    assert conflict["files"] == ["default/features.yaml"]
    assert conflict["localRevision"] == expected and conflict["remoteRevision"] == theirs
    # A later write of Flipt's that lands clears it.
    assert flipt.write("default/features.yaml", "flags: [again]\n").code == 0
    assert sidecar.storage().get("conflict") is None


def test_gogit_write_rejected_upstream_fails_for_the_client_and_loses_nothing(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path, standin_path: Path
) -> None:
    remote = git_daemon.create_repo()
    hook = protect(remote)
    before = remote.head()
    sidecar = started(sidecars, storage_config(tmp_path, remote.url))
    flipt = GoGitFliptStandin(standin_path, tmp_path / "flipt", sidecar.git_url())
    flipt.fetch()
    written = flipt.write("default/features.yaml", "flags: [mine]\n")
    assert written.code == 1 and written.result == "error", written  # never looks like success
    assert remote.head() == before
    hook.unlink()
    again = flipt.write("default/features.yaml", "flags: [mine]\n")
    assert again.code == 0 and remote.head() == again.commit


def write_at_once(clients: list[GoGitFliptStandin], writes: int) -> dict[tuple[int, int], StandinResult]:
    """Each client fetches, then they write `writes` times each, all at once, each to its own file."""
    for client in clients:
        client.fetch()
    results: dict[tuple[int, int], StandinResult] = {}

    def write(i: int) -> None:
        for n in range(writes):
            results[(i, n)] = clients[i].write(f"env-{i}/features.yaml", f"flags: [{i}-{n}]\n", attempts=20)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_two_gogit_clients_pushing_at_once_both_land(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path, standin_path: Path
) -> None:
    remote = git_daemon.create_repo()
    sidecar = started(sidecars, storage_config(tmp_path, remote.url))
    clients = [GoGitFliptStandin(standin_path, tmp_path / f"flipt-{i}", sidecar.git_url()) for i in range(2)]
    results = write_at_once(clients, 3)
    failed = [r for r in results.values() if r.code != 0]
    assert not failed, failed
    assert len(results) == 6
    for i in range(2):
        assert remote.read(f"env-{i}/features.yaml") == f"flags: [{i}-2]"
    landed = {r.commit for r in results.values()}
    assert landed <= set(remote.log())  # every acknowledged write is in upstream's history


def test_two_replicas_each_with_its_sidecar_never_acknowledge_a_write_upstream_lacks(
    git_daemon: GitDaemon, sidecars: SidecarFactory, tmp_path: Path, standin_path: Path
) -> None:
    """Two pods: each Flipt pushes through its own sidecar to one upstream. Across sidecars only
    upstream orders the pushes: a push that loses the race between its advertisement and its
    forward is refused (`ng`, Flipt reports the error), never acknowledged and lost."""
    remote = git_daemon.create_repo()
    pods = [started(sidecars, storage_config(tmp_path / f"pod-{i}", remote.url)) for i in range(2)]
    clients = [GoGitFliptStandin(standin_path, tmp_path / f"flipt-{i}", pod.git_url()) for i, pod in enumerate(pods)]
    results = write_at_once(clients, 4)
    assert len(results) == 8
    history = set(remote.log())
    acknowledged = [r for r in results.values() if r.code == 0]
    refused = [r for r in results.values() if r.code != 0]
    assert acknowledged and {r.commit for r in acknowledged} <= history
    assert all(r.commit not in history for r in refused), refused
    for i in range(2):
        landed = [n for n in range(4) if results[(i, n)].code == 0]
        assert remote.read(f"env-{i}/features.yaml") == f"flags: [{i}-{max(landed)}]"
