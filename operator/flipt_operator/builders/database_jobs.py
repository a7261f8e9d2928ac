"""Job manifests for Flipt's database: `flipt migrate` (after an optional backup) and `flipt import`.

Pure functions returning plain dicts. Both Jobs run the server's own image with the server's
config (its ConfigMap mounted at /etc/flipt/config/default.yml) and database URL env, as the
image's non-root user with a read-only root filesystem: everything they write goes to mounted
volumes. Names are deterministic, so a restarted operator finds the Job it created instead of
starting a second one.

The caller resolves the database URL (a rule, `rules.database_url.parse_flipt_url`) and passes
the dialect and, for SQLite, the file path: builders and rules are independent layers.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

from ..models.plan import CONFIG_FILE as CONFIG_PATH
from ..models.plan import DATA_DIR as DATA_MOUNT
from ..models.plan import STATE_DIR
from ..models.storage import DatabaseSpec, ImportSpec

# The flipt image (build/Dockerfile, Helm chart 0.87.6): user flipt, group 1000, data at /var/opt/flipt.
FLIPT_UID = 100
FLIPT_GID = 1000
FLIPT_BINARY = "/flipt"
# The server's paths (models.plan): config at /etc/flipt/config/default.yml, data at /var/opt/flipt.
CONFIG_DIR, CONFIG_FILE = posixpath.split(CONFIG_PATH)
BACKUP_MOUNT = "/backup"
IMPORT_MOUNT = "/import"

DEFAULT_DEADLINE_SECONDS = 600
MAX_NAME = 63  # the Job name becomes the pods' job-name label value

LABEL_STORAGE = "flipt.io/storage"
ANNOTATION_IMAGE = "flipt.io/image"
ANNOTATION_BACKUP = "flipt.io/backup-path"
ANNOTATION_CONTENT_HASH = "flipt.io/content-hash"


class JobBuildError(ValueError):
    """The storage spec cannot produce this Job; the message names the field to fix."""


@dataclass(frozen=True)
class JobPlan:
    name: str
    manifest: dict[str, Any]
    backup_path: str | None = None
    """Where the backup is written, as seen in the Job's pod (on the backup or data volume)."""


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _job_name(storage_name: str, action: str, digest: str) -> str:
    suffix = f"-{action}-{digest[:10]}"
    head = storage_name[: MAX_NAME - len(suffix)].rstrip("-.")
    return head + suffix


def migration_job_name(storage_name: str, image: str, database: DatabaseSpec, revision: str | None = None) -> str:
    """`<storage>-migrate-<hash>` over what decides the migration: storage, image, which database.

    Only the fields naming the database (url, urlSecretRef, claimName) count, so pool settings or
    the import section never trigger a migration. `revision` (e.g. the URL Secret's
    resourceVersion) lets a changed Secret value produce a new Job.
    """
    which = database.model_dump(by_alias=True, mode="json", include={"url", "url_secret_ref", "claim_name"})
    return _job_name(storage_name, "migrate", _digest([storage_name, image, which, revision]))


def import_job_name(storage_name: str, content_hash: str, drop: bool = False) -> str:
    """`<storage>-import-<hash>` over the document content and --drop: the same import runs once."""
    return _job_name(storage_name, "import", _digest([storage_name, content_hash, drop]))


def _labels(storage_name: str, component: str, extra: dict[str, str] | None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "flipt",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "flipt-operator",
        LABEL_STORAGE: storage_name,
    }
    labels.update(extra or {})
    return labels


def _db_url_env(database: DatabaseSpec) -> dict[str, Any]:
    if database.url_secret_ref is not None:
        ref = database.url_secret_ref
        return {"name": "FLIPT_DB_URL", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
    if database.url:
        return {"name": "FLIPT_DB_URL", "value": database.url}
    raise JobBuildError("spec.database: set url or urlSecretRef")


def _env(database: DatabaseSpec, extra: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    env = [
        _db_url_env(database),
        {"name": "FLIPT_META_STATE_DIRECTORY", "value": STATE_DIR},
        {"name": "FLIPT_META_CHECK_FOR_UPDATES", "value": "false"},
        {"name": "FLIPT_META_TELEMETRY_ENABLED", "value": "false"},
    ]
    names = {e["name"] for e in env}
    env.extend(e for e in (extra or []) if e.get("name") not in names)
    return env


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }


@dataclass(frozen=True)
class _Volumes:
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]


