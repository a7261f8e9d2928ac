"""The level-based reconcile of a namespace's Flipt servers.

Everything a server depends on (environments, storages, credentials, Secrets, the
Deployment's status, sidecar reports) feeds a pass: plan the servers, apply what changed,
delete servers nobody serves, write the environments' and storages' status. A trigger asks for
the part it can affect (a `Scope`: servers, storages, credentials), and the pass widens it to
everything that shares a storage with it, reads the objects from the watch-fed cache
(`watched.WatchedObjects`) and the children by name, so one change costs what it touches, not
the namespace. A full pass (LIST everything, plan every server, delete orphans) runs at start,
periodically (`RESYNC_SECONDS`) and whenever the cache has not been loaded for the namespace.
Requests during a pass fold into one more pass over the union of their scopes. Passes run on
the operator's own pass workers (`Context.passes`), never on the thread of the trigger.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from ..builders.server_manifests import MANAGED_BY as MANAGED_BY_VALUE
from ..builders.server_manifests import build_server_manifests
from ..builders.status import ConditionSpec, Summary
from ..builders.status_decisions import StatusDecision, deployment_availability, environment_status, storage_status
from ..clients.kube import Kube, api_error_text, applied_hash, applied_hash_of, is_transient
from ..models.credential import FliptCredentialSpec
from ..models.environment import FliptEnvironmentSpec
from ..models.kinds import CREDENTIAL, ENVIRONMENT, STORAGE, KindInfo
from ..models.plan import Problem
from ..models.storage import FliptStorageSpec
from ..rules.references import referenced_secret_names
from ..rules.servers import CredentialState, plan_servers
from .context import Context
from .database import DatabaseGate, database_gate
from .deadline import PASS_CLOCK
from .metrics import API_WRITES, PASS_SERVERS, PASSES_IN_PROGRESS, RECONCILE_SECONDS, RECONCILES
from .reporting import write_status
from .watched import SecretKeyNames, environment_server, environment_storage, storage_credential

log = logging.getLogger(__name__)
MANAGED_BY = f"app.kubernetes.io/managed-by={MANAGED_BY_VALUE}"
NOT_MANAGED_BY = f"app.kubernetes.io/managed-by!={MANAGED_BY_VALUE}"  # everything but our children
CHILD_KINDS = ("Deployment", "Service", "ConfigMap", "ServiceAccount")
INSTANCE_LABEL = "app.kubernetes.io/instance"
# A pass over more servers than this lists the children's metadata first (4 requests) rather
# than reading each server's 4 children by name whether they exist or not.
LIST_METADATA_ABOVE = 8
# A full pass over every namespace this often: what no watch announces (a child edited by hand
# that is not watched, a Secret's keys) is put right within this bound.
RESYNC_SECONDS = float(os.environ.get("FLIPT_OPERATOR_RESYNC_SECONDS", "600"))
# Passes of one namespace over disjoint servers at once (each also uses the shared pass pool).
PASS_LANES = int(os.environ.get("FLIPT_OPERATOR_PASS_LANES", "4"))


@dataclass(frozen=True)
class Scope:
    """What a pass must re-plan: the whole namespace, or these servers, these storages (and
    every server using them) and the storages of these credentials."""

    everything: bool = False
    servers: frozenset[str] = frozenset()
    storages: frozenset[str] = frozenset()
    credentials: frozenset[str] = frozenset()

    @classmethod
    def of(cls, servers: Iterable[str | None] = (), storages: Iterable[str | None] = (),
           credentials: Iterable[str | None] = ()) -> Scope:
        return cls(False, frozenset(s for s in servers if s), frozenset(s for s in storages if s),
                   frozenset(c for c in credentials if c))

    def __or__(self, other: Scope) -> Scope:
        if self.everything or other.everything:
            return EVERYTHING
        return Scope(False, self.servers | other.servers, self.storages | other.storages,
                     self.credentials | other.credentials)


EVERYTHING = Scope(everything=True)


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


def _is_checked(obj: dict) -> bool:
    """Whether the credential's status speaks of its spec as it is (its check has run since)."""
    status = obj.get("status") or {}
    return bool(status.get("conditions")) and status.get("observedGeneration") == obj["metadata"].get("generation")


