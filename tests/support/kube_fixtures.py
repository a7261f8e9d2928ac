"""pytest fixtures for tests against a real Kubernetes (see docs/local-cluster.md).

- `current_kube_cluster` (session): the current release (build.CURRENT_KUBERNETES) with its
  controller-manager, scheduler and a local node that runs pods (`.node`), CRDs from `crds/`
  applied; or the cluster of `$KUBECONFIG` when `FLIPT_TEST_USE_EXISTING_CLUSTER=1`.
  `kube_cluster` is the same cluster (the name the tests without pods use).
- `namespace` / `current_namespace` (function): a fresh namespace there, deleted after the test;
  `namespace`'s are the ones the session's `operator` watches (`OPERATOR_NAMESPACES`).
- `fallback_kube_cluster` (session, started on first use): the last release before native
  sidecars (build.FALLBACK_KUBERNETES), also with controllers and a node: the operator's fallback
  pod shape runs there. `fallback_namespace` (function): a namespace there.
- `bare_kube_cluster` (session, started on first use): the current API server alone, no
  controllers, the CRDs without CEL rules, for tests that stand in for a controller (the migration
  Job in test_database.py) or need a server without the rules; `bare_namespace` a namespace there.
  `tests/support/on_bare_cluster.py` points a module's `kube_cluster`, `namespace` and `operator`
  at it.
"""

from __future__ import annotations

import contextlib
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
from flipt_operator.devcluster.build import CURRENT_KUBERNETES, FALLBACK_KUBERNETES, RELEASES, BuildError, build_kubernetes
from flipt_operator.devcluster.cluster import LocalCluster, apply_crds
from flipt_operator.devcluster.pod_runner import NodeProcess, start_node_process
from flipt_operator.devcluster.tools import ensure_kubectl

REPO_ROOT = Path(__file__).resolve().parents[2]
# The namespaces the `namespace` fixture makes and the session's operator watches (a pattern): the
# tests with an operator of their own (current_operator, ...) use other names on the same cluster.
OPERATOR_NAMESPACE_PREFIX = "op-"
OPERATOR_NAMESPACES = f"{OPERATOR_NAMESPACE_PREFIX}*"
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

_CLUSTER_FIXTURES = {"kube_cluster", "current_kube_cluster", "bare_kube_cluster", "fallback_kube_cluster"}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build every release (first time only, 15 minutes or more each on shared cores) before any
    test runs, outside per-test timeouts, when a collected test needs a cluster: a cluster test may
    use either release, through a fixture, a parametrized one, or a cluster of its own."""
    if os.environ.get(USE_EXISTING_ENV) == "1" or session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("cluster") or _CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ()))
               for item in session.items):
        return
    for release in RELEASES:
        try:
            build_kubernetes(release)  # a no-op when cached
        except BuildError as exc:
            _build_error.append(str(exc))


def _fail_on_build_error() -> None:
    if _build_error:
        pytest.fail(f"cannot build Kubernetes: {_build_error[0]}", pytrace=False)


@contextlib.contextmanager
def _cluster_with_pods(release: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A LocalCluster of `release` with its controllers and a local node, CRDs applied."""
    _fail_on_build_error()
    with LocalCluster(release=release, controllers=True) as local:
        assert local.kubeconfig is not None
        api = local.api_client()
        node = start_node_process(local.kubeconfig, tmp_path_factory.mktemp(f"local-node-{release}"))
        try:
            crds = apply_project_crds(api)
            yield KubeCluster(kubeconfig=local.kubeconfig, api_client=api, kubectl_path=ensure_kubectl(),
                              local=local, crds=crds, node=node)
        finally:
            node.stop()
            api.close()


@pytest.fixture(scope="session")
def current_kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """The current release with its controller-manager and scheduler and a local node that runs the
    pods (devcluster.pod_runner), CRDs applied: native sidecars, CEL rules, running servers, and the
    tests that need no pods."""
    if os.environ.get(USE_EXISTING_ENV) == "1":
        kubeconfig = _existing_kubeconfig()
        api = config.new_client_from_config(config_file=str(kubeconfig))
        crds = apply_project_crds(api)
        yield KubeCluster(kubeconfig=kubeconfig, api_client=api, kubectl_path=ensure_kubectl(), crds=crds)
        api.close()
        return
    with _cluster_with_pods(CURRENT_KUBERNETES, tmp_path_factory) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kube_cluster(current_kube_cluster: KubeCluster) -> KubeCluster:
    """The session's cluster (the current one), for tests that do not care which release runs."""
    return current_kube_cluster


@pytest.fixture(scope="session")
def fallback_kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """The last release before native sidecars with its controllers and a local node: the pods of
    the operator's fallback path (`git-sync --once` as an init container, the sidecar beside Flipt)
    run under that release's controllers."""
    with _cluster_with_pods(FALLBACK_KUBERNETES, tmp_path_factory) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def bare_kube_cluster() -> Iterator[KubeCluster]:
    """The current API server alone (no controllers, no node) with the CRDs without CEL rules
    (crds/pre-1.28/): for tests that report a controller's progress by hand, which a real controller
    would overwrite, and for the operator's own checks of what a server without the rules stores."""
    _fail_on_build_error()
    with LocalCluster() as local:
        assert local.kubeconfig is not None
        api = local.api_client()
        try:
            yield KubeCluster(kubeconfig=local.kubeconfig, api_client=api, kubectl_path=ensure_kubectl(),
                              local=local, crds=apply_crds(CRDS_DIR / WITHOUT_RULES, api_client=api))
        finally:
            api.close()


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A LocalCluster of this test alone, with the project's CRDs: for tests that disturb the API
    server itself (restarts), which the session's shared cluster must not see."""
    _fail_on_build_error()
    with LocalCluster() as local:
        api = local.api_client()
        try:
            apply_project_crds(api)
        finally:
            api.close()
        yield local


def _new_namespace(cluster: KubeCluster, request: pytest.FixtureRequest, prefix: str = "t-") -> str:
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{prefix}{stem}-{uuid.uuid4().hex[:6]}" if stem else f"{prefix}{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(cluster.api_client).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"flipt-operator/test": "true"}))
    )
    return name


def _namespace_for_the_test(cluster: KubeCluster, request: pytest.FixtureRequest, prefix: str = "t-") -> Iterator[str]:
    """A fresh namespace, deleted after the test (the namespace controller finishes the deletion and
    the local node stops the pods; on a cluster without controllers it stays Terminating)."""
    name = _new_namespace(cluster, request, prefix)
    yield name
    client.CoreV1Api(cluster.api_client).delete_namespace(name)


@pytest.fixture
def namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the session's cluster, watched by the session's `operator`."""
    yield from _namespace_for_the_test(kube_cluster, request, OPERATOR_NAMESPACE_PREFIX)


@pytest.fixture
def current_namespace(current_kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the current cluster that the session's `operator` does not watch."""
    yield from _namespace_for_the_test(current_kube_cluster, request)


@pytest.fixture
def bare_namespace(bare_kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the bare cluster, watched by `bare_operator` (it stays Terminating)."""
    yield from _namespace_for_the_test(bare_kube_cluster, request, OPERATOR_NAMESPACE_PREFIX)


@pytest.fixture
def bare_unwatched_namespace(bare_kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the bare cluster that no session operator watches: for tests that count
    what their own operator does (no controller, no other operator writes there)."""
    yield from _namespace_for_the_test(bare_kube_cluster, request)


@pytest.fixture
def fallback_namespace(fallback_kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the fallback cluster."""
    yield from _namespace_for_the_test(fallback_kube_cluster, request)
