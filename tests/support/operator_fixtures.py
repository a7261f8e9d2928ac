"""Run the real operator (`flipt-operator run`) as a subprocess against the test cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flipt_operator.devcluster.cluster import free_port  # noqa: F401 - re-exported for tests
from tests.support.kube_fixtures import OPERATOR_NAMESPACE_PREFIX, OPERATOR_NAMESPACES
from tests.support.waiting import wait_for


def metric_value(exposition: str, name: str, label_filter: str = "") -> float:
    """Sum of a metric's samples (optionally those whose labels contain `label_filter`)."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name) and not line.startswith("#") and label_filter in line:
            sample = line.split("{")[0] if "{" in line else line.split()[0]
            if sample in (name, name.removesuffix("_total") + "_total"):
                total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class OperatorProcess:
    process: subprocess.Popen
    log_path: Path
    metrics_port: int
    liveness_port: int

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_operator(kubeconfig: Path, log_path: Path, *, extra_args: tuple[str, ...] = (),
                   env: dict[str, str] | None = None, verbose: bool = True) -> OperatorProcess:
    """`verbose`: debug logs, which tests wait on (a benchmark measures without them)."""
    metrics_port, liveness_port = free_port(), free_port()
    args = [
        sys.executable, "-m", "flipt_operator", "run",
        "--metrics-port", str(metrics_port),
        "--liveness", f"http://127.0.0.1:{liveness_port}/healthz",
        *(["--verbose"] if verbose else []), *extra_args,
    ]
    log = open(log_path, "ab")
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT,
        # Poll sidecars every second so sync state reaches status quickly in tests.
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "FLIPT_OPERATOR_SYNC_POLL_SECONDS": "1", **(env or {})},
    )
    op = OperatorProcess(process, log_path, metrics_port, liveness_port)

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"operator exited with {process.returncode}:\n{op.logs()[-3000:]}")
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{liveness_port}/healthz", timeout=2) as r:
            return r.status == 200

    try:
        wait_for(healthy, timeout=60, message="operator liveness endpoint")
    except BaseException:
        op.stop()  # an operator that never came up must not outlive the test run
        raise
    return op


def _wait_until_it_finds_new_namespaces(cluster, op: OperatorProcess) -> None:
    """A namespace made as the operator starts watching a pattern: the case kopf alone served only
    once the namespace changed (3 minutes later in one run; handlers/kopf_namespaces.py). Every
    session checks it again here, before the first test's namespace depends on it."""
    from kubernetes import client

    name = f"{OPERATOR_NAMESPACE_PREFIX}warm-up-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(cluster.api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        wait_for(lambda: f"in '{name}'" in op.logs(), timeout=60, message=f"the operator watching {name}")
    finally:
        core.delete_namespace(name)


def _session_operator(cluster, log_dir: Path) -> Iterator[OperatorProcess]:
    """An operator watching the `op-*` namespaces of `cluster`, stopped after the session."""
    op = start_operator(cluster.kubeconfig, log_dir / "operator.log", extra_args=("--namespace", OPERATOR_NAMESPACES))
    try:
        _wait_until_it_finds_new_namespaces(cluster, op)
    except BaseException:
        op.stop()  # it must not outlive a setup that failed
        raise
    yield op
    op.stop()
    assert op.process.returncode in (0, -signal.SIGTERM), op.logs()[-3000:]


@pytest.fixture(scope="session")
def operator(kube_cluster, tmp_path_factory) -> Iterator[OperatorProcess]:
    """One operator for the session, watching the namespaces of the `namespace` fixture (a pattern:
    the cluster is shared with tests that run operators of their own)."""
    yield from _session_operator(kube_cluster, tmp_path_factory.mktemp("operator"))


@pytest.fixture(scope="session")
def bare_operator(bare_kube_cluster, tmp_path_factory) -> Iterator[OperatorProcess]:
    """The same on the bare cluster (`bare_namespace`'s namespaces)."""
    yield from _session_operator(bare_kube_cluster, tmp_path_factory.mktemp("bare-operator"))


@pytest.fixture
def current_operator(current_kube_cluster, current_namespace, tmp_path) -> Iterator[OperatorProcess]:
    """An operator on the current cluster (controllers and a local node: the pods it renders run),
    watching only this test's namespace: a session-wide one would delete, as orphans, the servers
    other tests apply straight from the renderers."""
    op = start_operator(current_kube_cluster.kubeconfig, tmp_path / "operator.log",
                        extra_args=("--namespace", current_namespace))
    yield op
    op.stop()
    assert op.process.returncode in (0, -signal.SIGTERM), op.logs()[-3000:]
