"""The Helm chart installed into the real API server, and the operator running as the chart's
ServiceAccount (not admin): its RBAC is exactly enough for the main scenarios, a namespaced
release needs nothing cluster-wide, and a missing permission is a clear error, not a hang.

No kube-controller-manager runs here, so the chart's own Deployment never gets pods: each
test runs `flipt-operator run` locally with the ServiceAccount's token instead.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.support.chart import install, make_namespace, no_admin_operator  # noqa: F401
from tests.support.deployments import read_deployment
from tests.support.kube_objects import condition, condition_is, create_custom, get_custom, put_secret
from tests.support.operator_fixtures import OperatorProcess, start_operator
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

FORBIDDEN_HINTS = ("forbidden", "Forbidden", "Not enough permissions", "(403)")
# A 403 from the NamespaceLifecycle admission plugin, not from RBAC: a cluster-wide release on the
# shared cluster also sees other tests' namespaces while they are deleted.
NAMESPACE_TERMINATING = "because it is being terminated"


def can_i(kube_cluster, ns: str, sa: str, *args: str) -> bool:
    out = kube_cluster.kubectl("auth", "can-i", *args, f"--as=system:serviceaccount:{ns}:{sa}")
    return out.stdout.strip() == "yes"


def run_as(kube_cluster, tmp_path: Path, ns: str, sa: str, **env: str) -> OperatorProcess:
    token = kube_cluster.token_for_service_account(ns, sa)
    kubeconfig = kube_cluster.kubeconfig_for_token(token, tmp_path / f"kubeconfig-{sa}")
    return start_operator(kubeconfig, tmp_path / f"operator-{sa}.log", env=env)


def until(api, ns, kind, name, type_, status, reason=None, timeout=30):
    """Wait for a condition the way `kubectl wait` would."""
    return wait_for(lambda: condition_is(api, ns, kind, name, type_, status, reason), timeout=timeout,
                    message=f"{kind}/{name} {type_}={status} {reason or ''}")


def main_scenarios(kube_cluster, ns: str) -> None:
    """What the cluster suite checks, in one pass: credentials, servers, rotation, removal."""
    api = kube_cluster.api_client
    # A credential validates its Secret and re-validates on rotation.
    create_custom(api, ns, "FliptCredential", "repo", {"type": "accessToken", "secretRef": {"name": "repo-token"}})
    until(api, ns, "FliptCredential", "repo", "Ready", "False", "SecretNotFound")
    put_secret(api, ns, "repo-token", {"token": "t0ken"})
    until(api, ns, "FliptCredential", "repo", "Ready", "True")
    # Memory storage and two environments: one server, Ready once available.
    create_custom(api, ns, "FliptStorage", "flags", {"memory": {}})
    create_custom(api, ns, "FliptEnvironment", "production",
                  {"storage": "flags", "default": True, "directory": "production"})
    create_custom(api, ns, "FliptEnvironment", "staging", {"storage": "flags", "directory": "staging"})
    wait_for(lambda: sorted(o.name for o in read_deployment(api, ns, "flipt").metadata.owner_references)
             == ["production", "staging"], message="Deployment flipt owned by both environments")
    core = client.CoreV1Api(api)
    core.read_namespaced_service("flipt", ns)
    core.read_namespaced_config_map("flipt-config", ns)
    core.read_namespaced_service_account("flipt", ns)
    until(api, ns, "FliptEnvironment", "production", "Ready", "False")
    # The server's pods run on the local node; the real Deployment controller reports them.
    until(api, ns, "FliptEnvironment", "production", "Ready", "True", timeout=120)
    until(api, ns, "FliptStorage", "flags", "Ready", "True")
    out = kube_cluster.kubectl("wait", "-n", ns, "--for=condition=Ready", "fenv", "--all", "--timeout=30s")
    assert out.returncode == 0, out.stderr
    # Git storage with the credential: a second server with the git-sync sidecar; rotation rolls it.
    create_custom(api, ns, "FliptStorage", "repo",
                  {"git": {"remote": "https://git.example.com/flags.git", "credentialRef": {"name": "repo"}}})
    create_custom(api, ns, "FliptEnvironment", "gitops", {"storage": "repo", "default": True, "server": "gitops"})
    dep = wait_for(lambda: read_deployment(api, ns, "gitops"), message="Deployment gitops")
    pod = dep.spec.template.spec
    assert "git-sync" in [c.name for c in [*(pod.init_containers or []), *pod.containers]]
    before = dep.spec.template.metadata.annotations["flipt.io/config-hash"]
    put_secret(api, ns, "repo-token", {"token": "r0tated"})
    wait_for(lambda: read_deployment(api, ns, "gitops").spec.template.metadata.annotations["flipt.io/config-hash"]
             != before, message="pods rolled after the Secret rotation")
    # Invalid references stall with the field named.
    create_custom(api, ns, "FliptEnvironment", "broken", {"storage": "nope", "default": True, "server": "broken"})
    env = until(api, ns, "FliptEnvironment", "broken", "Stalled", "True", "StorageNotFound")
    assert "spec.storage" in condition(env, "Ready")["message"]
    # The last environment of a server gone: the operator deletes the server's objects.
    client.CustomObjectsApi(api).delete_namespaced_custom_object("flipt.io", "v1alpha1", ns,
                                                                 "fliptenvironments", "gitops")
    wait_for(lambda: read_deployment(api, ns, "gitops") is None, message="server gitops removed")
    wait_for(lambda: not core.list_namespaced_service(
        ns, label_selector="app.kubernetes.io/instance=gitops").items, message="Service gitops removed")
    # Events were posted (create events).
    assert client.CoreV1Api(api).list_namespaced_event(ns).items
    # No finalizers on our kinds (docs/install.md, "Uninstall"): deleting never waits for the operator.
    custom = client.CustomObjectsApi(api)
    for plural in ("fliptcredentials", "fliptstorages", "fliptenvironments"):
        for item in custom.list_namespaced_custom_object("flipt.io", "v1alpha1", ns, plural)["items"]:
            assert not item["metadata"].get("finalizers"), (plural, item["metadata"]["name"])


def assert_no_permission_errors(op: OperatorProcess) -> None:
    logs = op.logs()
    for hint in FORBIDDEN_HINTS:
        lines = [line for line in logs.splitlines() if hint in line and NAMESPACE_TERMINATING not in line]
        assert not lines, f"{hint!r} in the operator log:\n" + "\n".join(lines[:5])


def test_cluster_wide_release_runs_the_scenarios_as_its_service_account(current_kube_cluster, tmp_path):
    # The release's RBAC is under test, used by a local operator process with its ServiceAccount's
    # token; the servers' pods run on the local node and become Ready through the real controllers.
    # (The release's own operator pod runs there too, without a way to the API server: it exits.)
    kube_cluster = current_kube_cluster
    ns, sa = install(kube_cluster)
    docs = json.loads(kube_cluster.kubectl("get", "clusterrole", sa, "-o", "json", check=True).stdout)
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in docs["rules"])
    # Least privilege, checked by the API server's own authorizer.
    assert can_i(kube_cluster, ns, sa, "watch", "secrets", "-A")
    assert not can_i(kube_cluster, ns, sa, "create", "secrets", "-n", "default")
    assert not can_i(kube_cluster, ns, sa, "delete", "fliptenvironments.flipt.io", "-n", "default")
    assert not can_i(kube_cluster, ns, sa, "create", "rolebindings.rbac.authorization.k8s.io", "-n", "default")
    assert not can_i(kube_cluster, ns, sa, "list", "namespaces")
    assert not can_i(kube_cluster, ns, sa, "create", "pods", "-n", "default")
    work = make_namespace(kube_cluster.api_client, "rbac-cw")
    op = run_as(kube_cluster, tmp_path, ns, sa)
    try:
        main_scenarios(kube_cluster, work)
    finally:
        op.stop()
    assert_no_permission_errors(op)


def test_namespaced_release_needs_nothing_cluster_wide(current_kube_cluster, tmp_path):
    kube_cluster = current_kube_cluster
    api = kube_cluster.api_client
    watched, other = make_namespace(api, "rbac-ns"), make_namespace(api, "rbac-other")
    ns, sa = install(kube_cluster, f"watchNamespaces={{{watched}}}")
    assert kube_cluster.kubectl("get", "clusterrole", sa).returncode != 0  # no cluster-wide role at all
    assert can_i(kube_cluster, ns, sa, "patch", "deployments.apps", "-n", watched)
    assert not can_i(kube_cluster, ns, sa, "get", "secrets", "-n", other)
    assert not can_i(kube_cluster, ns, sa, "list", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can_i(kube_cluster, ns, sa, "list", "namespaces")
    # As the chart's Deployment runs it: the namespaces from WATCH_NAMESPACES.
    op = run_as(kube_cluster, tmp_path, ns, sa, WATCH_NAMESPACES=watched)
    try:
        main_scenarios(kube_cluster, watched)
        create_custom(api, other, "FliptEnvironment", "ignored", {})
        # A barrier instead of a sleep: an environment created after it in the watched namespace
        # gets its server; had the operator watched `other`, it would have served that one too.
        create_custom(api, watched, "FliptEnvironment", "barrier", {"server": "barrier"})
        wait_for(lambda: read_deployment(api, watched, "barrier"), message="the barrier's server")
        assert read_deployment(api, other, "flipt") is None  # not ours to watch
        assert "status" not in get_custom(api, other, "FliptEnvironment", "ignored")
    finally:
        op.stop()
    assert_no_permission_errors(op)  # scanning is off: no namespace or CRD watches were tried


def test_a_removed_permission_is_a_clear_error_not_a_hang(kube_cluster, tmp_path):
    api = kube_cluster.api_client
    watched = make_namespace(api, "rbac-deny")
    ns, sa = install(kube_cluster, f"watchNamespaces={{{watched}}}")
    # The chart's Role, minus `services`, bound to a second ServiceAccount.
    role = json.loads(kube_cluster.kubectl("get", "role", sa, "-n", watched, "-o", "json", check=True).stdout)
    for rule in role["rules"]:
        rule["resources"] = [r for r in rule["resources"] if r != "services"]
    limited = f"{sa}-limited"
    manifests = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": limited, "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": limited, "namespace": watched}, "rules": role["rules"]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": limited, "namespace": watched},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": limited},
         "subjects": [{"kind": "ServiceAccount", "name": limited, "namespace": ns}]},
    ]
    kube_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests), check=True)
    assert not can_i(kube_cluster, ns, limited, "create", "services", "-n", watched)
    op = run_as(kube_cluster, tmp_path, ns, limited, WATCH_NAMESPACES=watched)
    try:
        create_custom(api, watched, "FliptEnvironment", "production", {"default": True})
        started = time.monotonic()
        refused = re.compile(r'is forbidden: User "([^"]+)" cannot (get|list|create|patch) resource "services"')
        found = wait_for(lambda: refused.search(op.logs().replace("\\", "")), timeout=30,
                         message="the forbidden resource named in the operator log")
        assert time.monotonic() - started < 30
        assert found.group(1) == f"system:serviceaccount:{ns}:{limited}"  # who was refused
        # The error is kept in the environment's status too (events expire), and it retries.
        env = wait_for(lambda: condition_is(api, watched, "FliptEnvironment", "production", "Ready", "False",
                                            "ReconcileError"), timeout=15, message="the error in status")
        assert refused.search(condition(env, "Ready")["message"]), condition(env, "Ready")
        assert condition(env, "Reconciling")["reason"] == "ProgressingWithRetry"
        # Nothing pretends to be fine: no server runs.
        assert read_deployment(api, watched, "flipt") is None
        assert op.process.poll() is None  # the operator keeps running (and retrying)
    finally:
        op.stop()
