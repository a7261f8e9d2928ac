"""Start and stop a local etcd + kube-apiserver of a release built by `build`, optionally with that
release's kube-controller-manager and kube-scheduler (`controllers=True`; pods then run on
`pod_runner`'s node).

`LocalCluster` is a context manager: free ports, a temp dir (etcd data on /dev/shm when it
exists), a generated service-account key, a tokens.csv with an admin token (group
system:masters) plus any extra token users, readiness on /readyz, a kubeconfig, and a stop
by process id (SIGTERM, then SIGKILL) that removes the temp dirs. `restart_apiserver` takes the
API server down and up again in place, for tests of clients under an outage.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .build import CURRENT_KUBERNETES, binary_path, binary_works

ADMIN_USER = "admin"
ADMIN_GROUPS = ("system:masters",)
SA_ISSUER = "https://kubernetes.default.svc"
STATE_FILE = "state.json"
PORT_RETRIES = 3
ETCD_DIR_PREFIX = "flipt-etcd-"
ETCD_PID_FILE = "etcd.pid"  # next to etcd's data, so a later start can remove a dead run's tmpfs data
# The identities the controller-manager and the scheduler authenticate as (static tokens). They
# are in system:masters: the dev cluster's control plane, not a test of its RBAC.
CONTROL_PLANE_USERS = ("system:kube-controller-manager", "system:kube-scheduler")


class ClusterError(RuntimeError):
    """The local cluster could not be started (the message carries the log tail)."""


@dataclass
class TokenUser:
    """A static-token user of the apiserver (`--token-auth-file`)."""

    name: str
    groups: Sequence[str] = ()
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    uid: str = ""

    def csv_line(self) -> str:
        uid = self.uid or self.name
        return f'{self.token},{self.name},{uid},"{",".join(self.groups)}"'


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int, expect: str | None = None) -> bool:
    """True if `pid` runs (not a zombie) and, if given, its command line mentions `expect`."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    if expect is not None:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return expect in cmdline
    return True


