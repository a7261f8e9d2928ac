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
import traceback
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from ..builders.server_manifests import MANAGED_BY as MANAGED_BY_VALUE
from ..builders.server_manifests import build_server_manifests
from ..builders.status import Summary
from ..builders.status_decisions import StatusDecision, deployment_availability, environment_status, storage_status
from ..clients.kube import Kube, api_error_text, applied_hash, is_transient
from ..models.credential import FliptCredentialSpec
from ..models.environment import FliptEnvironmentSpec
from ..models.kinds import CREDENTIAL, ENVIRONMENT, STORAGE
from ..models.plan import Problem
from ..models.storage import FliptStorageSpec
from ..rules.references import referenced_secret_names
from ..rules.servers import CredentialState, plan_servers
from .context import Context
from .database import DatabaseGate, database_gate
from .deadline import PASS_CLOCK
from .metrics import API_WRITES, PASSES_IN_PROGRESS, RECONCILE_SECONDS, RECONCILES
from .reporting import write_status

log = logging.getLogger(__name__)
MANAGED_BY = f"app.kubernetes.io/managed-by={MANAGED_BY_VALUE}"
CHILD_KINDS = ("Deployment", "Service", "ConfigMap", "ServiceAccount")


def _parse(objects: list[dict], model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, str]]:
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


@dataclass
class Snapshot:
    """What one pass reads: everything server-related in the namespace, listed once."""

    environments: list[dict]
    storages: list[dict]
    credentials: list[dict]
    secrets: dict[str, tuple[list[str], str]]
    children: dict[str, dict[str, dict]]  # kind -> name -> object (ours, by label)

    @classmethod
    def read(cls, kube: Kube, namespace: str) -> Snapshot:
        storages, credentials = kube.list(STORAGE, namespace), kube.list(CREDENTIAL, namespace)
        return cls(
            environments=kube.list(ENVIRONMENT, namespace),
            storages=storages,
            credentials=credentials,
            # Only the Secrets some object names, each by name: the rules need their key names.
            secrets=kube.secret_keys(namespace, referenced_secret_names(storages, credentials)),
            children={
                kind: {o["metadata"]["name"]: o for o in kube.list_children(kind, namespace, MANAGED_BY)}
                for kind in CHILD_KINDS
            },
        )


@dataclass(frozen=True)
class ServerFailure:
    """Why a server could not be applied: what was being written, the API server's message
    (never a request body) and whether retrying may help (`is_transient`) or a person must act."""

    message: str
    transient: bool

    def summary(self, server: str) -> Summary:
        if self.transient:
            return Summary("retrying", "ApplyFailed", f"Server {server}: {self.message} (retrying)")
        return Summary("stalled", "ApplyFailed",
                       f"Server {server}: {self.message}. Fix the cause; the next change in the "
                       "namespace applies it again.")


@dataclass
class ServerOutcome:
    deployment: dict | None
    config_hash: str | None
    gate: DatabaseGate | None = None
    failure: ServerFailure | None = None