@dataclass
class Snapshot:
    """What one pass reads. A server's children are read by name when the server is applied
    (`child`): a LIST of every child of a large namespace costs far more memory (all of them
    parsed at once) than reading them one server at a time. A pass over many servers first
    lists the children's metadata (`listed`), so it reads only those that exist and that its
    manifest may leave unchanged (the same applied hash): a new server costs no read."""

    environments: list[dict]
    storages: list[dict]
    credentials: list[dict]
    secrets: dict[str, tuple[list[str], str]]
    kube: Kube
    namespace: str
    listed: dict[str, dict[str, dict]] | None = None  # kind -> name -> metadata-only object

    @classmethod
    def read(cls, ctx: Context, namespace: str) -> Snapshot:
        """Everything server-related in the namespace, listed once; the cache is loaded from it."""
        kube = ctx.kube
        environments, storages = kube.list(ENVIRONMENT, namespace), kube.list(STORAGE, namespace)
        credentials = kube.list(CREDENTIAL, namespace)
        for kind, items in ((ENVIRONMENT, environments), (STORAGE, storages), (CREDENTIAL, credentials)):
            ctx.objects.load(namespace, kind.kind, items)
        ctx.objects.mark_primed(namespace)
        return cls(environments, storages, credentials, _secret_keys(ctx, namespace, storages, credentials, fresh=True),
                   kube, namespace, _children_metadata(kube, namespace, MANAGED_BY))

    @classmethod
    def read_scope(cls, ctx: Context, namespace: str, servers: set[str], storages: set[str]) -> Snapshot:
        """The objects of these servers and storages from the cache; Secrets and children from the API."""
        objects = ctx.objects
        environments = objects.of_kind(ENVIRONMENT.kind, namespace, objects.environments_of_servers(namespace, servers))
        storage_objects = _cached_or_read(ctx, STORAGE, namespace, storages)
        credential_names = {c for s in storage_objects if (c := storage_credential(s))}
        credentials = _cached_or_read(ctx, CREDENTIAL, namespace, credential_names)
        listed = _children_metadata(ctx.kube, namespace, MANAGED_BY) if len(servers) > LIST_METADATA_ABOVE else None
        return cls(environments, storage_objects, credentials,
                   _secret_keys(ctx, namespace, storage_objects, credentials), ctx.kube, namespace, listed)

    def child(self, kind: str, name: str, applied: str | None = None) -> dict | None:
        """The live child, or None. With `listed`: None without a read when it does not exist,
        and its metadata alone when its applied hash is not `applied` (the apply writes anyway)."""
        if self.listed is not None:
            meta = self.listed[kind].get(name)
            if meta is None:
                return None
            if applied is not None and applied_hash_of(meta) != applied:
                return meta
        return self.kube.read_child(kind, self.namespace, name)


def _cached_or_read(ctx: Context, kind: KindInfo, namespace: str, names: set[str]) -> list[dict]:
    """The named objects from the cache; one the cache lacks is read from the API: created
    together with what references it, its watch event may simply not have arrived yet, and
    calling it missing would post a fault that the next pass takes back. (Its event, when it
    comes, re-plans what references it.) Only a name the API does not know either is missing."""
    found = ctx.objects.of_kind(kind.kind, namespace, names)
    missing = names - {o["metadata"]["name"] for o in found}
    read = [o for name in sorted(missing) if (o := ctx.kube.get(kind, namespace, name)) is not None]
    return sorted(found + read, key=lambda o: o["metadata"]["name"])


def _secret_keys(ctx: Context, namespace: str, storages: list[dict], credentials: list[dict],
                 fresh: bool = False) -> dict[str, SecretKeyNames]:
    """The key names of the Secrets these objects name (the rules check them; the resourceVersion
    goes into the config hash). From the watch-fed `SecretKeys` where known; a full pass
    (`fresh`) reads every one from the API, by name, as the resync of what a watch may miss."""
    names = referenced_secret_names(storages, credentials)
    known, missing = ({}, set(names)) if fresh else ctx.secrets.lookup(namespace, names)
    read = ctx.kube.secret_keys(namespace, missing) if missing else {}
    ctx.secrets.store(namespace, read)
    return known | read


def _children_metadata(kube: Kube, namespace: str, selector: str) -> dict[str, dict[str, dict]]:
    """kind -> name -> metadata of our children (what finding orphans needs, not whole objects)."""
    return {kind: {o["metadata"]["name"]: o for o in kube.list_children_metadata(kind, namespace, selector)}
            for kind in CHILD_KINDS}


