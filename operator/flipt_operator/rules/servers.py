"""Flipt's rules across objects: which environments form which server, and whether it can run.

Input is what one namespace holds (specs, which credentials are Ready, which Secret keys
exist: names only, never values); output is, per server name, a ServerPlan or the problems
that keep it from being rendered. Warnings never block a plan.
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ..models.common import SecretKeyReference
from ..models.credential import OPTIONAL_KEYS, REQUIRED_KEYS, FliptCredentialSpec
from ..models.environment import FliptEnvironmentSpec
from ..models.gitsync import REPOSITORIES_ROOT
from ..models.plan import (
    DATA_DIR,
    IMPLICIT_STORAGE,
    CredentialPlan,
    EnvironmentPlan,
    Generation,
    OperatorDefaults,
    Problem,
    ServerPlan,
    StoragePlan,
    is_sqlite_url,
)
from ..models.storage import PASSWORD_IN_URL_PATTERN, SQLITE_ON_VOLUME_PATTERN, FliptStorageSpec, MemorySpec

ENV = "FliptEnvironment"
STORAGE = "FliptStorage"
CREDENTIAL = "FliptCredential"

# Backends whose data one server alone may own (status.server is singular; migrations, RWO volumes).
EXCLUSIVE_BACKENDS = ("database", "local")


@dataclass(frozen=True)
class CredentialState:
    spec: FliptCredentialSpec
    ready: bool
    # False until the credential's status speaks of its current generation: just created (or
    # changed) and not checked yet, which is no reason to call its storage Stalled.
    checked: bool = True


@dataclass(frozen=True)
class ServerResult:
    server: str
    environments: tuple[str, ...]  # names of the FliptEnvironments it serves, sorted
    plan: ServerPlan | None  # None exactly when there are errors
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return self.plan is not None


@dataclass
class _Collector:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def error(self, kind: str, name: str, path: str, reason: str, message: str) -> None:
        self.errors.append(Problem(kind, name, path, reason, message))

    def warn(self, kind: str, name: str, path: str, reason: str, message: str) -> None:
        self.warnings.append(Problem(kind, name, path, reason, message, "Warning"))

    def pending(self, kind: str, name: str, path: str, reason: str, message: str) -> None:
        """Blocks the server like an error until the operator's own work under way ends."""
        self.errors.append(Problem(kind, name, path, reason, message, "Pending"))


def plan_servers(
    namespace: str,
    environments: Mapping[str, FliptEnvironmentSpec],
    storages: Mapping[str, FliptStorageSpec],
    credentials: Mapping[str, CredentialState],
    secrets: Mapping[str, Collection[str]],
    defaults: OperatorDefaults,
) -> dict[str, ServerResult]:
    """Group the namespace's environments by `spec.server` and plan each server.

    `storages` and `credentials` hold the objects that exist (missing ones absent);
    `secrets` maps each Secret name of the namespace to the names of its keys.
    """
    by_server: dict[str, list[str]] = defaultdict(list)
    for name, spec in environments.items():
        by_server[spec.server].append(name)
    servers_of_storage: dict[str, set[str]] = defaultdict(set)
    for spec in environments.values():
        if spec.storage is not None:
            servers_of_storage[spec.storage].add(spec.server)
    return {
        server: _plan_server(
            namespace,
            server,
            {n: environments[n] for n in sorted(names)},
            storages,
            credentials,
            secrets,
            servers_of_storage,
            defaults,
        )
        for server, names in sorted(by_server.items())
    }