def stop_pid(pid: int, expect: str | None = None, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM `pid`, wait up to `timeout`, then SIGKILL. `expect` guards against a reused pid."""
    if not _pid_alive(pid, expect):
        if proc is not None:
            proc.poll()
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return
            elif not _pid_alive(pid):
                return
            time.sleep(0.05)


def _remove_stale_etcd_dirs(base: Path, grace: float = 600.0) -> None:
    """Remove etcd data dirs left in `base` by runs that were killed (their etcd is gone)."""
    for d in base.glob(f"{ETCD_DIR_PREFIX}*"):
        try:
            pid = int((d / ETCD_PID_FILE).read_text())
            stale = not _pid_alive(pid, "etcd")
        except (OSError, ValueError):
            try:
                stale = time.time() - d.stat().st_mtime > grace  # a start that never got to write its pid
            except OSError:
                continue
        if stale:
            shutil.rmtree(d, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort; not on Linux/glibc
        pass


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def http_get(url: str, token: str | None = None, timeout: float = 2.0) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_insecure_context()) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def readyz(server: str, token: str | None = None, timeout: float = 2.0) -> bool:
    try:
        status, body = http_get(f"{server}/readyz", token, timeout)
    except (OSError, urllib.error.URLError):
        return False
    return status == 200 and body.strip() == "ok"


def serving(server: str, token: str | None = None, timeout: float = 2.0) -> bool:
    """/readyz answers ok and the bootstrap controller has created the `default` namespace
    (it can lag /readyz by a moment, and clients expect it)."""
    if not readyz(server, token, timeout):
        return False
    try:
        status, _ = http_get(f"{server}/api/v1/namespaces/default", token, timeout)
    except (OSError, urllib.error.URLError):
        return False
    return status == 200


def render_kubeconfig(server: str, token: str, ca_file: Path | None, user: str = ADMIN_USER) -> str:
    cluster: dict[str, Any] = {"server": server}
    if ca_file is not None and ca_file.is_file():
        cluster["certificate-authority-data"] = base64.b64encode(ca_file.read_bytes()).decode()
    else:
        cluster["insecure-skip-tls-verify"] = True
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": f"{user}@local", "context": {"cluster": "local", "user": user, "namespace": "default"}}],
        "current-context": f"{user}@local",
    }
    return yaml.safe_dump(config, sort_keys=False)


def _write_sa_key(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = directory / "sa.key"
    pub = directory / "sa.pub"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    priv.chmod(0o600)
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return priv, pub


@dataclass
class ClusterState:
    """What `LocalCluster` writes to `<workdir>/state.json` so another process can find and stop it."""

    server: str
    kubeconfig: str
    workdir: str
    etcd_data_dir: str
    etcd_pid: int
    apiserver_pid: int
    admin_token: str
    owns_workdir: bool
    controller_manager_pid: int = 0
    scheduler_pid: int = 0
    node_pid: int = 0  # a `dev-cluster node` (it cleans up its pods and network on SIGTERM)

    def save(self, directory: Path) -> Path:
        path = directory / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.chmod(0o600)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        try:
            data = json.loads((directory / STATE_FILE).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def running(self) -> bool:
        return _pid_alive(self.apiserver_pid, "kube-apiserver") and readyz(self.server, self.admin_token)

    def stop(self) -> None:
        if self.node_pid:
            stop_pid(self.node_pid, "dev-cluster node", timeout=60.0)
        if self.scheduler_pid:
            stop_pid(self.scheduler_pid, "kube-scheduler")
        if self.controller_manager_pid:
            stop_pid(self.controller_manager_pid, "kube-controller-manager")
        stop_pid(self.apiserver_pid, "kube-apiserver")
        stop_pid(self.etcd_pid, "etcd")
        shutil.rmtree(self.etcd_data_dir, ignore_errors=True)
        workdir = Path(self.workdir)
        if self.owns_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            (workdir / STATE_FILE).unlink(missing_ok=True)


class LocalCluster:
    """etcd + kube-apiserver on free loopback ports.

    `workdir=None` uses a fresh temp dir removed on stop. Attached (the default), both
    processes get SIGTERM when the thread that started them ends, even if this process is
    killed without cleanup, so start it from a long-lived thread (pytest's main thread).
    `detached=True` lets them outlive this process (the CLI's `dev-cluster start`); stop
    them later with `ClusterState.load(workdir).stop()`.
    """

    def __init__(
        self,
        users: Iterable[TokenUser] = (),
        workdir: Path | None = None,
        start_timeout: float = 90.0,
        detached: bool = False,
        release: str = CURRENT_KUBERNETES,
        etcd: Path | None = None,
        extra_apiserver_args: Sequence[str] = (),
        controllers: bool = False,
    ) -> None:
        self.admin = TokenUser(ADMIN_USER, ADMIN_GROUPS)
        self.users: dict[str, TokenUser] = {ADMIN_USER: self.admin}
        for user in users:
            if user.name in self.users:
                raise ValueError(f"duplicate token user {user.name!r}")
            self.users[user.name] = user
        self._requested_workdir = Path(workdir) if workdir is not None else None
        self.start_timeout = start_timeout
        self.detached = detached
        self.release = release
        self.apiserver_bin = binary_path("kube-apiserver", release)
        self.etcd_bin = Path(etcd) if etcd else Path(shutil.which("etcd") or "/usr/bin/etcd")
        self.extra_apiserver_args = list(extra_apiserver_args)
        # kube-controller-manager and kube-scheduler of the same release, next to its apiserver
        self.controllers = controllers
        if controllers:
            for name in CONTROL_PLANE_USERS:
                self.users[name] = TokenUser(name, ADMIN_GROUPS)
        self._controller_manager: subprocess.Popen | None = None
        self._scheduler: subprocess.Popen | None = None
        self._node_pid = 0
        self.workdir: Path | None = None
        self.etcd_data_dir: Path | None = None
        self.server: str = ""
        self.kubeconfig: Path | None = None
        self.ca_file: Path | None = None
        self._etcd: subprocess.Popen | None = None
        self._apiserver: subprocess.Popen | None = None
        self._apiserver_cmd: list[str] = []
        self._apiserver_log: Path | None = None
        self._owns_workdir = False

    # -- context manager -------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def admin_token(self) -> str:
        return self.admin.token

    @property
    def pids(self) -> dict[str, int]:
        procs = (("etcd", self._etcd), ("kube-apiserver", self._apiserver),
                 ("kube-controller-manager", self._controller_manager), ("kube-scheduler", self._scheduler))
        return {name: proc.pid for name, proc in procs if proc}

    # -- start -----------------------------------------------------------------------
    def _spawn(self, cmd: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as fh:
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no terminal signals; survives the CLI when detached
                close_fds=True,
                # attached: die with this process even if it is killed without cleanup
                preexec_fn=None if self.detached else _die_with_parent,
            )

    def _prepare_dirs(self) -> None:
        if self._requested_workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="flipt-kube-"))
            self._owns_workdir = True
        else:
            self.workdir = self._requested_workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.workdir
        _remove_stale_etcd_dirs(base)
        self.etcd_data_dir = Path(tempfile.mkdtemp(prefix=ETCD_DIR_PREFIX, dir=base))

    def start(self) -> LocalCluster:
        if not self.etcd_bin.is_file():
            raise ClusterError(f"etcd not found at {self.etcd_bin}; install the Debian package etcd-server")
        needed = [self.apiserver_bin]
        if self.controllers:
            needed += [binary_path(c, self.release) for c in ("kube-controller-manager", "kube-scheduler")]
        for binary in needed:
            if not binary_works(binary):
                raise ClusterError(
                    f"{binary.name} {self.release} not found or broken at {binary}; run "
                    f"`flipt-operator dev-cluster build`"
                )
        self._prepare_dirs()
        assert self.workdir is not None and self.etcd_data_dir is not None
        for attempt in range(PORT_RETRIES):
            try:
                self._start_processes()
                return self
            except ClusterError as exc:
                # free_port() can race with another session: retry on fresh ports
                if "address already in use" not in str(exc) or attempt == PORT_RETRIES - 1:
                    self.stop()
                    raise
                self._stop_processes()
                shutil.rmtree(self.etcd_data_dir / "data", ignore_errors=True)
            except BaseException:
                self.stop()
                raise
        return self

    def _start_processes(self) -> None:
        assert self.workdir is not None and self.etcd_data_dir is not None
        wd = self.workdir
        cert_dir = wd / "certs"
        cert_dir.mkdir(exist_ok=True)
        sa_key, sa_pub = _write_sa_key(wd)
        tokens = wd / "tokens.csv"
        tokens.write_text("".join(u.csv_line() + "\n" for u in self.users.values()))
        tokens.chmod(0o600)

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd_log = wd / "etcd.log"
        self._etcd = self._spawn(
            [
                str(self.etcd_bin),
                "--data-dir", str(self.etcd_data_dir / "data"),
                "--listen-client-urls", etcd_url,
                "--advertise-client-urls", etcd_url,
                "--listen-peer-urls", peer_url,
                "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"default={peer_url}",
                # As kubeadm sets it: the API server's watch cache learns the current revision
                # every 5 s (default 10 min), so reads at a fresh resourceVersion do not wait.
                "--experimental-watch-progress-notify-interval", "5s",
            ],
            etcd_log,
        )
        (self.etcd_data_dir / ETCD_PID_FILE).write_text(str(self._etcd.pid))
        self._wait(
            lambda: self._etcd_healthy(etcd_url), self._etcd, "etcd", etcd_log, timeout=min(30.0, self.start_timeout)
        )

        self.server = f"https://127.0.0.1:{api_port}"
        api_log = wd / "kube-apiserver.log"
        self._apiserver_log = api_log
        self._apiserver_cmd = [
            str(self.apiserver_bin),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={cert_dir}",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/16",  # room for thousands of Services (benchmarks)
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            *self.extra_apiserver_args,
        ]
        self._apiserver = self._spawn(self._apiserver_cmd, api_log)
        self._wait(lambda: serving(self.server, self.admin_token), self._apiserver, "kube-apiserver", api_log,
                   timeout=self.start_timeout)

        self.ca_file = cert_dir / "apiserver.crt"
        self.kubeconfig = wd / "kubeconfig"
        self.kubeconfig.write_text(render_kubeconfig(self.server, self.admin_token, self.ca_file))
        self.kubeconfig.chmod(0o600)
        if self.controllers:
            self._start_controllers(sa_key)
        self._save_state()

    def _start_controllers(self, sa_key: Path) -> None:
        """kube-controller-manager (every default controller: Deployment, ReplicaSet, Job, garbage
        collector, namespace, node lifecycle, PersistentVolume binder, ...) and kube-scheduler, on
        loopback, leader election off, each with its own kubeconfig; ready when /healthz says ok."""
        assert self.workdir is not None and self.ca_file is not None
        wd = self.workdir
        extra = {
            "kube-controller-manager": [
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={self.ca_file}",
                "--controllers=*",
                # the local node heartbeats every 10 s; pods on a node gone for 40 s are evicted
                "--node-monitor-grace-period=40s",
            ],
            "kube-scheduler": [],
        }
        started = []
        for component, args in extra.items():
            port, log = free_port(), wd / f"{component}.log"
            proc = self._spawn([
                str(binary_path(component, self.release)),
                f"--kubeconfig={self.kubeconfig_for(f'system:{component}')}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={wd / (component + '-certs')}",
                "--leader-elect=false",
                *args,
            ], log)
            if component == "kube-controller-manager":
                self._controller_manager = proc
            else:
                self._scheduler = proc
            started.append((proc, port, component, log))
        for proc, port, component, log in started:
            self._wait(lambda port=port: self._healthz(port), proc, component, log, timeout=self.start_timeout)

    @staticmethod
    def _healthz(port: int) -> bool:
        try:
            status, body = http_get(f"https://127.0.0.1:{port}/healthz")
        except (OSError, urllib.error.URLError):
            return False
        return status == 200 and body.strip() == "ok"

    def _save_state(self) -> None:
        assert self.workdir is not None and self.etcd_data_dir is not None
        assert self._etcd is not None and self._apiserver is not None and self.kubeconfig is not None
        ClusterState(
            server=self.server,
            kubeconfig=str(self.kubeconfig),
            workdir=str(self.workdir),
            etcd_data_dir=str(self.etcd_data_dir),
            etcd_pid=self._etcd.pid,
            apiserver_pid=self._apiserver.pid,
            admin_token=self.admin_token,
            owns_workdir=self._owns_workdir,
            controller_manager_pid=self._controller_manager.pid if self._controller_manager else 0,
            scheduler_pid=self._scheduler.pid if self._scheduler else 0,
            node_pid=self._node_pid,
        ).save(self.workdir)

    def record_node(self, pid: int) -> None:
        """Note a `dev-cluster node` process in the state file, so `dev-cluster stop` ends it first."""
        self._node_pid = pid
        self._save_state()

    def restart_apiserver(self, down_seconds: float = 0.0, timeout: float | None = None) -> int:
        """Stop kube-apiserver (SIGTERM, then SIGKILL), stay down `down_seconds`, start it again
        with the same arguments (same port, etcd, certificates and tokens, so every kubeconfig
        keeps working) and wait until it serves. Returns the new pid.

        Attached clusters: call it from the thread that started the cluster, like `start`: the
        new process is stopped when the thread that spawned it ends (see `_die_with_parent`)."""
        assert self._apiserver is not None and self._apiserver_log is not None, "cluster not started"
        stop_pid(self._apiserver.pid, "kube-apiserver", proc=self._apiserver)
        if down_seconds > 0:
            time.sleep(down_seconds)
        self._apiserver = self._spawn(self._apiserver_cmd, self._apiserver_log)
        self._wait(lambda: serving(self.server, self.admin_token), self._apiserver, "kube-apiserver",
                   self._apiserver_log, timeout=timeout or self.start_timeout)
        self._save_state()
        return self._apiserver.pid

    @staticmethod
    def _etcd_healthy(url: str) -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1.0) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    @staticmethod
    def _wait(ready, proc: subprocess.Popen, name: str, log: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited with code {proc.returncode}; last lines of {log}:\n{_tail(log)}")
            time.sleep(0.2)
        raise ClusterError(f"{name} not ready after {timeout:.0f}s; last lines of {log}:\n{_tail(log)}")

    # -- use ---------------------------------------------------------------------------
    def kubeconfig_for(self, user: str | TokenUser, path: Path | None = None) -> Path:
        """Write a kubeconfig for one token user (by name, or a TokenUser) and return its path."""
        assert self.workdir is not None, "cluster not started"
        u = self.users[user] if isinstance(user, str) else user
        path = path or self.workdir / f"kubeconfig-{u.name}"
        path.write_text(render_kubeconfig(self.server, u.token, self.ca_file, user=u.name))
        path.chmod(0o600)
        return path

    def api_client(self, user: str | TokenUser = ADMIN_USER):
        """A `kubernetes.client.ApiClient` for a token user (the admin by default)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig_for(user)))

    # -- stop --------------------------------------------------------------------------
    def _stop_processes(self) -> None:
        if self._scheduler is not None:
            stop_pid(self._scheduler.pid, "kube-scheduler", proc=self._scheduler)
        if self._controller_manager is not None:
            stop_pid(self._controller_manager.pid, "kube-controller-manager", proc=self._controller_manager)
        if self._apiserver is not None:
            stop_pid(self._apiserver.pid, "kube-apiserver", proc=self._apiserver)
        if self._etcd is not None:
            stop_pid(self._etcd.pid, "etcd", proc=self._etcd)

    def stop(self) -> None:
        """Stop both processes by pid (SIGTERM, then SIGKILL) and remove what start() made."""
        self._stop_processes()
        if self.etcd_data_dir is not None:
            shutil.rmtree(self.etcd_data_dir, ignore_errors=True)
        if self.workdir is not None:
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            else:
                (self.workdir / STATE_FILE).unlink(missing_ok=True)


def apply_crds(directory: Path | str, api_client=None, kubeconfig: Path | str | None = None, timeout: float = 60.0) -> list[str]:
    """Create or replace every CustomResourceDefinition in `directory/*.yaml`; wait for Established.

    Returns the CRD names. Uses the `kubernetes` client (no kubectl).
    """
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    if api_client is None:
        api_client = config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)
    api = client.ApiextensionsV1Api(api_client)
    names: list[str] = []
    for path in sorted(Path(directory).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            name = doc["metadata"]["name"]
            try:
                api.create_custom_resource_definition(body=doc)
            except ApiException as exc:
                if exc.status != 409:
                    raise ClusterError(f"{path.name}: creating CRD {name} failed: {exc.status} {exc.body}") from exc
                current = _read_crd(api, name)
                doc = dict(doc, metadata=dict(doc["metadata"], resourceVersion=current["metadata"]["resourceVersion"]))
                try:
                    api.replace_custom_resource_definition(name=name, body=doc)  # type: ignore[arg-type]  # dicts work
                except ApiException as exc2:
                    raise ClusterError(f"{path.name}: replacing CRD {name} failed: {exc2.status} {exc2.body}") from exc2
            names.append(name)
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for name in list(pending):
            conditions = _read_crd(api, name).get("status", {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                pending.discard(name)
        if not pending:
            break
        if time.monotonic() > deadline:
            raise ClusterError(f"CRDs not Established after {timeout:.0f}s: {sorted(pending)}")
        time.sleep(0.1)
    return names


def _read_crd(api, name: str) -> dict:
    resp = api.read_custom_resource_definition(name=name, _preload_content=False)
    return json.loads(resp.data)
