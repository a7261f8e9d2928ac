"""FliptEnvironment and FliptStorage against the real API server: servers rendered, rules
enforced, references healed, pods rolled on changes, nothing written when nothing changed."""

import json
import re

import pytest
import yaml
from kubernetes import client

from tests.support.kube_objects import (
    condition,
    condition_is,
    create_custom,
    get_custom,
    patch_custom,
    put_secret,
)
from tests.support.operator_fixtures import metric_value
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def apps(api):
    return client.AppsV1Api(api)


def deployment(api, ns, name):
    try:
        return apps(api).read_namespaced_deployment(name, ns)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def wait_condition(api, ns, kind, name, type_, status, reason=None, timeout=20):
    return wait_for(lambda: condition_is(api, ns, kind, name, type_, status, reason), timeout=timeout,
                    message=f"{kind}/{name} {type_}={status} {reason or ''}")


def test_environments_become_one_server_and_ready_once_it_is_available(current_kube_cluster, current_operator,
                                                                        current_namespace):
    # On the current cluster: its pods run on the local node and the real Deployment controller
    # reports the server available.
    kube_cluster, namespace = current_kube_cluster, current_namespace
    api = kube_cluster.api_client
    create_custom(api, namespace, "FliptStorage", "flags", {"memory": {}})
    create_custom(api, namespace, "FliptEnvironment", "production",
                  {"storage": "flags", "default": True, "directory": "production",
                   "deployment": {"replicas": 2}})
    create_custom(api, namespace, "FliptEnvironment", "staging", {"storage": "flags", "directory": "staging"})
    def owned_by_both():
        dep = deployment(api, namespace, "flipt")
        owners = sorted(o.name for o in dep.metadata.owner_references or []) if dep else []
        return dep if owners == ["production", "staging"] else None

    # The first pass may run before the second environment exists; wait for the one that saw both.
    dep = wait_for(owned_by_both, message="Deployment flipt owned by both environments")
    assert dep.spec.replicas == 2
    core = client.CoreV1Api(api)
    svc = core.read_namespaced_service("flipt", namespace)
    assert {p.port for p in svc.spec.ports} == {8080, 9000}
    config = yaml.safe_load(core.read_namespaced_config_map("flipt-config", namespace).data["default.yml"])
    assert config["environments"]["production"]["default"] is True
    assert config["environments"]["staging"]["directory"] == "staging"
    assert config["storage"]["flags"]["backend"]["type"] == "memory"
    core.read_namespaced_service_account("flipt", namespace)

    env = wait_condition(api, namespace, "FliptEnvironment", "production", "Ready", "False")
    assert condition(env, "Reconciling")["status"] == "True"
    env = wait_condition(api, namespace, "FliptEnvironment", "production", "Ready", "True", timeout=120)
    assert condition(env, "ServerAvailable")["status"] == "True"
    assert env["status"]["server"] == "flipt"
    storage = wait_condition(api, namespace, "FliptStorage", "flags", "Ready", "True")
    assert storage["status"]["backend"] == "memory" and storage["status"]["server"] == "flipt"
    out = kube_cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "fenv", "--all", "--timeout=20s")
    assert out.returncode == 0, out.stderr


def test_two_defaults_stall_both_and_fixing_one_heals(kube_cluster, operator, namespace):
    api = kube_cluster.api_client
    for name in ("a", "b"):
        create_custom(api, namespace, "FliptEnvironment", name, {"default": True, "directory": name})
    env = wait_condition(api, namespace, "FliptEnvironment", "a", "Stalled", "True")
    assert "spec.default" in condition(env, "Stalled")["message"]
    wait_condition(api, namespace, "FliptEnvironment", "b", "Stalled", "True")
    # A broken plan changes nothing that runs: whatever was rendered before stays as it was.
    config_map = client.CoreV1Api(api).list_namespaced_config_map(namespace).items
    for cm in config_map:
        if cm.metadata.name == "flipt-config":
            assert len(yaml.safe_load(cm.data["default.yml"])["environments"]) == 1
    patch_custom(api, namespace, "FliptEnvironment", "b", {"spec": {"default": False}})
    wait_for(lambda: len(yaml.safe_load(client.CoreV1Api(api).read_namespaced_config_map(
        "flipt-config", namespace).data["default.yml"])["environments"]) == 2, message="server after the fix")
    wait_for(lambda: condition(get_custom(api, namespace, "FliptEnvironment", "a"), "Stalled") is None)