def widen(ctx: Context, namespace: str, scope: Scope) -> tuple[set[str], set[str]]:
    """(servers, storages) a scope concerns: its servers and the servers of its storages (and of
    its credentials' storages), until every storage used by one of them is in, with every server
    using it (the rules check a storage across its servers, and its status names them all)."""
    objects = ctx.objects
    storages = set(scope.storages) | objects.storages_of_credentials(namespace, scope.credentials)
    servers = set(scope.servers)
    while True:
        used = {s for e in objects.of_kind(ENVIRONMENT.kind, namespace,
                                           objects.environments_of_servers(namespace, servers))
                if (s := environment_storage(e))}
        users = {s for e in objects.of_kind(ENVIRONMENT.kind, namespace,
                                            objects.environments_of_storages(namespace, storages | used))
                 if (s := environment_server(e))}
        if used <= storages and users <= servers:
            return servers, storages
        storages |= used
        servers |= users


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
    deployment: dict | None  # while applying; dropped after (a pass over many servers keeps none)
    config_hash: str | None
    availability: ConditionSpec | None = None
    gate: DatabaseGate | None = None
    failure: ServerFailure | None = None


def _apply_server(ctx: Context, namespace: str, snap: Snapshot, result: Any,
                  env_by_name: dict[str, dict], storage_by_name: dict[str, dict],
                  cred_objects: dict[str, dict]) -> ServerOutcome:
    """Apply one server's objects. A failure is returned, not raised: it is this server's, and
    the rest of the pass (other servers, orphans, every status) goes on without it."""
    kube, plan = ctx.kube, result.plan
    outcome = ServerOutcome(snap.child("Deployment", plan.name), None)
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
            live = outcome.deployment if kind == "Deployment" else snap.child(kind, name, applied_hash(manifest))
            written, stored = kube.apply_object(manifest, live)
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
    outcome.availability, outcome.deployment = deployment_availability(outcome.deployment), None
    return outcome


@dataclass
class PassOutcome:
    """What a pass could not finish and a later pass may: servers and objects that failed transiently."""

    transient_failures: list[str]


def reconcile_namespace(ctx: Context, namespace: str, scope: Scope = EVERYTHING) -> PassOutcome:
    """Raises only when the pass's shared reads fail; what fails for one server or object is
    recorded on it, and returned when a retry may help."""
    kube = ctx.kube
    with RECONCILE_SECONDS.labels("Namespace").time():
        if scope.everything:
            snap = Snapshot.read(ctx, namespace)
            servers: set[str] | None = None
        else:
            servers, storages = widen(ctx, namespace, scope)
            snap = Snapshot.read_scope(ctx, namespace, servers, storages)
        env_specs, env_invalid = _parse(snap.environments, FliptEnvironmentSpec)
        storage_specs, storage_invalid = _parse(snap.storages, FliptStorageSpec)
        cred_specs, _ = _parse(snap.credentials, FliptCredentialSpec)
        cred_objects = {c["metadata"]["name"]: c for c in snap.credentials}
        cred_states = {n: CredentialState(s, _is_ready(cred_objects[n]), _is_checked(cred_objects[n]))
                       for n, s in cred_specs.items()}
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
        if servers is None:
            retry += _delete_orphans(kube, namespace, set(results), snap.listed or {})
        elif servers - set(results):  # servers of the scope whose last environment went
            gone = ",".join(sorted(servers - set(results)))
            retry += _delete_orphans(kube, namespace, set(results), _children_metadata(
                kube, namespace, f"{MANAGED_BY},{INSTANCE_LABEL} in ({gone})"))
        PASS_SERVERS.labels("full" if servers is None else "scoped").inc(len(results))

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
                outcome.availability if outcome else None,
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
            cred_pending = ref in cred_states and not cred_states[ref].checked
            users = sorted(storage_servers.get(name, ()))
            gate = next((outcomes[s].gate for s in users if s in outcomes and outcomes[s].gate), None)
            return storage_status(
                name, spec,
                [p for p in all_errors if p.kind == STORAGE.kind and p.name == name],
                [p for p in all_warnings if p.kind == STORAGE.kind and p.name == name],
                users, cred_ready, ctx.reports.for_storage(namespace, name),
                gate.report if gate is not None else None, previous=storage.get("status"),
                credential_pending=cred_pending,
            )

        def write(item: tuple[Any, dict]) -> str | None:
            """One object's status; a failure is this object's (returned when transient)."""
            kind, obj = item
            try:
                decision = environment_decision(obj) if kind is ENVIRONMENT else storage_decision(obj)
                write_status(kube, kind, obj, summary=decision.summary, domain=decision.domain,
                             managed=decision.managed, fields=decision.fields, stored=ctx.objects.store_own_write)
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
        log.debug("pass over %s %s (%s)", namespace, "done" if complete else "partial",
                  "everything" if servers is None else f"{len(results)} servers")
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