def _apply_server(ctx: Context, namespace: str, snap: Snapshot, result: Any,
                  env_by_name: dict[str, dict], storage_by_name: dict[str, dict],
                  cred_objects: dict[str, dict]) -> ServerOutcome:
    """Apply one server's objects. A failure is returned, not raised: it is this server's, and
    the rest of the pass (other servers, orphans, every status) goes on without it."""
    kube, plan = ctx.kube, result.plan
    outcome = ServerOutcome(snap.children["Deployment"].get(plan.name), None)
    step = f"server {plan.name}"
    try:
        versions = {f"Secret/{s}": snap.secrets[s][1] for s in plan.referenced_secrets() if s in snap.secrets}
        # The credential's generation, not its resourceVersion: status writes must not roll pods.
        versions |= {
            f"FliptCredential/{c}": str(cred_objects[c]["metadata"].get("generation", 0))
            for c in plan.referenced_credentials() if c in cred_objects
        }
        manifests = build_server_manifests(plan, versions)
        outcome.config_hash = manifests.config_hash
        owners = _owner_references([env_by_name[e] for e in result.environments], plan.default_environment.name)
        for manifest in manifests.all():
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            if kind == "Deployment" and plan.database is not None:
                # The database lifecycle decides whether the Deployment may change now.
                step = f"the database lifecycle of FliptStorage {plan.database.name}"
                outcome.gate = database_gate(ctx, namespace, storage_by_name[plan.database.name], plan,
                                             outcome.deployment)
                if outcome.gate.hold:
                    continue
            step = f"{kind} {name}"
            manifest["metadata"]["namespace"] = namespace
            manifest["metadata"]["ownerReferences"] = owners
            if kind == "Deployment":  # our own write's watch event needs no pass of its own
                ctx.seen.expect_own_write(kind, namespace, name, applied_hash(manifest))
            written, stored = kube.apply_object(manifest, snap.children[kind].get(name))
            if kind == "Deployment":
                outcome.deployment = stored
                if written == "unchanged":
                    ctx.seen.expect_own_write(kind, namespace, name, None)
            if written != "unchanged":
                API_WRITES.labels(kind, written).inc()
                log.info("%s %s %s/%s", written, kind, namespace, name)
    except Exception as exc:  # noqa: BLE001 - recorded on the server's environments
        outcome.failure = ServerFailure(f"applying {step} failed: {api_error_text(exc)}", is_transient(exc))
        log.warning("server %s/%s: %s", namespace, plan.name, outcome.failure.message)
        if not isinstance(exc, ApiException):
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.warning("server failure at %s:%s in %s", os.path.basename(where.filename), where.lineno, where.name)
    return outcome


@dataclass
class PassOutcome:
    """What a pass could not finish and a later pass may: servers and objects that failed transiently."""

    transient_failures: list[str]


