"""The database lifecycle of a Flipt v1 server: preflight, schema state, migration and import
Jobs, Redis cache. The namespace pass (handlers/servers.py) calls `database_gate` for each server
with database storage, after the ConfigMap, ServiceAccount and Service are applied and before
the Deployment; `hold` tells it to leave the Deployment as it is (or not create it yet).

Everything here is level-based: the Jobs have deterministic names (builders/database_jobs), so
the state lives in the API server (the Job and its status), never in this process. A restarted
operator finds the Job it created. Secret values (the database URL, the Redis password) are read
with `Kube.get_secret` and never reach a status, event, log line or exception text: every message
goes through `rules.database_url.scrub`.

The handlers are sync and run in kopf's thread pool: the blocking preflights with their own
timeouts never hold the event loop.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import GROUP, VERSION
from ..builders.database_jobs import (
    ANNOTATION_BACKUP,
    ANNOTATION_IMAGE,
    JobBuildError,
    JobOptions,
    JobPlan,
    build_import_job,
    build_migration_job,
    migration_job_name,
)
from ..builders.flipt_config import CONFIG_KEY, flipt_env
from ..builders.server_manifests import config_map_name
from ..builders.status import ConditionSpec, Summary
from ..builders.status_decisions import (
    CACHE_READY,
    DATABASE_REACHABLE,
    IMPORTED,
    MIGRATIONS_APPLIED,
    DatabaseReport,
)
from ..models.kinds import STORAGE
from ..models.plan import ServerPlan
from ..models.storage import DatabaseStatus, MigrationRecord
from ..rules.database_url import DatabaseURLError, parse_flipt_url, scrub, url_password
from ..rules.import_document import content_hash, validate_import
from ..rules.migrations import SchemaState, assess_schema, create_database_command, expected_version

if TYPE_CHECKING:
    from .context import Context

log = logging.getLogger(__name__)


# SQLAlchemy, the drivers and redis-py weigh ~30 MB: load them once a database storage shows up.
def _sql() -> Any:
    from ..clients import sql

    return sql


def _redis_cache() -> Any:
    from ..clients import redis_cache

    return redis_cache

APPROVE_ANNOTATION = "flipt.io/approve-migration"
RETRY_ANNOTATION = "flipt.io/retry-migration"
RETRY_IMPORT_ANNOTATION = "flipt.io/retry-import"
PURGED_ANNOTATION = "flipt.io/cache-purged"
MANAGED_BY_LABELS = {"app.kubernetes.io/managed-by": "flipt-operator"}

TIMEOUT = float(os.environ.get("FLIPT_OPERATOR_DATABASE_TIMEOUT", "3"))
RECHECK_SECONDS = float(os.environ.get("FLIPT_OPERATOR_DATABASE_RECHECK_SECONDS", "30"))

# Preflight reasons only a person can fix; the others are retried on the next pass.
_NEEDS_A_PERSON = {"DatabaseNotFound", "AuthenticationFailed", "PermissionDenied", "InvalidURL"}
_PHASE_RANK = {"stalled": 3, "retrying": 2, "progressing": 1, "ready": 0}


@dataclass(frozen=True)
class DatabaseGate:
    report: DatabaseReport
    hold: bool
    """True: leave the server's Deployment as it is (not created yet when there is none)."""
    environment: Summary | None = None
    """Why the server's environment waits, when it does."""


class _Outcome:
    """Collects conditions and the most severe summary of one gate."""

    def __init__(self) -> None:
        self.conditions: list[ConditionSpec] = []
        self.summary: Summary | None = None
        self.hold = False
        self.environment: Summary | None = None

    def add(self, condition: ConditionSpec) -> None:
        self.conditions.append(condition)

    def state(self, phase: str, reason: str, message: str) -> None:
        if self.summary is None or _PHASE_RANK[phase] > _PHASE_RANK[self.summary.phase]:
            self.summary = Summary(phase, reason, message)  # type: ignore[arg-type]

    def hold_rollout(self, phase: str, reason: str, message: str) -> None:
        self.hold = True
        if self.environment is None or _PHASE_RANK[phase] > _PHASE_RANK[self.environment.phase]:
            self.environment = Summary("stalled" if phase == "stalled" else "progressing", reason, message)


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].get("annotations") or {}