def _report_failure(ctx: Context, namespace: str, scope: Scope, error: str, delay: float) -> None:
    """Keep the error in the environments' status too (events expire); best effort."""
    summary = Summary("retrying", "ReconcileError", f"{error} (retrying in {delay:.0f}s)")
    try:
        if scope.everything or not ctx.objects.primed(namespace):
            environments = ctx.kube.list(ENVIRONMENT, namespace)
        else:
            servers, _ = widen(ctx, namespace, scope)
            environments = ctx.objects.of_kind(ENVIRONMENT.kind, namespace,
                                               ctx.objects.environments_of_servers(namespace, servers))
        for env in environments:
            write_status(ctx.kube, ENVIRONMENT, env, summary=summary, stored=ctx.objects.store_own_write)
    except Exception as exc:  # noqa: BLE001 - the API may be what failed
        log.debug("could not record the failure in status: %s", api_error_text(exc))


class Mergeable(Protocol):
    def __or__(self: S, other: S, /) -> S: ...


S = TypeVar("S", bound=Mergeable)


Claim = frozenset[str] | None  # what a pass may write; None: anything in its namespace


def _overlap(a: Claim, b: Claim) -> bool:
    return a is None or b is None or not a.isdisjoint(b)


def _whole_namespace(_: Any) -> Claim:
    return None


class Coalescer(Generic[S]):
    """Passes of one namespace run side by side, up to `lanes` at once, when their claims (what
    each may write, from `claim`) are disjoint. A request overlapping a running pass, finding
    every lane busy or a request already waiting folds into the waiting one: it runs once, over
    the union of the scopes, when a lane is free and the passes it overlapped have ended (the
    first pass to end after that runs it). Without `claim` every pass claims the whole
    namespace: one at a time. So sparse changes run at once, and a flood of events (thousands
    of objects created at once) folds into a few large passes, not a small pass per object
    holding kopf's handler threads."""

    def __init__(self, lanes: int = 1) -> None:
        self.lanes = max(1, lanes)
        self._guard = threading.Lock()
        self._running: dict[str, list[Claim]] = {}  # namespace -> claims of its running passes
        self._dirty: dict[str, tuple[S, Claim]] = {}  # namespace -> the waiting scope and its claim

    def run(self, namespace: str, scope: S, work: Callable[[str, S], Any],
            claim: Callable[[S], Claim] = _whole_namespace) -> Any:
        """Run the pass here: the last pass's result; None when the request folded into a waiting one."""
        admitted = self.admit(namespace, scope, claim)
        return None if admitted is None else self.drain(namespace, admitted, work)

    def admit(self, namespace: str, scope: S, claim: Callable[[S], Claim] = _whole_namespace) -> tuple[S, Claim] | None:
        """Take a lane for `scope` (and any request left waiting by a failed pass): the scope and
        claim to `drain`, on whatever thread. None: folded into the waiting request."""
        mine = claim(scope)
        with self._guard:
            running = self._running.setdefault(namespace, [])
            waiting = self._dirty.get(namespace)
            if waiting is not None and not running:  # left by a pass that failed: this one takes it
                del self._dirty[namespace]
                scope = waiting[0] | scope
                mine = claim(scope)
            elif waiting is not None or len(running) >= self.lanes or any(_overlap(mine, c) for c in running):
                union = waiting[0] | scope if waiting is not None else scope
                self._dirty[namespace] = (union, claim(union))
                return None
            running.append(mine)
        return scope, mine

    def drain(self, namespace: str, admitted: tuple[S, Claim], work: Callable[[str, S], Any]) -> Any:
        """Run the admitted pass, then every waiting one it frees; returns the last one's result."""
        scope, mine = admitted
        with self._guard:
            running = self._running[namespace]
        try:
            while True:
                result = work(namespace, scope)
                with self._guard:
                    # Check and release under one lock: a request arriving in between would
                    # otherwise see the pass as running, fold, and be lost.
                    running.remove(mine)
                    waiting = self._dirty.get(namespace)
                    if waiting is None or any(_overlap(waiting[1], c) for c in running):
                        if not running:
                            del self._running[namespace]
                        return result  # nothing waits, or a pass it overlaps runs it when done
                    del self._dirty[namespace]
                    scope, mine = waiting
                    running.append(mine)
        except BaseException:
            self.release(namespace, mine)
            raise

    def release(self, namespace: str, mine: Claim) -> None:
        """Give back an admitted pass's lane without running it; requests folded meanwhile stay
        for the next pass (the retry's)."""
        with self._guard:
            running = self._running[namespace]
            running.remove(mine)
            if not running:
                del self._running[namespace]


