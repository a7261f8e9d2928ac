"""A Flipt server as the rules decided it: what the renderers need, and nothing read from the API.

The rules (`flipt_operator.rules.servers`) produce a ServerPlan from the three kinds; the
builders (`flipt_operator.builders.flipt_config`, `gitsync_config`, `server_manifests`) render
it. Both layers import it from here because import-linter keeps them independent of each other.
No Secret value is ever part of a plan: only Secret names and key names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .credential import FliptCredentialSpec
from .environment import ResourceRequirements
from .storage import DATA_DIR as DATA_DIR
from .storage import FliptStorageSpec

Generation = Literal["v1", "v2"]
# Pending: blocks its server like an Error, but only until work of the operator's own under
# way finishes (a credential not checked yet): progress to report, not a fault to fix.
Severity = Literal["Error", "Warning", "Pending"]

# Paths and ports of the Flipt image and the official Helm chart.
CONFIG_FILE = "/etc/flipt/config/default.yml"
STATE_DIR = "/home/flipt/.config/flipt"
HTTP_PORT = 8080
GRPC_PORT = 9000
# The storage Flipt creates by itself for an environment that names none (memory, branch main).
IMPLICIT_STORAGE = "default"

DEFAULT_V1_IMAGE = "docker.flipt.io/flipt/flipt:v1.61.1"
DEFAULT_V2_IMAGE = "docker.flipt.io/flipt/flipt:v2.11.0"


def _default_sidecar_resources() -> dict[str, dict[str, str]]:
    return {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def server_release(git_version: str) -> tuple[int, int] | None:
    """(major, minor) of an API server's `/version` gitVersion, e.g. "v1.30.2-eks-1" -> (1, 30)."""
    match = re.match(r"^v?(\d+)\.(\d+)", git_version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def supports_native_sidecars(git_version: str) -> bool:
    """Whether an API server of this version takes native sidecars: on by default from 1.29.
    Older servers reject probes on init containers."""
    release = server_release(git_version)
    return release is not None and release >= (1, 29)


@dataclass(frozen=True)
class OperatorDefaults:
    """Settings of the operator itself that shape every server it renders."""

    sidecar_image: str  # the operator's own image: the git-sync sidecar is a subcommand of it
    v1_image: str = DEFAULT_V1_IMAGE
    v2_image: str = DEFAULT_V2_IMAGE
    replicas: int = 1
    image_pull_policy: str = "IfNotPresent"
    sidecar_resources: dict[str, Any] = field(default_factory=_default_sidecar_resources)
    # True: the sidecar is a native sidecar (an init container with restartPolicy Always and a
    # startup probe), so Flipt starts only once the repositories are there; needs Kubernetes
    # >= 1.29 (see supports_native_sidecars; a 1.20 API server rejects the Deployment).
    # False: a one-shot `git-sync --once` init container plus an ordinary sidecar.
    native_sidecar: bool = True


@dataclass(frozen=True)
class Problem:
    """Something wrong (Error), worth knowing (Warning) or not known yet (Pending) about one object."""

    kind: str  # FliptEnvironment, FliptStorage or FliptCredential
    name: str
    field: str  # e.g. spec.default, spec.git.credentialRef.name
    reason: str  # CamelCase
    message: str  # says how to fix it; never quotes a Secret value
    severity: Severity = "Error"


@dataclass(frozen=True)
class EnvironmentPlan:
    name: str  # the FliptEnvironment's metadata.name: Flipt's environment id
    display_name: str
    storage: str  # Flipt's storage id: a FliptStorage name, or IMPLICIT_STORAGE
    directory: str | None
    default: bool


@dataclass(frozen=True)
class StoragePlan:
    name: str  # Flipt's storage id
    spec: FliptStorageSpec
    implicit: bool = False  # Flipt's automatic memory storage, not a FliptStorage object

    @property
    def backend(self) -> str:
        return self.spec.backend


@dataclass(frozen=True)
class CredentialPlan:
    name: str  # the FliptCredential's name
    spec: FliptCredentialSpec
    keys: tuple[str, ...]  # Secret keys mounted for the sidecar, sorted

    @property
    def secret_name(self) -> str:
        return self.spec.secret_ref.name


def is_sqlite_url(url: str | None) -> bool:
    return bool(url) and url.startswith(("file:", "sqlite:"))  # type: ignore[union-attr]


def sqlite_path(url: str) -> str:
    """The file path of a SQLite URL (file:/a/b.db, sqlite:///a/b.db), without its query."""
    rest = url.split(":", 1)[1].split("?", 1)[0]
    if rest.startswith("//"):
        rest = rest[2:]
    return rest


@dataclass(frozen=True)
class ServerPlan:
    """Everything needed to render one Flipt server (Deployment, Service, ConfigMap, ServiceAccount)."""

    namespace: str
    name: str
    generation: Generation
    environments: tuple[EnvironmentPlan, ...]  # sorted by name
    storages: tuple[StoragePlan, ...]  # sorted by name
    credentials: tuple[CredentialPlan, ...]  # sorted by name
    image: str
    replicas: int
    resources: ResourceRequirements | None
    sidecar_image: str
    sidecar_resources: dict[str, Any]
    image_pull_policy: str = "IfNotPresent"
    native_sidecar: bool = True
    warnings: tuple[Problem, ...] = ()

    @property
    def default_environment(self) -> EnvironmentPlan:
        return next(e for e in self.environments if e.default)

    @property
    def git_storages(self) -> tuple[StoragePlan, ...]:
        return tuple(s for s in self.storages if s.backend == "git")

    @property
    def local_storages(self) -> tuple[StoragePlan, ...]:
        return tuple(s for s in self.storages if s.backend == "local")

    @property
    def database(self) -> StoragePlan | None:
        return next((s for s in self.storages if s.backend == "database"), None)

    @property
    def is_sqlite(self) -> bool:
        db = self.database
        return db is not None and is_sqlite_url(db.spec.database.url)  # type: ignore[union-attr]

    @property
    def data_claim(self) -> str | None:
        """PersistentVolumeClaim mounted at DATA_DIR (database storage only), else None (emptyDir)."""
        db = self.database
        return db.spec.database.claim_name if db is not None else None  # type: ignore[union-attr]

    def credential(self, name: str) -> CredentialPlan:
        return next(c for c in self.credentials if c.name == name)

    def referenced_secrets(self) -> tuple[str, ...]:
        """Names of the Secrets the server's pods read (env or volumes), sorted."""
        names: set[str] = {c.secret_name for c in self.credentials}
        for s in self.storages:
            spec = s.spec
            if spec.database is not None and spec.database.url_secret_ref is not None:
                names.add(spec.database.url_secret_ref.name)
            if spec.git is not None and spec.git.ca_cert_secret_ref is not None:
                names.add(spec.git.ca_cert_secret_ref.name)
            if spec.cache is not None and spec.cache.redis is not None and spec.cache.redis.password_secret_ref:
                names.add(spec.cache.redis.password_secret_ref.name)
        return tuple(sorted(names))

    def referenced_credentials(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.credentials)
