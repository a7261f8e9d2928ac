"""The examples/ set is valid and becomes Ready, as `scripts/run.sh` runs it: only the storages' git
remote is pointed at a `git http-backend` on the local node's address (pods reach this machine only
there) that accepts the examples' access token; the server's pods run on the node and become Ready
through the real controllers. Flipt is the node's stand-in (it cannot be built here)."""

import json

import pytest
from kubernetes import client

from tests.support.git_servers import _serve_http
from tests.support.kube_objects import condition_is
from tests.support.sample_remote import examples_pointed_at, examples_token, host_sample_repo
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def examples_remote(kube_cluster, tmp_path):
    """The sample repository the examples expect, where the node's pods reach it."""
    assert kube_cluster.node is not None
    for server in _serve_http(tmp_path / "http-root", None, host=kube_cluster.node.host_ip):
        yield host_sample_repo(server, examples_token())


def test_examples_apply_and_become_ready_through_the_real_controllers(kube_cluster, operator, namespace,
                                                                       examples_remote):
    docs = examples_pointed_at(examples_remote.url)
    out = kube_cluster.kubectl("apply", "-n", namespace, "-f", "-",
                               input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    assert out.returncode == 0, out.stderr
    api = kube_cluster.api_client
    wait_for(lambda: condition_is(api, namespace, "FliptCredential", "flags-repo", "Ready", "True"), timeout=30)
    for env in ("production", "staging"):
        wait_for(lambda env=env: condition_is(api, namespace, "FliptEnvironment", env, "Ready", "True"),
                 timeout=180, message=f"FliptEnvironment {env} Ready")
    for storage in ("production-flags", "staging-flags"):
        wait_for(lambda storage=storage: condition_is(api, namespace, "FliptStorage", storage, "Ready", "True"),
                 timeout=60, message=f"FliptStorage {storage} Ready")
    deployment = client.AppsV1Api(api).read_namespaced_deployment("flipt", namespace)
    assert deployment.status.available_replicas == 2  # examples/environments.yaml: replicas 2
    table = kube_cluster.kubectl("get", "flipt", "-n", namespace, check=True).stdout
    assert table.count("True") >= 5
