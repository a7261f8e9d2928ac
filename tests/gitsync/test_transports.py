"""Transports and credentials: HTTP basic and token auth, rotation, TLS, SSH host keys."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.gitsync.conftest import SyncFactory
from tests.support.git_servers import GitHttpServer, SshServer, flipt_commit

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-http-password"


def write_secret(directory: Path, name: str, value: str) -> str:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(value + "\n")  # Secret files often end with a newline
    return str(path)


def basic_credential(tmp_path: Path, username: str, password: str) -> dict[str, str]:
    secrets = tmp_path / "secrets"
    return {
        "type": "basic",
        "usernameFile": write_secret(secrets, "username", username),
        "passwordFile": write_secret(secrets, "password", password),
    }


async def test_http_basic_auth_fetch_and_push(git_http_server: GitHttpServer, make_sync: SyncFactory, tmp_path: Path) -> None:
    remote = git_http_server.create_repo()
    sync = make_sync(remote.url, credential=basic_credential(tmp_path, "flipt", PASSWORD))
    await sync.step()
    assert sync.state.ready, sync.state.last_error
    local = flipt_commit(sync.storage.repository_path, {"x.yaml": "1\n"})
    await sync.step()
    assert remote.head() == local


async def test_wrong_password_is_a_clear_authentication_error_without_the_password(
    git_http_server: GitHttpServer, make_sync: SyncFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote = git_http_server.create_repo()
    wrong = "wrong-password-value-42"
    sync = make_sync(remote.url, credential=basic_credential(tmp_path, "flipt", wrong))
    with caplog.at_level(logging.DEBUG):
        await sync.step()
    assert not sync.state.ready
    assert "authentication failed" in (sync.state.last_error or "")
    dumped = sync.state.model_dump_json() + caplog.text
    assert wrong not in dumped and PASSWORD not in dumped


async def test_credential_rotation_takes_effect_without_restart(
    git_http_server: GitHttpServer, make_sync: SyncFactory, tmp_path: Path
) -> None:
    remote = git_http_server.create_repo()
    credential = basic_credential(tmp_path, "flipt", PASSWORD)
    sync = make_sync(remote.url, credential=credential)
    await sync.step()
    assert sync.state.ready
    git_http_server.users["flipt"] = "rotated-password"  # the server's password changes first
    await sync.step()
    assert not sync.state.ready and "authentication failed" in (sync.state.last_error or "")
    Path(credential["passwordFile"]).write_text("rotated-password\n")  # then the Secret is updated
    await sync.step()
    assert sync.state.ready and sync.state.last_error is None


async def test_access_token_is_sent_as_basic_auth_for_x_token_auth(
    git_http_server: GitHttpServer, make_sync: SyncFactory, tmp_path: Path
) -> None:
    git_http_server.users["x-token-auth"] = "tok-abcdef-123"
    remote = git_http_server.create_repo()
    token_file = write_secret(tmp_path / "secrets", "token", "tok-abcdef-123")
    sync = make_sync(remote.url, credential={"type": "accessToken", "tokenFile": token_file})
    await sync.step()
    assert sync.state.ready, sync.state.last_error


async def test_userinfo_in_the_remote_url_never_reaches_the_status(
    git_http_server: GitHttpServer, make_sync: SyncFactory
) -> None:
    remote = git_http_server.create_repo()
    url = remote.url.replace("http://", "http://flipt:not-the-password@")
    sync = make_sync(url)
    await sync.step()
    assert "not-the-password" not in sync.state.model_dump_json()
    assert sync.state.remote == remote.url and "authentication failed" in (sync.state.last_error or "")


@pytest.mark.parametrize(("ca", "skip", "ok"), [(True, False, True), (False, False, False), (False, True, True)])
async def test_https_ca_certificate_and_insecure_skip_tls(
    git_https_server: GitHttpServer, make_sync: SyncFactory, tmp_path: Path, ca: bool, skip: bool, ok: bool
) -> None:
    remote = git_https_server.create_repo()
    fields = {"credential": basic_credential(tmp_path, "flipt", PASSWORD), "insecureSkipTls": skip}
    if ca:
        fields["caCertFile"] = str(git_https_server.ca_cert)
    sync = make_sync(remote.url, **fields)
    await sync.step()
    assert sync.state.ready is ok, sync.state.last_error
    if not ok:
        assert "certificate" in (sync.state.last_error or "").lower()


def ssh_credential(server: SshServer, known_hosts: str | None, insecure: bool = False) -> dict[str, object]:
    credential: dict[str, object] = {"type": "ssh", "identityFile": str(server.client_key), "sshUser": "root"}
    if known_hosts is not None:
        credential["knownHostsFile"] = known_hosts
    if insecure:
        credential["insecureIgnoreHostKey"] = True
    return credential


async def test_ssh_with_known_hosts_fetches_and_pushes(ssh_server: SshServer, make_sync: SyncFactory) -> None:
    remote = ssh_server.create_repo()
    sync = make_sync(remote.url, credential=ssh_credential(ssh_server, str(ssh_server.known_hosts)))
    await sync.step()
    assert sync.state.ready, sync.state.last_error
    local = flipt_commit(sync.storage.repository_path, {"x.yaml": "1\n"})
    await sync.step()
    assert remote.head() == local


async def test_ssh_unknown_host_key_is_refused_unless_ignored(
    ssh_server: SshServer, make_sync: SyncFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote = ssh_server.create_repo()
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    strict = make_sync(remote.url, name="strict", credential=ssh_credential(ssh_server, str(empty)))
    await strict.step()
    assert not strict.state.ready and "host key verification failed" in (strict.state.last_error or "").lower()
    with caplog.at_level(logging.WARNING):
        insecure = make_sync(remote.url, name="insecure", credential=ssh_credential(ssh_server, None, insecure=True))
        await insecure.step()
    assert insecure.state.ready, insecure.state.last_error
    assert "host key checking is off" in caplog.text
