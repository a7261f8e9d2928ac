"""Which Secrets the Flipt objects of a namespace name, read from their raw specs.

Raw API dicts rather than the models: the watch filters and a pass's reads need the names
even of an object whose spec does not validate (its status then says why; the Secret it names
still matters once it is fixed). The spec paths mirror `models.plan.ServerPlan.referenced_secrets`
and the rules' checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _name(ref: Any) -> str | None:
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return name if isinstance(name, str) and name else None


def _at(spec: Any, *path: str) -> Any:
    for key in path:
        spec = spec.get(key) if isinstance(spec, Mapping) else None
    return spec


def storage_secret_names(spec: Mapping[str, Any] | None) -> set[str]:
    """Secrets a FliptStorage spec names: the database URL, the git CA bundle, the Redis password."""
    refs = (
        _at(spec, "database", "urlSecretRef"),
        _at(spec, "git", "caCertSecretRef"),
        _at(spec, "cache", "redis", "passwordSecretRef"),
    )
    return {name for name in map(_name, refs) if name}


def credential_secret_name(spec: Mapping[str, Any] | None) -> str | None:
    """The Secret a FliptCredential spec names."""
    return _name(_at(spec, "secretRef"))


def referenced_secret_names(storages: Iterable[Mapping[str, Any]],
                            credentials: Iterable[Mapping[str, Any]]) -> set[str]:
    """Every Secret the given FliptStorage and FliptCredential objects name."""
    names: set[str] = set()
    for storage in storages:
        names |= storage_secret_names(storage.get("spec"))
    for credential in credentials:
        name = credential_secret_name(credential.get("spec"))
        if name:
            names.add(name)
    return names
