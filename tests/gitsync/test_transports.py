"""Transports and credentials: HTTP basic and token auth, rotation, TLS, SSH host keys and passphrases."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from flipt_operator.gitsync.loop import StorageSync
from tests.gitsync.conftest import SyncFactory, push_through
from tests.support.git_servers import GitHttpServer, RemoteRepo, SshServer

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
    local, refused = await push_through(sync, {"x.yaml": "1\n"})
    assert refused is None, refused
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
    local, refused = await push_through(sync, {"x.yaml": "1\n"})
    assert refused is None, refused
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


# -- an encrypted identity: the passphrase file ---------------------------------------------------


def encrypted_identity(tmp_path: Path, server: SshServer, passphrase: str) -> tuple[Path, str]:
    keys = tmp_path / "encrypted-key"
    keys.mkdir()
    identity = keys / "identity"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(identity)], check=True)
    server.authorize(keys / "identity.pub")
    return identity, write_secret(tmp_path / "secrets", "passphrase", passphrase)


def passphrase_credential(server: SshServer, identity: Path, passphrase_file: str) -> dict[str, object]:
    return {**ssh_credential(server, str(server.known_hosts)), "identityFile": str(identity),
            "passphraseFile": passphrase_file}  # fmt: skip


async def synced_with_passphrase(
    server: SshServer, make_sync: SyncFactory, tmp_path: Path, passphrase: str
) -> tuple[RemoteRepo, StorageSync, Path, str]:
    """A storage with an encrypted identity, after its first (successful) sync."""
    remote = server.create_repo()
    identity, passphrase_file = encrypted_identity(tmp_path, server, passphrase)
    sync = make_sync(remote.url, credential=passphrase_credential(server, identity, passphrase_file))
    await sync.step()
    assert sync.state.ready, sync.state.last_error
    assert sync.state.revision == remote.head()
    return remote, sync, identity, passphrase_file


async def test_ssh_encrypted_identity_with_its_passphrase_file_fetches_and_pushes(
    ssh_server: SshServer, make_sync: SyncFactory, tmp_path: Path
) -> None:
    remote, sync, _, _ = await synced_with_passphrase(ssh_server, make_sync, tmp_path, "correct horse battery")
    remote.commit({"remote.yaml": "r\n"})
    await sync.step()
    assert sync.state.revision == remote.head()
    local, refused = await push_through(sync, {"x.yaml": "1\n"})
    assert refused is None, refused
    assert remote.head() == local and sync.state.last_error is None


async def test_ssh_wrong_passphrase_is_a_clear_error_without_it_and_a_rotated_file_works(
    ssh_server: SshServer, make_sync: SyncFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote, sync, identity, passphrase_file = await synced_with_passphrase(
        ssh_server, make_sync, tmp_path, "first-passphrase-never-print"
    )
    # the key is re-encrypted (the Secret's identity changes) before the passphrase file follows
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "first-passphrase-never-print",
                    "-N", "second-passphrase-never-print", "-f", str(identity)], check=True)  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        await sync.step()
    error = sync.state.last_error or ""
    assert not sync.state.ready
    assert f"the passphrase in passphraseFile {passphrase_file} does not decrypt identityFile {identity}" in error
    Path(passphrase_file).write_text("second-passphrase-never-print\n")  # the rotation completes
    with caplog.at_level(logging.DEBUG):
        await sync.step()
    assert sync.state.ready and sync.state.last_error is None, sync.state.last_error
    local, refused = await push_through(sync, {"x.yaml": "1\n"})
    assert refused is None, refused
    assert remote.head() == local
    captured = caplog.text + sync.state.model_dump_json() + error
    for secret in ("first-passphrase-never-print", "second-passphrase-never-print"):
        assert secret not in captured


async def test_ssh_encrypted_identity_without_a_passphrase_file_says_so(
    ssh_server: SshServer, make_sync: SyncFactory, tmp_path: Path
) -> None:
    remote = ssh_server.create_repo()
    identity, _ = encrypted_identity(tmp_path, ssh_server, "unused-passphrase")
    sync = make_sync(remote.url, credential={**ssh_credential(ssh_server, str(ssh_server.known_hosts)),
                                             "identityFile": str(identity)})  # fmt: skip
    await sync.step()
    assert not sync.state.ready
    assert f"identityFile {identity} is encrypted and no passphraseFile is set" in (sync.state.last_error or "")
