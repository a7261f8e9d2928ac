"""The operator watches only what matters: Secret and ConfigMap events that no Flipt object
names start no pass, and a pass reads only the Secrets that are named.

No sleeping: the operator counts every Secret/ConfigMap event once it has decided about it
(`flipt_operator_watch_events_total`: for a `pass`, once the pass has run or folded into the
running one), every pass (`flipt_operator_reconciles_total`), and the namespaces whose pass is
still in progress (`flipt_operator_passes_in_progress`). So the test waits until all 200 + 200
writes were decided and compares the pass counter of this test's own operator.

They run on the bare cluster, in a namespace no session operator watches: on the session's
cluster the real controllers move the server's Deployment while the test counts passes (a
Deployment becoming available is news, and one such pass failed a cold run)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client

from flipt_operator.clients.kube import Kube
from tests.support import on_bare_cluster
from tests.support.deployments import read_deployment
from tests.support.kube_objects import create_custom, put_secret
from tests.support.operator_fixtures import metric_value, start_operator
from tests.support.waiting import wait_for

UNRELATED = 200


kube_cluster = on_bare_cluster.kube_cluster


@pytest.fixture
def namespace(bare_unwatched_namespace):
    return bare_unwatched_namespace


def passes(op) -> float:
    return metric_value(op.metrics(), "flipt_operator_reconciles_total", 'kind="Namespace"')


def events(op, kind: str, decision: str) -> float:
    return metric_value(op.metrics(), "flipt_operator_watch_events_total", f'decision="{decision}",kind="{kind}"')


def settled(op) -> bool:
    return metric_value(op.metrics(), "flipt_operator_passes_in_progress") == 0


@pytest.mark.timeout(240)
def test_unrelated_secrets_and_config_maps_start_no_pass(kube_cluster, namespace, tmp_path):
    api = kube_cluster.api_client
    core = client.CoreV1Api(api)
    # A served environment, and a storage (used by none) that names a Secret not there yet.
    create_custom(api, namespace, "FliptEnvironment", "prod", {"default": True})
    create_custom(api, namespace, "FliptStorage", "db",
                  {"database": {"urlSecretRef": {"name": "db-url", "key": "url"}}})
    op = start_operator(kube_cluster.kubeconfig, tmp_path / "operator.log", extra_args=("-n", namespace),
                        env={"FLIPT_OPERATOR_DATABASE_RECHECK_SECONDS": "3600"})
    try:
        wait_for(lambda: read_deployment(api, namespace, "flipt") and passes(op) >= 1,
                 message="the server is applied and the start's pass has run")
        # A barrier: the Secret the storage names appears. Once that event is decided and no pass
        # is in progress, every earlier trigger (initial listings, our Deployment) has been served.
        put_secret(api, namespace, "db-url", {"url": "postgres://postgres@127.0.0.1:1/flipt"})
        wait_for(lambda: events(op, "Secret", "pass") == 1 and settled(op), message="the barrier's pass")
        before = passes(op)
        seen = {kind: events(op, kind, "ignored") + events(op, kind, "pass") for kind in ("Secret", "ConfigMap")}
        # The server's own ConfigMap (created after the operator started; no controller here
        # makes kube-root-ca.crt) never streamed back: the watch leaves our children out.
        assert core.list_namespaced_config_map(namespace, field_selector="metadata.name=flipt-config").items
        assert seen["ConfigMap"] == 0

        def write(i: int) -> None:
            put_secret(api, namespace, f"unrelated-{i}", {"token": f"value-{i}"})
            core.create_namespaced_config_map(namespace, client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=f"unrelated-{i}"), data={"k": str(i)}))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(UNRELATED)))
        wait_for(lambda: all(events(op, kind, "ignored") + events(op, kind, "pass") >= seen[kind] + UNRELATED
                             for kind in seen), timeout=60, message="every unrelated event decided")
        assert events(op, "Secret", "pass") == 1 and events(op, "ConfigMap", "pass") == 0
        assert passes(op) == before and settled(op)

        # A change of the named Secret: one event, one pass.
        put_secret(api, namespace, "db-url", {"url": "postgres://postgres@127.0.0.1:2/flipt"})
        wait_for(lambda: events(op, "Secret", "pass") == 2 and settled(op), message="a pass for the named Secret")
        assert passes(op) == before + 1
    finally:
        op.stop()


def test_a_pass_reads_the_named_secrets_by_name_and_keeps_key_names_only(kube_cluster, namespace):
    api = kube_cluster.api_client
    put_secret(api, namespace, "creds", {"username": "u", "password": "p"})
    put_secret(api, namespace, "other", {"token": "t"})
    names = [f"named-{i}" for i in range(20)]
    for name in names:
        put_secret(api, namespace, name, {"url": name})
    version = client.CoreV1Api(api).read_namespaced_secret("creds", namespace).metadata.resource_version
    found = Kube(api).secret_keys(namespace, ["creds", "missing", *names])
    assert found["creds"] == (["password", "username"], version)
    assert set(found) == {"creds", *names}  # not `other`, not the missing one
    assert all(keys == ["url"] for keys, _ in found.values() if keys != ["password", "username"])
