"""Chaos: the real operator against a real API server that is restarted twice while objects are
created, changed and deleted, with one server that can never be applied. Every other object
still reaches its final state, the broken server is reported on its environment, and the
operator stays alive and healthy.

The test runs on a cluster of its own (`own_cluster`): restarting the session's API server
would disturb every other test."""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from flipt_operator.builders.server_manifests import CONFIG_HASH_ANNOTATION, build_server_manifests
from flipt_operator.clients.kube import is_subset
from flipt_operator.handlers.context import operator_defaults
from flipt_operator.models.credential import FliptCredentialSpec
from flipt_operator.models.environment import FliptEnvironmentSpec
from flipt_operator.models.plan import supports_native_sidecars
from flipt_operator.models.storage import FliptStorageSpec
from flipt_operator.rules.servers import CredentialState, plan_servers
from tests.support.deployments import StandInDeploymentController, read_deployment
from tests.support.kube_objects import GROUP, VERSION, condition, create_custom, get_custom, patch_custom, put_secret
from tests.support.operator_fixtures import start_operator
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]  # every wait inside is bounded, and shorter

NAMESPACE = "chaos"
TOKEN_1 = "chaos-tok1-5b0e-never-print-me"
TOKEN_1_ROTATED = "chaos-tok1-rotated-77c2-never-print-me"
TOKEN_2 = "chaos-tok2-a41d-never-print-me"
PASSWORD = "chaos-pw-e93f-never-print-me"
SECRET_VALUES = (TOKEN_1, TOKEN_1_ROTATED, TOKEN_2, PASSWORD)
DOWN_SECONDS = 3.0
SETTLE_TIMEOUT = 240.0  # generous: two cores shared with other test runs


def _foreign_deployment(name: str) -> dict:
    """Someone else's Deployment under the server's name: its selector differs and is immutable,
    so the API server refuses the operator's apply (422) whatever it forces."""
    labels = {"app": "someone-else"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}}}


def _git(remote: str, credential: str, **extra: Any) -> dict:
    return {"git": {"remote": remote, "credentialRef": {"name": credential}, **extra}}


class Writer(threading.Thread):
    """Plays the user's steps in order, each retried until the API server takes it (it may be
    down): creates treat 409 as done and deletes 404, since a request whose answer was lost to a
    restart may have been applied. `done` counts finished steps."""

    def __init__(self, api: client.ApiClient, steps: list[Callable[[], None]], deadline: float) -> None:
        super().__init__(daemon=True, name="chaos-writer")
        self.api, self.steps, self.deadline = api, steps, deadline
        self.done, self.failed_attempts = 0, 0
        self.error: str | None = None
        self.progress = threading.Condition()

    def run(self) -> None:
        for step in self.steps:
            while True:
                try:
                    step()
                    break
                except client.ApiException as exc:
                    if exc.status == 409 and getattr(step, "create", False):
                        break
                    if exc.status == 404 and getattr(step, "delete", False):
                        break
                    last = f"{exc.status} {exc.reason}"
                except Exception as exc:  # noqa: BLE001 - the API server is down: try again
                    last = type(exc).__name__
                self.failed_attempts += 1
                if time.monotonic() > self.deadline:
                    self.error = f"step {self.done + 1} not accepted before the deadline (last: {last})"
                    with self.progress:
                        self.progress.notify_all()
                    return
                time.sleep(0.3)
            with self.progress:
                self.done += 1
                self.progress.notify_all()
            time.sleep(0.3)  # spread the steps so restarts land between and during them

    def wait_done(self, count: int, timeout: float) -> None:
        with self.progress:
            ok = self.progress.wait_for(lambda: self.done >= count or self.error is not None, timeout)
        assert self.error is None, self.error
        assert ok, f"the writer finished {self.done} of {count} steps in {timeout:.0f}s"


