"""The level-based reconcile of one namespace's Flipt servers.

Everything a server depends on (environments, storages, credentials, Secrets, the
Deployment's status, sidecar reports) feeds one pass: plan every server, apply what
changed, delete servers nobody serves, write each environment's and storage's status.
Triggers from any kind land here; bursts collapse into one pass per namespace.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..builders.server_manifests import MANAGED_BY as MANAGED_BY_VALUE
from ..builders.server_manifests import build_server_manifests
from ..builders.status import Summary
from ..clients.kube import Kube
from ..models.credential import FliptCredentialSpec
from ..models.environment import FliptEnvironmentSpec
from ..models.kinds import CREDENTIAL, ENVIRONMENT, STORAGE
from ..models.plan import OperatorDefaults, Problem
from ..models.storage import FliptStorageSpec
from ..models.sync import StorageSyncState
from ..rules.servers import CredentialState, plan_servers
from ..builders.status_decisions import StatusDecision, deployment_availability, environment_status, storage_status
from .database import DatabaseGate, database_gate
from .metrics import API_WRITES, RECONCILE_SECONDS, RECONCILES
from .reporting import write_status

log = logging.getLogger(__name__)
MANAGED_BY = f"app.kubernetes.io/managed-by={MANAGED_BY_VALUE}"
CHILD_KINDS = ("Deployment", "Service", "ConfigMap", "ServiceAccount")


def operator_defaults(native_sidecar: bool) -> OperatorDefaults:
    kwargs: dict[str, Any] = {"sidecar_image": os.environ.get("FLIPT_OPERATOR_IMAGE", "flipt-operator:0.1.0"),
                              "native_sidecar": native_sidecar}
    if os.environ.get("FLIPT_V1_IMAGE"):
        kwargs["v1_image"] = os.environ["FLIPT_V1_IMAGE"]
    if os.environ.get("FLIPT_V2_IMAGE"):
        kwargs["v2_image"] = os.environ["FLIPT_V2_IMAGE"]
    return OperatorDefaults(**kwargs)


@dataclass
class SyncReports:
    """The latest /status of every sidecar, by (namespace, storage): [(pod, state)]."""

    by_storage: dict[tuple[str, str], list[tuple[str, StorageSyncState]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def for_storage(self, namespace: str, name: str) -> list[tuple[str, StorageSyncState]]:
        with self.lock:
            return list(self.by_storage.get((namespace, name), []))

    def replace_namespace(self, namespace: str, reports: dict[str, list[tuple[str, StorageSyncState]]]) -> bool:
        """Store a namespace's reports; True when they differ from what was stored."""
        with self.lock:
            old = {k[1]: v for k, v in self.by_storage.items() if k[0] == namespace}
            if old == reports:
                return False
            for key in [k for k in self.by_storage if k[0] == namespace]:
                del self.by_storage[key]
            for storage, items in reports.items():
                self.by_storage[(namespace, storage)] = items
            return True


@dataclass
class Context:
    kube: Kube
    defaults: OperatorDefaults
    reports: SyncReports = field(default_factory=SyncReports)
    git_namespaces: set[str] = field(default_factory=set)  # where the sync poller looks


def _parse(objects: list[dict], model: type) -> tuple[dict[str, Any], dict[str, str]]:
    specs, invalid = {}, {}
    for obj in objects:
        name = obj["metadata"]["name"]
        if obj["metadata"].get("deletionTimestamp"):
            continue
        try:
            specs[name] = model.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            invalid[name] = f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return specs, invalid


def _owner_references(environments: list[dict], default: str | None) -> list[dict[str, Any]]:
    # Every environment of the server owns it, so garbage collection removes it with the last one.
    return [
        {
            "apiVersion": e["apiVersion"],
            "kind": ENVIRONMENT.kind,
            "name": e["metadata"]["name"],
            "uid": e["metadata"]["uid"],
            "controller": e["metadata"]["name"] == default,
            "blockOwnerDeletion": False,
        }
        for e in sorted(environments, key=lambda e: e["metadata"]["name"])
    ]