def _plan_server(
    namespace: str,
    server: str,
    envs: dict[str, FliptEnvironmentSpec],
    storages: Mapping[str, FliptStorageSpec],
    credentials: Mapping[str, CredentialState],
    secrets: Mapping[str, Collection[str]],
    servers_of_storage: Mapping[str, set[str]],
    defaults: OperatorDefaults,
) -> ServerResult:
    out = _Collector()
    for name in envs:
        _check_identifier(out, ENV, name, "metadata.name")
    default_name = _default_environment(out, server, envs)
    resolved, implicit = _resolve_storages(out, envs, storages)
    generation = _generation(out, server, envs, resolved)
    _check_directories(out, envs)
    for sid, spec in sorted(resolved.items()):
        if not (implicit and sid == IMPLICIT_STORAGE):
            _check_identifier(out, STORAGE, sid, "metadata.name")
            _check_storage(out, sid, spec, credentials, secrets, servers_of_storage)
    _check_local_paths(out, resolved)

    replicas = defaults.replicas
    deployment = envs[default_name].deployment if default_name else None
    if deployment is not None and deployment.replicas is not None:
        replicas = deployment.replicas
    image = (deployment.image if deployment else None) or (
        defaults.v1_image if generation == "v1" else defaults.v2_image
    )
    for name, env_spec in envs.items():
        if env_spec.storage is None:
            out.warn(
                ENV, name, "spec.storage", "FlagsNotPersisted",
                f"No spec.storage: environment {name} uses Flipt's automatic '{IMPLICIT_STORAGE}' storage "
                "(memory), whose flags are lost on every restart. Set spec.storage to a FliptStorage "
                "with git, local or database storage to keep them.",
            )
        if default_name and name != default_name and env_spec.deployment is not None:
            out.warn(
                ENV, name, "spec.deployment", "DeploymentSettingsIgnored",
                f"spec.deployment is read from the default environment {default_name} of server {server} "
                "only: move these settings there.",
            )
    if default_name:
        _replica_warnings(out, server, default_name, replicas, resolved, implicit)
        _image_warning(out, default_name, image, generation, deployment is not None and bool(deployment.image))

    env_names = tuple(envs)
    if out.errors or default_name is None or generation is None:
        return ServerResult(server, env_names, None, tuple(out.errors), tuple(out.warnings))

    env_plans = tuple(
        EnvironmentPlan(
            name=name,
            display_name=spec.display_name or name,
            storage=spec.storage or IMPLICIT_STORAGE,
            directory=spec.directory,
            default=name == default_name,
        )
        for name, spec in envs.items()
    )
    storage_plans = tuple(
        StoragePlan(sid, spec, implicit=implicit and sid == IMPLICIT_STORAGE)
        for sid, spec in sorted(resolved.items())
    )
    plan = ServerPlan(
        namespace=namespace,
        name=server,
        generation=generation,
        environments=env_plans,
        storages=storage_plans,
        credentials=_credential_plans(storage_plans, credentials, secrets),
        image=image,
        replicas=replicas,
        resources=deployment.resources if deployment else None,
        sidecar_image=defaults.sidecar_image,
        sidecar_resources=defaults.sidecar_resources,
        image_pull_policy=defaults.image_pull_policy,
        native_sidecar=defaults.native_sidecar,
        warnings=tuple(out.warnings),
    )
    return ServerResult(server, env_names, plan, (), tuple(out.warnings))


def _check_identifier(out: _Collector, kind: str, name: str, path: str) -> None:
    # Flipt reads its config with viper, whose key delimiter is '.': a map key like
    # "prod.eu" would be split into nested keys and the storage or environment lost.
    if "." in name:
        out.error(
            kind, name, path, "InvalidFliptIdentifier",
            f"{kind} {name}: its name becomes a key of Flipt's configuration, where '.' separates "
            "nested keys. Rename it without dots (e.g. with '-').",
        )


def _default_environment(out: _Collector, server: str, envs: dict[str, FliptEnvironmentSpec]) -> str | None:
    if len(envs) == 1:
        return next(iter(envs))  # as in Flipt: a single environment is the default
    defaults = [n for n, s in envs.items() if s.default]
    if len(defaults) == 1:
        return defaults[0]
    if not defaults:
        for name in envs:
            out.error(
                ENV, name, "spec.default", "NoDefaultEnvironment",
                f"Server {server} serves {len(envs)} environments ({', '.join(envs)}) and none is the "
                "default: set spec.default: true on exactly one of them.",
            )
    else:
        for name in defaults:
            out.error(
                ENV, name, "spec.default", "MultipleDefaultEnvironments",
                f"Server {server} has {len(defaults)} default environments ({', '.join(defaults)}): "
                "set spec.default: true on exactly one of them.",
            )
    return None