def test_missing_storage_heals_when_created_without_touching_the_environment(kube_cluster, operator, namespace):
    api = kube_cluster.api_client
    create_custom(api, namespace, "FliptEnvironment", "prod", {"storage": "flags", "default": True})
    env = wait_condition(api, namespace, "FliptEnvironment", "prod", "Stalled", "True", "StorageNotFound")
    assert "spec.storage" in condition(env, "Ready")["message"]
    generation = env["metadata"]["generation"]
    create_custom(api, namespace, "FliptStorage", "flags", {"memory": {}})
    wait_for(lambda: deployment(api, namespace, "flipt"), message="server once the storage exists")
    wait_for(lambda: condition(get_custom(api, namespace, "FliptEnvironment", "prod"), "Stalled") is None)
    assert get_custom(api, namespace, "FliptEnvironment", "prod")["metadata"]["generation"] == generation


def test_git_storage_wires_the_sidecar_and_secret_rotation_rolls_the_pods(kube_cluster, operator, namespace):
    api = kube_cluster.api_client
    create_custom(api, namespace, "FliptStorage", "flags",
                  {"git": {"remote": "https://git.example.com/flags.git", "credentialRef": {"name": "repo"},
                           "pollInterval": "10s"}})
    create_custom(api, namespace, "FliptEnvironment", "prod", {"storage": "flags", "default": True})
    storage = wait_condition(api, namespace, "FliptStorage", "flags", "Stalled", "True")
    assert "credentialRef" in condition(storage, "Stalled")["message"]
    put_secret(api, namespace, "repo-token", {"token": "t0ken-value-never-shown"})
    create_custom(api, namespace, "FliptCredential", "repo", {"type": "accessToken", "secretRef": {"name": "repo-token"}})
    dep = wait_for(lambda: deployment(api, namespace, "flipt"), timeout=30, message="server with git storage")
    pod = dep.spec.template.spec
    containers = [c.name for c in [*(pod.init_containers or []), *pod.containers]]
    assert "git-sync" in containers
    config = client.CoreV1Api(api).read_namespaced_config_map("flipt-config", namespace).data
    flipt = yaml.safe_load(config["default.yml"])
    # Flipt's remote is the sidecar on loopback; the upstream URL and the credential stay with the sidecar.
    assert flipt["storage"]["flags"]["remote"] == "http://127.0.0.1:8091/flags.git"
    assert "git.example.com" not in config["default.yml"] and "credentials" not in flipt
    assert "t0ken-value-never-shown" not in json.dumps(config)
    before = dep.spec.template.metadata.annotations["flipt.io/config-hash"]
    put_secret(api, namespace, "repo-token", {"token": "t0ken-value-rotated"})
    wait_for(lambda: deployment(api, namespace, "flipt").spec.template.metadata.annotations["flipt.io/config-hash"]
             != before, timeout=15, message="pods rolled after the Secret rotation")
    storage = wait_condition(api, namespace, "FliptStorage", "flags", "Ready", "True")
    assert condition(storage, "CredentialsValid")["status"] == "True"
    assert condition(storage, "Synced")["status"] == "Unknown"