def _steps(api: client.ApiClient) -> list[Callable[[], None]]:
    ns, objects = NAMESPACE, client.CustomObjectsApi(api)

    def create(kind: str, name: str, spec: dict) -> Callable[[], None]:
        step = lambda: create_custom(api, ns, kind, name, spec)  # noqa: E731
        step.create = True  # type: ignore[attr-defined]
        return step

    def delete(kind: str, name: str) -> Callable[[], None]:
        step = lambda: objects.delete_namespaced_custom_object(GROUP, VERSION, ns, kind.lower() + "s", name)  # noqa: E731
        step.delete = True  # type: ignore[attr-defined]
        return step

    return [
        # before the first restart
        lambda: put_secret(api, ns, "tok-1", {"token": TOKEN_1}),
        create("FliptCredential", "cred-1", {"type": "accessToken", "secretRef": {"name": "tok-1"}}),
        create("FliptStorage", "flags-a", {"memory": {}}),
        create("FliptStorage", "git-a", _git("https://git.example.com/a.git", "cred-1")),
        create("FliptEnvironment", "a-prod", {"server": "a", "default": True, "storage": "flags-a",
                                              "directory": "prod"}),
        create("FliptEnvironment", "a-staging", {"server": "a", "storage": "git-a"}),
        create("FliptEnvironment", "b-main", {"server": "b"}),
        create("FliptEnvironment", "e-main", {"server": "e"}),
        lambda: put_secret(api, ns, "tok-2", {"token": TOKEN_2}),
        create("FliptCredential", "cred-2", {"type": "accessToken", "secretRef": {"name": "tok-2"}}),
        create("FliptStorage", "git-c", _git("https://git.example.com/c.git", "cred-2")),
        create("FliptEnvironment", "c-main", {"server": "c"}),  # STEPS_BEFORE_FIRST_RESTART ends here
        # around the first restart
        lambda: put_secret(api, ns, "basic-3", {"username": PASSWORD}),  # the password under a wrong key
        create("FliptCredential", "cred-3", {"type": "basic", "secretRef": {"name": "basic-3"}}),
        create("FliptStorage", "git-d", _git("https://git.example.com/d.git", "cred-3")),
        create("FliptEnvironment", "d-main", {"server": "d", "storage": "git-d"}),
        lambda: patch_custom(api, ns, "FliptEnvironment", "a-prod", {"spec": {"deployment": {"replicas": 2}}}),
        lambda: put_secret(api, ns, "tok-1", {"token": TOKEN_1_ROTATED}),
        delete("FliptEnvironment", "e-main"),  # STEPS_BEFORE_SECOND_RESTART ends here
        # around the second restart
        lambda: put_secret(api, ns, "basic-3", {"username": "flipt", "password": PASSWORD}),
        lambda: patch_custom(api, ns, "FliptEnvironment", "c-main", {"spec": {"storage": "git-c",
                                                                              "directory": "c"}}),
        lambda: patch_custom(api, ns, "FliptStorage", "git-c", {"spec": {"git": {"pollInterval": "45s"}}}),
    ]


STEPS_BEFORE_FIRST_RESTART = 12
STEPS_BEFORE_SECOND_RESTART = 19
HEALTHY_SERVERS = {"a": ["a-prod", "a-staging"], "c": ["c-main"], "d": ["d-main"]}


def _ready_and_current(obj: dict) -> bool:
    ready = condition(obj, "Ready")
    return (ready is not None and ready["status"] == "True"
            and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"])


def _rendered(api: client.ApiClient) -> dict[str, list[dict]]:
    """What the operator's planner and builder make of the objects as they are now, per server:
    the children every healthy server must have (the operator's own pure functions, fed with
    the final objects, so any input a lost event or retry missed shows as a difference)."""
    objects = client.CustomObjectsApi(api)

    def items(kind: str) -> dict[str, dict]:
        listed = objects.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, kind.lower() + "s")["items"]
        return {o["metadata"]["name"]: o for o in listed}

    envs, storages, creds = items("FliptEnvironment"), items("FliptStorage"), items("FliptCredential")
    secrets = {s.metadata.name: s for s in client.CoreV1Api(api).list_namespaced_secret(NAMESPACE).items}
    cred_states = {n: CredentialState(FliptCredentialSpec.model_validate(c["spec"]), _ready_and_current(c))
                   for n, c in creds.items()}
    native = supports_native_sidecars(client.VersionApi(api).get_code().git_version)
    results = plan_servers(
        NAMESPACE,
        {n: FliptEnvironmentSpec.model_validate(e["spec"]) for n, e in envs.items()},
        {n: FliptStorageSpec.model_validate(s["spec"]) for n, s in storages.items()},
        cred_states, {n: sorted(s.data or {}) for n, s in secrets.items()},
        operator_defaults(native_sidecar=native),
    )
    rendered = {}
    for server in HEALTHY_SERVERS:
        plan = results[server].plan
        assert plan is not None, results[server].errors
        versions = {f"Secret/{s}": secrets[s].metadata.resource_version for s in plan.referenced_secrets()}
        versions |= {f"FliptCredential/{c}": str(creds[c]["metadata"]["generation"])
                     for c in plan.referenced_credentials()}
        rendered[server] = build_server_manifests(plan, versions).all()
    return rendered


