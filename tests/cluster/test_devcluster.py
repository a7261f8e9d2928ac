"""The local kube-apiserver: starts, serves CRDs with a status subresource, kubectl and
TokenRequest work, and stopping leaves no processes behind."""

from __future__ import annotations

import json
import os

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from flipt_operator.devcluster.cluster import LocalCluster, TokenUser, apply_crds, http_get, readyz
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.flipt.io
spec:
  group: test.flipt.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1}
            status:
              type: object
              properties:
                phase: {type: string}
"""


def test_readyz_and_kubeconfig(kube_cluster):
    token = kube_cluster.api_client.configuration.api_key.get("authorization", "").removeprefix("Bearer ")
    assert readyz(kube_cluster.server, token)
    version = client.VersionApi(kube_cluster.api_client).get_code()
    assert version.major == "1"
    res = kube_cluster.kubectl("get", "--raw", "/readyz")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_crd_with_status_subresource(kube_cluster, namespace, tmp_path):
    (tmp_path / "widget.yaml").write_text(WIDGET_CRD)
    assert apply_crds(tmp_path, api_client=kube_cluster.api_client) == ["widgets.test.flipt.io"]
    # applying again replaces in place
    assert apply_crds(tmp_path, api_client=kube_cluster.api_client) == ["widgets.test.flipt.io"]
    api = client.CustomObjectsApi(kube_cluster.api_client)
    body = {"apiVersion": "test.flipt.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2}}
    api.create_namespaced_custom_object("test.flipt.io", "v1", namespace, "widgets", body)
    # schema validation is enforced
    bad = dict(body, metadata={"name": "bad"}, spec={"size": 0})
    with pytest.raises(ApiException) as exc:
        api.create_namespaced_custom_object("test.flipt.io", "v1", namespace, "widgets", bad)
    assert exc.value.status == 422
    # status goes through the subresource only
    api.patch_namespaced_custom_object_status(
        "test.flipt.io", "v1", namespace, "widgets", "w", {"status": {"phase": "Ready"}}
    )
    obj = api.get_namespaced_custom_object("test.flipt.io", "v1", namespace, "widgets", "w")
    assert obj["status"] == {"phase": "Ready"}
    res = kube_cluster.kubectl("get", "widgets", "-n", namespace, "-o", "json")
    assert res.returncode == 0, res.stderr
    assert [i["metadata"]["name"] for i in json.loads(res.stdout)["items"]] == ["w"]


def test_project_crds_established(kube_cluster):
    res = kube_cluster.kubectl("get", "crd", "-o", "name")
    assert res.returncode == 0, res.stderr
    for name in kube_cluster.crds:
        assert f"customresourcedefinition.apiextensions.k8s.io/{name}" in res.stdout


def test_token_request_and_rbac(kube_cluster, namespace):
    assert kube_cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace).returncode == 0
    token = kube_cluster.token_for_service_account(namespace, "reader")
    assert token.count(".") == 2  # a JWT
    sa_api = client.CoreV1Api(kube_cluster.api_client_for_token(token))
    with pytest.raises(ApiException) as exc:
        sa_api.list_namespaced_config_map(namespace)
    assert exc.value.status == 403
    kube_cluster.kubectl("create", "role", "cm-reader", "--verb=list", "--resource=configmaps", "-n", namespace,
                         check=True)
    kube_cluster.kubectl("create", "rolebinding", "cm-reader", "--role=cm-reader",
                         f"--serviceaccount={namespace}:reader", "-n", namespace, check=True)
    # the RBAC authorizer sees new bindings through an informer: allow it a moment
    # (the controller-manager puts kube-root-ca.crt in every namespace)
    listed = wait_for(lambda: sa_api.list_namespaced_config_map(namespace), timeout=10, interval=0.1)
    assert {c.metadata.name for c in listed.items} <= {"kube-root-ca.crt"}
    who = kube_cluster.kubectl("auth", "can-i", "list", "configmaps", "-n", namespace,
                               f"--as=system:serviceaccount:{namespace}:reader")
    assert who.stdout.strip() == "yes"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def test_second_cluster_with_token_user_stops_cleanly(kube_cluster):
    viewer = TokenUser("viewer", groups=["viewers"])
    with LocalCluster(users=[viewer]) as local:
        pids = dict(local.pids)
        workdir, etcd_dir = local.workdir, local.etcd_data_dir
        assert set(pids) == {"etcd", "kube-apiserver"} and all(_alive(p) for p in pids.values())
        core = client.CoreV1Api(local.api_client("viewer"))
        with pytest.raises(ApiException) as exc:
            core.list_namespace()
        assert exc.value.status == 403  # authenticated, but no RBAC grant
        assert client.CoreV1Api(local.api_client()).read_namespace("default").metadata.name == "default"
    assert not any(_alive(p) for p in pids.values())
    assert not workdir.exists() and not etcd_dir.exists()


def test_cli_start_reuse_status_stop(tmp_path, capsys):
    from flipt_operator.cli import main as cli
    from flipt_operator.devcluster.build import FALLBACK_KUBERNETES
    from flipt_operator.devcluster.cluster import ClusterState

    state_dir = tmp_path / "state"
    try:
        assert cli(["dev-cluster", "start", "--release", FALLBACK_KUBERNETES, "--state-dir", str(state_dir)]) == 0
        first = capsys.readouterr().out
        assert first.startswith("export KUBECONFIG=")
        state = ClusterState.load(state_dir)
        assert state is not None and state.running()
        status, body = http_get(f"{state.server}/version", state.admin_token)
        assert status == 200 and json.loads(body)["gitVersion"] == FALLBACK_KUBERNETES
        assert cli(["dev-cluster", "start", "--state-dir", str(state_dir)]) == 0  # reused
        assert capsys.readouterr().out == first
        assert ClusterState.load(state_dir).apiserver_pid == state.apiserver_pid
        assert cli(["dev-cluster", "status", "--state-dir", str(state_dir)]) == 0
    finally:
        assert cli(["dev-cluster", "stop", "--state-dir", str(state_dir)]) == 0
    assert not _alive(state.apiserver_pid) and not _alive(state.etcd_pid)
    assert cli(["dev-cluster", "status", "--state-dir", str(state_dir)]) == 3


def test_apiserver_restart_in_place_keeps_clients_and_data(kube_cluster):
    with LocalCluster() as local:
        core = client.CoreV1Api(local.api_client())
        core.create_namespace({"metadata": {"name": "kept"}})
        old_pid, server, kubeconfig = local.pids["kube-apiserver"], local.server, local.kubeconfig.read_text()

        new_pid = local.restart_apiserver(down_seconds=1)

        assert new_pid != old_pid and not _alive(old_pid) and _alive(new_pid)
        assert local.pids["kube-apiserver"] == new_pid
        assert local.server == server and local.kubeconfig.read_text() == kubeconfig
        # The client made before the restart works after it (same port, certificate and token),
        # and what was stored before is still there (same etcd).
        assert core.read_namespace("kept").metadata.name == "kept"
        core.create_namespace({"metadata": {"name": "after"}})
        from flipt_operator.devcluster.cluster import ClusterState

        assert ClusterState.load(local.workdir).apiserver_pid == new_pid
    assert not _alive(new_pid)
