"""Operator at scale on a real local kube-apiserver.

    .venv/bin/python benchmarks/operator_scale.py --count 200

1. Creates COUNT Secrets, FliptCredentials, git FliptStorages and FliptEnvironments (each
   environment its own server) in one namespace, with a stand-in Deployment controller that
   reports each server Deployment available, and times until every environment is Ready.
2. Floor, in the same run: the same number of API writes (the benchmark's own creates, the
   operator's writes as its metrics count them, and the stand-in controller's) issued by a
   plain client with the same concurrency, as creates of ConfigMaps. Prints the ratio.
3. The operator's resident memory with everything in place.
4. Restarts the operator (a full resync of unchanged objects) and counts its API writes.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flipt_operator.devcluster.build import build_apiserver  # noqa: E402
from flipt_operator.devcluster.cluster import LocalCluster, apply_crds  # noqa: E402
from tests.support.deployments import StandInDeploymentController  # noqa: E402
from tests.support.operator_fixtures import metric_value, start_operator  # noqa: E402

GROUP, VERSION = "flipt.io", "v1alpha1"
WORKERS = 8


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def custom(api, namespace, plural, name, spec):
    kind = {"fliptcredentials": "FliptCredential", "fliptstorages": "FliptStorage",
            "fliptenvironments": "FliptEnvironment"}[plural]
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural,
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec})


def create_set(api, namespace: str, i: int) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": f"token-{i}"},
                                              "data": {"token": base64.b64encode(b"t").decode()}})
    custom(api, namespace, "fliptcredentials", f"cred-{i}", {"type": "accessToken", "secretRef": {"name": f"token-{i}"}})
    custom(api, namespace, "fliptstorages", f"flags-{i}", {"git": {
        "remote": f"https://git.example.com/flags-{i}.git", "credentialRef": {"name": f"cred-{i}"}}})
    custom(api, namespace, "fliptenvironments", f"env-{i}", {"storage": f"flags-{i}", "default": True,
                                                             "server": f"srv-{i}"})


def ready_count(api, namespace) -> int:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                       "fliptenvironments")["items"]
    return sum(1 for e in items for c in (e.get("status") or {}).get("conditions", [])
               if c["type"] == "Ready" and c["status"] == "True")


def floor_seconds(api, namespace: str, writes: int) -> float:
    core = client.CoreV1Api(api)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda i: core.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"floor-{i}"}, "data": {"k": "v"}}), range(writes)))
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--malloc-arena-max", default="2",
                        help="MALLOC_ARENA_MAX for the operator, as the image sets it ('' to leave unset)")
    args = parser.parse_args()
    build_apiserver()
    work = Path(tempfile.mkdtemp(prefix="flipt-bench-"))
    with LocalCluster() as cluster:
        api = cluster.api_client()
        apply_crds(ROOT / "crds", api_client=api)
        core = client.CoreV1Api(api)
        for ns in ("bench", "floor"):
            core.create_namespace({"metadata": {"name": ns}})
        env = {"FLIPT_OPERATOR_SYNC_POLL_SECONDS": "3600"}
        if args.malloc_arena_max:
            env["MALLOC_ARENA_MAX"] = args.malloc_arena_max
        operator = start_operator(cluster.kubeconfig, work / "operator.log", env=env)
        rss_idle = rss_mb(operator.process.pid)
        controller = StandInDeploymentController(api, "bench")
        controller.start()

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda i: create_set(api, "bench", i), range(args.count)))
        created = time.monotonic() - started
        while ready_count(api, "bench") < args.count:
            if time.monotonic() - started > args.timeout:
                print(f"timeout: {ready_count(api, 'bench')}/{args.count} Ready", file=sys.stderr)
                return 1
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        time.sleep(2)  # let trailing passes finish before counting
        controller.stopped.set()
        operator_writes = int(metric_value(operator.metrics(), "flipt_operator_api_writes_total"))
        user_writes = 4 * args.count
        total_writes = user_writes + operator_writes + controller.writes
        rss_full = rss_mb(operator.process.pid)
        floor = floor_seconds(api, "floor", total_writes)

        operator.stop()
        second = start_operator(cluster.kubeconfig, work / "operator2.log", env=env)
        deadline = time.monotonic() + 300
        while metric_value(second.metrics(), "flipt_operator_reconciles_total", 'kind="FliptCredential"') < args.count:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(5)
        resync_writes = int(metric_value(second.metrics(), "flipt_operator_api_writes_total"))
        resync_rss = rss_mb(second.process.pid)
        second.stop()

    objects = 4 * args.count
    print(f"objects created: {objects} ({args.count} each of Secret, FliptCredential, FliptStorage, FliptEnvironment)")
    print(f"time to create them: {created:.1f} s; time until all {args.count} environments Ready: {elapsed:.1f} s")
    print(f"writes: {user_writes} by the benchmark, {operator_writes} by the operator, "
          f"{controller.writes} by the stand-in Deployment controller = {total_writes}")
    print(f"floor: {total_writes} plain creates with {WORKERS} workers: {floor:.1f} s")
    print(f"ratio (time to Ready / floor): {elapsed / floor:.2f}  (target <= 3)")
    print(f"MALLOC_ARENA_MAX={args.malloc_arena_max or 'unset'}")
    print(f"operator RSS: {rss_idle:.0f} MB idle, {rss_full:.0f} MB with {objects} objects "
          f"(+{4 * args.count} owned children); after restart {resync_rss:.0f} MB  (target <= 200 MB at 1,000 objects)")
    print(f"API writes by a restarted operator resyncing unchanged objects: {resync_writes}  (target 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
