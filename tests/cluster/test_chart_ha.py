"""replicaCount: 2 — two operators as the chart runs them (--peering, priority derived from the
pod name, the chart's peering object): exactly one acts, and the other takes over when it stops."""

from __future__ import annotations

import pytest
from kubernetes import client

from flipt_operator.handlers.main import priority
from tests.support.chart import install, make_namespace, no_admin_operator  # noqa: F401
from tests.support.deployments import read_deployment
from tests.support.kube_objects import create_custom
from tests.support.operator_fixtures import metric_value, start_operator
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def created(op) -> float:
    return metric_value(op.metrics(), "flipt_operator_api_writes_total", 'verb="created"')


def test_two_replicas_one_active_and_the_other_takes_over(kube_cluster, tmp_path, monkeypatch):
    api = kube_cluster.api_client
    watched = make_namespace(api, "ha")
    ns, sa = install(kube_cluster, "replicaCount=2", f"watchNamespaces={{{watched}}}")
    dep = client.AppsV1Api(api).read_namespaced_deployment(sa, ns)
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
    assert dep.spec.template.spec.containers[0].args.count("--peering") == 1
    peering = env["FLIPT_OPERATOR_PEERING"]
    client.CustomObjectsApi(api).get_namespaced_custom_object("kopf.dev", "v1", watched, "kopfpeerings", peering)

    # Two "pods", as the chart's Deployment would start them; the higher priority must win.
    pods = sorted(["flipt-operator-5d9c7-aaaaa", "flipt-operator-5d9c7-bbbbb"],
                  key=lambda pod: (monkeypatch.setenv("POD_NAME", pod), priority("auto"))[1])
    low_pod, high_pod = pods
    token = kube_cluster.token_for_service_account(ns, sa)
    kubeconfig = kube_cluster.kubeconfig_for_token(token, tmp_path / "kubeconfig")

    def run(pod: str):
        return start_operator(kubeconfig, tmp_path / f"{pod}.log", extra_args=("--peering",), env={
            "POD_NAME": pod, "POD_ID": pod, "FLIPT_OPERATOR_PRIORITY": env["FLIPT_OPERATOR_PRIORITY"],
            "FLIPT_OPERATOR_PEERING": peering, "WATCH_NAMESPACES": watched})

    high = run(high_pod)
    low = None
    try:
        low = run(low_pod)
        wait_for(lambda: "Pausing operations in favour of" in low.logs(), timeout=30,
                 message="the lower-priority replica stands by")
        peers = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "kopf.dev", "v1", watched, "kopfpeerings", peering)["status"]
        assert {high_pod, low_pod} <= set(peers)
        assert peers[high_pod]["priority"] != peers[low_pod]["priority"]

        create_custom(api, watched, "FliptEnvironment", "one", {"default": True, "server": "one"})
        wait_for(lambda: read_deployment(api, watched, "one"), message="the active replica serves")
        assert created(high) > 0 and created(low) == 0

        high.stop()  # a graceful stop removes it from the peering object
        wait_for(lambda: "Resuming operations" in low.logs(), timeout=60, message="the standby takes over")
        create_custom(api, watched, "FliptEnvironment", "two", {"default": True, "server": "two"})
        wait_for(lambda: read_deployment(api, watched, "two"), timeout=30, message="the new active replica serves")
        assert created(low) > 0

        # The now-active replica learns a git namespace and polls its sidecars...
        create_custom(api, watched, "FliptStorage", "flags", {"git": {"remote": "https://git.example.com/f.git"}})
        create_custom(api, watched, "FliptEnvironment", "three", {"default": True, "server": "three",
                                                                  "storage": "flags"})
        template = wait_for(lambda: read_deployment(api, watched, "three"), timeout=30).spec.template
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(watched, {
            "metadata": {"name": "three-abc12", "labels": template.metadata.labels},
            "spec": {"containers": [{"name": "git-sync", "image": "x",
                                     "ports": [{"name": "git-sync", "containerPort": 1}]}]}})
        core.patch_namespaced_pod_status("three-abc12", watched, {"status": {"podIP": "127.0.0.1"}})
        polled = "no sync report from pod"
        wait_for(lambda: polled in low.logs(), timeout=30, message="the active replica polls the sidecars")
        # ...and stops once the higher-priority replica is back and kopf pauses it.
        high = run(high_pod)
        wait_for(lambda: low.logs().count("Pausing operations in favour of") >= 2, timeout=60,
                 message="the returning higher-priority replica pauses the other")
        # The active replica's own poll rounds are the clock (1 s apart in tests), not sleeps:
        # two rounds let one the paused replica had begun finish, three more must add nothing.
        rounds = high.logs().count(polled)
        wait_for(lambda: high.logs().count(polled) >= rounds + 2, timeout=30, message="the active replica polls")
        mark = low.logs().count(polled)
        rounds = high.logs().count(polled)
        wait_for(lambda: high.logs().count(polled) >= rounds + 3, timeout=30, message="three more rounds")
        assert low.logs().count(polled) == mark, "a paused replica kept polling"
    finally:
        high.stop()
        if low is not None:
            low.stop()
