"""The namespace pass under a fault of one server, with the real operator and API server: the
failure is recorded on that server's environment and everything else still happens."""

import re

import pytest
from kubernetes import client

from tests.support.deployments import read_deployment
from tests.support.kube_objects import (
    condition,
    condition_is,
    create_custom,
    events_for,
    get_custom,
    patch_custom,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def _foreign_deployment(name: str) -> dict:
    """A Deployment someone else made under the server's name: its selector is immutable, so
    the API server refuses the operator's apply (422 Invalid) whatever the operator forces."""
    labels = {"app": "someone-else"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}}}


def test_one_broken_server_does_not_block_the_others(current_kube_cluster, current_operator, current_namespace):
    # On the current cluster: the healthy servers' pods run and the real Deployment controller
    # reports them available.
    api, operator, namespace = current_kube_cluster.api_client, current_operator, current_namespace
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, _foreign_deployment("b"))
    log_mark = len(operator.logs())
    for server in ("a", "b", "c", "d"):
        create_custom(api, namespace, "FliptEnvironment", f"env-{server}", {"server": server})
    wait_for(lambda: all(read_deployment(api, namespace, s) for s in ("a", "c", "d")),
             message="the healthy servers' Deployments")

    broken = wait_for(lambda: condition_is(api, namespace, "FliptEnvironment", "env-b", "Stalled", "True",
                                           "ApplyFailed"), message="env-b Stalled with ApplyFailed")
    message = condition(broken, "Ready")["message"]
    assert "Deployment b" in message and "immutable" in message, message
    # What precedes the Deployment was applied; the foreign Deployment is as it was.
    assert core.read_namespaced_config_map("b-config", namespace).data
    assert apps.read_namespaced_deployment("b", namespace).spec.selector.match_labels == {"app": "someone-else"}
    # The Event follows the status write: wait for it rather than race it.
    wait_for(lambda: any(e.reason == "ApplyFailed" and e.type == "Warning" for e in events_for(api, namespace, "env-b")),
             timeout=15, message="a Warning event ApplyFailed on env-b")

    # A removed server is still deleted while b keeps failing.
    client.CustomObjectsApi(api).delete_namespaced_custom_object("flipt.io", "v1alpha1", namespace,
                                                                 "fliptenvironments", "env-d")
    wait_for(lambda: read_deployment(api, namespace, "d") is None
             and not core.list_namespaced_config_map(namespace, label_selector="app.kubernetes.io/instance=d").items
             and not core.list_namespaced_service(namespace, label_selector="app.kubernetes.io/instance=d").items,
             message="server d's children deleted")

    # The others reach Ready; b stays Stalled (a person must act: no retry loop for it).
    for server in ("a", "c"):
        env = wait_for(lambda server=server: condition_is(api, namespace, "FliptEnvironment", f"env-{server}", "Ready", "True"),
                       timeout=120, message=f"env-{server} Ready")
        assert env["status"]["server"] == server
    assert condition(get_custom(api, namespace, "FliptEnvironment", "env-b"), "Stalled")["reason"] == "ApplyFailed"
    logs = operator.logs()[log_mark:]
    assert re.search(rf"server {namespace}/b: applying Deployment b failed: 422 ", logs)
    assert not re.search(rf"pass over {namespace}: retrying", logs)
    assert not re.search(rf"pass over {namespace} failed", logs)

    # Once the person removes the foreign Deployment, the next change applies the server.
    apps.delete_namespaced_deployment("b", namespace)
    wait_for(lambda: read_deployment(api, namespace, "b") is None, message="foreign Deployment gone")
    patch_custom(api, namespace, "FliptEnvironment", "env-b", {"metadata": {"labels": {"fixed": "yes"}}})
    dep = wait_for(lambda: read_deployment(api, namespace, "b"), message="server b applied after the fix")
    assert dep.spec.selector.match_labels["app.kubernetes.io/instance"] == "b"
    wait_for(lambda: condition(get_custom(api, namespace, "FliptEnvironment", "env-b"), "Stalled") is None,
             message="env-b no longer Stalled")


def test_a_limit_dropped_from_the_environment_is_removed_from_the_deployment(kube_cluster, operator, namespace):
    api = kube_cluster.api_client
    create_custom(api, namespace, "FliptEnvironment", "solo",
                  {"deployment": {"resources": {"limits": {"cpu": 1, "memory": "256Mi"}}}})

    def flipt_limits():
        dep = read_deployment(api, namespace, "flipt")
        if dep is None:
            return None
        flipt = next(c for c in dep.spec.template.spec.containers if c.name == "flipt")
        return flipt.resources.limits or {}

    # `cpu: 1`, a number in the environment, arrives as the quantity "1".
    wait_for(lambda: flipt_limits() == {"cpu": "1", "memory": "256Mi"}, message="limits rendered")
    patch_custom(api, namespace, "FliptEnvironment", "solo",
                 {"spec": {"deployment": {"resources": {"limits": {"memory": None}}}}})
    wait_for(lambda: flipt_limits() == {"cpu": "1"}, message="memory limit removed")
