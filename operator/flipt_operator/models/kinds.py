"""The three kinds: names, printer columns, and their spec/status models."""

from __future__ import annotations

from dataclasses import dataclass

from .common import ApiModel, ValidationRule
from .credential import FliptCredentialSpec, FliptCredentialStatus
from .environment import FliptEnvironmentSpec, FliptEnvironmentStatus
from .storage import FliptStorageSpec, FliptStorageStatus

READY = '.status.conditions[?(@.type=="Ready")]'

# Storage and environment names become keys of Flipt's configuration, which viper splits on '.'.
# No fieldPath: the API server takes none into metadata (it has no properties in the schema), so
# the error is reported on the object as a whole.
NAME_IS_FLIPT_IDENTIFIER = ValidationRule(
    "!self.metadata.name.contains('.')",
    "metadata.name becomes a key of Flipt's configuration, where '.' separates nested keys: "
    "use a name without dots (e.g. with '-').",
)


@dataclass(frozen=True)
class Column:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[ApiModel]
    status: type[ApiModel]
    columns: tuple[Column, ...]
    # CEL rules on the whole object; only metadata.name and generateName are visible to them.
    rules: tuple[ValidationRule, ...] = ()

    @property
    def singular(self) -> str:
        return self.kind.lower()


def _summary_columns(*middle: Column) -> tuple[Column, ...]:
    return (
        *middle,
        Column("Ready", f"{READY}.status", description="Whether the object is ready."),
        Column("Status", f"{READY}.message", description="What the operator last saw."),
        Column("Age", ".metadata.creationTimestamp", type="date"),
    )


CREDENTIAL = KindInfo(
    kind="FliptCredential",
    plural="fliptcredentials",
    short_names=("fcred",),
    description="How to authenticate to a git remote; the values stay in a Secret.",
    spec=FliptCredentialSpec,
    status=FliptCredentialStatus,
    columns=_summary_columns(
        Column("Type", ".spec.type", description="basic, accessToken or ssh."),
        Column("Secret", ".spec.secretRef.name", description="The Secret holding the values."),
    ),
)

STORAGE = KindInfo(
    kind="FliptStorage",
    plural="fliptstorages",
    short_names=("fstore",),
    description=(
        "One storage backend of a Flipt server: exactly one of spec.database, spec.git (a remote), "
        "spec.local (a volume) or spec.memory. The name is the storage's key in Flipt's configuration: no dots."
    ),
    spec=FliptStorageSpec,
    status=FliptStorageStatus,
    columns=_summary_columns(
        Column("Backend", ".status.backend", description="database, git, local or memory."),
        Column("Revision", ".status.sync.revision", description="Git commit served."),
        Column("Schema", ".status.database.schemaVersion", type="integer", description="Schema version."),
        Column("Server", ".status.server", priority=1, description="Flipt server using it."),
    ),
    rules=(NAME_IS_FLIPT_IDENTIFIER,),
)

ENVIRONMENT = KindInfo(
    kind="FliptEnvironment",
    plural="fliptenvironments",
    short_names=("fenv",),
    description=(
        "One Flipt environment and the server that serves it. The name is the environment's key in "
        "Flipt's configuration: no dots."
    ),
    spec=FliptEnvironmentSpec,
    status=FliptEnvironmentStatus,
    columns=_summary_columns(
        Column("Server", ".spec.server", description="Flipt server serving it."),
        Column("Storage", ".spec.storage", description="FliptStorage it reads."),
        Column("Default", ".spec.default", type="boolean", description="The server's default environment."),
        Column("Revision", ".status.revision", description="Git commit served."),
    ),
    rules=(NAME_IS_FLIPT_IDENTIFIER,),
)

ALL_KINDS: tuple[KindInfo, ...] = (CREDENTIAL, STORAGE, ENVIRONMENT)