def _resolve_url(ctx: Context, namespace: str, database: Any) -> tuple[str | None, str | None, str]:
    """(url, revision, problem): the URL from the spec or its Secret, and the Secret's resourceVersion."""
    if database.url:
        return database.url, None, ""
    ref = database.url_secret_ref
    found = ctx.kube.get_secret(namespace, ref.name)
    if found is None:
        return None, None, f"Secret {ref.name} (spec.database.urlSecretRef) does not exist."
    data, version = found
    if ref.key not in data:
        return None, None, f"Secret {ref.name} has no key {ref.key} (spec.database.urlSecretRef.key)."
    return data[ref.key].decode("utf-8", "replace").strip(), version, ""


def _owner(storage_obj: dict[str, Any]) -> list[dict[str, Any]]:
    meta = storage_obj["metadata"]
    return [{"apiVersion": f"{GROUP}/{VERSION}", "kind": STORAGE.kind, "name": meta["name"],
             "uid": meta["uid"], "controller": True, "blockOwnerDeletion": False}]


def _job_result(job: dict[str, Any]) -> tuple[str, str]:
    """(Running|Succeeded|Failed, the controller's failure text) as the Job controller reports it."""
    status = job.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            return "Succeeded", ""
        if c.get("type") == "Failed":
            return "Failed", ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
    return "Running", ""


def _record(job: dict[str, Any]) -> MigrationRecord:
    meta, status = job["metadata"], job.get("status") or {}
    result, failure = _job_result(job)
    return MigrationRecord(
        job=meta["name"],
        image=_annotations(job).get(ANNOTATION_IMAGE, ""),
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime") if result == "Succeeded" else None,
        result=result,  # type: ignore[arg-type]
        backup_path=_annotations(job).get(ANNOTATION_BACKUP),
        message=failure or None,
    )


def _log_hint(namespace: str, job: str) -> str:
    return f"Logs: kubectl logs -n {namespace} job/{job}"


def _served_image(deployment: dict[str, Any] | None) -> str | None:
    if deployment is None:
        return None
    for c in deployment["spec"]["template"]["spec"].get("containers") or []:
        if c.get("name") == "flipt":
            return c.get("image")
    return None


def _create_job(ctx: Context, job: JobPlan) -> dict[str, Any]:
    """Called only when the Job does not exist. Its name hashes everything it runs, so a Job
    found under that name (created meanwhile) is the same Job: the apply then changes nothing,
    never its immutable pod template."""
    outcome, stored = ctx.kube.apply_object(job.manifest, None)
    log.info("%s Job %s/%s", outcome, job.manifest["metadata"]["namespace"], job.name)
    return stored


@dataclass
class _Cache:
    host: str
    port: int
    db: int
    password: str | None
    tls: bool
    prefix: str


def _cache(ctx: Context, namespace: str, spec: Any, out: _Outcome) -> _Cache | None:
    """CacheReady from a Redis preflight; the connection settings for a purge, when Redis is used."""
    cache = spec.cache
    if cache is None:
        return None
    if cache.backend != "redis" or cache.redis is None:
        out.add(ConditionSpec(CACHE_READY, True, "InProcess",
                              "Memory cache inside each Flipt replica: nothing to check."))
        return None
    redis = cache.redis
    password = None
    if redis.password_secret_ref is not None:
        found = ctx.kube.get_secret(namespace, redis.password_secret_ref.name)
        value = found[0].get(redis.password_secret_ref.key) if found else None
        if value is None:
            message = (f"Secret {redis.password_secret_ref.name} key {redis.password_secret_ref.key} "
                       "(spec.cache.redis.passwordSecretRef) does not exist.")
            out.add(ConditionSpec(CACHE_READY, False, "PasswordSecretMissing", message))
            out.state("stalled", "PasswordSecretMissing", message)
            return None
        password = value.decode("utf-8", "replace")
    check = _redis_cache().preflight(redis.host, redis.port, redis.db, password, redis.require_tls, TIMEOUT)
    message = scrub(check.message, [password])
    out.add(ConditionSpec(CACHE_READY, check.ready, check.reason, message))
    if not check.ready:
        out.state("retrying", "CacheNotReady", f"Redis cache: {message}")
    return _Cache(redis.host, redis.port, redis.db, password, redis.require_tls,
                  redis.prefix or _redis_cache().DEFAULT_PREFIX)