def reconcile_namespace(ctx: Context, namespace: str) -> PassOutcome:
    """Raises only when the pass's shared reads fail; what fails for one server or object is
    recorded on it, and returned when a retry may help."""
    kube = ctx.kube
    with RECONCILE_SECONDS.labels("Namespace").time():
        snap = Snapshot.read(kube, namespace)
        env_specs, env_invalid = _parse(snap.environments, FliptEnvironmentSpec)
        storage_specs, storage_invalid = _parse(snap.storages, FliptStorageSpec)
        cred_specs, _ = _parse(snap.credentials, FliptCredentialSpec)
        cred_objects = {c["metadata"]["name"]: c for c in snap.credentials}
        cred_states = {n: CredentialState(s, _is_ready(cred_objects[n])) for n, s in cred_specs.items()}
        results = plan_servers(
            namespace, env_specs, storage_specs, cred_states, {n: keys for n, (keys, _) in snap.secrets.items()},
            ctx.defaults,
        )
        env_by_name = {e["metadata"]["name"]: e for e in snap.environments}
        storage_by_name = {s["metadata"]["name"]: s for s in snap.storages}

        # Servers are independent of each other: apply them side by side.
        plannable = [r for r in results.values() if r.plan is not None]  # the rest keep what runs
        outcomes = dict(zip(
            (r.server for r in plannable),
            ctx.pool.map(lambda r: _apply_server(ctx, namespace, snap, r, env_by_name, storage_by_name,
                                                 cred_objects), plannable),
            strict=True,
        ))
        retry = [f"server {server}" for server, outcome in outcomes.items()
                 if outcome.failure is not None and outcome.failure.transient]
        retry += _delete_orphans(kube, namespace, set(results), snap.children)

        storage_servers: dict[str, set[str]] = defaultdict(set)
        for server, result in results.items():
            for env in result.environments:
                if env_specs[env].storage:
                    storage_servers[env_specs[env].storage].add(server)

        def environment_decision(env: dict) -> StatusDecision:
            name = env["metadata"]["name"]
            if name in env_invalid:
                problem = Problem(ENVIRONMENT.kind, name, "spec", "InvalidSpec", env_invalid[name])
                return environment_status(name, "", [problem], [], None, None, None, None)
            spec = env_specs[name]
            result, outcome = results[spec.server], outcomes.get(spec.server)
            storage_spec = storage_specs.get(spec.storage) if spec.storage else None
            revision = None
            if storage_spec is not None and storage_spec.git is not None:
                states = ctx.reports.for_storage(namespace, spec.storage)
                if states is None:  # not read since start: keep what the status says
                    revision = (env.get("status") or {}).get("revision")
                else:
                    revisions = {s.revision for _, s in states}
                    revision = revisions.pop() if len(revisions) == 1 else None
            decision = environment_status(
                name, spec.server, result.errors, result.warnings,
                deployment_availability(outcome.deployment) if outcome else None,
                storage_spec.backend if storage_spec else ("memory" if not spec.storage else None),
                revision, outcome.config_hash if outcome else None,
            )
            gate = outcome.gate if outcome else None
            if outcome is not None and outcome.failure is not None:
                decision = StatusDecision(outcome.failure.summary(spec.server), decision.domain,
                                          decision.managed, decision.fields)
            elif gate is not None and gate.environment is not None:
                decision = StatusDecision(gate.environment, decision.domain, decision.managed, decision.fields)
            return decision

        all_errors = [p for r in results.values() for p in r.errors]
        all_warnings = [p for r in results.values() for p in r.warnings]

        def storage_decision(storage: dict) -> StatusDecision:
            name = storage["metadata"]["name"]
            if name in storage_invalid:
                return StatusDecision(Summary("stalled", "InvalidSpec", storage_invalid[name]))
            spec = storage_specs[name]
            ref = spec.git.credential_ref.name if spec.git and spec.git.credential_ref else None
            cred_ready = (cred_states[ref].ready if ref in cred_states else False) if ref else None
            users = sorted(storage_servers.get(name, ()))
            gate = next((outcomes[s].gate for s in users if s in outcomes and outcomes[s].gate), None)
            return storage_status(
                name, spec,
                [p for p in all_errors if p.kind == STORAGE.kind and p.name == name],
                [p for p in all_warnings if p.kind == STORAGE.kind and p.name == name],
                users, cred_ready, ctx.reports.for_storage(namespace, name),
                gate.report if gate is not None else None, previous=storage.get("status"),
            )

        def write(item: tuple[Any, dict]) -> str | None:
            """One object's status; a failure is this object's (returned when transient)."""
            kind, obj = item
            try:
                decision = environment_decision(obj) if kind is ENVIRONMENT else storage_decision(obj)
                write_status(kube, kind, obj, summary=decision.summary, domain=decision.domain,
                             managed=decision.managed, fields=decision.fields)
            except Exception as exc:  # noqa: BLE001 - the other statuses are still written
                what = f"{kind.kind} {obj['metadata']['name']}"
                log.warning("status of %s/%s not written: %s", namespace, what, api_error_text(exc))
                return f"status of {what}" if is_transient(exc) else None
            return None

        live = [(ENVIRONMENT, e) for e in snap.environments if not e["metadata"].get("deletionTimestamp")]
        live += [(STORAGE, s) for s in snap.storages if not s["metadata"].get("deletionTimestamp")]
        retry += [failed for failed in ctx.pool.map(write, live) if failed]
        complete = not retry and not any(o.failure for o in outcomes.values())
        RECONCILES.labels("Namespace", "done" if complete else "partial").inc()
        # Tests wait on this line to know a pass has run, instead of sleeping.
        log.debug("pass over %s %s", namespace, "done" if complete else "partial")
        return PassOutcome(retry)