def _resolve_storages(
    out: _Collector, envs: dict[str, FliptEnvironmentSpec], storages: Mapping[str, FliptStorageSpec]
) -> tuple[dict[str, FliptStorageSpec], bool]:
    """Storage id -> spec for every storage the environments use (missing ones reported), and
    whether Flipt's implicit memory storage is among them."""
    resolved: dict[str, FliptStorageSpec] = {}
    implicit_users = [n for n, s in envs.items() if s.storage is None]
    for name, spec in envs.items():
        if spec.storage is None:
            continue
        if spec.storage not in storages:
            out.error(
                ENV, name, "spec.storage", "StorageNotFound",
                f"FliptStorage {spec.storage} (spec.storage) does not exist in this namespace: create it "
                "or correct the name.",
            )
            continue
        resolved[spec.storage] = storages[spec.storage]
    if implicit_users:
        if IMPLICIT_STORAGE in resolved:
            for name in implicit_users:
                out.error(
                    ENV, name, "spec.storage", "ImplicitStorageNameTaken",
                    f"Environment {name} has no spec.storage, so it would use Flipt's automatic "
                    f"'{IMPLICIT_STORAGE}' storage, but another environment of the same server uses the "
                    f"FliptStorage named '{IMPLICIT_STORAGE}': set spec.storage explicitly.",
                )
        else:
            resolved[IMPLICIT_STORAGE] = FliptStorageSpec(memory=MemorySpec())
            return resolved, True
    return resolved, False


def _generation(
    out: _Collector, server: str, envs: dict[str, FliptEnvironmentSpec], resolved: Mapping[str, FliptStorageSpec]
) -> Generation | None:
    kinds: dict[str, str] = {}
    for name, spec in envs.items():
        sid = spec.storage or IMPLICIT_STORAGE
        if sid in resolved:
            kinds[name] = resolved[sid].backend
    database = sorted(n for n, k in kinds.items() if k == "database")
    other = sorted(n for n, k in kinds.items() if k != "database")
    if database and other:
        for name in sorted(kinds):
            out.error(
                ENV, name, "spec.storage", "MixedStorageGenerations",
                f"Server {server} mixes database storage ({', '.join(database)}: a Flipt v1 server) with "
                f"git/local/memory storage ({', '.join(other)}: a Flipt v2 server). One server runs one "
                "Flipt generation: move one group to another spec.server.",
            )
        return None
    if database and len(envs) > 1:
        for name in envs:
            out.error(
                ENV, name, "spec.server", "DatabaseServerHasSeveralEnvironments",
                f"Server {server} uses database storage (Flipt v1), which serves exactly one environment, "
                f"but {len(envs)} environments name it ({', '.join(envs)}): give each its own spec.server.",
            )
        return None
    if len(kinds) < len(envs):
        return None  # a missing storage, already reported
    return "v1" if database else "v2"


def _check_directories(out: _Collector, envs: dict[str, FliptEnvironmentSpec]) -> None:
    by_place: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, spec in envs.items():
        by_place[(spec.storage or IMPLICIT_STORAGE, spec.directory or "")].append(name)
    for (sid, directory), names in sorted(by_place.items()):
        if len(names) < 2:
            continue
        shown = f"directory {directory!r}" if directory else "no spec.directory"
        for name in names:
            out.error(
                ENV, name, "spec.directory", "DuplicateDirectory",
                f"Environments {', '.join(names)} share storage {sid} with {shown}: environments on one "
                "storage need distinct spec.directory values.",
            )


def _secret_ref_problem(
    out: _Collector,
    kind: str,
    name: str,
    path: str,
    ref: SecretKeyReference,
    secrets: Mapping[str, Collection[str]],
) -> None:
    if ref.name not in secrets:
        out.error(
            kind, name, f"{path}.name", "SecretNotFound",
            f"Secret {ref.name} ({path}.name) does not exist in this namespace: create it with the key "
            f"{ref.key!r}.",
        )
    elif ref.key not in secrets[ref.name]:
        out.error(
            kind, name, f"{path}.key", "SecretKeyNotFound",
            f"Secret {ref.name} has no key {ref.key!r} ({path}.key): add the key or correct the reference.",
        )


