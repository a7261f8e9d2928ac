"""End to end with pods: the operator's servers run on the local node and become Ready through the
real scheduler, Deployment and ReplicaSet controllers (nothing here writes a Deployment's status),
on the current release (native sidecars) and on v1.28 (the fallback path).

Flipt itself cannot be built here: Flipt's image runs `flipt_standin` (devcluster), which refuses
to start without the rendered, parseable config file and otherwise answers only /health. The
git-sync sidecar is the real one (the operator's own package) with the command, arguments, mounts
and probes the operator rendered, syncing from a real `git http-backend` with basic auth, which
listens on the node's address (pods cannot reach the host's loopback).
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from flipt_operator.builders.server_manifests import CONFIG_HASH_ANNOTATION
from tests.support.git_servers import _serve_http
from tests.support.kube_objects import condition, condition_is, create_custom, put_secret
from tests.support.operator_fixtures import start_operator
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

FLAGS = {"prod/default/features.yaml": "namespace: default\nflags:\n  - key: banner\n    name: Banner\n"}


@pytest.fixture
def node_git_server(current_kube_cluster, tmp_path):
    """`git http-backend` with basic auth on the local node's address, so pods reach it."""
    assert current_kube_cluster.node is not None
    yield from _serve_http(tmp_path / "http-root", None, host=current_kube_cluster.node.host_ip)


def wait_ready(api, ns, kind, name, timeout=120):
    return wait_for(lambda: condition_is(api, ns, kind, name, "Ready", "True"), timeout=timeout,
                    message=f"{kind}/{name} Ready")


def server_pods(api, ns, server="flipt"):
    return client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"app.kubernetes.io/instance={server}").items


def ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def available(api, ns, name="flipt"):
    dep = client.AppsV1Api(api).read_namespaced_deployment(name, ns)
    status = dep.status
    return (status.observed_generation == dep.metadata.generation and status.updated_replicas == dep.spec.replicas
            and status.available_replicas == dep.spec.replicas and (status.replicas or 0) == dep.spec.replicas) and dep


def git_environment_ready_and_synced(api, ns, git_server):
    """Environment `prod` on git storage `flags` (a repository on `git_server`, basic auth from a
    Secret); returns the repository once the environment is Ready and its sidecar's head reached
    the storage's status."""
    repo = git_server.create_repo("flags", FLAGS)
    put_secret(api, ns, "repo-auth", {"username": "flipt", "password": git_server.users["flipt"]})
    create_custom(api, ns, "FliptCredential", "repo", {"type": "basic", "secretRef": {"name": "repo-auth"}})
    create_custom(api, ns, "FliptStorage", "flags", {"git": {
        "remote": repo.url, "credentialRef": {"name": "repo"}, "pollInterval": "2s"}})
    create_custom(api, ns, "FliptEnvironment", "prod", {"storage": "flags", "directory": "prod", "default": True})
    wait_ready(api, ns, "FliptEnvironment", "prod", timeout=180)
    storage = wait_for(lambda: condition_is(api, ns, "FliptStorage", "flags", "Synced", "True"), timeout=60,
                       message="FliptStorage Synced from the sidecar's /status")
    assert storage["status"]["sync"]["revision"] == repo.head()
    return repo


def test_a_memory_environment_is_ready_through_the_real_controllers(current_kube_cluster, current_operator,
                                                                    current_namespace):
    api, ns = current_kube_cluster.api_client, current_namespace
    create_custom(api, ns, "FliptStorage", "flags", {"memory": {}})
    create_custom(api, ns, "FliptEnvironment", "production",
                  {"storage": "flags", "default": True, "deployment": {"replicas": 2}})
    env = wait_ready(api, ns, "FliptEnvironment", "production")
    assert condition(env, "ServerAvailable")["status"] == "True"
    assert available(api, ns)
    pods = server_pods(api, ns)
    assert len(pods) == 2 and all(ready(p) for p in pods)
    log = current_kube_cluster.node.container_log(ns, pods[0].metadata.name, "flipt")
    assert "flipt stand-in (not Flipt): config /etc/flipt/config/default.yml parsed" in log
    wait_ready(api, ns, "FliptStorage", "flags")


