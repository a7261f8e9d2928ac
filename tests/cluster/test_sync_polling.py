"""The sidecar poller reads every pod's /status side by side: with pods that never answer, one
round takes about one request timeout, not one per pod; the bound on requests in flight holds;
an IPv6 pod IP is read like any other.

The pods are real Pod objects on the API server with status.podIP on loopback (nothing runs
containers here); the pods that never answer point at a stand-in for a hung sidecar
(tests/support/silent_peers.py), the IPv6 one at a small HTTP server on ::1 serving a report.
They run on the bare cluster (tests/support/on_bare_cluster.py): on the session's cluster the
scheduler would place those Pods and the node would run them."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import aiohttp.web
from kubernetes import client

from flipt_operator.clients.kube import Kube
from flipt_operator.handlers.context import Context, operator_defaults
from flipt_operator.handlers.storage import read_namespace_reports, sidecar_status_url
from flipt_operator.models.sync import SidecarStatus, StorageSyncState
from tests.support import on_bare_cluster
from tests.support.silent_peers import silent_listener

# On the bare cluster (see the module's docstring).
kube_cluster = on_bare_cluster.kube_cluster
namespace = on_bare_cluster.namespace

TIMEOUT = 1.0
MANAGED = {"app.kubernetes.io/managed-by": "flipt-operator", "app.kubernetes.io/instance": "flipt"}


def make_pod(api, namespace: str, name: str, ip: str, port: int) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": MANAGED},
        "spec": {"containers": [{"name": "git-sync", "image": "flipt-operator:test",
                                 "ports": [{"name": "git-sync", "containerPort": port}]}]},
    })
    core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": "Running", "podIP": ip}})


async def one_round(api, namespace: str, limit: int) -> tuple[float, dict]:
    ctx = Context(kube=Kube(api), defaults=operator_defaults(native_sidecar=False))
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            started = time.monotonic()
            reports = await read_namespace_reports(ctx, session, namespace, asyncio.Semaphore(limit))
            return time.monotonic() - started, reports
    finally:
        ctx.pool.shutdown()


async def test_a_round_over_silent_pods_takes_about_one_timeout(kube_cluster, namespace):
    api = kube_cluster.api_client
    pods = 20
    with silent_listener() as port:
        for i in range(pods):
            make_pod(api, namespace, f"flipt-{i}", "127.0.0.1", port)
        elapsed, reports = await one_round(api, namespace, limit=32)
        assert reports == {}
        assert TIMEOUT <= elapsed < 2.5 * TIMEOUT, f"{elapsed:.1f}s for {pods} silent pods"
        # The bound on requests in flight holds: 4 at a time, 5 waves of one timeout each.
        elapsed, _ = await one_round(api, namespace, limit=4)
        assert 5 * TIMEOUT <= elapsed < 7 * TIMEOUT, f"{elapsed:.1f}s with 4 at a time"


async def test_an_ipv6_pod_is_read(kube_cluster, namespace):
    api = kube_cluster.api_client
    state = StorageSyncState(storage="flags", remote="https://git.example/flags.git", branch="main",
                             fetch_policy="strict", revision="a" * 40, ready=True)
    document = SidecarStatus(pod="flipt-v6", storages=[state]).model_dump(mode="json", by_alias=True)

    async def status(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(document)

    app = aiohttp.web.Application()
    app.router.add_get("/status", status)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "::1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        make_pod(api, namespace, "flipt-v6", "::1", port)
        _, reports = await one_round(api, namespace, limit=4)
    finally:
        await runner.cleanup()
    assert reports == {"flags": [("flipt-v6", state)]}


def test_status_urls():
    assert sidecar_status_url("10.1.2.3", 8081) == "http://10.1.2.3:8081/status"
    assert sidecar_status_url("fd00::1", 8081) == "http://[fd00::1]:8081/status"
