"""The API server accepts what the renderers build (server-side dry run, nothing is created)."""

from __future__ import annotations

import dataclasses
import json

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


def test_rendered_servers_are_accepted(kube_cluster, namespace):
    native = supports_native_sidecars(client.VersionApi(kube_cluster.api_client).get_code().git_version)
    for plan in _plans(namespace, native):
        result = _dry_run(kube_cluster, namespace, build_server_manifests(plan).all())
        assert result.returncode == 0, result.stderr


def test_native_sidecar_needs_a_new_enough_server(kube_cluster, namespace):
    version = client.VersionApi(kube_cluster.api_client).get_code().git_version
    deployment = build_server_manifests(_git_plan(namespace, native=True)).deployment
    result = _dry_run(kube_cluster, namespace, [deployment])
    assert (result.returncode == 0) == supports_native_sidecars(version), result.stderr
