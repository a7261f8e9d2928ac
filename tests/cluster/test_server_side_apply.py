"""`Kube.apply_object` against the real API server: what the operator stops rendering is removed,
a strategy switch is accepted, quantities in another spelling are not rewritten, and an apply
that would change nothing sends no write (and, in the steady state, no request at all).

On the bare cluster (tests/support/on_bare_cluster.py): the tests compare resource versions, which
the real Deployment and Job controllers would move on with their own writes."""

from __future__ import annotations

import dataclasses
import json

import pytest
from kubernetes import client

from flipt_operator.builders.server_manifests import build_server_manifests
from flipt_operator.clients.kube import APPLIED_HASH_ANNOTATION, FIELD_MANAGER, Kube
from tests.support import on_bare_cluster
from tests.support.servers import database, env, ok_plan

# On the bare cluster (see the module's docstring).
kube_cluster = on_bare_cluster.kube_cluster
namespace = on_bare_cluster.namespace

pytestmark = pytest.mark.cluster


class CountingKube(Kube):
    """The real client, counting the apply requests it sends (dry runs apart)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        super().__init__(api_client)
        self.applies: list[str] = []

    def _server_side_apply(self, manifest, *, dry_run=False):
        self.applies.append("dry-run" if dry_run else "apply")
        return super()._server_side_apply(manifest, dry_run=dry_run)


def _manifests(namespace: str, **deployment):
    plan = ok_plan({"a": env(deployment=deployment)} if deployment else {"a": env()})
    return _placed(build_server_manifests(dataclasses.replace(plan, namespace=namespace)), namespace)


def _placed(built, namespace: str):
    """In the namespace, without the managed-by label: the session's operator watches every
    namespace and would delete labelled objects that no environment asks for."""
    for manifest in built.all():
        manifest["metadata"]["namespace"] = namespace
        del manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    return built


def _flipt_container(deployment: dict) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "flipt")


def test_a_limit_no_longer_rendered_is_removed(kube_cluster, namespace):
    kube = Kube(kube_cluster.api_client)
    limited = _manifests(namespace, resources={"limits": {"memory": "256Mi", "cpu": "2"}}).deployment
    assert kube.apply_object(limited)[0] == "created"
    outcome, stored = kube.apply_object(_manifests(namespace, resources={"limits": {"cpu": "2"}}).deployment)
    assert outcome == "patched"
    assert _flipt_container(stored)["resources"] == {"limits": {"cpu": "2"}}
    outcome, stored = kube.apply_object(_manifests(namespace).deployment)
    assert outcome == "patched"
    assert _flipt_container(stored).get("resources", {}) == {}
    live = client.AppsV1Api(kube_cluster.api_client).read_namespaced_deployment("flipt", namespace)
    assert live.spec.template.spec.containers[0].resources.limits is None


def test_a_config_map_key_no_longer_rendered_is_removed(kube_cluster, namespace):
    kube = Kube(kube_cluster.api_client)
    config_map = _manifests(namespace).config_map
    two_keys = {**config_map, "data": {**config_map["data"], "git-sync.yaml": "storages: []\n"}}
    kube.apply_object(two_keys)
    outcome, stored = kube.apply_object(config_map)
    assert outcome == "patched"
    assert set(stored["data"]) == set(config_map["data"]) and "git-sync.yaml" not in stored["data"]


def test_rolling_update_to_recreate_is_accepted(kube_cluster, namespace):
    kube = Kube(kube_cluster.api_client)
    rolling = _manifests(namespace).deployment
    assert rolling["spec"]["strategy"]["type"] == "RollingUpdate"
    kube.apply_object(rolling)
    # The same server moved to SQLite on a claim: one pod at a time.
    sqlite = ok_plan({"a": env(storage="db")}, {"db": database(url="file:/var/opt/flipt/flipt.db", claimName="data")})
    recreate = _placed(build_server_manifests(dataclasses.replace(sqlite, namespace=namespace)), namespace).deployment
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}
    outcome, stored = kube.apply_object(recreate)
    assert outcome == "patched"
    assert stored["spec"]["strategy"] == {"type": "Recreate"}
    # And back: the API server's defaults fill what the operator does not set.
    outcome, stored = kube.apply_object(rolling)
    assert stored["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}


def test_quantities_in_another_spelling_are_not_rewritten(kube_cluster, namespace):
    kube = CountingKube(kube_cluster.api_client)
    # `cpu: 1` as a number (the CRD allows it) and 0.5 as the API server will not store it.
    manifest = _manifests(namespace, resources={"limits": {"cpu": 1, "memory": "1024Mi"},
                                                "requests": {"cpu": "0.5"}}).deployment
    outcome, stored = kube.apply_object(manifest)
    assert outcome == "created"
    assert _flipt_container(stored)["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"},
                                                     "requests": {"cpu": "500m"}}
    version = stored["metadata"]["resourceVersion"]
    kube.applies.clear()
    # Read back as the next pass would (its listing), and also looked up by the client.
    listed = client.AppsV1Api(kube_cluster.api_client).list_namespaced_deployment(namespace, _preload_content=False)
    item = json.loads(listed.data)["items"][0]
    assert kube.apply_object(manifest, item) == ("unchanged", item)
    assert kube.apply_object(manifest)[0] == "unchanged"
    assert kube.applies == []  # not even a dry run
    live = client.AppsV1Api(kube_cluster.api_client).read_namespaced_deployment("flipt", namespace)
    assert live.metadata.resource_version == version


def test_unchanged_apply_sends_nothing_and_a_foreign_change_is_taken_back(kube_cluster, namespace):
    kube = CountingKube(kube_cluster.api_client)
    for manifest in _manifests(namespace).all():
        assert kube.apply_object(manifest)[0] == "created"
    kube.applies.clear()
    for manifest in _manifests(namespace).all():
        assert kube.apply_object(manifest)[0] == "unchanged"
    assert kube.applies == []
    core = client.CoreV1Api(kube_cluster.api_client)
    # Someone else adds a label of their own: nothing of ours changed, nothing to write (a dry
    # run may confirm it, a write would be a defect).
    core.patch_namespaced_service("flipt", namespace, {"metadata": {"labels": {"team": "a"}}})
    version = core.read_namespaced_service("flipt", namespace).metadata.resource_version
    service = _manifests(namespace).service
    assert kube.apply_object(service)[0] == "unchanged"
    assert core.read_namespaced_service("flipt", namespace).metadata.resource_version == version
    # Someone else changes a port we set: the operator's value wins (forced apply).
    core.patch_namespaced_service("flipt", namespace, {"spec": {"ports": [{"port": 8080, "name": "http",
                                                                          "targetPort": "other"}]}})
    outcome, stored = kube.apply_object(service)
    assert outcome == "patched"
    assert {p["name"]: p["targetPort"] for p in stored["spec"]["ports"]} == {"http": "http", "grpc": "grpc"}
    assert stored["metadata"]["labels"]["team"] == "a"  # not ours: left alone


def test_a_dry_run_decides_when_the_cheap_check_cannot(kube_cluster, namespace):
    kube = CountingKube(kube_cluster.api_client)
    manifest = _manifests(namespace).service_account
    kube.apply_object(manifest)
    core = client.CoreV1Api(kube_cluster.api_client)
    # The hash annotation is gone (edited away): the cheap check cannot vouch for the object.
    core.patch_namespaced_service_account("flipt", namespace,
                                          {"metadata": {"annotations": {APPLIED_HASH_ANNOTATION: None}}})
    kube.applies.clear()
    outcome, stored = kube.apply_object(manifest)
    assert (outcome, kube.applies) == ("patched", ["dry-run", "apply"])
    assert APPLIED_HASH_ANNOTATION in stored["metadata"]["annotations"]
    managers = {m["manager"]: m["operation"] for m in stored["metadata"]["managedFields"]}
    assert managers[FIELD_MANAGER] == "Apply"


def test_a_job_applied_again_is_untouched_and_its_marker_keeps_what_the_operator_set(kube_cluster, namespace):
    kube = CountingKube(kube_cluster.api_client)
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "migrate", "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "migrate"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "migrate", "image": "flipt:v1", "args": ["migrate"]}]}}},
    }
    outcome, created = kube.apply_object(job, None)
    assert outcome == "created"
    # Created meanwhile by another pass (the caller saw none): the same manifest is accepted and
    # changes nothing, least of all the immutable pod template.
    outcome, again = kube.apply_object(job, None)
    assert outcome == "patched"  # what the caller can tell without the version it never saw
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    kube.annotate("Job", namespace, "migrate", {"flipt.io/cache-purged": "3"})
    kube.applies.clear()
    outcome, stored = kube.apply_object(job)
    assert (outcome, kube.applies) == ("unchanged", [])
    assert stored["metadata"]["labels"]["app.kubernetes.io/name"] == "migrate"
    assert stored["metadata"]["annotations"]["flipt.io/cache-purged"] == "3"


def test_a_changed_manifest_is_applied_without_a_dry_run(kube_cluster, namespace):
    kube = CountingKube(kube_cluster.api_client)
    manifest = _manifests(namespace).service_account
    kube.apply_object(manifest)
    meta = manifest["metadata"]
    changed = {**manifest, "metadata": {**meta, "labels": {**(meta.get("labels") or {}), "tier": "edge"}}}
    kube.applies.clear()
    # Another applied hash than the live one: our own manifest changed, so the write is certain.
    outcome, stored = kube.apply_object(changed)
    assert (outcome, kube.applies) == ("patched", ["apply"])
    assert stored["metadata"]["labels"]["tier"] == "edge"
