"""Database storage lifecycle against the real API server, PostgreSQL, MariaDB and Redis.

Nothing runs containers here: tests report a Job's progress the way the Job controller would
(status subresource) and write `schema_migrations` the way `flipt migrate` would, since the Job's
pod would have to run the real `flipt migrate` (Flipt cannot be built here). So the tests run on the
bare cluster (the API server alone, tests/support/on_bare_cluster.py), where no real Job
controller overwrites that status.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from kubernetes import client

from tests.support import on_bare_cluster
from tests.support.deployments import mark_available, read_deployment
from tests.support.kube_objects import (
    condition,
    condition_is,
    create_custom,
    dump_namespace,
    events_for,
    get_custom,
    patch_custom,
    put_secret,
)
from tests.support.operator_fixtures import metric_value, start_operator
from tests.support.waiting import wait_for

# On the bare cluster (see the module's docstring).
kube_cluster = on_bare_cluster.kube_cluster
namespace = on_bare_cluster.namespace
operator = on_bare_cluster.operator

pytestmark = pytest.mark.cluster

V1 = "docker.flipt.io/flipt/flipt:v1.61.1"  # expects postgres schema version 16
V1_NEXT = "docker.flipt.io/flipt/flipt:v1.62.0"  # expected version unknown: `flipt migrate` decides
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# -- databases --------------------------------------------------------------------------------


def _fresh_pg_database():
    name = f"flipt_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    yield name, engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_database():
    """A fresh PostgreSQL database; yields (name, engine)."""
    yield from _fresh_pg_database()


@pytest.fixture
def other_pg_database():
    """A second fresh PostgreSQL database; yields (name, engine)."""
    yield from _fresh_pg_database()


def set_schema(engine: sa.Engine, version: int, dirty: bool = False) -> None:
    """What golang-migrate (`flipt migrate`) leaves behind."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS schema_migrations "
                             "(version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)"))
        conn.execute(sa.text("DELETE FROM schema_migrations"))
        conn.execute(sa.text("INSERT INTO schema_migrations (version, dirty) VALUES (:v, :d)"),
                     {"v": version, "d": dirty})


def pg_url(name: str) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{name}?sslmode=disable"


# -- Kubernetes helpers -------------------------------------------------------------------------


def batch(api):
    return client.BatchV1Api(api)


def jobs(api, ns, component="migration"):
    items = batch(api).list_namespaced_job(ns, label_selector=f"app.kubernetes.io/component={component}").items
    return sorted(items, key=lambda j: j.metadata.name)


def one_job(api, ns, component="migration"):
    found = jobs(api, ns, component)
    assert len(found) <= 1, [j.metadata.name for j in found]
    return found[0] if found else None


