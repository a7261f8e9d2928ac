"""FliptEnvironment: one Flipt environment and the server that serves it."""

from __future__ import annotations

from pydantic import Field

from .common import DNS_LABEL_PATTERN, ApiModel, CommonStatus, ObjectName, Quantity


class ResourceRequirements(ApiModel):
    limits: dict[str, Quantity] | None = Field(default=None, description="Container limits, e.g. cpu, memory.")
    requests: dict[str, Quantity] | None = Field(default=None, description="Container requests.")


class DeploymentSpec(ApiModel):
    image: str | None = Field(
        default=None, min_length=1, description="Flipt image; defaults to the operator's v1 or v2 image."
    )
    replicas: int | None = Field(default=None, ge=0, le=100, description="Server replicas (default 1).")
    resources: ResourceRequirements | None = Field(default=None, description="Flipt container resources.")


class FliptEnvironmentSpec(ApiModel):
    storage: ObjectName | None = Field(
        default=None,
        description=(
            "FliptStorage name. Unset: Flipt's automatic default storage (memory), "
            "whose flags do not survive a restart."
        ),
    )
    directory: str | None = Field(
        default=None,
        pattern=r"^[^/\s][^\s]*$",
        description="Subdirectory of the storage holding this environment's namespaces.",
    )
    default: bool = Field(default=False, description="The server's default environment; exactly one per server.")
    display_name: str | None = Field(
        default=None,
        description=(
            "A label for people, kept on the Kubernetes side only. Flipt's environment key "
            "(environments.<id>.name: API routing, branch prefix) is this object's name."
        ),
    )
    server: str = Field(
        default="flipt",
        max_length=50,
        pattern=DNS_LABEL_PATTERN,
        description="Flipt server (Deployment, Service) serving this environment; shared by environments naming it.",
    )
    deployment: DeploymentSpec | None = Field(
        default=None, description="Server settings; read from the default environment only."
    )


class FliptEnvironmentStatus(CommonStatus):
    server: str | None = Field(default=None, description="The Flipt Deployment serving this environment.")
    storage_backend: str | None = Field(default=None, description="Backend of the storage it reads.")
    revision: str | None = Field(default=None, description="Git revision served, for git storage.")
    config_hash: str | None = Field(default=None, description="Hash of the server configuration in force.")


class FliptEnvironment(ApiModel):
    spec: FliptEnvironmentSpec
    status: FliptEnvironmentStatus | None = None