def test_unchanged_pass_writes_nothing_and_last_environment_removes_the_server(current_kube_cluster, current_operator,
                                                                                current_namespace):
    operator, namespace = current_operator, current_namespace
    api = current_kube_cluster.api_client
    create_custom(api, namespace, "FliptEnvironment", "solo", {})
    wait_for(lambda: deployment(api, namespace, "flipt"), message="server")
    env = wait_condition(api, namespace, "FliptEnvironment", "solo", "Ready", "True", timeout=120)
    assert env["status"]["storageBackend"] == "memory"
    assert env["status"]["conditions"][0]["reason"] == "FlagsNotPersisted"
    dep_version = deployment(api, namespace, "flipt").metadata.resource_version
    # A label change triggers a pass; nothing it renders has changed.
    core = client.CoreV1Api(api)

    def core_versions():
        return (core.read_namespaced_config_map("flipt-config", namespace).metadata.resource_version,
                core.read_namespaced_service("flipt", namespace).metadata.resource_version,
                core.read_namespaced_service_account("flipt", namespace).metadata.resource_version)

    versions_before = core_versions()
    # The label change triggers a pass (its own, or one more after a pass under way): wait until
    # a pass over the namespace has finished after it, rather than sleeping and hoping.
    log_mark = len(operator.logs())
    labelled = patch_custom(api, namespace, "FliptEnvironment", "solo", {"metadata": {"labels": {"team": "a"}}})
    wait_for(lambda: f"pass over {namespace} done" in operator.logs()[log_mark:], timeout=20,
             message="a pass after the label change")
    wait_for(lambda: metric_value(operator.metrics(), "flipt_operator_passes_in_progress") == 0, timeout=20,
             message="no pass under way")
    assert deployment(api, namespace, "flipt").metadata.resource_version == dep_version
    env = get_custom(api, namespace, "FliptEnvironment", "solo")
    # The pass that the label change triggered wrote nothing: not the status, not the label's
    # object again (the label write is the last version), not the server's objects.
    assert env["status"] == labelled["status"]
    assert env["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]
    assert core_versions() == versions_before
    # A merge patch that changes nothing keeps the resourceVersion, so check that none was sent.
    assert not re.search(rf"(created|patched|deleted) \w+ {namespace}/", operator.logs()[log_mark:])
    client.CustomObjectsApi(api).delete_namespaced_custom_object("flipt.io", "v1alpha1", namespace,
                                                                 "fliptenvironments", "solo")
    wait_for(lambda: deployment(api, namespace, "flipt") is None, message="server removed with its last environment")
    wait_for(lambda: not core.list_namespaced_config_map(namespace, label_selector="app.kubernetes.io/instance=flipt").items
             and not core.list_namespaced_service(namespace, label_selector="app.kubernetes.io/instance=flipt").items,
             message="ConfigMap and Service removed too")


def test_a_spec_change_runs_one_pass_not_one_more_for_the_operators_own_write(bare_kube_cluster, bare_operator,
                                                                             bare_namespace):
    """The operator's own apply of the Deployment comes back as a watch event; it is no news.
    (On the bare cluster no Deployment controller runs, so nothing else reports in between.)"""
    api, operator, namespace = bare_kube_cluster.api_client, bare_operator, bare_namespace
    create_custom(api, namespace, "FliptEnvironment", "solo", {"deployment": {"replicas": 1}})
    wait_for(lambda: deployment(api, namespace, "flipt"), message="server")

    def passes(since: int) -> int:
        return operator.logs()[since:].count(f"pass over {namespace} ")

    def settled() -> bool:
        return metric_value(operator.metrics(), "flipt_operator_passes_in_progress") == 0

    wait_for(settled, timeout=20, message="no pass under way")
    mark = len(operator.logs())
    patch_custom(api, namespace, "FliptEnvironment", "solo", {"spec": {"deployment": {"replicas": 2}}})
    wait_for(lambda: deployment(api, namespace, "flipt").spec.replicas == 2, timeout=20, message="replicas applied")
    wait_for(lambda: passes(mark) >= 1 and settled(), timeout=20, message="the pass over the change")
    assert re.search(rf"patched Deployment {namespace}/flipt", operator.logs()[mark:])
    assert passes(mark) == 1, operator.logs()[mark:]
