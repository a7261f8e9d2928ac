"""FliptStorage: one storage backend of a Flipt server; its identifier is metadata.name."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from .common import (
    ApiModel,
    CommonStatus,
    ConfigMapKeyReference,
    Duration,
    LocalObjectReference,
    ObjectName,
    SecretKeyReference,
    ValidationRule,
    cel_pattern,
    validation_rules,
)
from .gitsync import REPOSITORIES_ROOT
from .sync import ConflictInfo, FetchPolicy

# Flipt's data directory in the server pod: the volume of spec.database.claimName is mounted here.
DATA_DIR = "/var/opt/flipt"

# https://, http://, ssh://, git://, or scp-like git@host:path. Credentials never belong in the URL.
# A URL's userinfo may name a user but never a password (`user:password@`): the remote is
# written into the sidecar's ConfigMap, so a password there would be a secret in plain text.
REMOTE_PATTERN = (
    r"^((https?|ssh|git)://([^\s@/:]+@)?([^\s@/:\[\]]+|\[[0-9A-Fa-f:.]+\])(:[0-9]+)?/\S+"
    r"|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:\S+)$"
)
# Anything after "scheme://user:" up to an "@" of the authority is a password (what
# urllib.parse.urlsplit calls the password); so is a query key password= or authtoken=.
# RE2 and Python's re read it the same way: the API server and the operator apply this one pattern.
PASSWORD_IN_URL_PATTERN = (
    r"(?i)^([a-z][a-z0-9+.-]*://[^/?#:]*:[^/?#]+@|[^?#]*[?]([^#]*&)?(password|authtoken)(=|&|#|$))"
)
# A remote's userinfo with a colon: REMOTE_PATTERN refuses it too, with an unreadable message.
PASSWORD_IN_REMOTE_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*:[^/]*@"
SQLITE_URL_PATTERN = r"^(file|sqlite):"
# A SQLite URL whose file lies under DATA_DIR: after the scheme an optional "//", then DATA_DIR and
# path segments none of which is empty, "." or "..", so no spelling can leave the volume.
SQLITE_ON_VOLUME_PATTERN = (
    SQLITE_URL_PATTERN + "(//)?" + DATA_DIR + r"(/([^/?.][^/?]*|[.][^/?.][^/?]*|[.][.][^/?]+))+([?].*)?$"
)
# A path segment other than "", "." and "..": with only these, a path means what it says.
_PLAIN_SEGMENT = r"([^/.][^/]*|[.][^/.][^/]*|[.][.][^/]+)"


def _ancestors_or_below(root: str) -> str:
    """A pattern for `root`, any ancestor of it, and anything below it, written with plain
    segments (repeated or trailing slashes allowed, as the operator's normalising check reads them)."""
    parts = root.strip("/").split("/")
    inner = f"/+{parts[-1]}(/+{_PLAIN_SEGMENT})*"
    for part in reversed(parts[:-1]):
        inner = f"/+{part}({inner})?"
    return f"^(/+|{inner})/*$"


# A local backend's path that is Flipt's data directory or above it, or the sidecar's
# repositories (which lie inside the data directory) or below them. The operator's own check
# (rules.servers, with posixpath.normpath) refuses these and more ("/var/opt/./flipt").
LOCAL_PATH_TAKEN_PATTERN = _ancestors_or_below(REPOSITORIES_ROOT)
# The bound on every string a CEL rule matches: without one the API server costs it at the request
# size limit (3 MiB); with it, what one request makes the rules' regular expressions read is small.
MAX_URL_LENGTH = 4096
BackendKind = Literal["database", "git", "local", "memory"]
BACKENDS: tuple[BackendKind, ...] = ("database", "git", "local", "memory")


class BackupSpec(ApiModel):
    enabled: bool = Field(default=False, description="Back up the database before each migration.")
    claim_name: ObjectName | None = Field(
        default=None,
        description=(
            "PersistentVolumeClaim where backups are written. Required for server databases; "
            "SQLite backups go next to the database file when unset."
        ),
    )
    path: str = Field(default="backups", description="Directory on the backup volume.")


class MigrationsSpec(ApiModel):
    policy: Literal["Auto", "Manual"] = Field(
        default="Auto",
        description=(
            "Auto runs `flipt migrate` as a Job before a new server version or database starts. "
            "Manual reports MigrationsPending and waits for the annotation "
            "flipt.io/approve-migration set to the pending image."
        ),
    )
    backup: BackupSpec = Field(default_factory=BackupSpec, description="Backup taken before migrating.")


class ImportSpec(ApiModel):
    config_map_ref: ConfigMapKeyReference = Field(
        description="ConfigMap name and key holding Flipt export documents (several namespaces as --- documents)."
    )
    drop: bool = Field(default=False, description="Pass --drop to `flipt import`: delete all data first.")


class DatabaseSpec(ApiModel):
    url: str | None = Field(
        default=None,
        max_length=MAX_URL_LENGTH,
        pattern=r"^(file:|sqlite:|postgres(ql)?://|cockroach(db)?://|mysql://)\S+$",
        description=(
            "Flipt database URL without a password: file:/var/opt/flipt/flipt.db, postgres://…, "
            "mysql://…, cockroach://…. Use urlSecretRef when it holds a password. A SQLite file "
            "lies under /var/opt/flipt and needs claimName."
        ),
        json_schema_extra=validation_rules(
            ValidationRule(
                f"!self.matches({cel_pattern(PASSWORD_IN_URL_PATTERN)})",
                "spec.database.url must not hold a password (user:password@ or a password= parameter): "
                "it would be written to a ConfigMap. Put the whole URL in a Secret and use "
                "spec.database.urlSecretRef instead.",
                reason="FieldValueForbidden",
            ),
        ),
    )
    url_secret_ref: SecretKeyReference | None = Field(
        default=None, description="Secret key holding the database URL; reaches Flipt as FLIPT_DB_URL."
    )
    max_open_conn: int | None = Field(default=None, ge=0, description="db.max_open_conn (0: unlimited).")
    max_idle_conn: int | None = Field(default=None, ge=0, description="db.max_idle_conn (Flipt default 2).")
    conn_max_lifetime: Duration | None = Field(default=None, description="db.conn_max_lifetime, e.g. 1h.")
    prepared_statements_enabled: bool | None = Field(
        default=None, description="db.prepared_statements_enabled; false for PgBouncer transaction pooling."
    )
    claim_name: ObjectName | None = Field(
        default=None,
        description="PersistentVolumeClaim mounted at /var/opt/flipt; required for SQLite (file:) URLs.",
    )
    migrations: MigrationsSpec = Field(default_factory=MigrationsSpec, description="Schema migrations.")
    import_: ImportSpec | None = Field(
        default=None, alias="import", description="Flag documents imported with `flipt import`."
    )

    model_config = {
        "json_schema_extra": {
            "oneOf": [{"required": ["url"]}, {"required": ["urlSecretRef"]}],
            **validation_rules(
                ValidationRule(
                    "has(self.url) != has(self.urlSecretRef)",
                    "set exactly one of spec.database.url and spec.database.urlSecretRef "
                    "(urlSecretRef when the URL holds a password).",
                ),
                ValidationRule(
                    f"!has(self.url) || !self.url.matches({cel_pattern(SQLITE_URL_PATTERN)}) || has(self.claimName)",
                    "spec.database.claimName is required with a SQLite URL (file: or sqlite:): the database "
                    f"file would be lost with the pod. Set a PersistentVolumeClaim, mounted at {DATA_DIR}.",
                    reason="FieldValueRequired",
                    field_path=".claimName",
                ),
                ValidationRule(
                    # With urlSecretRef the dialect is unknown here: the migration Job's builder says it.
                    f"!has(self.url) || self.url.matches({cel_pattern(SQLITE_URL_PATTERN)}) || !has(self.migrations)"
                    " || !has(self.migrations.backup) || !self.migrations.backup.enabled"
                    " || has(self.migrations.backup.claimName)",
                    "spec.database.migrations.backup.claimName is required to back up a server database "
                    "(PostgreSQL, MySQL, CockroachDB): set a PersistentVolumeClaim for the backups, or set "
                    "spec.database.migrations.backup.enabled to false.",
                    reason="FieldValueRequired",
                    field_path=".migrations.backup.claimName",
                ),
                ValidationRule(
                    f"!has(self.url) || !self.url.matches({cel_pattern(SQLITE_URL_PATTERN)})"
                    f" || self.url.matches({cel_pattern(SQLITE_ON_VOLUME_PATTERN)})",
                    f"spec.database.url: the SQLite file must be a path under {DATA_DIR}, the volume of "
                    f"spec.database.claimName (the root filesystem is read-only), without '.' or '..' "
                    f"segments, e.g. file:{DATA_DIR}/flipt.db.",
                    field_path=".url",
                ),
            ),
        }
    }


class GitSpec(ApiModel):
    remote: str = Field(
        max_length=MAX_URL_LENGTH,
        pattern=REMOTE_PATTERN,
        description=(
            "Git remote: https://, http://, ssh://, git:// or git@host:path. No password in it "
            "(put credentials in a FliptCredential); a user name is allowed."
        ),
        json_schema_extra=validation_rules(
            ValidationRule(
                f"!self.matches({cel_pattern(PASSWORD_IN_REMOTE_PATTERN)})",
                "spec.git.remote must not hold a password (user:password@): it would be written to the "
                "sidecar's ConfigMap. Keep at most a user name in the URL and put the password in a "
                "FliptCredential named by spec.git.credentialRef.",
                reason="FieldValueForbidden",
            ),
        ),
    )
    branch: str = Field(default="main", min_length=1, description="Branch to serve and push to.")
    poll_interval: Duration = Field(default="30s", description="How often the remote is fetched, e.g. 30s.")
    fetch_policy: FetchPolicy = Field(
        default="strict",
        description=(
            "strict: a failed fetch makes the storage not Ready. lenient: keep serving the last good "
            "state through connection problems, reported as degraded but Ready."
        ),
    )
    credential_ref: LocalObjectReference | None = Field(
        default=None, description="A FliptCredential in the same namespace."
    )
    ca_cert_secret_ref: SecretKeyReference | None = Field(
        default=None, description="Secret key with a PEM CA bundle for the remote's TLS certificate."
    )
    insecure_skip_tls: bool = Field(default=False, alias="insecureSkipTLS", description="Skip TLS verification of the remote.")


class LocalSpec(ApiModel):
    """A Flipt v2 `local` backend: a git repository on a volume that only Flipt writes (through its
    API); nothing syncs it with a remote, and Flipt does not re-read changes made beside it."""

    path: str = Field(
        default="/var/opt/flipt/local",
        max_length=MAX_URL_LENGTH,
        pattern=r"^/\S*$",
        description=(
            "Absolute path, inside the server pod, of the git repository Flipt keeps (backend.path); "
            "Flipt creates it on first start. Only Flipt writes it: changes made beside Flipt are not read. "
            f"Not {DATA_DIR} itself nor under {REPOSITORIES_ROOT} (the git-sync repositories)."
        ),
        json_schema_extra=validation_rules(
            ValidationRule(
                f"!self.matches({cel_pattern(LOCAL_PATH_TAKEN_PATTERN)})",
                f"spec.local.path must not be Flipt's data directory {DATA_DIR} or a folder above it, nor the "
                f"git-sync repositories under {REPOSITORIES_ROOT}: give it a directory of its own, e.g. "
                f"{DATA_DIR}/local.",
                reason="FieldValueForbidden",
            ),
        ),
    )
    claim_name: ObjectName = Field(description="PersistentVolumeClaim holding the repository, so it survives restarts.")


class MemorySpec(ApiModel):
    """Flags kept in memory: they do not survive a restart."""


class MemoryCacheSpec(ApiModel):
    eviction_interval: Duration | None = Field(
        default=None, description="cache.memory.eviction_interval: how often expired items are removed."
    )


class RedisCacheSpec(ApiModel):
    host: str = Field(min_length=1, description="Redis host name.")
    port: int = Field(default=6379, ge=1, le=65535, description="Redis port.")
    db: int = Field(default=0, ge=0, le=15, description="Redis database index.")
    password_secret_ref: SecretKeyReference | None = Field(default=None, description="Secret key with the password.")
    require_tls: bool = Field(default=False, alias="requireTLS", description="Connect with TLS.")
    prefix: str | None = Field(default=None, description="Key prefix (Flipt's default: flipt).")


class CacheSpec(ApiModel):
    backend: Literal["memory", "redis"] = Field(default="memory", description="memory or redis.")
    ttl: Duration | None = Field(default=None, description="cache.ttl: items older than this expire (Flipt: 1m).")
    memory: MemoryCacheSpec | None = Field(default=None, description="Memory cache settings.")
    redis: RedisCacheSpec | None = Field(default=None, description="Redis settings; required when backend is redis.")

    model_config = {
        "json_schema_extra": validation_rules(
            ValidationRule(
                "!has(self.backend) || self.backend != 'redis' || has(self.redis)",
                "spec.cache.redis is required when spec.cache.backend is redis: set at least spec.cache.redis.host.",
                reason="FieldValueRequired",
                field_path=".redis",
            ),
        )
    }


class FliptStorageSpec(ApiModel):
    database: DatabaseSpec | None = Field(default=None, description="A relational database: a Flipt v1 server.")
    git: GitSpec | None = Field(default=None, description="A git remote kept in sync by the git-sync sidecar.")
    local: LocalSpec | None = Field(default=None, description="Flag files on a volume (Flipt's local backend).")
    memory: MemorySpec | None = Field(default=None, description="Flags in memory only; lost on restart.")
    cache: CacheSpec | None = Field(default=None, description="Flipt's cache; database storage only.")

    model_config = {
        "json_schema_extra": {
            "oneOf": [{"required": [kind]} for kind in BACKENDS],
            **validation_rules(
                ValidationRule(
                    f"[{', '.join(f'has(self.{kind})' for kind in BACKENDS)}].exists_one(b, b)",
                    "set exactly one of spec.database, spec.git, spec.local and spec.memory: "
                    "a FliptStorage is one storage backend.",
                ),
                ValidationRule(
                    "!has(self.cache) || has(self.database)",
                    "spec.cache is for database storage only (Flipt's cache exists in Flipt v1 alone): "
                    "remove spec.cache, or use spec.database.",
                    reason="FieldValueForbidden",
                    field_path=".cache",
                ),
            ),
        }
    }

    @model_validator(mode="after")
    def _one_backend(self) -> FliptStorageSpec:
        chosen = [k for k in BACKENDS if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(f"exactly one of database, git, local, memory must be set (got {chosen or 'none'})")
        return self

    @property
    def backend(self) -> BackendKind:
        for kind in BACKENDS:
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("validated: one backend is set")


class MigrationRecord(ApiModel):
    job: str = Field(description="Name of the migration Job.")
    image: str = Field(description="Flipt image the Job ran.")
    start_time: datetime | None = None
    completion_time: datetime | None = None
    result: Literal["Running", "Succeeded", "Failed"] = "Running"
    backup_path: str | None = Field(default=None, description="Where the backup taken before it was written.")
    message: str | None = None


class DatabaseStatus(ApiModel):
    dialect: str | None = Field(default=None, description="sqlite, postgres, mysql or cockroachdb.")
    schema_version: int | None = Field(default=None, description="Version in golang-migrate's schema_migrations.")
    expected_version: int | None = Field(default=None, description="Version the server image expects.")
    dirty: bool | None = Field(default=None, description="Whether a migration failed half-way.")
    last_migration: MigrationRecord | None = None


class ReplicaSync(ApiModel):
    pod: str
    revision: str | None = None
    last_fetch_time: datetime | None = None
    last_error: str | None = None
    conflict: ConflictInfo | None = None


class SyncStatus(ApiModel):
    revision: str | None = Field(default=None, description="Commit served (by every replica, when they agree).")
    remote_revision: str | None = Field(default=None, description="Remote branch head at the last fetch.")
    last_fetch_time: datetime | None = Field(default=None, description="Last successful fetch.")
    fetch_policy: FetchPolicy | None = None
    last_error: str | None = None
    degraded: bool = False
    conflict: ConflictInfo | None = None
    replicas: list[ReplicaSync] = Field(default_factory=list, description="Per replica, when replicas disagree.")


class FliptStorageStatus(CommonStatus):
    backend: BackendKind | None = Field(default=None, description="database, git, local or memory.")
    server: str | None = Field(default=None, description="The Flipt server (Deployment) that uses this storage.")
    database: DatabaseStatus | None = None
    sync: SyncStatus | None = None


class FliptStorage(ApiModel):
    spec: FliptStorageSpec
    status: FliptStorageStatus | None = None