def test_a_git_environment_syncs_through_its_sidecar_rolls_on_a_secret_rotation_and_goes_with_its_environment(
        current_kube_cluster, current_operator, current_namespace, node_git_server):
    api, ns = current_kube_cluster.api_client, current_namespace
    core = client.CoreV1Api(api)
    repo = git_environment_ready_and_synced(api, ns, node_git_server)
    (pod,) = server_pods(api, ns)
    sidecar = next(s for s in pod.status.init_container_statuses if s.name == "git-sync")
    assert sidecar.started and sidecar.ready and sidecar.state.running  # a native sidecar, still running
    before = pod.metadata.annotations[CONFIG_HASH_ANNOTATION]

    # The upstream's password changes and the Secret with it: the pods roll to the new credential.
    node_git_server.users["flipt"] = "rotated-password"
    put_secret(api, ns, "repo-auth", {"username": "flipt", "password": "rotated-password"})

    def rolled():
        pods = server_pods(api, ns)
        return (available(api, ns) and len(pods) == 1 and pods[0].metadata.uid != pod.metadata.uid
                and pods[0].metadata.annotations[CONFIG_HASH_ANNOTATION] != before and ready(pods[0]) and pods[0])
    new_pod = wait_for(rolled, timeout=180, message="a new Ready pod after the Secret rotation, the old one gone")
    head = repo.commit({"prod/default/features.yaml": FLAGS["prod/default/features.yaml"] + "  - key: other\n"
                        "    name: Other\n"}, "a change upstream")
    wait_for(lambda: (s := condition_is(api, ns, "FliptStorage", "flags", "Synced", "True"))
             and s["status"]["sync"]["revision"] == head, timeout=60,
             message="the rolled pod's sidecar syncs with the rotated credential")
    secret_value = "rotated-password"
    assert secret_value not in json.dumps(core.read_namespaced_config_map("flipt-config", ns).data)
    assert secret_value not in current_kube_cluster.node.container_log(ns, new_pod.metadata.name, "git-sync")

    client.CustomObjectsApi(api).delete_namespaced_custom_object("flipt.io", "v1alpha1", ns, "fliptenvironments", "prod")
    wait_for(lambda: not server_pods(api, ns), timeout=90, message="the deleted environment's server pods gone")
    with pytest.raises(client.ApiException) as err:
        client.AppsV1Api(api).read_namespaced_deployment("flipt", ns)
    assert err.value.status == 404


# Each sidecar path on the release it is for, each cluster with its own controllers and node:
# (path, cluster fixture, namespace fixture, release).
SIDECAR_PATHS = [
    ("native-sidecar", "current_kube_cluster", "current_namespace", "v1.35."),
    ("init-container-fallback", "fallback_kube_cluster", "fallback_namespace", "v1.28."),
]


@pytest.fixture(params=SIDECAR_PATHS, ids=[p[0] for p in SIDECAR_PATHS])
def sidecar_path(request):
    """(path, cluster, namespace) on the release the path is for."""
    path, cluster_fixture, namespace_fixture, release = request.param
    cluster = request.getfixturevalue(cluster_fixture)
    assert client.VersionApi(cluster.api_client).get_code().git_version.startswith(release)  # the server we meant
    return path, cluster, request.getfixturevalue(namespace_fixture)


@pytest.fixture
def path_git_server(sidecar_path, tmp_path):
    _, cluster, _ = sidecar_path
    yield from _serve_http(tmp_path / "http-root", None, host=cluster.node.host_ip)


@pytest.fixture
def path_operator(sidecar_path, tmp_path):
    """An operator on that cluster, watching that namespace only."""
    _, cluster, ns = sidecar_path
    op = start_operator(cluster.kubeconfig, tmp_path / "operator.log", extra_args=("--namespace", ns))
    yield op
    op.stop()


def test_the_operator_picks_the_sidecar_path_of_its_server_and_the_pod_runs_it(sidecar_path, path_operator,
                                                                                 path_git_server):
    """The operator reads the server's version and renders a native sidecar (>= 1.29) or the
    fallback (`git-sync --once` as an init container, then the sidecar beside Flipt); the pod runs
    under that release's own controllers, in the shape the operator chose."""
    path, cluster, ns = sidecar_path
    api = cluster.api_client
    git_environment_ready_and_synced(api, ns, path_git_server)
    (pod,) = server_pods(api, ns)
    inits = {s.name: s for s in pod.status.init_container_statuses}
    containers = {s.name: s for s in pod.status.container_statuses}
    if path == "native-sidecar":
        assert set(inits) == {"git-sync"} and inits["git-sync"].state.running and inits["git-sync"].ready
        assert set(containers) == {"flipt"}
    else:
        assert set(inits) == {"git-sync-init"}
        assert inits["git-sync-init"].state.terminated.exit_code == 0
        assert set(containers) == {"flipt", "git-sync"} and all(s.ready for s in containers.values())


def test_a_local_storage_on_a_claim_is_ready_with_the_claim_bound_and_mounted(current_kube_cluster, current_operator,
                                                                               current_namespace):
    api, ns = current_kube_cluster.api_client, current_namespace
    core = client.CoreV1Api(api)
    core.create_namespaced_persistent_volume_claim(ns, {
        "metadata": {"name": "flags"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    })
    create_custom(api, ns, "FliptStorage", "files", {"local": {"path": "/var/opt/flipt/local", "claimName": "flags"}})
    create_custom(api, ns, "FliptEnvironment", "prod", {"storage": "files", "default": True})
    wait_ready(api, ns, "FliptEnvironment", "prod")
    wait_ready(api, ns, "FliptStorage", "files")
    assert core.read_namespaced_persistent_volume_claim("flags", ns).status.phase == "Bound"
    (pod,) = server_pods(api, ns)
    assert ready(pod)
    dep = client.AppsV1Api(api).read_namespaced_deployment("flipt", ns)
    assert dep.spec.strategy.type == "Recreate"  # a ReadWriteOnce claim: the old pod stops first