def _check_storage(
    out: _Collector,
    sid: str,
    spec: FliptStorageSpec,
    credentials: Mapping[str, CredentialState],
    secrets: Mapping[str, Collection[str]],
    servers_of_storage: Mapping[str, set[str]],
) -> None:
    users = servers_of_storage.get(sid, set())
    if spec.backend in EXCLUSIVE_BACKENDS and len(users) > 1:
        out.error(
            STORAGE, sid, "metadata.name", "StorageUsedBySeveralServers",
            f"FliptStorage {sid} ({spec.backend}) is used by servers {', '.join(sorted(users))}; a {spec.backend} "
            "storage belongs to one server. Point the environments at one spec.server or use separate storages.",
        )
    if spec.cache is not None:
        if spec.backend != "database":
            out.error(
                STORAGE, sid, "spec.cache", "CacheWithoutDatabase",
                f"FliptStorage {sid} has spec.cache but {spec.backend} storage: Flipt's cache exists only for "
                "database storage (Flipt v1). Remove spec.cache.",
            )
        elif spec.cache.backend == "redis" and spec.cache.redis is None:
            out.error(
                STORAGE, sid, "spec.cache.redis", "RedisSettingsMissing",
                f"FliptStorage {sid} has cache backend redis but no spec.cache.redis: set at least "
                "spec.cache.redis.host.",
            )
        if spec.cache.redis is not None and spec.cache.redis.password_secret_ref is not None:
            _secret_ref_problem(
                out, STORAGE, sid, "spec.cache.redis.passwordSecretRef", spec.cache.redis.password_secret_ref, secrets
            )
    if spec.database is not None:
        _check_database(out, sid, spec, secrets)
    if spec.git is not None:
        git = spec.git
        if git.credential_ref is not None:
            cred = git.credential_ref.name
            if cred not in credentials:
                out.error(
                    STORAGE, sid, "spec.git.credentialRef.name", "CredentialNotFound",
                    f"FliptCredential {cred} (spec.git.credentialRef.name) does not exist in this namespace: "
                    "create it or correct the name.",
                )
            elif not credentials[cred].checked:
                out.pending(
                    STORAGE, sid, "spec.git.credentialRef.name", "CredentialPending",
                    f"FliptCredential {cred} has not been checked yet; the server is rendered once it is Ready.",
                )
            elif not credentials[cred].ready:
                out.error(
                    STORAGE, sid, "spec.git.credentialRef.name", "CredentialNotReady",
                    f"FliptCredential {cred} is not Ready: see its status conditions "
                    f"(kubectl describe fliptcredential {cred}) and fix its Secret.",
                )
        if git.ca_cert_secret_ref is not None:
            _secret_ref_problem(out, STORAGE, sid, "spec.git.caCertSecretRef", git.ca_cert_secret_ref, secrets)


def _check_database(out: _Collector, sid: str, spec: FliptStorageSpec, secrets: Mapping[str, Collection[str]]) -> None:
    db = spec.database
    assert db is not None
    if db.url is None and db.url_secret_ref is None:
        out.error(
            STORAGE, sid, "spec.database.url", "DatabaseURLMissing",
            f"FliptStorage {sid}: set spec.database.url or spec.database.urlSecretRef.",
        )
    elif db.url is not None and db.url_secret_ref is not None:
        out.error(
            STORAGE, sid, "spec.database.url", "AmbiguousDatabaseURL",
            f"FliptStorage {sid} sets both spec.database.url and spec.database.urlSecretRef: keep one.",
        )
    if db.url_secret_ref is not None:
        _secret_ref_problem(out, STORAGE, sid, "spec.database.urlSecretRef", db.url_secret_ref, secrets)
    # The same patterns as the CRD's CEL rules, for API servers that do not apply them.
    if db.url is not None and re.search(PASSWORD_IN_URL_PATTERN, db.url):
        out.error(
            STORAGE, sid, "spec.database.url", "PasswordInDatabaseURL",
            f"FliptStorage {sid}: spec.database.url holds a password, and it would be written to a "
            "ConfigMap. Put the whole URL in a Secret and reference it with spec.database.urlSecretRef.",
        )
    if is_sqlite_url(db.url):
        assert db.url is not None
        if db.claim_name is None:
            out.error(
                STORAGE, sid, "spec.database.claimName", "SQLiteNeedsVolume",
                f"FliptStorage {sid} uses SQLite, whose file would be lost with the pod: set "
                f"spec.database.claimName to a PersistentVolumeClaim (mounted at {DATA_DIR}).",
            )
        if not re.match(SQLITE_ON_VOLUME_PATTERN, db.url):
            out.error(
                STORAGE, sid, "spec.database.url", "SQLitePathNotOnVolume",
                f"FliptStorage {sid}: the SQLite file must be a path under {DATA_DIR}, the only writable "
                "volume (the root filesystem is read-only), without '.' or '..' segments, e.g. "
                f"file:{DATA_DIR}/flipt.db.",
            )


