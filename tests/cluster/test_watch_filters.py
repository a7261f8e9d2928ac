"""The operator watches only what matters: Secret and ConfigMap events that no Flipt object
names start no pass, and a pass reads only the Secrets that are named.

No sleeping: the operator counts every Secret/ConfigMap event it decided about
(`flipt_operator_watch_events_total`) and every pass (`flipt_operator_reconciles_total`), and
reports whether a pass runs (`flipt_operator_oldest_pass_seconds`), so the test waits until all
200 + 200 writes were seen and then compares the pass counter."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client

from tests.support.deployments import read_deployment
from tests.support.kube_objects import create_custom, get_custom, patch_custom, put_secret
from tests.support.operator_fixtures import metric_value, start_operator
from tests.support.waiting import wait_for

UNRELATED = 200


def passes(op) -> float:
    return metric_value(op.metrics(), "flipt_operator_reconciles_total", 'kind="Namespace"')


def events(op, kind: str, decision: str) -> float:
    return metric_value(op.metrics(), "flipt_operator_watch_events_total", f'decision="{decision}",kind="{kind}"')


def idle(op) -> bool:
    return metric_value(op.metrics(), "flipt_operator_oldest_pass_seconds") == 0


def storage_observed(api, namespace: str, generation: int) -> bool:
    return get_custom(api, namespace, "FliptStorage", "db").get("status", {}).get("observedGeneration") == generation


@pytest.mark.timeout(240)
def test_unrelated_secrets_and_config_maps_start_no_pass(kube_cluster, namespace, tmp_path):
    api = kube_cluster.api_client
    core = client.CoreV1Api(api)
    # A served environment, and a storage (used by none) that names a Secret not there yet.
    create_custom(api, namespace, "FliptEnvironment", "prod", {"default": True})
    create_custom(api, namespace, "FliptStorage", "db",
                  {"database": {"urlSecretRef": {"name": "db-url-0", "key": "url"}}})
    op = start_operator(kube_cluster.kubeconfig, tmp_path / "operator.log", extra_args=("-n", namespace),
                        env={"FLIPT_OPERATOR_DATABASE_RECHECK_SECONDS": "3600"})
    try:
        wait_for(lambda: read_deployment(api, namespace, "flipt"), message="the server is applied")
        # A barrier: a spec change of the storage, seen in its status, after every trigger of
        # the start (initial listings, our own Deployment's creation) has arrived. It changes
        # nothing the server uses, so its pass causes no further event.
        stored = patch_custom(api, namespace, "FliptStorage", "db",
                              {"spec": {"database": {"urlSecretRef": {"name": "db-url", "key": "url"}}}})
        generation = stored["metadata"]["generation"]
        wait_for(lambda: storage_observed(api, namespace, generation) and idle(op),
                 message="the barrier's pass")
        before = passes(op)
        seen = {kind: events(op, kind, "ignored") + events(op, kind, "pass") for kind in ("Secret", "ConfigMap")}

        def write(i: int) -> None:
            put_secret(api, namespace, f"unrelated-{i}", {"token": f"value-{i}"})
            core.create_namespaced_config_map(namespace, client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=f"unrelated-{i}"), data={"k": str(i)}))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(UNRELATED)))
        wait_for(lambda: all(events(op, kind, "ignored") + events(op, kind, "pass") >= seen[kind] + UNRELATED
                             for kind in seen), timeout=60, message="every unrelated event decided")
        assert events(op, "Secret", "pass") == 0 and events(op, "ConfigMap", "pass") == 0
        assert passes(op) == before and idle(op)

        # The Secret the storage names: one event, one pass.
        put_secret(api, namespace, "db-url", {"url": "postgres://postgres@127.0.0.1:1/flipt"})
        wait_for(lambda: events(op, "Secret", "pass") == 1 and idle(op) and passes(op) > before,
                 message="a pass for the named Secret")
        assert passes(op) == before + 1
    finally:
        op.stop()