def _purge_once(ctx: Context, namespace: str, job: dict[str, Any], cache: _Cache | None) -> None:
    """After a completed migration or import: drop Flipt's Redis entries once (marked on the Job)."""
    if cache is None or _annotations(job).get(PURGED_ANNOTATION):
        return
    try:
        client = _redis_cache().connect(cache.host, cache.port, cache.db, cache.password, cache.tls, TIMEOUT)
        try:
            deleted = _redis_cache().purge_flag_cache(client, cache.prefix)
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - retried on the next pass; the message is scrubbed
        log.warning("cache purge after Job %s/%s failed: %s", namespace, job["metadata"]["name"],
                    scrub(str(exc), [cache.password]))
        return
    log.info("purged %d cache keys under %s after Job %s/%s", deleted, cache.prefix, namespace,
             job["metadata"]["name"])
    # A marker, not the Job's desired state: an apply of just this annotation would drop the
    # operator's ownership of (and try to remove) everything else it set on the Job.
    ctx.kube.annotate("Job", namespace, job["metadata"]["name"], {PURGED_ANNOTATION: str(deleted)})


def database_gate(
    ctx: Context,
    namespace: str,
    storage_obj: dict[str, Any],
    plan: ServerPlan,
    deployment: dict[str, Any] | None,
) -> DatabaseGate:
    """Check the database and cache, run the migration and import Jobs that are due, and say
    whether the server's rollout waits."""
    storage = plan.database
    assert storage is not None and storage.spec.database is not None
    name, spec, db = storage.name, storage.spec, storage.spec.database
    annotations = _annotations(storage_obj)
    previous = (storage_obj.get("status") or {}).get("database") or {}
    out = _Outcome()
    status = DatabaseStatus()
    if previous.get("lastMigration"):
        status.last_migration = MigrationRecord.model_validate(previous["lastMigration"])

    def done() -> DatabaseGate:
        summary = out.summary or Summary("ready", "DatabaseReady", f"database storage, used by {plan.name}.")
        return DatabaseGate(DatabaseReport(summary, out.conditions, status.to_api()), out.hold, out.environment)

    url, revision, problem = _resolve_url(ctx, namespace, db)
    if url is None:
        out.add(ConditionSpec(DATABASE_REACHABLE, False, "URLSecretMissing", problem))
        out.state("stalled", "URLSecretMissing", problem)
        out.hold_rollout("stalled", "DatabaseNotReady", f"FliptStorage {name}: {problem}")
        return done()
    secrets = [url_password(url)]
    try:
        parsed = parse_flipt_url(url)
    except DatabaseURLError as exc:
        message = scrub(f"spec.database: {exc}", secrets)
        out.add(ConditionSpec(DATABASE_REACHABLE, False, "InvalidURL", message))
        out.state("stalled", "InvalidURL", message)
        out.hold_rollout("stalled", "DatabaseNotReady", f"FliptStorage {name}: {message}")
        return done()
    secrets.append(parsed.password)
    status.dialect = parsed.dialect
    status.expected_version = expected_version(parsed.dialect, plan.image)
    cache = _cache(ctx, namespace, spec, out)

    # -- preflight ---------------------------------------------------------------------------
    assessment = None
    if parsed.is_sqlite:
        out.add(ConditionSpec(
            DATABASE_REACHABLE, None, "NotCheckedFromOperator",
            f"SQLite file {parsed.database} lives on the server's volume (claim {db.claim_name}): the operator "
            "cannot open it, so the migration Job checks and migrates it before each new image or database.",
        ))
    else:
        check = _sql().preflight(url, TIMEOUT)
        message = scrub(check.message, secrets)
        if not check.ok:
            if check.reason == "DatabaseNotFound":
                command = create_database_command(parsed.dialect, parsed.database or "flipt", parsed.username)
                message += f". Create it as an administrator: {command}"
            out.add(ConditionSpec(DATABASE_REACHABLE, False, check.reason, message))
            out.add(ConditionSpec(MIGRATIONS_APPLIED, None, "DatabaseNotReachable",
                                  "The schema is read once the database is reachable."))
            phase = "stalled" if check.reason in _NEEDS_A_PERSON else "retrying"
            out.state(phase, check.reason, message)
            out.hold_rollout(phase, "DatabaseNotReady", f"FliptStorage {name}: {check.reason}: {message}")
            return done()
        out.add(ConditionSpec(DATABASE_REACHABLE, True, "Reachable", message))
        status.schema_version, status.dirty = check.schema_version, check.dirty
        assessment = assess_schema(parsed.dialect, check.schema_version, check.dirty, plan.image)
        if assessment.state is SchemaState.DIRTY:
            text = f"{assessment.message} Repair: {assessment.repair}"
            out.add(ConditionSpec(MIGRATIONS_APPLIED, False, assessment.reason, text))
            out.state("stalled", assessment.reason, text)
            out.hold_rollout("stalled", assessment.reason, f"FliptStorage {name}: {assessment.message}")
            return done()

    # -- migration ---------------------------------------------------------------------------
    retry = annotations.get(RETRY_ANNOTATION)
    job_revision = "/".join(x for x in (revision, retry) if x) or None
    job_name = migration_job_name(name, plan.image, db, job_revision)
    job = ctx.kube.read_child("Job", namespace, job_name)
    needs_job = assessment is None or assessment.state in (SchemaState.PENDING, SchemaState.UNKNOWN)
    if needs_job and job is None:
        approved = annotations.get(APPROVE_ANNOTATION) == plan.image
        if db.migrations.policy == "Manual" and not approved:
            why = assessment.message if assessment else f"{plan.image} on SQLite needs `flipt migrate`."
            given = annotations.get(APPROVE_ANNOTATION)
            seen = f" ({APPROVE_ANNOTATION} is {given!r}, not the pending image.)" if given else ""
            message = (f"{why} Policy Manual: approve with kubectl annotate -n {namespace} fliptstorage {name} "
                       f"--overwrite {APPROVE_ANNOTATION}={plan.image}{seen}")
            out.add(ConditionSpec(MIGRATIONS_APPLIED, False, "MigrationsPending", message))
            out.state("progressing", "MigrationsPending", message)
            out.hold_rollout("progressing", "MigrationsPending", f"FliptStorage {name}: {message}")
            return _imports_after(ctx, namespace, storage_obj, plan, parsed, cache, out, status, done, hold=True)
        try:
            planned = build_migration_job(
                storage_name=name, namespace=namespace, image=plan.image, database=db,
                dialect=parsed.dialect, config_map_name=config_map_name(plan.name), config_key=CONFIG_KEY,
                sqlite_path=parsed.database if parsed.is_sqlite else None,
                backup_image=_served_image(deployment), revision=job_revision,
                options=JobOptions(env=flipt_env(plan), owner_references=_owner(storage_obj),
                                   service_account_name=plan.name),
            )
        except JobBuildError as exc:
            message = str(exc)
            out.add(ConditionSpec(MIGRATIONS_APPLIED, False, "InvalidMigrationSpec", message))
            out.state("stalled", "InvalidMigrationSpec", message)
            out.hold_rollout("stalled", "InvalidMigrationSpec", f"FliptStorage {name}: {message}")
            return done()
        assert planned.name == job_name
        job = _create_job(ctx, planned)

    if job is not None:
        status.last_migration = _record(job)
    if needs_job and job is not None:
        result, failure = _job_result(job)
        if result == "Running":
            message = f"Migration Job {job_name} runs `flipt migrate` with {plan.image}; the server waits for it."
            out.add(ConditionSpec(MIGRATIONS_APPLIED, False, "MigrationRunning", message))
            out.state("progressing", "MigrationRunning", message)
            out.hold_rollout("progressing", "MigrationRunning", f"FliptStorage {name}: {message}")
        elif result == "Failed":
            message = (f"Migration Job {job_name} failed ({failure or 'no reason given'}). "
                       f"{_log_hint(namespace, job_name)}. The server keeps its current version. "
                       f"Fix the cause, then change spec.database or the image, or annotate "
                       f"{RETRY_ANNOTATION}=<new value> to run it again.")
            out.add(ConditionSpec(MIGRATIONS_APPLIED, False, "MigrationFailed", message))
            out.state("stalled", "MigrationFailed", message)
            out.hold_rollout("stalled", "MigrationFailed", f"FliptStorage {name}: migration Job {job_name} failed.")
        else:
            if not parsed.is_sqlite:
                # The preflight read the schema before this pass read the Job: it may predate the
                # Job's work, and Applied must not stand beside the old version.
                after = _sql().preflight(url, TIMEOUT)
                if after.ok:
                    status.schema_version, status.dirty = after.schema_version, after.dirty
            out.add(ConditionSpec(MIGRATIONS_APPLIED, True, "MigrationSucceeded",
                                  f"Migration Job {job_name} completed for {plan.image}."))
            _purge_once(ctx, namespace, job, cache)
    elif assessment is not None:
        out.add(ConditionSpec(MIGRATIONS_APPLIED, True, assessment.reason, assessment.message))
        if job is not None and _job_result(job)[0] == "Succeeded":
            _purge_once(ctx, namespace, job, cache)
    return _imports_after(ctx, namespace, storage_obj, plan, parsed, cache, out, status, done, hold=out.hold)