def _check_local_paths(out: _Collector, used: Mapping[str, FliptStorageSpec]) -> None:
    paths = {sid: posixpath.normpath(s.local.path) for sid, s in used.items() if s.local is not None}

    def overlaps(a: str, b: str) -> bool:
        return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")

    for sid, path in sorted(paths.items()):
        clash = []
        if path == DATA_DIR or DATA_DIR.startswith(path.rstrip("/") + "/"):
            clash.append(f"Flipt's data directory {DATA_DIR}")
        if overlaps(path, REPOSITORIES_ROOT):
            clash.append(f"the git-sync repositories under {REPOSITORIES_ROOT}")
        clash += [f"the path of FliptStorage {o}" for o, p in sorted(paths.items()) if o != sid and overlaps(path, p)]
        if clash:
            out.error(
                STORAGE, sid, "spec.local.path", "LocalPathConflict",
                f"FliptStorage {sid}: spec.local.path {path} overlaps {', '.join(clash)}; "
                f"give it a directory of its own, e.g. {DATA_DIR}/{sid}.",
            )


def _replica_warnings(
    out: _Collector,
    server: str,
    default_name: str,
    replicas: int,
    resolved: Mapping[str, FliptStorageSpec],
    implicit: bool,
) -> None:
    if replicas <= 1:
        return
    for sid, spec in sorted(resolved.items()):
        kind, name = (ENV, default_name) if implicit and sid == IMPLICIT_STORAGE else (STORAGE, sid)
        if spec.database is not None and is_sqlite_url(spec.database.url):
            out.warn(
                STORAGE, sid, "spec.database.url", "SQLiteSingleInstance",
                f"Server {server} asks for {replicas} replicas but SQLite allows a single Flipt instance "
                "(one writer, one volume): use PostgreSQL, MySQL or CockroachDB, or set replicas to 1.",
            )
        if spec.cache is not None and spec.cache.backend == "memory":
            out.warn(
                STORAGE, sid, "spec.cache.backend", "MemoryCacheMultipleReplicas",
                f"Server {server} asks for {replicas} replicas with the memory cache: each replica caches "
                "on its own and invalidates only its own entries on writes. Use the redis backend.",
            )
        if spec.memory is not None:
            out.warn(
                kind, name, "spec.memory" if kind == STORAGE else "spec.storage", "MemoryStorageMultipleReplicas",
                f"Server {server} asks for {replicas} replicas with memory storage {sid}: each replica keeps "
                "its own flags, so writes reach one replica only. Use git storage.",
            )


def _image_warning(out: _Collector, env: str, image: str, generation: Generation | None, explicit: bool) -> None:
    if not explicit or generation is None:
        return
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    other = "v2" if generation == "v1" else "v1"
    if tag.startswith(other + "."):
        out.warn(
            ENV, env, "spec.deployment.image", "ImageGenerationMismatch",
            f"Image {image} looks like Flipt {other}, but this server's storage needs Flipt {generation} "
            f"({'database' if generation == 'v1' else 'git/local/memory'} storage): check the tag.",
        )


def _credential_plans(
    storage_plans: tuple[StoragePlan, ...],
    credentials: Mapping[str, CredentialState],
    secrets: Mapping[str, Collection[str]],
) -> tuple[CredentialPlan, ...]:
    names = sorted({s.spec.git.credential_ref.name for s in storage_plans if s.spec.git and s.spec.git.credential_ref})
    plans = []
    for name in names:
        spec = credentials[name].spec
        present = secrets.get(spec.secret_ref.name)
        wanted = REQUIRED_KEYS[spec.type] + OPTIONAL_KEYS[spec.type]
        if present is None:
            keys = spec.required_keys()
        else:
            keys = tuple(k for k in wanted if k in present or k in spec.required_keys())
        plans.append(CredentialPlan(name, spec, tuple(sorted(keys))))
    return tuple(plans)
