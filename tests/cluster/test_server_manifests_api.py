"""The API server accepts what the renderers build (server-side dry run, nothing is created)."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
from kubernetes import client

from flipt_operator.builders.server_manifests import build_server_manifests
from flipt_operator.models.plan import supports_native_sidecars
from tests.support.servers import database, env, git_server_plan, ok_plan, storage

pytestmark = pytest.mark.cluster


def _git_plan(namespace: str, native: bool):
    return git_server_plan(namespace, native_sidecar=native)


def _plans(namespace: str, native: bool):
    others = [
        ok_plan({"a": env(storage="db")}, {"db": database(url="file:/var/opt/flipt/flipt.db", claimName="data")}),
        ok_plan(
            {"a": env(storage="db")},
            {"db": database(urlSecretRef={"name": "db", "key": "url"},
                            cache={"backend": "redis", "redis": {"host": "r", "passwordSecretRef": {"name": "r", "key": "pw"}}})},
            secrets={"db": {"url"}, "r": {"pw"}},
        ),
        ok_plan({"a": env(storage="files")},
                {"files": storage(local={"path": "/var/opt/flipt/local", "claimName": "flags.v1"})}),
    ]
    return [_git_plan(namespace, native)] + [dataclasses.replace(p, namespace=namespace) for p in others]


def _dry_run(kube_cluster, namespace: str, objects: list[dict]):
    return kube_cluster.kubectl(
        "create", "--validate=false", "--dry-run=server", "-n", namespace, "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )


# Both paths the operator renders, each on a server of its kind: 1.28 (the last before native
# sidecars: the sidecar runs beside Flipt, its first sync in an init container) and a current
# release (native sidecars: an init container with restartPolicy Always).
CLUSTERS = {"fallback_kube_cluster": "v1.28", "current_kube_cluster": "v1.35"}


@pytest.fixture(params=sorted(CLUSTERS))
def cluster_and_namespace(request):
    cluster = request.getfixturevalue(request.param)
    name = f"t-manifests-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(cluster.api_client).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    version = client.VersionApi(cluster.api_client).get_code().git_version
    assert version.startswith(CLUSTERS[request.param]), version  # the server we meant to test
    return cluster, name, version


def test_rendered_servers_are_accepted(cluster_and_namespace):
    cluster, namespace, version = cluster_and_namespace
    native = supports_native_sidecars(version)
    assert native == version.startswith("v1.35")
    for plan in _plans(namespace, native):
        result = _dry_run(cluster, namespace, build_server_manifests(plan).all())
        assert result.returncode == 0, result.stderr


def test_native_sidecar_needs_a_new_enough_server(cluster_and_namespace):
    cluster, namespace, version = cluster_and_namespace
    deployment = build_server_manifests(_git_plan(namespace, native=True)).deployment
    result = _dry_run(cluster, namespace, [deployment])
    assert (result.returncode == 0) == supports_native_sidecars(version), result.stderr
