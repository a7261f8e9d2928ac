"""How the sidecar reaches a storage's remote: a dulwich client built from a `GitSyncStorage`.

Credentials are read from their files each time a client is built (once per sync), so a
rotated Secret takes effect without a restart. Every secret value read is remembered in
`RemoteAccess.secrets`, so that error text can be scrubbed of it.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import stat
import subprocess
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dulwich.client import (
    GitClient,
    SSHGitClient,
    SubprocessSSHVendor,
    SubprocessWrapper,
    TCPGitClient,
    Urllib3HttpGitClient,
    default_urllib3_manager,
    get_transport_and_path,
)
from dulwich.config import ConfigDict

from ..models.gitsync import GitSyncCredential, GitSyncStorage
from ..rules.gitsync import redact_url

log = logging.getLogger(__name__)

# Username Flipt (and Bitbucket, GitLab, Gitea) use for an access token sent as basic auth.
ACCESS_TOKEN_USERNAME = "x-token-auth"
# Network timeouts: a hung remote must fail a sync, not freeze the storage's loop.
HTTP_TIMEOUT_SECONDS = 60.0
SSH_CONNECT_TIMEOUT_SECONDS = 20
# Reads the passphrase file named in its environment; the passphrase never is an argument.
ASKPASS_SCRIPT = '#!/bin/sh\nexec cat "$FLIPT_GIT_SYNC_PASSPHRASE_FILE"\n'


class CredentialFileError(RuntimeError):
    """A credential file named in the config cannot be read."""


class CycleAborted(RuntimeError):
    """The sync cycle ran past its deadline, or the sidecar is stopping: its remote traffic was cut."""


class ConnectionTracker:
    """Every connection one sync cycle opens to its remote, so that another thread can cut them.

    A per-read timeout does not bound a remote that sends a byte now and then; the cycle's
    deadline does, by closing what this tracks: HTTP and git:// sockets are shut down (a
    blocked read returns at once), ssh processes are killed. Once aborted, a connection opened
    later is cut as soon as it is tracked. Thread-safe: `abort` is called from the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._http: list[Any] = []  # urllib3 connections: their socket exists only once connected
        self._processes: list[subprocess.Popen[bytes]] = []
        self.reason: str | None = None

    @property
    def aborted(self) -> bool:
        return self.reason is not None

    def check(self) -> None:
        """Raise CycleAborted if the cycle was aborted (called between the stages of a cycle)."""
        if self.reason is not None:
            raise CycleAborted(self.reason)

    def track_socket(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
        if self.aborted:
            self.abort(self.reason or "aborted")

    def track_http(self, connection: Any) -> None:
        with self._lock:
            self._http.append(connection)
        if self.aborted:
            self.abort(self.reason or "aborted")

    def track_process(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes.append(process)
        if self.aborted:
            self.abort(self.reason or "aborted")

    def abort(self, reason: str) -> None:
        """Cut every connection. Safe to call again (a connection being opened right now is
        only tracked once connected, so the caller repeats this until the cycle ends)."""
        with self._lock:
            self.reason = self.reason or reason
            sockets = list(self._sockets) + [s for c in self._http if (s := getattr(c, "sock", None)) is not None]
            processes = list(self._processes)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed
        for process in processes:
            if process.poll() is None:
                process.kill()


@dataclass
class RemoteAccess:
    client: GitClient
    path: str
    display_url: str
    secrets: list[str] = field(default_factory=list)
    tracker: ConnectionTracker = field(default_factory=ConnectionTracker)
    _private_dir: tempfile.TemporaryDirectory[str] | None = None
    _ssh_credential: GitSyncCredential | None = None
    _ssh_identity: str | None = None  # the private copy ssh is given

    def explain(self, error: str) -> str:
        """`error` with the likely cause when ssh refused our identity: a passphrase that does
        not decrypt it, an encrypted identity without a passphrase, or a key the server does
        not accept. Checked only after such a failure, with ssh-keygen and the same askpass."""
        credential, identity = self._ssh_credential, self._ssh_identity
        if credential is None or identity is None or self._private_dir is None or "Permission denied" not in error:
            return error
        askpass = _askpass_script(self._private_dir.name)
        env = {**os.environ, "SSH_ASKPASS": askpass, "SSH_ASKPASS_REQUIRE": "force",
               "FLIPT_GIT_SYNC_PASSPHRASE_FILE": credential.passphrase_file or os.devnull}  # fmt: skip
        try:
            result = subprocess.run(
                ["ssh-keygen", "-y", "-f", identity], env=env, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return error
        name = f"identityFile {credential.identity_file}"
        if result.returncode == 0:
            return f"{error} (the server did not accept {name}: is its public key authorized?)"
        if "passphrase" not in result.stderr:
            return f"{error} ({name} is not a usable private key)"
        if credential.passphrase_file:
            return f"{error} (the passphrase in passphraseFile {credential.passphrase_file} does not decrypt {name})"
        return f"{error} ({name} is encrypted and no passphraseFile is set)"

    def close(self) -> None:
        if self._private_dir is not None:
            self._private_dir.cleanup()
            self._private_dir = None
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


def read_secret_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read()
    except OSError as exc:
        # The path is config, not secret; the content never reaches the message.
        raise CredentialFileError(f"cannot read {what} file {path}: {exc.strerror}") from None
    return value.rstrip("\r\n")


def _split_userinfo(remote: str) -> tuple[str, str | None, str | None]:
    """The URL without user-info, and the user name and password it carried."""
    parts = urlsplit(remote)
    if not parts.scheme or "@" not in parts.netloc:
        return remote, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=hostport)), user or None, password or None


def _http_config(storage: GitSyncStorage) -> ConfigDict:
    config = ConfigDict()
    if storage.ca_cert_file:
        config.set((b"http",), b"sslCAInfo", storage.ca_cert_file.encode())
    return config


def _ssh_command(credential: GitSyncCredential, askpass: str | None) -> str:
    options = [
        "-F", "/dev/null",  # no user or system ssh_config can weaken what follows
        "-o", "IdentitiesOnly=yes",
        "-o", "PasswordAuthentication=no",
        "-o", "KbdInteractiveAuthentication=no",
        "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_SECONDS}",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if credential.insecure_ignore_host_key:
        options += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    else:
        assert credential.known_hosts_file  # the model requires it
        options += [
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={credential.known_hosts_file}",
            "-o", "GlobalKnownHostsFile=/dev/null",
        ]  # fmt: skip
    if askpass is None:
        return shlex.join(["ssh", "-o", "BatchMode=yes", *options])
    options += ["-o", "NumberOfPasswordPrompts=1"]  # a wrong passphrase is not asked for again
    # A passphrase reaches ssh only through SSH_ASKPASS, read from its file by a tiny script:
    # it is never on a command line or in the environment.
    env = ["env", f"SSH_ASKPASS={askpass}", "SSH_ASKPASS_REQUIRE=force",
           f"FLIPT_GIT_SYNC_PASSPHRASE_FILE={credential.passphrase_file}"]  # fmt: skip
    return shlex.join([*env, "ssh", "-o", "BatchMode=no", *options])


def _askpass_script(directory: str) -> str:
    path = os.path.join(directory, "askpass")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(ASKPASS_SCRIPT)
        os.chmod(path, stat.S_IRWXU)
    return path


def _private_copy(source: str, directory: str, name: str) -> str:
    """Copy a mounted key with mode 0600: ssh refuses keys others may read."""
    with open(source, "rb") as f:
        data = f.read()
    target = os.path.join(directory, name)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return target


def open_remote(storage: GitSyncStorage, tracker: ConnectionTracker | None = None) -> RemoteAccess:
    """A client for the storage's remote with the credentials as they are on disk now; every
    connection it opens is registered with `tracker` (so a deadline can cut it)."""
    tracker = tracker or ConnectionTracker()
    url, url_user, url_password = _split_userinfo(storage.remote)
    secrets = [s for s in (url_password,) if s]
    credential = storage.credential
    username, password = url_user, url_password
    if credential is not None and credential.type == "basic":
        assert credential.username_file and credential.password_file
        username = read_secret_file(credential.username_file, "username")
        password = read_secret_file(credential.password_file, "password")
        secrets.append(password)
    elif credential is not None and credential.type == "accessToken":
        assert credential.token_file
        username = ACCESS_TOKEN_USERNAME
        password = read_secret_file(credential.token_file, "token")
        secrets.append(password)

    scheme = urlsplit(url).scheme
    if scheme in ("http", "https"):
        parts = urlsplit(url)
        base_url = urlunsplit(parts._replace(path="", query="", fragment=""))
        pool = default_urllib3_manager(
            _http_config(storage),
            base_url=base_url,
            timeout=HTTP_TIMEOUT_SECONDS,
            cert_reqs="CERT_NONE" if storage.insecure_skip_tls else None,
        )
        _track_http_pools(pool, tracker)
        client = Urllib3HttpGitClient(base_url, pool_manager=pool, username=username, password=password)
        path = parts.path
        if storage.insecure_skip_tls:
            warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        return RemoteAccess(client, path, redact_url(url), secrets, tracker)

    client, path = get_transport_and_path(url)
    access = RemoteAccess(client, path, redact_url(url), secrets, tracker)
    if isinstance(client, TCPGitClient):
        _track_tcp(client, tracker)
    if isinstance(client, SSHGitClient):
        client.ssh_vendor = _TrackedSSHVendor(tracker)
        if credential is None or credential.type != "ssh":
            raise CredentialFileError("an ssh remote needs a credential of type ssh")
        _configure_ssh(access, client, credential)
    return access


def _configure_ssh(access: RemoteAccess, client: SSHGitClient, credential: GitSyncCredential) -> None:
    assert credential.identity_file
    if credential.insecure_ignore_host_key:
        log.warning("ssh host key checking is off (insecureIgnoreHostKey) for %s", access.display_url)
    access._private_dir = tempfile.TemporaryDirectory(prefix="flipt-git-sync-")
    try:
        identity = _private_copy(credential.identity_file, access._private_dir.name, "identity")
    except OSError as exc:
        raise CredentialFileError(f"cannot read identity file {credential.identity_file}: {exc.strerror}") from None
    askpass = None
    if credential.passphrase_file:
        secrets_value = read_secret_file(credential.passphrase_file, "passphrase")
        access.secrets.append(secrets_value)
        askpass = _askpass_script(access._private_dir.name)
    access._ssh_credential = credential
    access._ssh_identity = identity
    client.username = client.username or credential.ssh_user
    client.key_filename = identity
    client.ssh_command = _ssh_command(credential, askpass)


# -- making connections cuttable ---------------------------------------------------------------


def _track_http_pools(manager: Any, tracker: ConnectionTracker) -> None:
    """Register each connection urllib3 opens (pools are created lazily, per host)."""
    new_pool = manager._new_pool

    def tracked_pool(*args: Any, **kwargs: Any) -> Any:
        pool = new_pool(*args, **kwargs)
        new_conn = pool._new_conn

        def tracked_conn() -> Any:
            tracker.check()  # urllib3 retries a broken request on a new connection: not after a cut
            connection = new_conn()
            tracker.track_http(connection)
            return connection

        pool._new_conn = tracked_conn
        return pool

    manager._new_pool = tracked_pool


def _track_tcp(client: TCPGitClient, tracker: ConnectionTracker) -> None:
    """git://: dulwich keeps the socket inside its Protocol; its unbuffered writer is the
    socket's own SocketIO, which holds the socket."""
    connect = client._connect

    def tracked_connect(*args: Any, **kwargs: Any) -> Any:
        result = connect(*args, **kwargs)
        sock = getattr(getattr(result[0].write, "__self__", None), "_sock", None)
        if not isinstance(sock, socket.socket):
            raise RuntimeError("cannot find the git:// socket to bound the sync deadline (dulwich changed?)")
        tracker.track_socket(sock)
        return result

    client._connect = tracked_connect


class _TrackedSSHVendor(SubprocessSSHVendor):
    """dulwich's ssh vendor, with each ssh process registered so a deadline can kill it."""

    def __init__(self, tracker: ConnectionTracker) -> None:
        self.tracker = tracker

    def run_command(self, *args: Any, **kwargs: Any) -> SubprocessWrapper:
        wrapper = super().run_command(*args, **kwargs)
        self.tracker.track_process(wrapper.proc)
        return wrapper