def _base_volumes(config_map_name: str, config_key: str, database: DatabaseSpec, dialect: str) -> _Volumes:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name, "items": [{"key": config_key, "path": CONFIG_FILE}]}},
        {"name": "state", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "state", "mountPath": STATE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if dialect == "sqlite":
        if not database.claim_name:
            raise JobBuildError("spec.database.claimName: SQLite needs a PersistentVolumeClaim for the database file")
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": database.claim_name}})
        mounts.append({"name": "data", "mountPath": DATA_MOUNT})
    return _Volumes(volumes, mounts)


def _sqlite_file(sqlite_path: str | None) -> str:
    if not sqlite_path:
        raise JobBuildError("spec.database: the SQLite file path is needed to back it up")
    path = posixpath.normpath(sqlite_path)
    if not path.startswith(DATA_MOUNT + "/"):
        raise JobBuildError(
            f"spec.database.url: the SQLite file must be under {DATA_MOUNT} (the volume of claimName) to be backed up"
        )
    return path


# POSIX sh in the flipt image (alpine/busybox); paths are passed as arguments, never interpolated.
_SQLITE_BACKUP_SCRIPT = """set -eu
src="$1"; dst="$2"
if [ ! -f "$src" ]; then echo "no database file at $src yet: nothing to back up"; exit 0; fi
mkdir -p "$(dirname "$dst")"
cp "$src" "$dst.partial"
for ext in -wal -shm -journal; do
  if [ -f "$src$ext" ]; then cp "$src$ext" "$dst$ext"; fi
done
mv "$dst.partial" "$dst"
echo "backup written to $dst"
"""

_EXPORT_BACKUP_SCRIPT = """set -eu
dst="$1"
mkdir -p "$(dirname "$dst")"
/flipt export --all-namespaces --config "$2" -o "$dst.partial.yaml"
mv "$dst.partial.yaml" "$dst"
echo "backup written to $dst"
"""


def _backup(
    *,
    job_name: str,
    database: DatabaseSpec,
    dialect: str,
    sqlite_path: str | None,
    image: str,
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    resources: dict[str, Any] | None,
) -> tuple[dict[str, Any], str]:
    """The backup initContainer and the path it writes; adds the backup volume when one is used."""
    spec = database.migrations.backup
    subdir = spec.path.strip("/")
    backup_mounts = list(mounts)
    if spec.claim_name:
        volumes.append({"name": "backup", "persistentVolumeClaim": {"claimName": spec.claim_name}})
        backup_mounts.append({"name": "backup", "mountPath": BACKUP_MOUNT})
        root = BACKUP_MOUNT
    elif dialect == "sqlite":
        root = posixpath.dirname(_sqlite_file(sqlite_path))
    else:
        raise JobBuildError(
            "spec.database.migrations.backup.claimName: a backup of a server database needs a PersistentVolumeClaim"
        )
    directory = posixpath.join(root, subdir) if subdir else root
    if dialect == "sqlite":
        target = posixpath.join(directory, f"{job_name}.db")
        command = ["sh", "-c", _SQLITE_BACKUP_SCRIPT, "sh", _sqlite_file(sqlite_path), target]
    else:
        target = posixpath.join(directory, f"{job_name}.yaml")
        command = ["sh", "-c", _EXPORT_BACKUP_SCRIPT, "sh", target, CONFIG_PATH]
    container = _container("backup", image, command, env, backup_mounts, resources)
    return container, target


def _container(
    name: str,
    image: str,
    command: list[str],
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    resources: dict[str, Any] | None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": env,
        "volumeMounts": mounts,
        "securityContext": _container_security(),
    }
    if resources:
        container["resources"] = resources
    return container


@dataclass(frozen=True)
class JobOptions:
    """Settings both Jobs pass through from the server: its env, account, owners and limits."""

    env: list[dict[str, Any]] | None = None
    """The server's extra environment (FLIPT_* keys), so the Job reads the same config."""
    active_deadline_seconds: int = DEFAULT_DEADLINE_SECONDS
    service_account_name: str | None = None
    owner_references: list[dict[str, Any]] | None = None
    labels: dict[str, str] | None = None
    resources: dict[str, Any] | None = None
    image_pull_secrets: list[str] | None = None


@dataclass(frozen=True)
class _Target:
    """Where the Job's database is: from the storage spec and the resolved URL."""

    storage_name: str
    namespace: str
    database: DatabaseSpec
    dialect: str
    config_map_name: str
    config_key: str
    sqlite_path: str | None


def _database_job(
    *,
    name: str,
    component: str,
    target: _Target,
    image: str,
    backup_image: str,
    command: list[str],
    extra_volumes: list[dict[str, Any]],
    extra_mounts: list[dict[str, Any]],
    annotations: dict[str, str],
    options: JobOptions,
) -> JobPlan:
    """A Job with the optional backup initContainer and one Flipt container running `command`."""
    database = target.database
    base = _base_volumes(target.config_map_name, target.config_key, database, target.dialect)
    env = _env(database, options.env)
    init: list[dict[str, Any]] = []
    backup_path = None
    if database.migrations.backup.enabled:
        container, backup_path = _backup(
            job_name=name,
            database=database,
            dialect=target.dialect,
            sqlite_path=target.sqlite_path,
            image=backup_image,
            env=env,
            mounts=base.mounts,
            volumes=base.volumes,
            resources=options.resources,
        )
        init.append(container)
        annotations = {**annotations, ANNOTATION_BACKUP: backup_path}
    main = _container(component, image, command, env, base.mounts + extra_mounts, options.resources)
    labels = _labels(target.storage_name, component, options.labels)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsUser": FLIPT_UID,
            "runAsGroup": FLIPT_GID,
            "fsGroup": FLIPT_GID,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [main],
        "volumes": base.volumes + extra_volumes,
    }
    if init:
        pod_spec["initContainers"] = init
    if options.service_account_name:
        pod_spec["serviceAccountName"] = options.service_account_name
    if options.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in options.image_pull_secrets]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": target.namespace,
        "labels": labels,
        "annotations": {ANNOTATION_IMAGE: image, **annotations},
    }
    if options.owner_references:
        metadata["ownerReferences"] = options.owner_references
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": options.active_deadline_seconds,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }
    return JobPlan(name=name, manifest=manifest, backup_path=backup_path)