def _by_name(value: Any) -> Any:
    """Lists of named items (containers, volumes, env, ports) in name order: server-side apply
    keeps the order of items already there, so a volume added later may sit after older ones."""
    if isinstance(value, dict):
        return {k: _by_name(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_by_name(v) for v in value]
        if items and all(isinstance(i, dict) and "name" in i for i in items):
            items.sort(key=lambda i: str(i["name"]))
        return items
    return value


def _first_difference(desired: Any, live: Any, path: str = "") -> str | None:
    """Where `live` does not hold what `desired` sets (None when it holds all of it)."""
    if isinstance(desired, dict) and isinstance(live, dict):
        return next((d for k, v in desired.items() if (d := _first_difference(v, live.get(k), f"{path}.{k}"))), None)
    if isinstance(desired, list) and isinstance(live, list) and len(desired) == len(live):
        return next((d for i, (x, y) in enumerate(zip(desired, live, strict=True))
                     if (d := _first_difference(x, y, f"{path}[{i}]"))), None)
    return None if is_subset(desired, live) else f"{path}: {json.dumps(desired)[:200]} != {json.dumps(live)[:200]}"


def _children_as_rendered(api: client.ApiClient) -> list[str]:
    """Differences between the live children and `_rendered` (empty when every field matches)."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    read = {"ConfigMap": core.read_namespaced_config_map, "ServiceAccount": core.read_namespaced_service_account,
            "Service": core.read_namespaced_service, "Deployment": apps.read_namespaced_deployment}
    differences = []
    for server, manifests in _rendered(api).items():
        for manifest in manifests:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            try:
                live = api.sanitize_for_serialization(read[kind](name, NAMESPACE))
            except client.ApiException as exc:
                differences.append(f"{kind} {name}: {exc.status}")
                continue
            body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
            difference = _first_difference(_by_name(body), _by_name(live))
            if difference:
                differences.append(f"{kind} {name} is not what server {server} renders: {difference}")
            owners = sorted(o["name"] for o in live["metadata"].get("ownerReferences") or [])
            if owners != HEALTHY_SERVERS[server]:
                differences.append(f"{kind} {name} owned by {owners}")
    return differences


def _final_state(api: client.ApiClient) -> list[str]:
    """What is not yet as it must end up; empty when everything is."""
    pending = []
    for kind, names in (("FliptCredential", ["cred-1", "cred-2", "cred-3"]),
                        ("FliptStorage", ["flags-a", "git-a", "git-c", "git-d"])):
        for name in names:
            if not _ready_and_current(get_custom(api, NAMESPACE, kind, name)):
                pending.append(f"{kind} {name} not Ready at its generation")
    for server, envs in HEALTHY_SERVERS.items():
        dep = read_deployment(api, NAMESPACE, server)
        for name in envs:
            env = get_custom(api, NAMESPACE, "FliptEnvironment", name)
            status = env.get("status") or {}
            if not _ready_and_current(env) or status.get("server") != server:
                pending.append(f"FliptEnvironment {name} not Ready at its generation on server {server}")
            elif dep is None or status.get("configHash") != dep.spec.template.metadata.annotations.get(
                    CONFIG_HASH_ANNOTATION):
                pending.append(f"FliptEnvironment {name}: configHash is not the Deployment's")
    broken = get_custom(api, NAMESPACE, "FliptEnvironment", "b-main")
    stalled = condition(broken, "Stalled")
    if not (stalled and stalled["status"] == "True" and stalled["reason"] == "ApplyFailed"
            and (broken.get("status") or {}).get("observedGeneration") == broken["metadata"]["generation"]):
        pending.append(f"b-main not Stalled with ApplyFailed: {stalled}")
    core = client.CoreV1Api(api)
    selector = "app.kubernetes.io/instance=e"
    if (read_deployment(api, NAMESPACE, "e") or core.list_namespaced_config_map(NAMESPACE, label_selector=selector).items
            or core.list_namespaced_service(NAMESPACE, label_selector=selector).items):
        pending.append("server e's children not deleted")
    return pending or _children_as_rendered(api)


def _healthy(op) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.liveness_port}/healthz", timeout=10) as response:
        return response.status == 200


def test_api_server_restarts_and_an_unpatchable_server_leave_everything_else_converged(own_cluster, tmp_path):
    local = own_cluster
    api, writer_api, controller_api = local.api_client(), local.api_client(), local.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    apps.create_namespaced_deployment(NAMESPACE, _foreign_deployment("b"))
    op = start_operator(local.kubeconfig, tmp_path / "operator.log")
    started = time.monotonic()
    try:
        with StandInDeploymentController(controller_api, NAMESPACE):
            writer = Writer(writer_api, _steps(writer_api), deadline=time.monotonic() + SETTLE_TIMEOUT)
            writer.start()
            pids = [local.pids["kube-apiserver"]]
            # Restarts run on this thread: the API server dies with the thread that spawned it.
            writer.wait_done(STEPS_BEFORE_FIRST_RESTART, timeout=120)
            pids.append(local.restart_apiserver(down_seconds=DOWN_SECONDS))
            writer.wait_done(STEPS_BEFORE_SECOND_RESTART, timeout=120)
            pids.append(local.restart_apiserver(down_seconds=DOWN_SECONDS))
            writer.wait_done(len(writer.steps), timeout=120)
            writer.join(timeout=10)
            assert len(set(pids)) == 3
            chaos_done = time.monotonic()

            pending: list[str] = []

            def converged() -> bool:
                pending[:] = _final_state(api)
                return not pending

            try:
                wait_for(converged, timeout=SETTLE_TIMEOUT, interval=1.0, message="the final state")
            except TimeoutError as exc:
                raise AssertionError(f"not converged: {pending}\n{op.logs()[-6000:]}") from exc
            settled = time.monotonic()

        assert op.process.poll() is None, op.logs()[-3000:]
        assert wait_for(lambda: _healthy(op), timeout=30, message="operator liveness")
        dep = apps.read_namespaced_deployment("a", NAMESPACE)
        assert dep.spec.replicas == 2  # changed while the API server was restarting
        assert apps.read_namespaced_deployment("b", NAMESPACE).spec.selector.match_labels == {"app": "someone-else"}
        broken = get_custom(api, NAMESPACE, "FliptEnvironment", "b-main")
        assert "Deployment b" in condition(broken, "Ready")["message"]

        logs = op.logs()
        # The operator did see the outage (or the test would prove nothing about it).
        assert writer.failed_attempts > 0
        statuses = json.dumps([get_custom(api, NAMESPACE, kind, name)["status"]
                               for kind, names in (("FliptCredential", ["cred-1", "cred-2", "cred-3"]),
                                                   ("FliptStorage", ["flags-a", "git-a", "git-c", "git-d"]),
                                                   ("FliptEnvironment", ["a-prod", "a-staging", "b-main",
                                                                         "c-main", "d-main"]))
                               for name in names])
        events = json.dumps([e.message for e in core.list_namespaced_event(NAMESPACE).items])
        config_maps = json.dumps([c.data for c in core.list_namespaced_config_map(NAMESPACE).items])
        for value in SECRET_VALUES:
            for text in (value, base64.b64encode(value.encode()).decode()):
                assert text not in logs
                assert text not in statuses + events + config_maps
        print(f"chaos phase {chaos_done - started:.1f}s, settled {settled - chaos_done:.1f}s after it; "
              f"{writer.failed_attempts} writes refused during the outages")
    finally:
        op.stop()
        for c in (api, writer_api, controller_api):
            c.close()
    assert op.process.returncode in (0, -15), op.logs()[-3000:]



def test_a_secret_fixed_while_the_operator_could_not_watch_is_seen_in_the_relisting(own_cluster, tmp_path):
    """Deterministic form of one gap the chaos above may hit: the operator is frozen (SIGSTOP)
    while the API server restarts and a Secret is fixed, so its watch can only resume by a
    re-listing (410 Gone: the new server's watch cache starts after the old resourceVersion)."""
    local = own_cluster
    api = local.api_client()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    put_secret(api, NAMESPACE, "basic", {"username": PASSWORD})  # the password under a wrong key
    create_custom(api, NAMESPACE, "FliptCredential", "cred", {"type": "basic", "secretRef": {"name": "basic"}})
    op = start_operator(local.kubeconfig, tmp_path / "operator.log")
    try:
        wait_for(lambda: (c := condition(get_custom(api, NAMESPACE, "FliptCredential", "cred"), "Ready"))
                 and c["reason"] == "MissingKey", timeout=60, message="cred MissingKey")
        op.process.send_signal(signal.SIGSTOP)
        try:
            local.restart_apiserver()
            put_secret(api, NAMESPACE, "basic", {"username": "flipt", "password": PASSWORD})
        finally:
            op.process.send_signal(signal.SIGCONT)
        wait_for(lambda: _ready_and_current(get_custom(api, NAMESPACE, "FliptCredential", "cred")), timeout=90,
                 message="cred Ready after the re-listing")
        assert "Secret chaos/basic changed while its watch was down" in op.logs()
        assert _healthy(op)
        for text in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode()):
            assert text not in op.logs()
    finally:
        op.stop()
        api.close()
    assert op.process.returncode in (0, -15), op.logs()[-3000:]
