"""Migration and import Job manifests (pure builders)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from flipt_operator.builders.database_jobs import (
    JobBuildError,
    JobOptions,
    build_import_job,
    build_migration_job,
    import_job_name,
    migration_job_name,
    restore_commands,
)
from flipt_operator.models.storage import DatabaseSpec

IMAGE = "docker.flipt.io/flipt/flipt:v1.61.1"
OLD_IMAGE = "docker.flipt.io/flipt/flipt:v1.60.0"


def _pg(**extra) -> DatabaseSpec:
    return DatabaseSpec.model_validate({"urlSecretRef": {"name": "db", "key": "url"}, **extra})


def _sqlite(**extra) -> DatabaseSpec:
    return DatabaseSpec.model_validate({"url": "file:/var/opt/flipt/flipt.db", "claimName": "flipt-data", **extra})


def _migration(database: DatabaseSpec, dialect: str, **kw):
    args = dict(
        storage_name="main", namespace="apps", image=IMAGE, database=database, dialect=dialect,
        config_map_name="flipt-config",
    )
    args.update(kw)
    return build_migration_job(**args)


def _pod(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def test_migration_job_shape_for_a_secret_url() -> None:
    plan = _migration(_pg(), "postgres")
    job = plan.manifest
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == plan.name and plan.name.startswith("main-migrate-")
    assert job["metadata"]["namespace"] == "apps"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600
    pod = _pod(job)
    assert pod["restartPolicy"] == "Never"
    assert "initContainers" not in pod and plan.backup_path is None
    (migrate,) = pod["containers"]
    assert migrate["image"] == IMAGE
    assert migrate["command"] == ["/flipt", "migrate", "--config", "/etc/flipt/config/default.yml"]
    env = {e["name"]: e for e in migrate["env"]}
    assert env["FLIPT_DB_URL"] == {"name": "FLIPT_DB_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}
    assert migrate["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsUser"] == 100 and pod["securityContext"]["fsGroup"] == 1000
    mounts = {m["mountPath"] for m in migrate["volumeMounts"]}
    assert {"/etc/flipt/config", "/tmp", "/home/flipt/.config/flipt"} <= mounts
    config = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config["configMap"] == {"name": "flipt-config", "items": [{"key": "default.yml", "path": "default.yml"}]}
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "migration" and labels["flipt.io/storage"] == "main"
    assert job["spec"]["template"]["metadata"]["labels"] == labels


def test_names_are_deterministic_and_track_what_matters() -> None:
    db = _pg()
    assert _migration(db, "postgres").name == _migration(_pg(), "postgres").name
    assert migration_job_name("main", IMAGE, db) != migration_job_name("main", OLD_IMAGE, db)
    assert migration_job_name("main", IMAGE, db) != migration_job_name("main", IMAGE, _pg(claimName="x"))
    assert migration_job_name("main", IMAGE, db) != migration_job_name("main", IMAGE, db, revision="42")
    # pool settings and the import section do not re-run migrations
    tuned = _pg(maxOpenConn=10, **{"import": {"configMapRef": {"name": "f", "key": "k"}}})
    assert migration_job_name("main", IMAGE, db) == migration_job_name("main", IMAGE, tuned)
    long = migration_job_name("a" * 63, IMAGE, db)
    assert len(long) <= 63 and long.startswith("a" * 20) and "-migrate-" in long
    assert len(import_job_name("b" * 80, "abc")) <= 63
    assert import_job_name("s", "abc") != import_job_name("s", "abc", drop=True)
    assert import_job_name("s", "abc") != import_job_name("s", "abd")


def test_sqlite_backup_on_the_data_volume() -> None:
    db = _sqlite(migrations={"backup": {"enabled": True}})
    plan = _migration(db, "sqlite", sqlite_path="/var/opt/flipt/flipt.db")
    pod = _pod(plan.manifest)
    assert plan.backup_path == f"/var/opt/flipt/backups/{plan.name}.db"
    (backup,) = pod["initContainers"]
    assert backup["command"][:2] == ["sh", "-c"]
    assert backup["command"][-2:] == ["/var/opt/flipt/flipt.db", plan.backup_path]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "flipt-data"}
    assert {"name": "data", "mountPath": "/var/opt/flipt"} in pod["containers"][0]["volumeMounts"]
    assert plan.manifest["metadata"]["annotations"]["flipt.io/backup-path"] == plan.backup_path
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["FLIPT_DB_URL"]["value"] == "file:/var/opt/flipt/flipt.db"


def test_sqlite_backup_to_a_backup_claim() -> None:
    db = _sqlite(migrations={"backup": {"enabled": True, "claimName": "backups", "path": "/flipt/"}})
    plan = _migration(db, "sqlite", sqlite_path="/var/opt/flipt/flipt.db")
    assert plan.backup_path == f"/backup/flipt/{plan.name}.db"
    (backup,) = _pod(plan.manifest)["initContainers"]
    assert {"name": "backup", "mountPath": "/backup"} in backup["volumeMounts"]


def test_server_database_backup_exports_with_the_old_image() -> None:
    db = _pg(migrations={"backup": {"enabled": True, "claimName": "backups"}})
    plan = _migration(db, "postgres", backup_image=OLD_IMAGE,
                      options=JobOptions(env=[{"name": "FLIPT_LOG_LEVEL", "value": "debug"}]))
    pod = _pod(plan.manifest)
    (backup,) = pod["initContainers"]
    assert backup["image"] == OLD_IMAGE and pod["containers"][0]["image"] == IMAGE
    assert plan.backup_path == f"/backup/backups/{plan.name}.yaml"
    script = backup["command"][2]
    assert "/flipt export --all-namespaces" in script
    assert backup["command"][-2:] == [plan.backup_path, "/etc/flipt/config/default.yml"]
    assert any(e["name"] == "FLIPT_LOG_LEVEL" for e in backup["env"])
    backup_volume = next(v for v in pod["volumes"] if v["name"] == "backup")
    assert backup_volume["persistentVolumeClaim"] == {"claimName": "backups"}
    # the migrate container does not need the backup volume
    assert all(m["name"] != "backup" for m in pod["containers"][0]["volumeMounts"])


@pytest.mark.parametrize(
    ("database", "dialect", "kw", "field"),
    [
        (DatabaseSpec.model_validate({"url": "file:/var/opt/flipt/flipt.db"}), "sqlite", {}, "claimName"),
        (_pg(migrations={"backup": {"enabled": True}}), "postgres", {}, "backup.claimName"),
        (_sqlite(migrations={"backup": {"enabled": True}}), "sqlite", {"sqlite_path": "/data/flipt.db"}, "url"),
        (_sqlite(migrations={"backup": {"enabled": True}}), "sqlite", {}, "SQLite file path"),
    ],
)
def test_configuration_errors_name_the_field(database, dialect, kw, field) -> None:
    with pytest.raises(JobBuildError, match=field.replace(".", r"\.")):
        _migration(database, dialect, **kw)


def test_options_pass_through() -> None:
    owner = [{"apiVersion": "flipt.io/v1alpha1", "kind": "FliptStorage", "name": "main", "uid": "u", "controller": True}]
    options = JobOptions(
        active_deadline_seconds=120, service_account_name="flipt", owner_references=owner,
        labels={"app.kubernetes.io/instance": "flipt"}, resources={"limits": {"memory": "128Mi"}},
        image_pull_secrets=["regcred"],
    )
    plan = _migration(_pg(), "postgres", options=options, config_key="config.yml")
    job = plan.manifest
    pod = _pod(job)
    assert job["spec"]["activeDeadlineSeconds"] == 120
    assert job["metadata"]["ownerReferences"] == owner
    assert job["metadata"]["labels"]["app.kubernetes.io/instance"] == "flipt"
    assert pod["serviceAccountName"] == "flipt" and pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "128Mi"}}
    config = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config["configMap"]["items"] == [{"key": "config.yml", "path": "default.yml"}]


def test_import_job() -> None:
    db = _pg(**{"import": {"configMapRef": {"name": "flags", "key": "production.yaml"}, "drop": True}})
    plan = build_import_job(
        storage_name="main", namespace="apps", image=IMAGE, database=db, dialect="postgres",
        config_map_name="flipt-config", content_hash="f" * 64,
    )
    job = plan.manifest
    pod = _pod(job)
    assert plan.name == import_job_name("main", "f" * 64, drop=True)
    (container,) = pod["containers"]
    assert container["command"] == [
        "/flipt", "import", "--config", "/etc/flipt/config/default.yml", "--drop", "/import/production.yaml",
    ]
    source = next(v for v in pod["volumes"] if v["name"] == "import")
    assert source["configMap"] == {"name": "flags", "items": [{"key": "production.yaml", "path": "production.yaml"}]}
    assert {"name": "import", "mountPath": "/import", "readOnly": True} in container["volumeMounts"]
    assert job["metadata"]["annotations"]["flipt.io/content-hash"] == "f" * 64
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "import"
    assert job["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"

    with pytest.raises(JobBuildError, match="import"):
        build_import_job(storage_name="main", namespace="apps", image=IMAGE, database=_pg(), dialect="postgres",
                         config_map_name="c", content_hash="x")


def test_import_without_drop_and_with_backup() -> None:
    db = _sqlite(**{"import": {"configMapRef": {"name": "flags", "key": "f.yaml"}}},
                 migrations={"backup": {"enabled": True}})
    plan = build_import_job(
        storage_name="main", namespace="apps", image=IMAGE, database=db, dialect="sqlite",
        config_map_name="flipt-config", content_hash="a" * 64, sqlite_path="/var/opt/flipt/flipt.db",
    )
    pod = _pod(plan.manifest)
    assert "--drop" not in pod["containers"][0]["command"]
    assert plan.backup_path == f"/var/opt/flipt/backups/{plan.name}.db"
    assert len(pod["initContainers"]) == 1


def test_restore_commands() -> None:
    lite = restore_commands("sqlite", "/var/opt/flipt/backups/x.db", "/var/opt/flipt/flipt.db")
    assert 'cp "/var/opt/flipt/backups/x.db" "/var/opt/flipt/flipt.db"' in lite
    (pg,) = restore_commands("postgres", "/backup/backups/x.yaml")
    assert pg.startswith("/flipt import --drop --config /etc/flipt/config/default.yml")


def test_sqlite_backup_script_runs_in_posix_sh(tmp_path: Path) -> None:
    db = _sqlite(migrations={"backup": {"enabled": True}})
    plan = _migration(db, "sqlite", sqlite_path="/var/opt/flipt/flipt.db")
    command = _pod(plan.manifest)["initContainers"][0]["command"]
    src, dst = tmp_path / "flipt.db", tmp_path / "backups" / "job.db"
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command[:-2], str(src), str(dst)], capture_output=True, text=True, check=True)

    assert "nothing to back up" in run().stdout and not dst.exists()
    with sqlite3.connect(src) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    assert "backup written" in run().stdout
    with sqlite3.connect(dst) as copy:
        assert copy.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert not (tmp_path / "backups" / "job.db.partial").exists()


@pytest.mark.parametrize(
    ("key", "mounted"),
    [("flags.yaml", "flags.yaml"), ("flags.yml", "flags.yml"), ("flags.json", "flags.json"),
     ("flags", "flags.yaml"), ("flags.txt", "flags.txt.yaml"), ("FLAGS.YAML", "FLAGS.YAML.yaml")],
)
def test_import_document_is_mounted_with_an_extension_flipt_decodes(key, mounted) -> None:
    """`flipt import` picks its decoder from the file extension (yml, yaml, json, as written)."""
    db = _pg(**{"import": {"configMapRef": {"name": "flags", "key": key}}})
    plan = build_import_job(
        storage_name="main", namespace="apps", image=IMAGE, database=db, dialect="postgres",
        config_map_name="flipt-config", content_hash="f" * 64,
    )
    pod = _pod(plan.manifest)
    assert pod["containers"][0]["command"][-1] == f"/import/{mounted}"
    source = next(v for v in pod["volumes"] if v["name"] == "import")
    assert source["configMap"]["items"] == [{"key": key, "path": mounted}]