def finish_job(api, ns, name, succeeded=True, message="BackoffLimitExceeded"):
    """Report the Job's end the way the Job controller does. Since 1.31 the API server takes a
    finished Job only after its interim condition (SuccessCriteriaMet before Complete,
    FailureTarget before Failed), as the controller writes them."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def true(type_, **extra):
        return {"type": type_, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, **extra}

    if succeeded:
        status = {"startTime": now, "completionTime": now, "succeeded": 1, "active": 0,
                  "conditions": [true("SuccessCriteriaMet", reason="CompletionsReached"),
                                 true("Complete", reason="CompletionsReached")]}
    else:
        failure = {"reason": message, "message": "Job has reached the specified backoff limit"}
        status = {"startTime": now, "failed": 1, "active": 0,
                  "conditions": [true("FailureTarget", **failure), true("Failed", **failure)]}
    batch(api).patch_namespaced_job_status(name, ns, {"status": status})


def image_of(dep) -> str:
    return next(c.image for c in dep.spec.template.spec.containers if c.name == "flipt")


def wait_condition(api, ns, kind, name, type_, status, reason=None, timeout=15):
    return wait_for(lambda: condition_is(api, ns, kind, name, type_, status, reason), timeout=timeout,
                    message=f"{kind}/{name} {type_}={status} {reason or ''}")


def make_server(api, ns, database: dict, image: str = V1, cache: dict | None = None, **storage_meta):
    spec = {"database": database}
    if cache:
        spec["cache"] = cache
    create_custom(api, ns, "FliptStorage", "db", spec, **storage_meta)
    create_custom(api, ns, "FliptEnvironment", "prod",
                  {"storage": "db", "default": True, "deployment": {"image": image}})


def passes(op) -> float:
    return metric_value(op.metrics(), "flipt_operator_reconciles_total", 'kind="Namespace"')


def nudge(api, ns, op):
    """Change the storage (a namespace pass follows) and wait until `op` finished a pass."""
    before = passes(op)
    patch_custom(api, ns, "FliptStorage", "db", {"metadata": {"labels": {"nudge": uuid.uuid4().hex[:8]}}})
    wait_for(lambda: passes(op) > before, message="a namespace pass after the nudge")


# -- preflight --------------------------------------------------------------------------------


def test_unreachable_database_holds_the_server_and_retries(kube_cluster, operator, namespace):
    api = kube_cluster.api_client
    make_server(api, namespace, {"url": "postgres://postgres@127.0.0.1:1/flipt?sslmode=disable"})
    storage = wait_condition(api, namespace, "FliptStorage", "db", "DatabaseReachable", "False", "Unreachable")
    assert condition(storage, "Reconciling")["reason"] == "ProgressingWithRetry"
    assert condition(storage, "Stalled") is None
    assert storage["status"]["database"]["dialect"] == "postgres"
    env = wait_condition(api, namespace, "FliptEnvironment", "prod", "Ready", "False", "DatabaseNotReady")
    assert "Unreachable" in condition(env, "Ready")["message"]
    assert condition(env, "Reconciling")["status"] == "True"
    assert read_deployment(api, namespace, "flipt") is None
    # The ConfigMap and Service are there; only the Deployment waits.
    client.CoreV1Api(api).read_namespaced_config_map("flipt-config", namespace)
    client.CoreV1Api(api).read_namespaced_service("flipt", namespace)


def test_missing_database_is_stalled_with_the_create_command_and_heals_once_created(
        kube_cluster, operator, namespace, tmp_path):
    api = kube_cluster.api_client
    name = f"flipt_missing_{uuid.uuid4().hex[:6]}"
    make_server(api, namespace, {"url": pg_url(name)})
    storage = wait_condition(api, namespace, "FliptStorage", "db", "Stalled", "True", "DatabaseNotFound")
    message = condition(storage, "DatabaseReachable")["message"]
    assert f'CREATE DATABASE "{name}" OWNER "postgres";' in message
    assert read_deployment(api, namespace, "flipt") is None
    # Nothing in Kubernetes changes when the database is created: the periodic re-check sees it.
    recheck = start_operator(kube_cluster.kubeconfig, tmp_path / "recheck.log", extra_args=("-n", namespace),
                             env={"FLIPT_OPERATOR_DATABASE_RECHECK_SECONDS": "1"})
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        wait_condition(api, namespace, "FliptStorage", "db", "DatabaseReachable", "True", "Reachable")
        wait_for(lambda: read_deployment(api, namespace, "flipt"), message="server on the new, empty database")
        assert jobs(api, namespace) == []  # an empty database is migrated by Flipt itself
    finally:
        recheck.stop()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_wrong_password_is_scrubbed_everywhere(kube_cluster, operator, namespace):
    api = kube_cluster.api_client
    password = "Sup3r-" + uuid.uuid4().hex[:12]
    put_secret(api, namespace, "db-url", {"url": f"mysql://root:{password}@127.0.0.1:3306/mysql"})
    make_server(api, namespace, {"urlSecretRef": {"name": "db-url", "key": "url"}})
    storage = wait_condition(api, namespace, "FliptStorage", "db", "DatabaseReachable", "False",
                             "AuthenticationFailed")
    assert condition(storage, "Stalled")["status"] == "True"
    assert "Access denied" in condition(storage, "DatabaseReachable")["message"]
    wait_for(lambda: events_for(api, namespace, "db"), message="events on the storage")
    text = dump_namespace(kube_cluster.kubectl, namespace)
    assert password not in text
    assert password not in operator.logs()


# -- schema state -----------------------------------------------------------------------------


def test_dirty_schema_stalls_with_the_repair_hint(kube_cluster, operator, namespace, pg_database):
    api = kube_cluster.api_client
    name, engine = pg_database
    set_schema(engine, 7, dirty=True)
    make_server(api, namespace, {"url": pg_url(name)})
    storage = wait_condition(api, namespace, "FliptStorage", "db", "Stalled", "True", "SchemaDirty")
    assert storage["status"]["database"] == {"dialect": "postgres", "schemaVersion": 7, "expectedVersion": 16,
                                             "dirty": True}
    message = condition(storage, "MigrationsApplied")["message"]
    assert "UPDATE schema_migrations SET dirty = false, version = 6;" in message
    wait_condition(api, namespace, "FliptEnvironment", "prod", "Stalled", "True", "SchemaDirty")
    assert read_deployment(api, namespace, "flipt") is None and jobs(api, namespace) == []


def test_auto_migration_holds_the_rollout_until_the_job_completes(kube_cluster, operator, namespace, pg_database):
    api = kube_cluster.api_client
    name, engine = pg_database
    set_schema(engine, 16)
    make_server(api, namespace, {"url": pg_url(name), "migrations": {"backup": {"enabled": True,
                                                                              "claimName": "backups"}}})
    dep = wait_for(lambda: read_deployment(api, namespace, "flipt"), message="server on an up-to-date schema")
    assert image_of(dep) == V1 and jobs(api, namespace) == []
    storage = wait_condition(api, namespace, "FliptStorage", "db", "MigrationsApplied", "True", "MigrationsApplied")
    assert storage["status"]["database"]["schemaVersion"] == 16
    mark_available(api, namespace, "flipt")
    wait_condition(api, namespace, "FliptEnvironment", "prod", "Ready", "True")

    # A new image: the Job runs first, with a backup; the Deployment keeps serving v1.61.1.
    patch_custom(api, namespace, "FliptEnvironment", "prod", {"spec": {"deployment": {"image": V1_NEXT}}})
    job = wait_for(lambda: one_job(api, namespace), message="migration Job")
    assert job.metadata.name.startswith("db-migrate-")
    assert job.spec.template.spec.containers[0].image == V1_NEXT
    assert job.spec.template.spec.containers[0].command[1] == "migrate"
    assert [c.name for c in job.spec.template.spec.init_containers] == ["backup"]
    assert job.spec.template.spec.init_containers[0].image == V1  # the export reads the current schema
    env = wait_condition(api, namespace, "FliptEnvironment", "prod", "Ready", "False", "MigrationRunning")
    storage = wait_condition(api, namespace, "FliptStorage", "db", "MigrationsApplied", "False", "MigrationRunning")
    record = storage["status"]["database"]["lastMigration"]
    assert record["job"] == job.metadata.name and record["image"] == V1_NEXT and record["result"] == "Running"
    assert record["backupPath"] == f"/backup/backups/{job.metadata.name}.yaml"
    assert image_of(read_deployment(api, namespace, "flipt")) == V1

    finish_job(api, namespace, job.metadata.name)
    wait_for(lambda: image_of(read_deployment(api, namespace, "flipt")) == V1_NEXT, message="rollout after the Job")
    storage = wait_condition(api, namespace, "FliptStorage", "db", "MigrationsApplied", "True", "MigrationSucceeded")
    record = storage["status"]["database"]["lastMigration"]
    assert record["result"] == "Succeeded" and record["startTime"] and record["completionTime"]
    assert len(jobs(api, namespace)) == 1
    assert condition(env, "Reconciling")["status"] == "True"  # while it waited


def test_manual_policy_runs_nothing_until_approved(kube_cluster, operator, namespace, pg_database):
    api = kube_cluster.api_client
    name, engine = pg_database
    set_schema(engine, 12)
    make_server(api, namespace, {"url": pg_url(name), "migrations": {"policy": "Manual"}})
    storage = wait_condition(api, namespace, "FliptStorage", "db", "MigrationsApplied", "False", "MigrationsPending")
    assert storage["status"]["database"]["schemaVersion"] == 12
    assert storage["status"]["database"]["expectedVersion"] == 16
    assert f"flipt.io/approve-migration={V1}" in condition(storage, "MigrationsApplied")["message"]
    env = wait_condition(api, namespace, "FliptEnvironment", "prod", "Ready", "False", "MigrationsPending")
    assert condition(env, "Reconciling")["status"] == "True"
    # Approving another image runs nothing either.
    patch_custom(api, namespace, "FliptStorage", "db",
                 {"metadata": {"annotations": {"flipt.io/approve-migration": "some-other-image"}}})
    wait_for(lambda: "'some-other-image', not the pending image" in condition(
        get_custom(api, namespace, "FliptStorage", "db"), "MigrationsApplied")["message"], message="seen")
    assert jobs(api, namespace) == [] and read_deployment(api, namespace, "flipt") is None

    patch_custom(api, namespace, "FliptStorage", "db",
                 {"metadata": {"annotations": {"flipt.io/approve-migration": V1}}})
    job = wait_for(lambda: one_job(api, namespace), message="migration Job once approved")
    assert not job.spec.template.spec.init_containers  # backup off
    wait_condition(api, namespace, "FliptStorage", "db", "MigrationsApplied", "False", "MigrationRunning")
    set_schema(engine, 16)
    finish_job(api, namespace, job.metadata.name)
    dep = wait_for(lambda: read_deployment(api, namespace, "flipt"), message="server after the approved migration")
    assert image_of(dep) == V1
    storage = wait_condition(api, namespace, "FliptStorage", "db", "MigrationsApplied", "True")
    assert storage["status"]["database"]["schemaVersion"] == 16
    assert "backupPath" not in storage["status"]["database"]["lastMigration"]


def test_failed_job_stalls_without_retry_storm_and_retries_on_annotation(
        kube_cluster, operator, namespace, pg_database):
    api = kube_cluster.api_client
    name, engine = pg_database
    set_schema(engine, 12)
    make_server(api, namespace, {"url": pg_url(name)})
    job = wait_for(lambda: one_job(api, namespace), message="migration Job")
    finish_job(api, namespace, job.metadata.name, succeeded=False)
    storage = wait_condition(api, namespace, "FliptStorage", "db", "Stalled", "True", "MigrationFailed")
    message = condition(storage, "MigrationsApplied")["message"]
    assert f"kubectl logs -n {namespace} job/{job.metadata.name}" in message
    assert "BackoffLimitExceeded" in message
    assert storage["status"]["database"]["lastMigration"]["result"] == "Failed"
    wait_condition(api, namespace, "FliptEnvironment", "prod", "Stalled", "True", "MigrationFailed")
    nudge(api, namespace, operator)
    assert [j.metadata.name for j in jobs(api, namespace)] == [job.metadata.name]
    assert read_deployment(api, namespace, "flipt") is None

    patch_custom(api, namespace, "FliptStorage", "db",
                 {"metadata": {"annotations": {"flipt.io/retry-migration": "1"}}})
    wait_for(lambda: len(jobs(api, namespace)) == 2, message="a second attempt")
    wait_condition(api, namespace, "FliptStorage", "db", "MigrationsApplied", "False", "MigrationRunning")
    assert condition(get_custom(api, namespace, "FliptStorage", "db"), "Stalled") is None


def test_a_changed_database_starts_a_new_migration_job_and_replaces_the_record(
        kube_cluster, operator, namespace, pg_database, other_pg_database):
    api = kube_cluster.api_client
    (first, first_engine), (second, second_engine) = pg_database, other_pg_database
    set_schema(first_engine, 12)
    set_schema(second_engine, 12)
    make_server(api, namespace, {"url": pg_url(first)})

    def migrated(engine, expected_jobs):
        """Wait for the newest Job, finish it as `flipt migrate` would; return its name."""
        job = wait_for(lambda: len(jobs(api, namespace)) == expected_jobs and newest_job(), message="a new Job")
        storage = wait_condition(api, namespace, "FliptStorage", "db", "MigrationsApplied", "False",
                                 "MigrationRunning")
        record = storage["status"]["database"]["lastMigration"]
        assert record["job"] == job and record["result"] == "Running" and record["image"] == V1
        set_schema(engine, 16)
        finish_job(api, namespace, job)
        done = wait_for(lambda: last_migration().get("result") == "Succeeded" and last_migration(),
                        message=f"{job} recorded as Succeeded")
        assert done["job"] == job and done["completionTime"]
        wait_condition(api, namespace, "FliptStorage", "db", "MigrationsApplied", "True")
        return job

    seen: list[str] = []

    def last_migration() -> dict:
        return get_custom(api, namespace, "FliptStorage", "db")["status"]["database"].get("lastMigration") or {}

    def newest_job():
        names = [j.metadata.name for j in jobs(api, namespace) if j.metadata.name not in seen]
        return names[0] if len(names) == 1 else None

    seen.append(migrated(first_engine, 1))
    wait_for(lambda: read_deployment(api, namespace, "flipt"), message="server after the first migration")

    # Another database name in the URL: a new Job, and the record is the new Job's.
    patch_custom(api, namespace, "FliptStorage", "db", {"spec": {"database": {"url": pg_url(second)}}})
    seen.append(migrated(second_engine, 2))

    # The URL moves to a Secret, and then to another key of it: each is a new Job.
    put_secret(api, namespace, "db-url", {"first": pg_url(first), "second": pg_url(second)})
    set_schema(first_engine, 12)
    patch_custom(api, namespace, "FliptStorage", "db",
                 {"spec": {"database": {"url": None, "urlSecretRef": {"name": "db-url", "key": "first"}}}})
    seen.append(migrated(first_engine, 3))
    set_schema(second_engine, 12)
    patch_custom(api, namespace, "FliptStorage", "db",
                 {"spec": {"database": {"urlSecretRef": {"name": "db-url", "key": "second"}}}})
    seen.append(migrated(second_engine, 4))
    assert len(set(seen)) == 4 and all(j.startswith("db-migrate-") for j in seen)
    assert read_deployment(api, namespace, "flipt") is not None


def test_operator_restart_mid_migration_starts_no_second_job(kube_cluster, operator, namespace, pg_database,
                                                             tmp_path):
    api = kube_cluster.api_client
    name, engine = pg_database
    set_schema(engine, 12)
    first = start_operator(kube_cluster.kubeconfig, tmp_path / "first.log", extra_args=("-n", namespace))
    try:
        make_server(api, namespace, {"url": pg_url(name)})
        job = wait_for(lambda: one_job(api, namespace), message="migration Job")
        wait_condition(api, namespace, "FliptStorage", "db", "MigrationsApplied", "False", "MigrationRunning")
    finally:
        first.stop()
    second = start_operator(kube_cluster.kubeconfig, tmp_path / "second.log", extra_args=("-n", namespace))
    try:
        nudge(api, namespace, second)
        assert [j.metadata.name for j in jobs(api, namespace)] == [job.metadata.name]
        set_schema(engine, 16)
        finish_job(api, namespace, job.metadata.name)
        wait_for(lambda: read_deployment(api, namespace, "flipt"), message="server after the migration")
        assert [j.metadata.name for j in jobs(api, namespace)] == [job.metadata.name]
    finally:
        second.stop()


# -- cache ------------------------------------------------------------------------------------


def test_redis_cache_ready_and_purged_once_after_a_migration(
        kube_cluster, operator, namespace, pg_database, password_redis):
    api = kube_cluster.api_client
    name, engine = pg_database
    set_schema(engine, 12)
    prefix = f"flipt-{uuid.uuid4().hex[:8]}"
    r = password_redis.client()
    flipt_keys = [f"{prefix}:{uuid.uuid4().hex}" for _ in range(3)]
    for key in flipt_keys:
        r.set(key, b"cached")
    r.set(f"{prefix}:not-a-flipt-key", b"kept")
    r.set(f"other:{uuid.uuid4().hex}", b"kept")
    put_secret(api, namespace, "redis", {"password": password_redis.password})
    make_server(api, namespace, {"url": pg_url(name)},
                cache={"backend": "redis", "redis": {"host": "127.0.0.1", "port": password_redis.port,
                                                     "passwordSecretRef": {"name": "redis", "key": "password"},
                                                     "prefix": prefix}})
    wait_condition(api, namespace, "FliptStorage", "db", "CacheReady", "True", "Ready")
    job = wait_for(lambda: one_job(api, namespace), message="migration Job")
    assert all(r.exists(k) for k in flipt_keys)  # nothing purged before the migration completes
    set_schema(engine, 16)
    finish_job(api, namespace, job.metadata.name)
    wait_for(lambda: not any(r.exists(k) for k in flipt_keys), message="Flipt's keys purged")
    assert r.get(f"{prefix}:not-a-flipt-key") == b"kept"
    purged = wait_for(lambda: batch(api).read_namespaced_job(job.metadata.name, namespace)
                      .metadata.annotations.get("flipt.io/cache-purged"), message="purge recorded")
    assert purged == "3"
    # Once: keys written after the purge survive further passes.
    late = f"{prefix}:{uuid.uuid4().hex}"
    r.set(late, b"fresh")
    nudge(api, namespace, operator)
    wait_for(lambda: read_deployment(api, namespace, "flipt"), message="server")
    assert r.exists(late)
    assert password_redis.password not in dump_namespace(kube_cluster.kubectl, namespace)
    r.delete(late, f"{prefix}:not-a-flipt-key")


def test_redis_with_the_wrong_password_is_not_ready(kube_cluster, operator, namespace, pg_database, password_redis):
    api = kube_cluster.api_client
    name, engine = pg_database
    set_schema(engine, 16)
    put_secret(api, namespace, "redis", {"password": "wrong-" + uuid.uuid4().hex[:8]})
    make_server(api, namespace, {"url": pg_url(name)},
                cache={"backend": "redis", "redis": {"host": "127.0.0.1", "port": password_redis.port,
                                                     "passwordSecretRef": {"name": "redis", "key": "password"}}})
    storage = wait_condition(api, namespace, "FliptStorage", "db", "CacheReady", "False", "AuthenticationFailed")
    assert condition(storage, "Reconciling")["status"] == "True"


# -- import -----------------------------------------------------------------------------------


def flags_document(*keys: str) -> str:
    flags = "".join(f"  - key: {k}\n    name: {k}\n    type: BOOLEAN_FLAG_TYPE\n" for k in keys)
    return f"version: \"1.4\"\nnamespace: default\nflags:\n{flags}"


def make_import_server(api, ns, database_name: str, document: str, **database):
    """The ConfigMap `flags` with `document`, and a server importing it."""
    client.CoreV1Api(api).create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="flags"), data={"features.yaml": document}))
    make_server(api, ns, {"url": pg_url(database_name), **database,
                          "import": {"configMapRef": {"name": "flags", "key": "features.yaml"}}})


def test_invalid_import_document_is_stalled_with_the_line_and_nothing_runs(
        kube_cluster, operator, namespace, pg_database):
    api = kube_cluster.api_client
    name, engine = pg_database
    set_schema(engine, 16)
    core = client.CoreV1Api(api)
    bad = "version: \"1.4\"\nnamespace: default\nflags:\n  - name: no key here\n    type: VARIANT_FLAG_TYPE\n"
    make_import_server(api, namespace, name, bad)
    storage = wait_condition(api, namespace, "FliptStorage", "db", "Stalled", "True", "ImportInvalid")
    message = condition(storage, "Imported")["message"]
    assert "line 4" in message and "key" in message
    assert jobs(api, namespace, "import") == []

    core.patch_namespaced_config_map("flags", namespace, {"data": {"features.yaml": flags_document("new-ui")}})
    # The ConfigMap is watched: no other change, and well before the 30 s re-check.
    job = wait_for(lambda: one_job(api, namespace, "import"), timeout=10,
                   message="import Job for the valid document")
    assert "/import/features.yaml" in job.spec.template.spec.containers[0].command
    finish_job(api, namespace, job.metadata.name)
    wait_condition(api, namespace, "FliptStorage", "db", "Imported", "True", "Imported")


def test_failed_import_is_reported_holds_nothing_and_runs_again_on_retry_or_a_new_document(
        kube_cluster, operator, namespace, pg_database):
    api = kube_cluster.api_client
    name, engine = pg_database
    set_schema(engine, 16)
    make_import_server(api, namespace, name, flags_document("a"))
    first = wait_for(lambda: one_job(api, namespace, "import"), message="import Job").metadata.name
    finish_job(api, namespace, first, succeeded=False)
    storage = wait_condition(api, namespace, "FliptStorage", "db", "Imported", "False", "ImportFailed")
    message = condition(storage, "Imported")["message"]
    assert f"kubectl logs -n {namespace} job/{first}" in message and "BackoffLimitExceeded" in message
    assert "flipt.io/retry-import=<new value>" in message
    assert condition(storage, "Stalled")["status"] == "True"
    # Nothing held: the server rolls out and its environment becomes Ready.
    wait_for(lambda: read_deployment(api, namespace, "flipt"), message="the server despite the failed import")
    mark_available(api, namespace, "flipt")
    wait_condition(api, namespace, "FliptEnvironment", "prod", "Ready", "True")
    # No retry storm: further passes find the failed Job.
    nudge(api, namespace, operator)
    assert [j.metadata.name for j in jobs(api, namespace, "import")] == [first]

    patch_custom(api, namespace, "FliptStorage", "db",
                 {"metadata": {"annotations": {"flipt.io/retry-import": "1"}}})
    wait_for(lambda: len(jobs(api, namespace, "import")) == 2, message="a second import attempt")
    storage = wait_condition(api, namespace, "FliptStorage", "db", "Imported", "False", "ImportRunning")
    assert condition(storage, "Stalled") is None
    second = next(j.metadata.name for j in jobs(api, namespace, "import") if j.metadata.name != first)
    finish_job(api, namespace, second)
    wait_condition(api, namespace, "FliptStorage", "db", "Imported", "True", "Imported")

    # A changed document: a new import at once (the ConfigMap is watched), the old Jobs kept.
    client.CoreV1Api(api).patch_namespaced_config_map("flags", namespace,
                                                      {"data": {"features.yaml": flags_document("a", "b")}})
    wait_for(lambda: len(jobs(api, namespace, "import")) == 3, timeout=10, message="an import of the new document")
    wait_condition(api, namespace, "FliptStorage", "db", "Imported", "False", "ImportRunning")
    assert jobs(api, namespace) == []  # no migration on an up-to-date schema


# -- SQLite -----------------------------------------------------------------------------------


def test_sqlite_is_not_checked_from_the_operator_and_migrated_by_a_job_first(kube_cluster, operator, namespace):
    api = kube_cluster.api_client
    make_server(api, namespace, {"url": "file:/var/opt/flipt/flipt.db", "claimName": "flipt-data",
                                 "migrations": {"backup": {"enabled": True}}})
    storage = wait_condition(api, namespace, "FliptStorage", "db", "DatabaseReachable", "Unknown",
                             "NotCheckedFromOperator")
    assert "flipt-data" in condition(storage, "DatabaseReachable")["message"]
    job = wait_for(lambda: one_job(api, namespace), message="migration Job for SQLite")
    claims = [v.persistent_volume_claim.claim_name for v in job.spec.template.spec.volumes
              if v.persistent_volume_claim]
    assert claims == ["flipt-data"]
    storage = wait_condition(api, namespace, "FliptStorage", "db", "MigrationsApplied", "False", "MigrationRunning")
    assert storage["status"]["database"]["lastMigration"]["backupPath"] == \
        f"/var/opt/flipt/backups/{job.metadata.name}.db"
    assert read_deployment(api, namespace, "flipt") is None
    finish_job(api, namespace, job.metadata.name)
    dep = wait_for(lambda: read_deployment(api, namespace, "flipt"), message="server after the SQLite migration")
    assert dep.spec.strategy.type == "Recreate"
    assert [j.metadata.name for j in jobs(api, namespace)] == [job.metadata.name]


def test_import_that_cannot_be_built_is_stalled_naming_the_field(kube_cluster, operator, namespace, pg_database):
    api = kube_cluster.api_client
    name, engine = pg_database
    set_schema(engine, 16)
    make_import_server(api, namespace, name, flags_document("a"), migrations={"backup": {"enabled": True}})
    storage = wait_condition(api, namespace, "FliptStorage", "db", "Imported", "False", "InvalidImportSpec")
    assert "backup.claimName" in condition(storage, "Imported")["message"]
    assert condition(storage, "Stalled")["status"] == "True"
    assert jobs(api, namespace, "import") == []
    wait_for(lambda: read_deployment(api, namespace, "flipt"), message="the import never holds the server")