def _imports_after(ctx, namespace, storage_obj, plan, parsed, cache, out, status, done, *, hold):  # noqa: ANN001
    """`spec.database.import`: validate the document, then one import Job per content (after migrations)."""
    db = plan.database.spec.database
    spec = db.import_
    if spec is None:
        return done()
    name = plan.database.name
    ref = spec.config_map_ref
    config_map = ctx.kube.read_child("ConfigMap", namespace, ref.name)
    text = ((config_map or {}).get("data") or {}).get(ref.key)
    if text is None:
        what = f"ConfigMap {ref.name}" if config_map is None else f"ConfigMap {ref.name} key {ref.key}"
        message = f"{what} (spec.database.import.configMapRef) does not exist."
        out.add(ConditionSpec(IMPORTED, False, "ImportSourceNotFound", message))
        out.state("stalled", "ImportSourceNotFound", message)
        return done()
    validation = validate_import(text)
    if not validation.valid:
        message = f"ConfigMap {ref.name} key {ref.key}: {validation.message()}. Nothing was imported."
        out.add(ConditionSpec(IMPORTED, False, "ImportInvalid", message))
        out.state("stalled", "ImportInvalid", message)
        return done()
    if hold:
        out.add(ConditionSpec(IMPORTED, None, "WaitingForMigration",
                              f"{validation.message()}; imported once the schema is migrated."))
        return done()
    # One Job per content; a new retry value gives a new Job (and the hash annotation says so).
    retry = _annotations(storage_obj).get(RETRY_IMPORT_ANNOTATION)
    digest = content_hash(text) + (f";retry={retry}" if retry else "")
    try:
        planned = build_import_job(
            storage_name=name, namespace=namespace, image=plan.image, database=db, dialect=parsed.dialect,
            config_map_name=config_map_name(plan.name), content_hash=digest, config_key=CONFIG_KEY,
            sqlite_path=parsed.database if parsed.is_sqlite else None,
            options=JobOptions(env=flipt_env(plan), owner_references=_owner(storage_obj),
                               service_account_name=plan.name),
        )
    except JobBuildError as exc:
        out.add(ConditionSpec(IMPORTED, False, "InvalidImportSpec", str(exc)))
        out.state("stalled", "InvalidImportSpec", str(exc))
        return done()
    job = ctx.kube.read_child("Job", namespace, planned.name) or _create_job(ctx, planned)
    result, failure = _job_result(job)
    if result == "Running":
        out.add(ConditionSpec(IMPORTED, False, "ImportRunning", f"Import Job {planned.name}: {validation.message()}."))
        out.state("progressing", "ImportRunning", f"Import Job {planned.name} runs `flipt import`.")
    elif result == "Failed":
        message = (f"Import Job {planned.name} failed ({failure or 'no reason given'}). "
                   f"{_log_hint(namespace, planned.name)}. The server is not held. Fix the cause, then change "
                   f"the document, or run it again: kubectl annotate -n {namespace} fliptstorage {name} "
                   f"--overwrite {RETRY_IMPORT_ANNOTATION}=<new value>")
        out.add(ConditionSpec(IMPORTED, False, "ImportFailed", message))
        out.state("stalled", "ImportFailed", message)
    else:
        out.add(ConditionSpec(IMPORTED, True, "Imported", f"Import Job {planned.name}: {validation.message()}."))
        _purge_once(ctx, namespace, job, cache)
    return done()