def build_migration_job(
    *,
    storage_name: str,
    namespace: str,
    image: str,
    database: DatabaseSpec,
    dialect: str,
    config_map_name: str,
    config_key: str = CONFIG_FILE,
    sqlite_path: str | None = None,
    backup_image: str | None = None,
    revision: str | None = None,
    options: JobOptions = JobOptions(),
) -> JobPlan:
    """One Job: the backup (an initContainer, when `migrations.backup.enabled`), then `flipt migrate`.

    `dialect` and `sqlite_path` come from the resolved URL. `backup_image` should be the image
    the database was last served with: `flipt export` must understand the schema as it is now.
    """
    target = _Target(storage_name, namespace, database, dialect, config_map_name, config_key, sqlite_path)
    return _database_job(
        name=migration_job_name(storage_name, image, database, revision),
        component="migration",
        target=target,
        image=image,
        backup_image=backup_image or image,
        command=[FLIPT_BINARY, "migrate", "--config", CONFIG_PATH],
        extra_volumes=[],
        extra_mounts=[],
        annotations={},
        options=options,
    )


def build_import_job(
    *,
    storage_name: str,
    namespace: str,
    image: str,
    database: DatabaseSpec,
    dialect: str,
    config_map_name: str,
    content_hash: str,
    import_spec: ImportSpec | None = None,
    config_key: str = CONFIG_FILE,
    sqlite_path: str | None = None,
    options: JobOptions = JobOptions(),
) -> JobPlan:
    """`flipt import [--drop] /import/<key>` with the documents' ConfigMap mounted at /import.

    `content_hash` is `rules.import_document.content_hash` of the ConfigMap value. With
    `migrations.backup.enabled` the same backup as before a migration runs first. Import in
    local mode refuses a database with pending migrations: run it after the migration Job.
    """
    spec = import_spec or database.import_
    if spec is None:
        raise JobBuildError("spec.database.import: no ConfigMap to import")
    source = spec.config_map_ref
    command = [FLIPT_BINARY, "import", "--config", CONFIG_PATH]
    if spec.drop:
        command.append("--drop")
    document = import_document_file(source.key)
    command.append(f"{IMPORT_MOUNT}/{document}")
    target = _Target(storage_name, namespace, database, dialect, config_map_name, config_key, sqlite_path)
    return _database_job(
        name=import_job_name(storage_name, content_hash, spec.drop),
        component="import",
        target=target,
        image=image,
        backup_image=image,
        command=command,
        extra_volumes=[
            {"name": "import", "configMap": {"name": source.name, "items": [{"key": source.key, "path": document}]}}
        ],
        extra_mounts=[{"name": "import", "mountPath": IMPORT_MOUNT, "readOnly": True}],
        annotations={ANNOTATION_CONTENT_HASH: content_hash},
        options=options,
    )


def import_document_file(config_map_key: str) -> str:
    """The file name the import document is mounted under. `flipt import` picks its decoder from
    the file's extension and fails on anything but yml, yaml or json, whatever the ConfigMap key is
    called; YAML reads JSON too, so any other key is mounted as `<key>.yaml`."""
    _, dot, extension = config_map_key.rpartition(".")
    if dot and extension in ("yml", "yaml", "json"):  # Flipt compares the extension as written
        return config_map_key
    return f"{config_map_key}.yaml"


def restore_commands(dialect: str, backup_path: str, sqlite_path: str | None = None) -> list[str]:
    """Shell commands that restore a backup these Jobs wrote (also in docs/database.md).

    Run them in a pod that mounts the same volumes and config as the Job, with the server
    scaled to zero.
    """
    if dialect == "sqlite":
        db = sqlite_path or f"{DATA_MOUNT}/flipt.db"
        return [
            f'rm -f "{db}-wal" "{db}-shm" "{db}-journal"',
            f'cp "{backup_path}" "{db}"',
            f'for ext in -wal -shm -journal; do [ -f "{backup_path}$ext" ] && cp "{backup_path}$ext" "{db}$ext"; done; true',
        ]
    # `import --drop` drops every table (schema_migrations included), migrates from scratch to
    # the image's version and loads the export: it also clears a dirty schema.
    return [f'{FLIPT_BINARY} import --drop --config {CONFIG_PATH} "{backup_path}"']