def _delete_orphans(kube: Kube, namespace: str, servers: set[str], children: dict[str, dict[str, dict]]) -> list[str]:
    """Servers whose last environment is gone (garbage collection does it too, when it runs).
    Each object on its own: returns those whose deletion failed transiently."""
    failed = []
    for kind in CHILD_KINDS:
        for obj in children[kind].values():
            name = obj["metadata"]["name"]
            instance = obj["metadata"].get("labels", {}).get("app.kubernetes.io/instance")
            if instance and instance not in servers:
                try:
                    deleted = kube.delete_child(kind, namespace, name)
                except Exception as exc:  # noqa: BLE001 - the other orphans are still deleted
                    log.warning("could not delete %s %s/%s: %s", kind, namespace, name, api_error_text(exc))
                    if is_transient(exc):
                        failed.append(f"{kind} {name}")
                    continue
                if deleted:
                    API_WRITES.labels(kind, "deleted").inc()
                    log.info("deleted %s %s/%s: no environment uses server %s", kind, namespace, name, instance)
    return failed


def _report_failure(ctx: Context, namespace: str, error: str, delay: float) -> None:
    """Keep the error in the environments' status too (events expire); best effort."""
    summary = Summary("retrying", "ReconcileError", f"{error} (retrying in {delay:.0f}s)")
    try:
        for env in ctx.kube.list(ENVIRONMENT, namespace):
            write_status(ctx.kube, ENVIRONMENT, env, summary=summary)
    except Exception as exc:  # noqa: BLE001 - the API may be what failed
        log.debug("could not record the failure in status: %s", api_error_text(exc))


class Coalescer:
    """At most one pass per namespace at a time; requests during a pass cause one more pass."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._running: set[str] = set()
        self._dirty: set[str] = set()

    def run(self, namespace: str, work) -> Any:
        """The last pass's result; None when the request folded into a pass under way."""
        with self._guard:
            if namespace in self._running:
                self._dirty.add(namespace)
                return None
            self._running.add(namespace)
        try:
            while True:
                with self._guard:
                    self._dirty.discard(namespace)
                result = work(namespace)
                with self._guard:
                    # Check and release under one lock: a request arriving in between would
                    # otherwise see the pass as running, fold into it, and be lost.
                    if namespace not in self._dirty:
                        self._running.discard(namespace)
                        return result
        except BaseException:
            with self._guard:  # the failure's retry runs a whole pass, which covers folded requests
                self._running.discard(namespace)
            raise


COALESCER = Coalescer()


def request(ctx: Context, namespace: str) -> None:
    """Reconcile the namespace now (or fold into the pass under way). A failure never
    propagates to the trigger: a pass whose shared reads failed, or in which a server or
    object failed transiently, is retried with backoff until it succeeds."""
    try:
        with PASSES_IN_PROGRESS.track_inprogress():
            outcome = COALESCER.run(namespace, lambda ns: PASS_CLOCK.time(ns, reconcile_namespace, ctx, ns))
    except Exception as exc:  # noqa: BLE001 - whatever failed, a later pass may succeed
        delay = ctx.backoff.failed(namespace)
        # The API server's own message, or the type: an exception's text may quote content.
        error = api_error_text(exc)
        log.warning("pass over %s failed: %s; retrying in %.0fs", namespace, error, delay)
        _report_failure(ctx, namespace, error, delay)
        if not is_transient(exc):
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.warning("pass failure at %s:%s in %s", os.path.basename(where.filename), where.lineno, where.name)
        RECONCILES.labels("Namespace", "failed").inc()
        _retry_later(ctx, namespace, delay)
        return
    if outcome is None:
        return  # folded into a pass under way, which decides
    if outcome.transient_failures:
        # Already recorded on the objects concerned; failures a person must fix are not retried.
        delay = ctx.backoff.failed(namespace)
        log.info("pass over %s: retrying %s in %.0fs", namespace, ", ".join(outcome.transient_failures), delay)
        _retry_later(ctx, namespace, delay)
    else:
        ctx.backoff.succeeded(namespace)


def _retry_later(ctx: Context, namespace: str, delay: float) -> None:
    ctx.retries.schedule(namespace, delay, request, ctx, namespace)
