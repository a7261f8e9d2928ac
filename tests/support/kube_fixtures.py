"""pytest fixtures for tests against a real kube-apiserver (see docs/local-cluster.md).

- `kube_cluster` (session): a `LocalCluster` started once per session, CRDs from `crds/`
  applied (`crds/pre-1.28/`, without CEL rules, on servers before 1.28, as docs/install.md
  says); or the cluster of `$KUBECONFIG` when `FLIPT_TEST_USE_EXISTING_CLUSTER=1`.
- `namespace` (function): a fresh uniquely named namespace per test (never deleted: without
  controllers, namespaces never finish deleting).
- `current_kube_cluster` (session): a current Kubernetes with its controller-manager, scheduler
  and a local node that runs pods (`.node`); `current_namespace` (function): a namespace there,
  deleted after the test.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from flipt_operator.builders.crd_cli import WITHOUT_RULES
from flipt_operator.builders.crds import takes_validation_rules
from flipt_operator.devcluster.build import BuildError, build_apiserver, build_current_apiserver
from flipt_operator.devcluster.cluster import LocalCluster, apply_crds
from flipt_operator.devcluster.pod_runner import NodeProcess, start_node_process
from flipt_operator.devcluster.tools import ensure_kubectl

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO_ROOT / "crds"
USE_EXISTING_ENV = "FLIPT_TEST_USE_EXISTING_CLUSTER"


def apply_project_crds(api: client.ApiClient) -> list[str]:
    """The project's CRDs, in the set this server takes: with CEL rules from 1.28 on, else without."""
    version = client.VersionApi(api).get_code().git_version
    return apply_crds(CRDS_DIR if takes_validation_rules(version) else CRDS_DIR / WITHOUT_RULES, api_client=api)


@dataclass
class KubeCluster:
    """What tests get from `kube_cluster`."""

    kubeconfig: Path
    api_client: client.ApiClient
    kubectl_path: Path
    local: LocalCluster | None = None  # None when an existing cluster is used
    crds: list[str] = field(default_factory=list)
    node: NodeProcess | None = None  # the local node that runs pods (current cluster only)

    @property
    def server(self) -> str:
        return self.api_client.configuration.host

    def kubectl(self, *args: str, check: bool = False, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster; text output captured."""
        return subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, check=check, input=input, timeout=timeout,
        )

    def token_for_service_account(self, namespace: str, name: str, duration: str = "1h") -> str:
        """A TokenRequest token for a ServiceAccount (for RBAC tests); the SA must exist."""
        res = self.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}", check=True)
        return res.stdout.strip()

    def kubeconfig_for_token(self, token: str, path: Path | None = None) -> Path:
        """A kubeconfig like the admin one, but authenticating with `token`."""
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        for user in cfg.get("users", []):
            user["user"] = {"token": token}
        if path is None:
            fd, name = tempfile.mkstemp(prefix="kubeconfig-", dir=self.kubeconfig.parent)
            os.close(fd)
            path = Path(name)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def api_client_for_token(self, token: str) -> client.ApiClient:
        """A `kubernetes.client.ApiClient` that authenticates with `token` (e.g. a service account's)."""
        return config.new_client_from_config(config_file=str(self.kubeconfig_for_token(token)))


def _existing_kubeconfig() -> Path:
    env = os.environ.get("KUBECONFIG", "")
    path = Path(env.split(os.pathsep)[0]) if env else Path.home() / ".kube" / "config"
    if not path.is_file():
        pytest.fail(f"{USE_EXISTING_ENV}=1 but no kubeconfig at {path}")
    return path


_build_error: list[str] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build kube-apiserver (first time only, 3-5 min) before any test runs, outside per-test timeouts."""
    if os.environ.get(USE_EXISTING_ENV) == "1" or session.config.option.collectonly:
        return
    # Tests that start a LocalCluster of their own are marked `cluster` without using kube_cluster.
    if any("kube_cluster" in getattr(item, "fixturenames", ()) or item.get_closest_marker("cluster")
           for item in session.items):
        try:
            build_apiserver()  # a no-op when cached
        except BuildError as exc:
            _build_error.append(str(exc))
    if any("current_kube_cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        try:
            build_current_apiserver()  # with the controller-manager and scheduler; a no-op when cached
        except BuildError as exc:
            _build_error.append(str(exc))


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    kubectl = ensure_kubectl()
    if os.environ.get(USE_EXISTING_ENV) == "1":
        kubeconfig = _existing_kubeconfig()
        api = config.new_client_from_config(config_file=str(kubeconfig))
        crds = apply_project_crds(api)
        yield KubeCluster(kubeconfig=kubeconfig, api_client=api, kubectl_path=kubectl, crds=crds)
        api.close()
        return
    if _build_error:
        pytest.fail(f"cannot build kube-apiserver: {_build_error[0]}", pytrace=False)
    with LocalCluster() as local:
        assert local.kubeconfig is not None
        api = local.api_client()
        crds = apply_project_crds(api)
        try:
            yield KubeCluster(kubeconfig=local.kubeconfig, api_client=api, kubectl_path=kubectl,
                              local=local, crds=crds)
        finally:
            api.close()


@pytest.fixture(scope="session")
def current_kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A second local cluster on a current Kubernetes (devcluster.build.CURRENT_KUBERNETES, built
    from Go modules) with its controller-manager and scheduler, and a local node that runs the pods
    (devcluster.pod_runner), CRDs applied: what needs a server newer than 1.28 (native sidecars,
    CEL) and everything that needs pods to run."""
    if _build_error:
        pytest.fail(f"cannot build kube-apiserver: {_build_error[0]}", pytrace=False)
    with LocalCluster(apiserver=build_current_apiserver(), controllers=True) as local:
        assert local.kubeconfig is not None
        api = local.api_client()
        node = start_node_process(local.kubeconfig, tmp_path_factory.mktemp("local-node"))
        try:
            crds = apply_project_crds(api)
            yield KubeCluster(kubeconfig=local.kubeconfig, api_client=api, kubectl_path=ensure_kubectl(),
                              local=local, crds=crds, node=node)
        finally:
            node.stop()
            api.close()


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A LocalCluster of this test alone, with the project's CRDs: for tests that disturb the API
    server itself (restarts), which the session's shared cluster must not see."""
    if _build_error:
        pytest.fail(f"cannot build kube-apiserver: {_build_error[0]}", pytrace=False)
    with LocalCluster() as local:
        api = local.api_client()
        try:
            apply_project_crds(api)
        finally:
            api.close()
        yield local


def _new_namespace(cluster: KubeCluster, request: pytest.FixtureRequest) -> str:
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{stem}-{uuid.uuid4().hex[:6]}" if stem else f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(cluster.api_client).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"flipt-operator/test": "true"}))
    )
    return name


@pytest.fixture
def namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> str:
    """A fresh namespace for this test; left behind (deletion never completes without controllers)."""
    return _new_namespace(kube_cluster, request)


@pytest.fixture
def current_namespace(current_kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the current cluster, deleted after the test (its namespace controller
    finishes the deletion, and the local node stops the pods)."""
    name = _new_namespace(current_kube_cluster, request)
    yield name
    client.CoreV1Api(current_kube_cluster.api_client).delete_namespace(name)