COALESCER: Coalescer[Scope] = Coalescer(PASS_LANES)
_retry_scopes: dict[str, Scope] = {}
_retry_guard = threading.Lock()


def request(ctx: Context, namespace: str, scope: Scope = EVERYTHING) -> None:
    """Reconcile what `scope` concerns in the namespace soon (or fold into the pass waiting) and
    return at once: the pass runs on the operator's pass executor (`Context.passes`), not on the
    caller's thread, so kopf's handler threads stay free for the next events (a credential's
    check must not queue behind passes that wait for it). A failure never propagates to the
    trigger: a pass whose shared reads failed, or in which a server or object failed
    transiently, is retried with backoff until it succeeds."""
    if not scope.everything and not (scope.servers or scope.storages or scope.credentials):
        return
    admitted = COALESCER.admit(namespace, scope, lambda s: _claim(ctx, namespace, s))
    if admitted is not None:
        PASSES_IN_PROGRESS.inc()  # from admission: a pass queued for a worker is in progress too
        try:
            ctx.passes.submit(_drain, ctx, namespace, admitted)
        except RuntimeError:  # the executor is shut down: the operator is stopping
            COALESCER.release(namespace, admitted[1])
            PASSES_IN_PROGRESS.dec()


def _drain(ctx: Context, namespace: str, admitted: tuple[Scope, Claim]) -> None:
    try:
        COALESCER.drain(namespace, admitted, lambda ns, s: _run_pass(ctx, ns, s))
    except Exception:  # _run_pass handles its failures; this would be a defect, and must be seen
        log.exception("passes over %s stopped", namespace)
    finally:
        PASSES_IN_PROGRESS.dec()


def _claim(ctx: Context, namespace: str, scope: Scope) -> Claim:
    """What a pass over `scope` may write: its widened servers and storages (with their
    environments, children and statuses); None for a full pass, as `_run_pass` decides it."""
    if scope.everything or not ctx.objects.primed(namespace):
        return None
    servers, storages = widen(ctx, namespace, scope)
    return frozenset({f"server/{s}" for s in servers} | {f"storage/{s}" for s in storages})


def _run_pass(ctx: Context, namespace: str, scope: Scope) -> None:
    if not scope.everything and not ctx.objects.primed(namespace):
        scope = EVERYTHING  # the watches may not have delivered the whole namespace yet
    try:
        outcome = PASS_CLOCK.time(namespace, reconcile_namespace, ctx, namespace, scope)
    except Exception as exc:  # noqa: BLE001 - whatever failed, a later pass may succeed
        delay = ctx.backoff.failed(namespace)
        # The API server's own message, or the type: an exception's text may quote content.
        error = api_error_text(exc)
        log.warning("pass over %s failed: %s; retrying in %.0fs", namespace, error, delay)
        _report_failure(ctx, namespace, scope, error, delay)
        if not is_transient(exc):
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.warning("pass failure at %s:%s in %s", os.path.basename(where.filename), where.lineno, where.name)
        RECONCILES.labels("Namespace", "failed").inc()
        _retry_later(ctx, namespace, delay, scope)
        return
    if outcome.transient_failures:
        # Already recorded on the objects concerned; failures a person must fix are not retried.
        delay = ctx.backoff.failed(namespace)
        log.info("pass over %s: retrying %s in %.0fs", namespace, ", ".join(outcome.transient_failures), delay)
        _retry_later(ctx, namespace, delay, scope)
    else:
        ctx.backoff.succeeded(namespace)


def _retry_later(ctx: Context, namespace: str, delay: float, scope: Scope) -> None:
    """One pending retry per namespace (`Retries`), over every scope that failed meanwhile."""
    with _retry_guard:
        _retry_scopes[namespace] = _retry_scopes[namespace] | scope if namespace in _retry_scopes else scope
    ctx.retries.schedule(namespace, delay, _retry, ctx, namespace)


def _retry(ctx: Context, namespace: str) -> None:
    with _retry_guard:
        scope = _retry_scopes.pop(namespace, None)
    if scope is not None:
        request(ctx, namespace, scope)


async def resync(ctx: Context, period: float = RESYNC_SECONDS) -> None:
    """A full pass over every namespace seen, every `period` seconds (a background task, not a
    kopf timer: timers put a finalizer on every object they run for)."""
    while True:
        await asyncio.sleep(period)
        for namespace in ctx.objects.namespaces():
            if not await asyncio.to_thread(ctx.standby, namespace):
                await asyncio.to_thread(request, ctx, namespace, EVERYTHING)