def _is_ready(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions", []))


def reconcile_namespace(ctx: Context, namespace: str) -> None:
    kube = ctx.kube
    with RECONCILE_SECONDS.labels("Namespace").time():
        environments = kube.list(ENVIRONMENT, namespace)
        storages = kube.list(STORAGE, namespace)
        credentials = kube.list(CREDENTIAL, namespace)
        secrets = kube.secret_keys(namespace)

        env_specs, env_invalid = _parse(environments, FliptEnvironmentSpec)
        storage_specs, storage_invalid = _parse(storages, FliptStorageSpec)
        cred_specs, _ = _parse(credentials, FliptCredentialSpec)
        cred_objects = {c["metadata"]["name"]: c for c in credentials}
        cred_states = {n: CredentialState(s, _is_ready(cred_objects[n])) for n, s in cred_specs.items()}
        results = plan_servers(
            namespace, env_specs, storage_specs, cred_states, {n: keys for n, (keys, _) in secrets.items()},
            ctx.defaults,
        )

        env_by_name = {e["metadata"]["name"]: e for e in environments}
        storage_by_name = {s["metadata"]["name"]: s for s in storages}
        gates: dict[str, DatabaseGate] = {}
        deployments: dict[str, dict | None] = {}
        hashes: dict[str, str] = {}
        for server, result in results.items():
            if result.plan is None:
                continue  # keep what runs; the environments say why it can't change
            plan = result.plan
            versions = {f"Secret/{s}": secrets[s][1] for s in plan.referenced_secrets() if s in secrets}
            versions |= {
                f"FliptCredential/{c}": str(cred_objects[c]["metadata"].get("generation", 0))
                for c in plan.referenced_credentials() if c in cred_objects
            }
            manifests = build_server_manifests(plan, versions)
            owners = _owner_references([env_by_name[e] for e in result.environments],
                                       plan.default_environment.name)
            for manifest in manifests.all():
                if manifest["kind"] == "Deployment" and plan.database is not None:
                    # The database lifecycle decides whether the Deployment may change now.
                    gate = database_gate(ctx, namespace, storage_by_name[plan.database.name], plan,
                                         kube.read_child("Deployment", namespace, server))
                    gates[server] = gate
                    if gate.hold:
                        continue
                manifest["metadata"]["namespace"] = namespace
                manifest["metadata"]["ownerReferences"] = owners
                outcome = kube.apply(manifest)
                if outcome != "unchanged":
                    API_WRITES.labels(manifest["kind"], outcome).inc()
                    log.info("%s %s %s/%s", outcome, manifest["kind"], namespace, manifest["metadata"]["name"])
            deployments[server] = kube.read_child("Deployment", namespace, server)
            hashes[server] = manifests.config_hash

        _delete_orphans(kube, namespace, set(results))

        storage_servers: dict[str, list[str]] = defaultdict(list)
        for server, result in results.items():
            for env in result.environments:
                storage = env_specs[env].storage
                if storage:
                    storage_servers[storage].append(server)

        for env in environments:
            name = env["metadata"]["name"]
            if env["metadata"].get("deletionTimestamp"):
                continue
            if name in env_invalid:
                problem = Problem(ENVIRONMENT.kind, name, "spec", "InvalidSpec", env_invalid[name])
                decision = environment_status(name, "", [problem], [], None, None, None, None)
            else:
                spec = env_specs[name]
                result = results[spec.server]
                storage_spec = storage_specs.get(spec.storage) if spec.storage else None
                revision = None
                if storage_spec is not None and storage_spec.git is not None:
                    states = ctx.reports.for_storage(namespace, spec.storage)
                    revs = {s.revision for _, s in states}
                    revision = revs.pop() if len(revs) == 1 else None
                decision = environment_status(
                    name, spec.server, result.errors, result.warnings,
                    deployment_availability(deployments.get(spec.server)) if result.plan else None,
                    storage_spec.backend if storage_spec else ("memory" if not spec.storage else None),
                    revision, hashes.get(spec.server),
                )
                gate = gates.get(spec.server)
                if gate is not None and gate.environment is not None:
                    decision = StatusDecision(gate.environment, decision.domain, decision.managed, decision.fields)
            write_status(kube, ENVIRONMENT, env, summary=decision.summary, domain=decision.domain,
                         managed=decision.managed, fields=decision.fields)

        all_errors = [p for r in results.values() for p in r.errors]
        all_warnings = [p for r in results.values() for p in r.warnings]
        for storage in storages:
            name = storage["metadata"]["name"]
            if storage["metadata"].get("deletionTimestamp"):
                continue
            if name in storage_invalid:
                write_status(kube, STORAGE, storage,
                             summary=Summary("stalled", "InvalidSpec", storage_invalid[name]))
                continue
            spec = storage_specs[name]
            ref = spec.git.credential_ref.name if spec.git and spec.git.credential_ref else None
            cred_ready = (cred_states[ref].ready if ref in cred_states else False) if ref else None
            errors = [p for p in all_errors if p.kind == STORAGE.kind and p.name == name]
            warnings = [p for p in all_warnings if p.kind == STORAGE.kind and p.name == name]
            users = sorted(set(storage_servers.get(name, [])))
            gate = next((gates[s] for s in users if s in gates), None)
            decision = storage_status(name, spec, errors, warnings, users, cred_ready,
                                      ctx.reports.for_storage(namespace, name),
                                      gate.report if gate is not None else None)
            write_status(kube, STORAGE, storage, summary=decision.summary, domain=decision.domain,
                         managed=decision.managed, fields=decision.fields)
        RECONCILES.labels("Namespace", "done").inc()


def _delete_orphans(kube: Kube, namespace: str, servers: set[str]) -> None:
    """Servers whose last environment is gone (garbage collection does it too, when it runs)."""
    for kind in CHILD_KINDS:
        for obj in kube.list_children(kind, namespace, MANAGED_BY):
            instance = obj["metadata"].get("labels", {}).get("app.kubernetes.io/instance")
            if instance and instance not in servers:
                if kube.delete_child(kind, namespace, obj["metadata"]["name"]):
                    API_WRITES.labels(kind, "deleted").inc()
                    log.info("deleted %s %s/%s: no environment uses server %s", kind, namespace,
                             obj["metadata"]["name"], instance)


class Coalescer:
    """At most one pass per namespace at a time; requests during a pass cause one more pass."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._running: set[str] = set()
        self._dirty: set[str] = set()

    def run(self, namespace: str, work) -> None:
        with self._guard:
            if namespace in self._running:
                self._dirty.add(namespace)
                return
            self._running.add(namespace)
        try:
            while True:
                with self._guard:
                    self._dirty.discard(namespace)
                work(namespace)
                with self._guard:
                    if namespace not in self._dirty:
                        break
        finally:
            with self._guard:
                self._running.discard(namespace)


COALESCER = Coalescer()


def request(ctx: Context, namespace: str) -> None:
    COALESCER.run(namespace, lambda ns: reconcile_namespace(ctx, ns))

