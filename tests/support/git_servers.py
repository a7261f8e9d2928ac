"""Real git servers on loopback for tests, and helpers to make commits on either side.

Fixtures (function-scoped, each in its own temporary directory):
- `git_http_server`: `git http-backend` behind a small Python CGI bridge with basic auth
  (`.users` maps user -> password and may be changed while it runs);
- `git_daemon`: `git daemon --enable=receive-pack` (`git://`);
- `ssh_server`: OpenSSH `sshd` with a generated host key and a client key.

Each serves bare repositories under its `root`; `create_repo(name)` makes one with a first
commit and returns a `RemoteRepo` to change it as another user of the remote would.
`commit_objects` writes a commit into a repository without moving a ref (a received push).
"""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

from flipt_operator.devcluster.cluster import free_port  # noqa: F401 - re-exported for tests
from tests.support.waiting import wait_for

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Remote User",
    "GIT_AUTHOR_EMAIL": "remote@example.com",
    "GIT_COMMITTER_NAME": "Remote User",
    "GIT_COMMITTER_EMAIL": "remote@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": tempfile.gettempdir(),
}


def git(*args: str, cwd: str | Path | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()




def wait_for_port(port: int, timeout: float = 10.0) -> None:
    def accepts() -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(accepts, timeout=timeout, message=f"port {port}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its pid."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class RemoteRepo:
    """A bare repository on a test server, changed through a scratch clone."""

    bare: Path
    url: str
    branch: str = "main"
    _work: Path | None = None

    def _worktree(self) -> Path:
        if self._work is None:
            self._work = Path(tempfile.mkdtemp(prefix="remote-work-"))
            git("clone", "-q", str(self.bare), str(self._work))
        git("fetch", "-q", "origin", cwd=self._work)
        git("checkout", "-q", "-B", self.branch, f"origin/{self.branch}", cwd=self._work)
        return self._work

    def head(self) -> str | None:
        out = git("rev-parse", "--verify", "-q", f"refs/heads/{self.branch}", cwd=self.bare, check=False)
        return out or None

    def commit(self, files: dict[str, str | None], message: str = "remote change") -> str:
        """Commit file changes (None deletes) on the branch and push them; returns the commit.
        Retries when someone else pushed in between, as a person would."""
        for _ in range(10):
            work = self._worktree()
            for path, content in files.items():
                if content is None:
                    git("rm", "-q", path, cwd=work)
                    continue
                (work / path).parent.mkdir(parents=True, exist_ok=True)
                (work / path).write_text(content)
                git("add", path, cwd=work)
            git("commit", "-q", "--allow-empty", "-m", message, cwd=work)
            if not git("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}", cwd=work, check=False) and (
                self.head() == git("rev-parse", "HEAD", cwd=work)
            ):
                return git("rev-parse", "HEAD", cwd=work)
        raise RuntimeError("could not push to the test remote")

    def force_to(self, sha: str) -> None:
        """Rewrite the remote branch to `sha` (a force-push)."""
        git("update-ref", f"refs/heads/{self.branch}", sha, cwd=self.bare)

    def read(self, path: str, rev: str | None = None) -> str:
        return git("show", f"{rev or self.branch}:{path}", cwd=self.bare)

    def log(self) -> list[str]:
        return git("rev-list", self.branch, cwd=self.bare).split()

    def cleanup(self) -> None:
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)


def make_bare_repo(root: Path, name: str, url: str, files: dict[str, str] | None = None) -> RemoteRepo:
    bare = root / f"{name}.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    git("config", "receive.denyDeleteCurrent", "false", cwd=bare)
    seed = Path(tempfile.mkdtemp(prefix="remote-seed-"))
    try:
        git("init", "-q", "-b", "main", str(seed))
        for path, content in (files or {"default/features.yaml": "namespace: default\nflags: []\n"}).items():
            (seed / path).parent.mkdir(parents=True, exist_ok=True)
            (seed / path).write_text(content)
        git("add", "-A", cwd=seed)
        git("commit", "-q", "-m", "initial", cwd=seed)
        git("push", "-q", str(bare), "main", cwd=seed)
    finally:
        shutil.rmtree(seed, ignore_errors=True)
    return RemoteRepo(bare, url)


@dataclass
class GitServer:
    root: Path
    base_url: str
    repos: list[RemoteRepo] = field(default_factory=list)

    def url_for(self, name: str) -> str:
        return f"{self.base_url}/{name}.git"

    def create_repo(self, name: str = "flags", files: dict[str, str] | None = None) -> RemoteRepo:
        repo = make_bare_repo(self.root, name, self.url_for(name), files)
        self.repos.append(repo)
        return repo

    def cleanup(self) -> None:
        for repo in self.repos:
            repo.cleanup()


# -- git http-backend behind a CGI bridge with basic auth ------------------------------------------


class _CgiBridge(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _GitHttpServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _authenticated_user(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if self.server.users.get(user) == password and password else None

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        if self.server.down:  # type: ignore[attr-defined]
            # An outage: drop the connection, kept-alive ones included, without an answer.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        body = self._read_body()
        user = self._authenticated_user()
        if user is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user,  # enables receive-pack
            "REMOTE_ADDR": self.client_address[0],
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        result = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        if self.server.lose_push_replies and path.endswith("/git-receive-pack"):  # type: ignore[attr-defined]
            # The push was applied; its reply is lost on the wire (the connection is cut).
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        head, payload = _split_cgi_output(result.stdout)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _split_cgi_output(output: bytes) -> tuple[bytes, bytes]:
    """CGI output: headers, a blank line (CRLF or LF), then the body."""
    candidates = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := output.find(sep)) >= 0]
    if not candidates:
        return output, b""
    index, length = min(candidates)
    return output[:index], output[index + length :]


class _GitHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    users: dict[str, str]
    down = False
    lose_push_replies = False


@dataclass
class GitHttpServer(GitServer):
    users: dict[str, str] = field(default_factory=dict)
    ca_cert: Path | None = None
    _server: _GitHttpServer | None = None

    def outage(self, down: bool = True) -> None:
        """Drop every request (open keep-alive connections too) until called with False.
        Shutting the server down would not do: live handler threads keep serving kept-alive
        connections, so a client with a pooled connection would never notice."""
        assert self._server is not None
        self._server.down = down

    def lose_push_replies(self, lose: bool = True) -> None:
        """Apply pushes but cut the connection instead of answering them (a reply lost on the wire)."""
        assert self._server is not None
        self._server.lose_push_replies = lose


def _start_http_server(root: Path, tls_dir: Path | None,
                       host: str = "127.0.0.1") -> tuple[_GitHttpServer, GitHttpServer]:
    root.mkdir()
    server = _GitHttpServer((host, 0), _CgiBridge)
    server.root = root
    server.users = {"flipt": "s3cret-http-password"}
    scheme, ca_cert = "http", None
    if tls_dir is not None:
        tls_dir.mkdir()
        ca_cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(ca_cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(ca_cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=server.serve_forever, name="git-http-server", daemon=True).start()
    port = server.server_address[1]
    handle = GitHttpServer(
        root=root, base_url=f"{scheme}://{host}:{port}", users=server.users, ca_cert=ca_cert, _server=server
    )
    return server, handle


def _serve_http(root: Path, tls_dir: Path | None, host: str = "127.0.0.1") -> Iterator[GitHttpServer]:
    """`host`: where to listen; pods on the local node reach the host only at the node's address."""
    server, handle = _start_http_server(root, tls_dir, host)
    try:
        yield handle
    finally:
        server.shutdown()
        server.server_close()
        handle.cleanup()


@pytest.fixture
def git_http_server(tmp_path: Path) -> Iterator[GitHttpServer]:
    """`git http-backend` over plain HTTP; user `flipt` with password `.users["flipt"]`."""
    yield from _serve_http(tmp_path / "http-root", None)


@pytest.fixture
def git_https_server(tmp_path: Path) -> Iterator[GitHttpServer]:
    """The same over HTTPS with a self-signed certificate (`.ca_cert`)."""
    yield from _serve_http(tmp_path / "https-root", tmp_path / "tls")


# -- git daemon ---------------------------------------------------------------------------------------


@dataclass
class GitDaemon(GitServer):
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart, on the same port) the daemon."""
        self.process = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={self.port}",
             f"--base-path={self.root}", "--export-all", "--enable=receive-pack", "--informative-errors",
             str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **GIT_ENV},
        )  # fmt: skip
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop the daemon: the remote becomes unreachable (connection refused)."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    root = tmp_path / "daemon-root"
    root.mkdir()
    port = free_port()
    handle = GitDaemon(root=root, base_url=f"git://127.0.0.1:{port}", port=port)
    try:
        handle.start()
        yield handle
    finally:
        handle.stop()
        handle.cleanup()


# -- sshd ---------------------------------------------------------------------------------------------


@dataclass
class SshServer(GitServer):
    port: int = 0
    client_key: Path = Path()
    known_hosts: Path = Path()
    process: subprocess.Popen[bytes] | None = None

    def url_for(self, name: str) -> str:
        return f"ssh://{self.base_url}:{self.port}{self.root}/{name}.git"

    def authorize(self, public_key: Path) -> None:
        """Also accept this client key (sshd reads authorized_keys on every login)."""
        with open(self.client_key.parent / "authorized_keys", "a") as f:
            f.write(public_key.read_text())


def _ensure_sshd_prerequisites() -> None:
    """sshd run as root needs /run/sshd and a privilege-separation user `sshd`."""
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    try:
        pwd.getpwnam("sshd")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/run/sshd", "--shell", "/usr/sbin/nologin",
             "sshd"],
            check=True, capture_output=True,
        )  # fmt: skip


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[SshServer]:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or os.geteuid() != 0:
        pytest.skip("sshd is not installed or the tests do not run as root (scripts/bootstrap.sh)")
    _ensure_sshd_prerequisites()
    base = tmp_path / "sshd"
    root = tmp_path / "ssh-root"
    base.mkdir()
    root.mkdir()
    host_key, client_key = base / "host_key", base / "client_key"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = base / "authorized_keys"
    authorized.write_text((base / "client_key.pub").read_text())
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nAcceptEnv GIT_PROTOCOL\n"
        "PrintMotd no\nLogLevel ERROR\n"
    )
    known_hosts = base / "known_hosts"
    key_type, key_data = (base / "host_key.pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_data}\n")
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    user = pwd.getpwuid(os.geteuid()).pw_name
    handle = SshServer(
        root=root, base_url=f"{user}@127.0.0.1", port=port, client_key=client_key, known_hosts=known_hosts, process=proc
    )
    try:
        wait_for_port(port)
        yield handle
    finally:
        stop_process(proc)
        handle.cleanup()


# -- the Flipt side -------------------------------------------------------------------------------------


def commit_objects(repo_path: str | Path, files: dict[str, str | None], message: str = "flipt write",
                   branch: str = "main") -> tuple[str, str]:  # fmt: skip
    """A commit on the branch's head written into the repository's objects, no ref moved (as a
    pack received from a client is, before the push is decided). Returns (parent, commit)."""
    with Repo(str(repo_path)) as repo:
        parent = repo.refs[f"refs/heads/{branch}".encode()]
        tree = repo[repo[parent].tree]
        assert isinstance(tree, Tree)
        for path, content in files.items():
            tree = _tree_with(repo, tree, path.encode().split(b"/"), content)
        commit = Commit()
        commit.tree = tree.id
        commit.parents = [parent]
        commit.author = commit.committer = b"Flipt <dev@flipt.io>"
        commit.author_time = commit.commit_time = int(time.time())
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = message.encode()
        repo.object_store.add_object(commit)
        return parent.decode(), commit.id.decode()


def _tree_with(repo: Repo, tree: Tree, parts: list[bytes], content: str | None) -> Tree:
    tree = Tree.from_string(tree.as_raw_string())
    name = parts[0]
    if len(parts) == 1:
        if content is None:
            if name in tree:
                del tree[name]
        else:
            blob = Blob.from_string(content.encode())
            repo.object_store.add_object(blob)
            tree[name] = (0o100644, blob.id)
    else:
        sub = repo[tree[name][1]] if name in tree else Tree()
        assert isinstance(sub, Tree)
        sub = _tree_with(repo, sub, parts[1:], content)
        if len(sub):
            tree[name] = (0o040000, sub.id)
        elif name in tree:
            del tree[name]
    repo.object_store.add_object(tree)
    return tree


def read_committed(repo_path: str | Path, path: str, branch: str = "main") -> str | None:
    """A file's content on the local branch, as Flipt would read it."""
    out = subprocess.run(
        ["git", "show", f"refs/heads/{branch}:{path}"], cwd=repo_path, capture_output=True, text=True, check=False
    )
    return out.stdout if out.returncode == 0 else None
