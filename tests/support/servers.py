"""Builders of FliptEnvironment/FliptStorage/FliptCredential specs for the server rules and renderers."""

from __future__ import annotations

import dataclasses
from typing import Any

from flipt_operator.models.credential import FliptCredentialSpec
from flipt_operator.models.environment import FliptEnvironmentSpec
from flipt_operator.models.plan import OperatorDefaults, ServerPlan
from flipt_operator.models.storage import FliptStorageSpec
from flipt_operator.rules.servers import CredentialState, ServerResult, plan_servers

SIDECAR_IMAGE = "registry.example/flipt-operator:0.1.0"
DEFAULTS = OperatorDefaults(sidecar_image=SIDECAR_IMAGE)


def env(**fields: Any) -> FliptEnvironmentSpec:
    return FliptEnvironmentSpec.model_validate(fields)


def storage(**fields: Any) -> FliptStorageSpec:
    return FliptStorageSpec.model_validate(fields)


def git(remote: str = "https://git.example/acme/flags.git", **fields: Any) -> FliptStorageSpec:
    return storage(git={"remote": remote, **fields})


def database(cache: dict[str, Any] | None = None, **fields: Any) -> FliptStorageSpec:
    return storage(database=fields, **({"cache": cache} if cache is not None else {}))


def credential(type_: str, secret: str, ready: bool = True, checked: bool = True, **fields: Any) -> CredentialState:
    spec = FliptCredentialSpec.model_validate({"type": type_, "secretRef": {"name": secret}, **fields})
    return CredentialState(spec, ready, checked)


def plan(
    environments: dict[str, FliptEnvironmentSpec],
    storages: dict[str, FliptStorageSpec] | None = None,
    credentials: dict[str, CredentialState] | None = None,
    secrets: dict[str, set[str]] | None = None,
    defaults: OperatorDefaults = DEFAULTS,
) -> dict[str, ServerResult]:
    return plan_servers("team-a", environments, storages or {}, credentials or {}, secrets or {}, defaults)


def ok_plan(*args: Any, server: str = "flipt", **kwargs: Any) -> ServerPlan:
    result = plan(*args, **kwargs)[server]
    assert result.plan is not None, result.errors
    return result.plan


def git_server_plan(namespace: str = "team-a", **defaults: Any) -> ServerPlan:
    """Two environments on one git storage with an ssh credential and a CA bundle."""
    result = ok_plan(
        {
            "prod": env(storage="flags", directory="prod", default=True, deployment={"replicas": 2}),
            "dev": env(storage="flags", directory="dev"),
        },
        {"flags": git(credentialRef={"name": "deploy"}, caCertSecretRef={"name": "corp-ca", "key": "ca.crt"})},
        {"deploy": credential("ssh", "deploy-key")},
        {"deploy-key": {"identity", "known_hosts"}, "corp-ca": {"ca.crt"}},
        defaults=OperatorDefaults(sidecar_image=SIDECAR_IMAGE, **defaults),
    )
    return dataclasses.replace(result, namespace=namespace)
