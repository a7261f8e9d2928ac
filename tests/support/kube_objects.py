"""Small helpers for cluster tests: create objects, read conditions the way kubectl shows them."""

from __future__ import annotations

import base64
import json
from typing import Any

from kubernetes import client

GROUP, VERSION = "flipt.io", "v1alpha1"


def create_custom(api: client.ApiClient, namespace: str, kind: str, name: str, spec: dict[str, Any],
                  **meta: Any) -> dict:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
            "metadata": {"name": name, **meta}, "spec": spec}
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, kind.lower() + "s", body)


def get_custom(api: client.ApiClient, namespace: str, kind: str, name: str) -> dict:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, kind.lower() + "s", name)


def patch_custom(api: client.ApiClient, namespace: str, kind: str, name: str, patch: dict) -> dict:
    return client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, kind.lower() + "s", name, patch)


def condition(obj: dict, type_: str) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return None


def condition_is(api, namespace, kind, name, type_, status, reason=None):
    """For wait_for: the object once its condition has this status (and reason)."""
    obj = get_custom(api, namespace, kind, name)
    c = condition(obj, type_)
    if c and c["status"] == status and (reason is None or c["reason"] == reason):
        return obj
    return None


def put_secret(api: client.ApiClient, namespace: str, name: str, data: dict[str, bytes | str]) -> None:
    """Create or replace a Secret."""
    core = client.CoreV1Api(api)
    encoded = {k: base64.b64encode(v.encode() if isinstance(v, str) else v).decode() for k, v in data.items()}
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded)
    try:
        core.create_namespaced_secret(namespace, body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def events_for(api: client.ApiClient, namespace: str, name: str) -> list:
    items = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}").items
    return sorted(items, key=lambda e: e.metadata.creation_timestamp)


def dump_namespace(kubectl, namespace: str) -> str:
    """Everything a user could read in the namespace except Secrets, as text."""
    kinds = "configmaps,services,deployments,jobs,serviceaccounts,events,fliptcredentials,fliptstorages,fliptenvironments"
    out = kubectl("get", kinds, "-n", namespace, "-o", "json")
    assert out.returncode == 0, out.stderr
    return json.dumps(json.loads(out.stdout))
